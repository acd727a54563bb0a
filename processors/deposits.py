"""Deposits: seen (recorded), confirmed (credited), reverted by a reorganization (compensated).

A deposit's record lives in the engine's memory (`d/<chain:tx:log_index>`, processors.context), not in
the hot state: a user's state stays small however many deposits arrive. The record never expires: a
watcher that re-scans old blocks after a long outage must not credit a deposit twice, whatever time
passed (the records are on disk, one per deposit the chain really made, ~100 bytes each). Its status
decides what a repeated chain event does: a confirmation is credited once; a reverted deposit that the
chain includes again is credited again.
"""

from __future__ import annotations

from processors import checks
from processors.applied import Applied
from processors.config import EngineConfig
from processors.context import NEVER, Context
from processors.ledger import DEPOSIT, DEPOSIT_REVERSAL, Entry, custody, entry_id
from processors.messages import Command, DepositConfirmed, DepositReverted, DepositSeen
from processors.money import Rejected
from processors.reasons import Reason
from processors.state import Deposit, DepositStatus, UserState


def _validated(cmd: Command, cfg: EngineConfig) -> tuple[str, int]:
    body: DepositSeen = cmd.body  # type: ignore[assignment]
    deposit_id = f"{body['chain']}:{body['tx_hash']}:{body['log_index']}"
    if cmd.id != deposit_id:
        # The id is what makes a re-scanned deposit a duplicate; anything else could credit twice.
        raise Rejected(Reason.BAD_DEPOSIT_ID, f"input id must be {deposit_id}")
    _, asset = checks.chain_asset(cfg, body["chain"], body["asset"])
    return asset, checks.amount(cfg, asset, body["amount"])


def _key(deposit_id: str) -> str:
    return f"d/{deposit_id}"


def _recall(state: UserState, ctx: Context, deposit_id: str) -> Deposit | None:
    data = ctx.recall(state, _key(deposit_id))
    if data is not None:
        return Deposit(*data)
    return state.legacy_deposits.get(deposit_id)


def _record(state: UserState, ctx: Context, deposit_id: str, deposit: Deposit) -> None:
    ctx.remember(state, _key(deposit_id), (deposit.asset, deposit.amount, deposit.account, deposit.status), NEVER)
    state.legacy_deposits.pop(deposit_id, None)


def seen(state: UserState, cmd: Command, ctx: Context) -> Applied:
    asset, amount = _validated(cmd, ctx.cfg)
    known = _recall(state, ctx, cmd.id)
    if known is None or known.status == "reverted":
        _record(state, ctx, cmd.id, Deposit(asset, amount, "spot", "seen"))
    return Applied()


def confirmed(state: UserState, cmd: Command, ctx: Context) -> Applied:
    cfg = ctx.cfg
    body: DepositConfirmed = cmd.body  # type: ignore[assignment]
    asset, amount = _validated(cmd, cfg)
    account = checks.account(cfg, body["account"], asset)
    known = _recall(state, ctx, cmd.id)
    if known is not None and known.status in ("credited", "below_minimum"):
        # Already decided (a re-scan, a resend): never credit twice.
        return Applied(flag=Reason.BELOW_MINIMUM if known.status == "below_minimum" else None,
                       detail=f"deposit already {known.status}")
    if amount < cfg.rules[asset].min_deposit:
        _record(state, ctx, cmd.id, Deposit(asset, amount, account, "below_minimum"))
        return Applied(flag=Reason.BELOW_MINIMUM, detail="recorded, not credited: below the asset's minimum deposit")
    again = known is not None and known.status == "reverted"
    _record(state, ctx, cmd.id, Deposit(asset, amount, account, "credited"))
    entry = Entry(state, entry_id(cmd), DEPOSIT, ctx.now_ms)
    if again:
        # Re-included after a reorganization: a new entry, since the first one's id is taken.
        entry = Entry(state, entry_id(cmd, f"/again/{ctx.topic}/{ctx.offset}"), DEPOSIT, ctx.now_ms)
    entry.user(account, asset, "available", amount)
    entry.system(custody(body["chain"]), asset, -amount)
    return entry.applied(detail="re-included after a reversal: credited again" if again else "")


def reverted(state: UserState, cmd: Command, ctx: Context) -> Applied:
    body: DepositReverted = cmd.body  # type: ignore[assignment]
    deposit_id = body["deposit_id"]
    deposit = _recall(state, ctx, deposit_id)
    if deposit is None:
        raise Rejected(Reason.UNKNOWN_DEPOSIT, f"no deposit {deposit_id} for this user")
    previous: DepositStatus = deposit.status
    deposit.status = "reverted"
    _record(state, ctx, deposit_id, deposit)
    if previous != "credited":
        return Applied(detail=f"deposit was {previous}: nothing to compensate")
    # Compensate from what is still available; a shortfall (already spent or held) becomes a debt
    # on the same sub-account and the account is frozen for risk: flagged, never hidden.
    taken = min(state.available(deposit.account, deposit.asset), deposit.amount)
    shortfall = deposit.amount - taken
    chain = deposit_id.split(":", 1)[0]
    entry = Entry(state, entry_id(cmd), DEPOSIT_REVERSAL, ctx.now_ms)
    if taken:
        entry.user(deposit.account, deposit.asset, "available", -taken)
    if shortfall:
        entry.user(deposit.account, deposit.asset, "borrowed", -shortfall)
    entry.system(custody(chain), deposit.asset, deposit.amount)
    if shortfall:
        state.status = "frozen"
        return entry.applied(Reason.REVERSAL_SHORTFALL,
                             f"{shortfall} minor units already spent: booked as debt, account frozen")
    return entry.applied()
