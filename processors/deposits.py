"""Deposits: seen (recorded), confirmed (credited), reverted by a reorganization (compensated)."""

from __future__ import annotations

from processors import checks
from processors.applied import Applied
from processors.config import EngineConfig
from processors.ledger import Entry
from processors.messages import Command, DepositConfirmed, DepositReverted, DepositSeen
from processors.money import Rejected
from processors.reasons import Reason
from processors.state import AVAILABLE, Deposit, UserState


def _validated(cmd: Command, cfg: EngineConfig) -> tuple[str, int]:
    body: DepositSeen = cmd.body  # type: ignore[assignment]
    deposit_id = f"{body['chain']}:{body['tx_hash']}:{body['log_index']}"
    if cmd.id != deposit_id:
        # The id is what makes a re-scanned deposit a duplicate; anything else could credit twice.
        raise Rejected(Reason.BAD_DEPOSIT_ID, f"input id must be {deposit_id}")
    _, asset = checks.chain_asset(cfg, body["chain"], body["asset"])
    return asset, checks.amount(cfg, asset, body["amount"])


def seen(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    asset, amount = _validated(cmd, cfg)
    if cmd.id not in state.deposits:
        state.deposits[cmd.id] = Deposit(asset, amount, "spot", "seen")
    return Applied()


def confirmed(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    body: DepositConfirmed = cmd.body  # type: ignore[assignment]
    asset, amount = _validated(cmd, cfg)
    account = checks.account(cfg, body["account"], asset)
    known = state.deposits.get(cmd.id)
    if known is not None and known.status != "seen":
        # Already decided (beyond the recent-input window, or a re-scan): never credit twice.
        return Applied(flag=Reason.BELOW_MINIMUM if known.status == "below_minimum" else None,
                       detail=f"deposit already {known.status}")
    if amount < cfg.rules[asset].min_deposit:
        state.deposits[cmd.id] = Deposit(asset, amount, account, "below_minimum")
        return Applied(flag=Reason.BELOW_MINIMUM, detail="recorded, not credited: below the asset's minimum deposit")
    state.deposits[cmd.id] = Deposit(asset, amount, account, "credited")
    entry = Entry(state, cmd.id, "DEPOSIT", cmd.ts_ms)
    entry.user(account, asset, "available", amount)
    entry.system(f"custody:{body['chain']}", asset, -amount)
    return Applied(entry.close())


def reverted(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    body: DepositReverted = cmd.body  # type: ignore[assignment]
    deposit = state.deposits.get(body["deposit_id"])
    if deposit is None:
        raise Rejected(Reason.UNKNOWN_DEPOSIT, f"no deposit {body['deposit_id']} for this user")
    previous, deposit.status = deposit.status, "reverted"
    if previous != "credited":
        return Applied(detail=f"deposit was {previous}: nothing to compensate")
    # Compensate from what is still available; a shortfall (already spent or held) becomes a debt
    # on the same sub-account and the account is frozen for risk: flagged, never hidden.
    taken = min(state.balance(deposit.account, deposit.asset)[AVAILABLE], deposit.amount)
    shortfall = deposit.amount - taken
    chain = body["deposit_id"].split(":", 1)[0]
    entry = Entry(state, cmd.id, "DEPOSIT_REVERSAL", cmd.ts_ms)
    if taken:
        entry.user(deposit.account, deposit.asset, "available", -taken)
    if shortfall:
        entry.user(deposit.account, deposit.asset, "borrowed", -shortfall)
    entry.system(f"custody:{chain}", deposit.asset, deposit.amount)
    if shortfall:
        state.status = "frozen"
        return Applied(entry.close(), flag=Reason.REVERSAL_SHORTFALL,
                       detail=f"{shortfall} minor units already spent: booked as debt, account frozen")
    return Applied(entry.close())
