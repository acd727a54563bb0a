"""The core's one entry point: apply(state, command, config) -> (state, outcome).

Every handler checks everything before it changes anything, so a refused input leaves the state
exactly as it was (never half-applied). The state is updated in place for speed; callers that need
the old state keep a copy (the tests do). An input id seen within the recent window returns the very
same result again and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from processors import accounts, deposits, orders, withdrawals
from processors.applied import Applied
from processors.config import EngineConfig
from processors.messages import Command, OpenAccount, Outcome, Result, build
from processors.money import Rejected
from processors.reasons import Reason
from processors.state import UserState

Handler = Callable[[UserState, Command, EngineConfig], Applied]

HANDLERS: Final[dict[str, Handler]] = {
    "DepositSeen": deposits.seen,
    "DepositConfirmed": deposits.confirmed,
    "DepositReverted": deposits.reverted,
    "OrderHold": orders.hold,
    "OrderRelease": orders.release,
    "FillSettle": orders.fill,
    "Transfer": accounts.transfer,
    "WithdrawalRequest": withdrawals.request,
    "WithdrawalApprove": withdrawals.approve,
    "WithdrawalCancel": withdrawals.cancel,
    "WithdrawalBroadcast": withdrawals.broadcast,
    "WithdrawalConfirmed": withdrawals.confirmed,
    "WithdrawalFailed": withdrawals.failed,
}
# A risk freeze stops the user from adding exposure or moving money out; the chain and the matching
# engine still report what already happened, and the user may still reduce what is held.
BLOCKED_WHEN_FROZEN: Final = frozenset({"OrderHold", "Transfer", "WithdrawalRequest", "WithdrawalApprove"})


def apply(state: UserState | None, cmd: Command, cfg: EngineConfig) -> tuple[UserState, Outcome]:
    if state is None:
        state = UserState(cmd.user_id, opened=False)
    assert state.user_id == cmd.user_id, f"{cmd.id} for {cmd.user_id} applied to {state.user_id}"
    prior = state.applied.get(cmd.id)
    if prior is not None:
        return state, build(Outcome, (prior, (), ()))
    seq_before = state.seq
    try:
        if cmd.kind == "OpenAccount":
            _open_account(state, cmd)
            applied = Applied()
        elif not state.opened:
            raise Rejected(Reason.UNKNOWN_USER, f"user {cmd.user_id} has no account: send OpenAccount first")
        elif cmd.kind not in HANDLERS:
            raise Rejected(Reason.MALFORMED_COMMAND, f"unknown command kind {cmd.kind!r}")
        elif state.status == "frozen" and cmd.kind in BLOCKED_WHEN_FROZEN:
            raise Rejected(Reason.ACCOUNT_FROZEN, "the account is frozen by risk; contact support")
        else:
            applied = HANDLERS[cmd.kind](state, cmd, cfg)
    except Rejected as refused:
        assert state.seq == seq_before, f"{cmd.id} refused after writing ledger lines"
        result = build(Result, (cmd.id, cmd.ts_ms, cmd.user_id, cmd.kind, "REJECTED", refused.reason.value,
                                refused.detail, 0))
        state.remember(result, cfg.applied_window)
        return state, build(Outcome, (result, (), ()))
    assert state.seq == seq_before + len(applied.lines), "every line advances the user's sequence once"
    flag = applied.flag.value if applied.flag is not None else None
    lines = applied.lines
    result = build(Result, (cmd.id, cmd.ts_ms, cmd.user_id, cmd.kind, "ACCEPTED", flag, applied.detail, len(lines)))
    state.remember(result, cfg.applied_window)
    return state, build(Outcome, (result, lines, applied.events))


def _open_account(state: UserState, cmd: Command) -> None:
    body: OpenAccount = cmd.body  # type: ignore[assignment]
    if state.opened:
        raise Rejected(Reason.USER_EXISTS, f"user {cmd.user_id} already has an account")
    if not 0 <= body["kyc_tier"] <= 3:
        raise Rejected(Reason.MALFORMED_COMMAND, "kyc_tier must be 0..3")
    assert not state.balances and state.seq == 0, "an unopened account never holds funds"
    state.opened, state.kyc_tier, state.region = True, body["kyc_tier"], body["region"]
