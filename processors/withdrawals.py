"""Withdrawals: request (checks, freeze), approval by tier, broadcast, and the chain's verdict.

Chain events travel on their own topic, so one can overtake the request it concerns (after a crash,
the request is re-applied while the chain's event is already there). A chain event for a withdrawal
the user does not have yet is parked, and applied, in arrival order, as soon as a request or an
approval makes it applicable. A chain event for a withdrawal that already ended and was pruned is
answered (WITHDRAWAL_CLOSED), not parked: withdrawal ids are remembered for good (`w/<id>` in the
engine's memory), so an id is never used twice either.
"""

from __future__ import annotations

from typing import Final

from processors import checks, loans
from processors.applied import Applied
from processors.config import EngineConfig
from processors.context import NEVER, Context
from processors.ledger import FEE_REVENUE, WITHDRAWAL, WITHDRAWAL_FREEZE, WITHDRAWAL_RETURN, Entry, custody, entry_id
from processors.messages import (
    CHAIN,
    Command,
    LedgerLine,
    WithdrawalApprove,
    WithdrawalRef,
    WithdrawalRequest,
    WithdrawalToSign,
)
from processors.money import Rejected
from processors.reasons import Reason
from processors.state import OPEN_WITHDRAWAL, UserState, Withdrawal, WithdrawalStatus


def request(state: UserState, cmd: Command, ctx: Context) -> Applied:
    cfg = ctx.cfg
    body: WithdrawalRequest = cmd.body  # type: ignore[assignment]
    wid = checks.ident(cfg, "withdrawal_id", body["withdrawal_id"])
    if wid in state.withdrawals:
        raise Rejected(Reason.DUPLICATE_WITHDRAWAL_ID, f"withdrawal {wid} exists ({state.withdrawals[wid].status})")
    if ctx.recall(state, _key(wid)) is not None:
        raise Rejected(Reason.DUPLICATE_WITHDRAWAL_ID, f"withdrawal id {wid} was used before; ids are used once")
    if sum(1 for w in state.withdrawals.values() if w.status in OPEN_WITHDRAWAL) >= cfg.open_withdrawals_max:
        raise Rejected(Reason.TOO_MANY_OPEN_WITHDRAWALS,
                       f"{cfg.open_withdrawals_max} withdrawals are open; wait for one to finish or cancel one")
    chain, asset = checks.chain_asset(cfg, body["chain"], body["asset"])
    if not chain.valid_address(body["address"]):
        raise Rejected(Reason.BAD_ADDRESS, f"{body['address']!r} is not a {chain.name} address")
    account = checks.account(cfg, body["account"], asset)
    amount = checks.amount(cfg, asset, body["amount"])
    fee = checks.amount(cfg, asset, body["fee"], allow_zero=True)
    rules = cfg.rules[asset]
    if amount < rules.min_withdrawal:
        raise Rejected(Reason.BELOW_MINIMUM, f"minimum withdrawal is {rules.min_withdrawal} minor units")
    if fee < rules.withdrawal_fee:
        raise Rejected(Reason.BAD_FEE, f"the fee must be at least {rules.withdrawal_fee} minor units")
    checks.not_liquidating(state, account)
    checks.funds(state, account, asset, amount + fee)
    if state.loans:
        loans.check_out(state, ctx, account, asset, amount + fee)
    required = 0 if amount < rules.auto_approve_below else 1 if amount < rules.two_approvers_from else 2
    w = Withdrawal(account, chain.name, asset, amount, fee, body["address"],
                   "approved" if required == 0 else "pending_approval", required)
    entry = Entry(state, entry_id(cmd), WITHDRAWAL_FREEZE, ctx.now_ms)
    entry.user(account, asset, "available", -w.frozen)
    entry.user(account, asset, "frozen", w.frozen)
    state.withdrawals[wid] = w
    ctx.remember(state, _key(wid), 1, NEVER)
    lines = entry.close() + _release_parked(state, wid, ctx)
    return Applied(lines, _to_sign(state, wid, w, ctx), detail=f"needs {required} approval(s)")


def approve(state: UserState, cmd: Command, ctx: Context) -> Applied:
    body: WithdrawalApprove = cmd.body  # type: ignore[assignment]
    w = _in(state, ctx, body["withdrawal_id"], ("pending_approval",))
    checks.not_liquidating(state, w.account)  # a liquidation cancelled it; one more check costs nothing
    approver = checks.ident(ctx.cfg, "approver", body["approver"])
    if approver in w.approvals:
        raise Rejected(Reason.ALREADY_APPROVED, f"{approver} already approved; another approver is needed")
    w.approvals.append(approver)
    if len(w.approvals) < w.required_approvals:
        return Applied(detail=f"{len(w.approvals)} of {w.required_approvals} approvals")
    w.status = "approved"
    lines = _release_parked(state, body["withdrawal_id"], ctx)
    return Applied(lines, _to_sign(state, body["withdrawal_id"], w, ctx))


def cancel(state: UserState, cmd: Command, ctx: Context) -> Applied:
    body: WithdrawalRef = cmd.body  # type: ignore[assignment]
    w = _in(state, ctx, body["withdrawal_id"], ("pending_approval", "approved"))
    return _unfreeze(state, cmd, ctx, w, "cancelled")


def cancel_pending(entry: Entry, state: UserState, cfg: EngineConfig, account: str) -> int:
    """A liquidation takes the account: its withdrawals awaiting approval (no signer has them) are cancelled,
    their coins back to available for the liquidation to sell; returns how many. Approved ones are the signer's:
    they end by the chain's word (processors.liquidation waits for them)."""
    pending = [w for w in state.withdrawals.values() if w.account == account and w.status == "pending_approval"]
    for w in pending:
        entry.user(w.account, w.asset, "frozen", -w.frozen)
        entry.user(w.account, w.asset, "available", w.frozen)
        _finish(state, cfg, w, "cancelled")
    return len(pending)


def in_flight(state: UserState, account: str) -> bool:
    """Whether a withdrawal from `account` is with the signer (approved or broadcast): its coins may still come
    back (WithdrawalFailed)."""
    return any(w.account == account and w.status in ("approved", "broadcast") for w in state.withdrawals.values())


def broadcast(state: UserState, cmd: Command, ctx: Context) -> Applied:
    body: WithdrawalRef = cmd.body  # type: ignore[assignment]
    if _unknown(state, ctx, body["withdrawal_id"]):
        return _park(state, cmd, ctx)
    w = _in(state, ctx, body["withdrawal_id"], ("approved",))
    w.status = "broadcast"
    w.tx_hash = str(cmd.body.get("tx_hash", ""))
    return Applied()


def confirmed(state: UserState, cmd: Command, ctx: Context) -> Applied:
    """The coins left: consume the frozen amount + fee; custody pays out, revenue keeps the fee."""
    body: WithdrawalRef = cmd.body  # type: ignore[assignment]
    if _unknown(state, ctx, body["withdrawal_id"]):
        return _park(state, cmd, ctx)
    w = _in(state, ctx, body["withdrawal_id"], ("approved", "broadcast"))
    entry = Entry(state, entry_id(cmd), WITHDRAWAL, ctx.now_ms)
    entry.user(w.account, w.asset, "frozen", -w.frozen)
    entry.system(custody(w.chain), w.asset, w.amount)
    if w.fee:
        entry.system(FEE_REVENUE, w.asset, w.fee)
    _finish(state, ctx.cfg, w, "completed")
    return entry.applied()


def failed(state: UserState, cmd: Command, ctx: Context) -> Applied:
    body: WithdrawalRef = cmd.body  # type: ignore[assignment]
    if _unknown(state, ctx, body["withdrawal_id"]):
        return _park(state, cmd, ctx)
    w = _in(state, ctx, body["withdrawal_id"], ("approved", "broadcast"))
    return _unfreeze(state, cmd, ctx, w, "failed")


def _key(wid: str) -> str:
    return f"w/{wid}"


def _unknown(state: UserState, ctx: Context, wid: str) -> bool:
    """Not in the state and never requested: the chain event is early, so it waits."""
    return wid not in state.withdrawals and ctx.recall(state, _key(wid)) is None


def park(state: UserState, cmd: Command, ctx: Context, waits_for: str) -> Applied:
    """Keep a chain event until what it concerns appears: withdrawal `waits_for`, or ("") the account."""
    cfg = ctx.cfg
    what = f"withdrawal {waits_for}" if waits_for else "account"
    if any(entry[0] == cmd.id for entry in state.parked.get(waits_for, ())):
        # the same chain event again (a deposit is known by its record, not by the window): waits once
        return Applied(flag=Reason.PARKED, detail=f"no {what} yet: applied when it appears")
    if state.parked_count() >= cfg.parked_max:
        # Refused, and a refusal is not remembered: the watcher's resend applies once there is room.
        raise Rejected(Reason.UNKNOWN_WITHDRAWAL if waits_for else Reason.UNKNOWN_USER,
                       f"no {what} for this user (and {cfg.parked_max} chain events already wait)")
    state.parked.setdefault(waits_for, []).append([cmd.id, cmd.ts_ms, cmd.kind, dict(cmd.body), ctx.now_ms])
    return Applied(flag=Reason.PARKED, detail=f"no {what} yet: applied when it appears")


def _park(state: UserState, cmd: Command, ctx: Context) -> Applied:
    return park(state, cmd, ctx, checks.ident(ctx.cfg, "withdrawal_id", cmd.body["withdrawal_id"]))


CHAIN_STEPS: Final = {"WithdrawalBroadcast": broadcast, "WithdrawalConfirmed": confirmed, "WithdrawalFailed": failed}


def _release_parked(state: UserState, wid: str, ctx: Context) -> tuple[LedgerLine, ...]:
    """Apply the chain events parked for `wid`, oldest first, while they apply; the rest keep waiting."""
    waiting = state.parked.get(wid)
    lines: tuple[LedgerLine, ...] = ()
    while waiting:
        cmd_id, ts_ms, kind, body, _ = waiting[0]
        try:
            applied = CHAIN_STEPS[kind](state, Command(cmd_id, ts_ms, state.user_id, kind, body, CHAIN), ctx)
        except Rejected:
            break  # not applicable yet (e.g. the withdrawal awaits approval)
        lines += applied.lines
        waiting.pop(0)
    if not waiting:
        state.parked.pop(wid, None)
    return lines


def _in(state: UserState, ctx: Context, wid: str, allowed: tuple[WithdrawalStatus, ...]) -> Withdrawal:
    w = state.withdrawals.get(wid)
    if w is None:
        if ctx.recall(state, _key(wid)) is not None:
            raise Rejected(Reason.WITHDRAWAL_CLOSED, f"withdrawal {wid} ended earlier")
        raise Rejected(Reason.UNKNOWN_WITHDRAWAL, f"no withdrawal {wid} for this user")
    if w.status not in allowed:
        raise Rejected(Reason.BAD_WITHDRAWAL_STATE, f"withdrawal {wid} is {w.status}; needs {' or '.join(allowed)}")
    return w


def _unfreeze(state: UserState, cmd: Command, ctx: Context, w: Withdrawal, status: WithdrawalStatus) -> Applied:
    entry = Entry(state, entry_id(cmd), WITHDRAWAL_RETURN, ctx.now_ms)
    entry.user(w.account, w.asset, "frozen", -w.frozen)
    entry.user(w.account, w.asset, "available", w.frozen)
    _finish(state, ctx.cfg, w, status)
    return entry.applied()


def _finish(state: UserState, cfg: EngineConfig, w: Withdrawal, status: WithdrawalStatus) -> None:
    """The one way a withdrawal ends: its final status, then old finished ones are let go (their ids stay
    in the engine's memory)."""
    w.status = status
    state.prune_withdrawals(cfg.closed_withdrawals_kept)


def _to_sign(state: UserState, wid: str, w: Withdrawal, ctx: Context) -> tuple[WithdrawalToSign, ...]:
    """For the signer, once approved: unless a parked chain event already broadcast or ended it."""
    if w.status != "approved":
        return ()
    return (WithdrawalToSign(wid, ctx.now_ms, state.user_id, w.chain, w.asset, w.amount, w.address),)
