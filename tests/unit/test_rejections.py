"""Every kind of bad input gets its specific reason, changes nothing, and the engine goes on."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from processors.config import default_config
from processors.engine import apply
from processors.inputs import command
from processors.ledger import WITHDRAWAL, WITHDRAWAL_FREEZE
from processors.messages import (
    Command,
    DepositConfirmed,
    DepositReverted,
    FillSettle,
    OpenAccount,
    OrderHold,
    OrderRelease,
    Transfer,
    WithdrawalApprove,
    WithdrawalBroadcast,
    WithdrawalCancel,
    WithdrawalConfirmed,
    WithdrawalRequest,
)
from processors.state import UserState
from tests.unit.core import ctx

CFG = default_config()
ADDR = "0x" + "ab" * 20


def funded() -> UserState:
    state, _ = apply(None, command(OpenAccount, "open", "u", kyc_tier=1, region="DE"), ctx(CFG))
    state, out = apply(state, deposit("ethereum:0x01:0", "0x01", "100"), ctx(CFG))
    assert out.result.status == "ACCEPTED"
    state, out = apply(state, command(OrderHold, "h", "u", order_id="o1", account="spot", asset="USDT", amount="10"),
                       ctx(CFG))
    assert out.result.status == "ACCEPTED"
    return state


def deposit(cmd_id: str, tx: str, amount: str) -> Command:
    return command(DepositConfirmed, cmd_id, "u", chain="ethereum", tx_hash=tx, log_index=0, address=ADDR,
                   asset="USDT", amount=amount, block_number=1, account="spot")


def wd(cmd_id: str = "bad", *, withdrawal_id: str = "w1", chain: str = "ethereum", asset: str = "USDT",
       amount: str = "20", fee: str = "1", address: str = ADDR) -> Command:
    return command(WithdrawalRequest, cmd_id, "u", withdrawal_id=withdrawal_id, account="spot", chain=chain,
                   asset=asset, amount=amount, fee=fee, address=address)


def tr(amount: str = "1", src: str = "spot", dst: str = "margin", asset: str = "USDT", cmd_id: str = "bad") -> Command:
    return command(Transfer, cmd_id, "u", asset=asset, amount=amount, from_account=src, to_account=dst)


CASES: list[tuple[str, Command, str]] = [
    ("transfer too much", tr("91"), "INSUFFICIENT_FUNDS"),
    ("unknown asset", tr(asset="DOGE"), "UNKNOWN_ASSET"),
    ("unknown sub-account", tr(dst="savings"), "UNKNOWN_ACCOUNT"),
    ("isolated pair without the asset", tr(dst="isolated:ETH-BTC"), "UNKNOWN_ACCOUNT"),
    ("same account", tr(dst="spot"), "SAME_ACCOUNT"),
    ("wrong scale", tr("0.0000001"), "BAD_AMOUNT_SCALE"),
    ("negative", tr("-1"), "NON_POSITIVE_AMOUNT"),
    ("beyond 38 digits", tr("1" * 40), "AMOUNT_TOO_LARGE"),
    ("hold twice", command(OrderHold, "bad", "u", order_id="o1", account="spot", asset="USDT", amount="1"),
     "DUPLICATE_ORDER_ID"),
    ("release unknown", command(OrderRelease, "bad", "u", order_id="nope", amount=None), "UNKNOWN_HOLD"),
    ("release too much", command(OrderRelease, "bad", "u", order_id="o1", amount="11"), "HOLD_EXCEEDED"),
    ("fill wrong asset", command(FillSettle, "bad", "u", fill_id="f", order_id="o1", account="spot", pay_asset="BTC",
                                 pay_amount="1", receive_asset="USDT", receive_amount="1", fee_amount="0"),
     "ASSET_MISMATCH"),
    ("fill fee above proceeds", command(FillSettle, "bad", "u", fill_id="f", order_id="o1", account="spot",
                                        pay_asset="USDT", pay_amount="1", receive_asset="BTC", receive_amount="0.001",
                                        fee_amount="0.002"), "BAD_FEE"),
    ("withdraw to bad address", wd(address="0x12"), "BAD_ADDRESS"),
    ("withdraw on unknown chain", wd(chain="solana"), "UNKNOWN_CHAIN"),
    ("withdraw BTC on ethereum", wd(asset="BTC", amount="0.01", fee="0.001"), "UNKNOWN_ASSET"),
    ("withdraw below minimum", wd(amount="5"), "BELOW_MINIMUM"),
    ("withdraw fee too low", wd(fee="0.5"), "BAD_FEE"),
    ("withdraw more than available", wd(amount="90"), "INSUFFICIENT_FUNDS"),
    ("approve unknown", command(WithdrawalApprove, "bad", "u", withdrawal_id="w9", approver="ops"),
     "UNKNOWN_WITHDRAWAL"),
    ("cancel unknown", command(WithdrawalCancel, "bad", "u", withdrawal_id="w9", reason=""), "UNKNOWN_WITHDRAWAL"),
    ("revert unknown deposit", command(DepositReverted, "bad", "u", deposit_id="ethereum:0x99:0", reason="reorg"),
     "UNKNOWN_DEPOSIT"),
    ("open twice", command(OpenAccount, "bad", "u", kyc_tier=1, region="DE"), "USER_EXISTS"),
    # Deliberately no registered kind, so no builder: a raw Command as a client outside this code could send.
    ("unknown kind", Command("bad", 0, "u", "Teleport", {}), "MALFORMED_COMMAND"),
]


@pytest.mark.parametrize(("why", "cmd", "reason"), CASES, ids=[c[0] for c in CASES])
def test_refused_with_reason_and_nothing_changes(why: str, cmd: Command, reason: str) -> None:
    state = funded()
    before = copy.deepcopy(state)
    after, out = apply(state, cmd, ctx(CFG))
    assert (out.result.status, out.result.reason) == ("REJECTED", reason), out.result.detail
    assert out.lines == () and out.events == ()
    assert after == before, "a refusal changes nothing and is not remembered"


def test_deposit_id_must_be_the_chain_position() -> None:
    state = funded()
    _, out = apply(state, deposit("some-uuid", "0x02", "5"), ctx(CFG))
    assert out.result.reason == "BAD_DEPOSIT_ID"


def test_a_refusal_is_not_remembered() -> None:
    """An input refused for a state that can change (no account yet, no funds yet) applies when sent again
    once it can: only accepted inputs are remembered (a redelivery after a crash is caught by positions)."""
    cmd = command(Transfer, "t", "ghost", asset="USDT", amount="1", from_account="spot", to_account="margin")
    state, out = apply(None, cmd, ctx(CFG))
    assert out.result.reason == "UNKNOWN_USER" and not state.opened and not state.applied
    state, _ = apply(state, command(OpenAccount, "open", "ghost", kyc_tier=0, region="DE"), ctx(CFG))
    _, again = apply(state, cmd, ctx(CFG))
    assert again.result.reason == "INSUFFICIENT_FUNDS", "decided again on the state it meets now"


def test_frozen_account_refuses_new_exposure_but_accepts_chain_events() -> None:
    state = funded()
    state.status = "frozen"
    _, out = apply(state, tr(cmd_id="t"), ctx(CFG))
    assert out.result.reason == "ACCOUNT_FROZEN"
    _, out = apply(state, deposit("ethereum:0x03:0", "0x03", "5"), ctx(CFG))
    assert out.result.status == "ACCEPTED"


def test_applied_window_is_bounded() -> None:
    state = funded()
    for i in range(CFG.applied_window + 50):
        state, _ = apply(state, tr(src="spot" if i % 2 else "margin", dst="margin" if i % 2 else "spot",
                                   cmd_id=f"r{i}"), ctx(CFG))
    assert len(state.applied) == CFG.applied_window
    assert "user/r0" not in state.applied and f"user/r{CFG.applied_window + 49}" in state.applied


def test_chain_event_ahead_of_its_withdrawal_waits_for_it() -> None:
    """After a crash the request is re-applied from the commands topic while the chain's confirmation,
    on its own topic, may already be there: it is parked and applied when the withdrawal appears."""
    state = funded()
    state, out = apply(state, command(WithdrawalConfirmed, "c1", "u", withdrawal_id="w1", tx_hash="0x"), ctx(CFG))
    assert (out.result.status, out.result.reason, out.lines) == ("ACCEPTED", "PARKED", ())
    state, out = apply(state, wd("r1"), ctx(CFG))
    assert out.result.status == "ACCEPTED"
    assert [ln.entry_type for ln in out.lines] == [WITHDRAWAL_FREEZE] * 2 + [WITHDRAWAL] * 3
    assert {ln.entry_id for ln in out.lines if ln.entry_type == WITHDRAWAL} == {"chain/c1"}
    assert state.withdrawals["w1"].status == "completed" and not state.parked
    assert state.balance("spot", "USDT") == [69_000_000, 10_000_000, 0]  # 100 - 21 - 10 held by o1
    state.check()


def test_parked_events_wait_for_approval_and_are_bounded() -> None:
    usdt = dataclasses.replace(CFG.rules["USDT"], auto_approve_below=1_000_000)  # 1 USDT: 50 needs an approver
    cfg = dataclasses.replace(CFG, rules={**CFG.rules, "USDT": usdt})
    state = funded()
    for i in range(cfg.parked_max):
        state, out = apply(state, command(WithdrawalBroadcast, f"b{i}", "u", withdrawal_id=f"x{i}", tx_hash="0x"),
                           ctx(cfg))
        assert out.result.reason == "PARKED"
    state, out = apply(state, command(WithdrawalBroadcast, "late", "u", withdrawal_id="y", tx_hash="0x"), ctx(cfg))
    assert (out.result.status, out.result.reason) == ("REJECTED", "UNKNOWN_WITHDRAWAL")
    state, _ = apply(state, wd("r", withdrawal_id="x0", amount="50"), ctx(cfg))
    assert state.withdrawals["x0"].status == "pending_approval" and "x0" in state.parked, "waits for approval"
    state, _ = apply(state, command(WithdrawalApprove, "a", "u", withdrawal_id="x0", approver="ops"), ctx(cfg))
    assert state.withdrawals["x0"].status == "broadcast" and "x0" not in state.parked
