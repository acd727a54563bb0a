"""Withdrawals: request (checks, freeze), approval by tier, broadcast, and the chain's verdict.

Chain events travel on their own topic, so one can overtake the request it concerns (after a crash,
the request is re-applied while the chain's event is already there). A chain event for a withdrawal
the user does not have yet is parked, and applied, in arrival order, as soon as a request or an
approval makes it applicable.
"""

from __future__ import annotations

from typing import Final

from processors import checks
from processors.applied import Applied
from processors.config import EngineConfig
from processors.ledger import Entry
from processors.messages import (
    Command,
    LedgerLine,
    WithdrawalApprove,
    WithdrawalRef,
    WithdrawalRequest,
    WithdrawalToSign,
)
from processors.money import Rejected
from processors.reasons import Reason
from processors.state import UserState, Withdrawal, WithdrawalStatus


def request(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    body: WithdrawalRequest = cmd.body  # type: ignore[assignment]
    wid = checks.present("withdrawal_id", body["withdrawal_id"])
    if wid in state.withdrawals:
        raise Rejected(Reason.DUPLICATE_WITHDRAWAL_ID, f"withdrawal {wid} exists ({state.withdrawals[wid].status})")
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
    checks.funds(state, account, asset, amount + fee)
    required = 0 if amount < rules.auto_approve_below else 1 if amount < rules.two_approvers_from else 2
    w = Withdrawal(account, chain.name, asset, amount, fee, body["address"],
                   "approved" if required == 0 else "pending_approval", required)
    entry = Entry(state, cmd.id, "WITHDRAWAL_FREEZE", cmd.ts_ms)
    entry.user(account, asset, "available", -w.frozen)
    entry.user(account, asset, "frozen", w.frozen)
    state.withdrawals[wid] = w
    events = (_to_sign(state, wid, w, cmd.ts_ms),) if required == 0 else ()
    lines = entry.close() + _release_parked(state, wid, cfg)
    return Applied(lines, events, detail=f"needs {required} approval(s)")


def approve(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    body: WithdrawalApprove = cmd.body  # type: ignore[assignment]
    w = _in(state, body["withdrawal_id"], ("pending_approval",))
    approver = checks.present("approver", body["approver"])
    if approver in w.approvals:
        raise Rejected(Reason.ALREADY_APPROVED, f"{approver} already approved; another approver is needed")
    w.approvals.append(approver)
    if len(w.approvals) < w.required_approvals:
        return Applied(detail=f"{len(w.approvals)} of {w.required_approvals} approvals")
    w.status = "approved"
    lines = _release_parked(state, body["withdrawal_id"], cfg)
    return Applied(lines, events=(_to_sign(state, body["withdrawal_id"], w, cmd.ts_ms),))


def cancel(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    body: WithdrawalRef = cmd.body  # type: ignore[assignment]
    w = _in(state, body["withdrawal_id"], ("pending_approval", "approved"))
    return _unfreeze(state, cmd, cfg, w, "cancelled")


def broadcast(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    body: WithdrawalRef = cmd.body  # type: ignore[assignment]
    if body["withdrawal_id"] not in state.withdrawals:
        return _park(state, cmd, cfg)
    w = _in(state, body["withdrawal_id"], ("approved",))
    w.status = "broadcast"
    w.tx_hash = str(cmd.body.get("tx_hash", ""))
    return Applied()


def confirmed(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    """The coins left: consume the frozen amount + fee; custody pays out, revenue keeps the fee."""
    body: WithdrawalRef = cmd.body  # type: ignore[assignment]
    if body["withdrawal_id"] not in state.withdrawals:
        return _park(state, cmd, cfg)
    w = _in(state, body["withdrawal_id"], ("approved", "broadcast"))
    entry = Entry(state, cmd.id, "WITHDRAWAL", cmd.ts_ms)
    entry.user(w.account, w.asset, "frozen", -w.frozen)
    entry.system(f"custody:{w.chain}", w.asset, w.amount)
    if w.fee:
        entry.system("fee_revenue", w.asset, w.fee)
    _finish(state, cfg, w, "completed")
    return Applied(entry.close())


def failed(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    body: WithdrawalRef = cmd.body  # type: ignore[assignment]
    if body["withdrawal_id"] not in state.withdrawals:
        return _park(state, cmd, cfg)
    w = _in(state, body["withdrawal_id"], ("approved", "broadcast"))
    return _unfreeze(state, cmd, cfg, w, "failed")


def _park(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    wid = checks.present("withdrawal_id", cmd.body["withdrawal_id"])
    if sum(len(v) for v in state.parked.values()) >= cfg.parked_max:
        raise Rejected(Reason.UNKNOWN_WITHDRAWAL, f"no withdrawal {wid} for this user (and {cfg.parked_max} "
                                                  "chain events already wait for theirs)")
    state.parked.setdefault(wid, []).append([cmd.id, cmd.ts_ms, cmd.kind, dict(cmd.body)])
    return Applied(flag=Reason.PARKED, detail=f"no withdrawal {wid} yet: applied when it appears")


CHAIN_STEPS: Final = {"WithdrawalBroadcast": broadcast, "WithdrawalConfirmed": confirmed, "WithdrawalFailed": failed}


def _release_parked(state: UserState, wid: str, cfg: EngineConfig) -> tuple[LedgerLine, ...]:
    """Apply the chain events parked for `wid`, oldest first, while they apply; the rest keep waiting."""
    waiting = state.parked.get(wid)
    lines: tuple[LedgerLine, ...] = ()
    while waiting:
        cmd_id, ts_ms, kind, body = waiting[0]
        try:
            applied = CHAIN_STEPS[kind](state, Command(cmd_id, ts_ms, state.user_id, kind, body), cfg)
        except Rejected:
            break  # not applicable yet (e.g. the withdrawal awaits approval)
        lines += applied.lines
        waiting.pop(0)
    if not waiting:
        state.parked.pop(wid, None)
    return lines


def _in(state: UserState, wid: str, allowed: tuple[WithdrawalStatus, ...]) -> Withdrawal:
    w = state.withdrawals.get(wid)
    if w is None:
        raise Rejected(Reason.UNKNOWN_WITHDRAWAL, f"no withdrawal {wid} for this user")
    if w.status not in allowed:
        raise Rejected(Reason.BAD_WITHDRAWAL_STATE, f"withdrawal {wid} is {w.status}; needs {' or '.join(allowed)}")
    return w


def _unfreeze(state: UserState, cmd: Command, cfg: EngineConfig, w: Withdrawal, status: WithdrawalStatus) -> Applied:
    entry = Entry(state, cmd.id, "WITHDRAWAL_RETURN", cmd.ts_ms)
    entry.user(w.account, w.asset, "frozen", -w.frozen)
    entry.user(w.account, w.asset, "available", w.frozen)
    _finish(state, cfg, w, status)
    return Applied(entry.close())


def _finish(state: UserState, cfg: EngineConfig, w: Withdrawal, status: WithdrawalStatus) -> None:
    """The one way a withdrawal ends: its final status, then old finished ones are let go."""
    w.status = status
    state.prune_withdrawals(cfg.closed_withdrawals_kept)


def _to_sign(state: UserState, wid: str, w: Withdrawal, ts_ms: int) -> WithdrawalToSign:
    return WithdrawalToSign(wid, ts_ms, state.user_id, w.chain, w.asset, w.amount, w.address)
