"""Every kind of bad input gets its specific reason, changes nothing, and the engine goes on."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from processors.config import default_config
from processors.engine import apply
from processors.ledger import WITHDRAWAL, WITHDRAWAL_FREEZE
from processors.messages import Command
from processors.state import UserState
from tests.unit.core import ctx

CFG = default_config()
ADDR = "0x" + "ab" * 20


def funded() -> UserState:
    state, _ = apply(None, Command("open", 1, "u", "OpenAccount", {"kyc_tier": 1, "region": "DE"}), ctx(CFG))
    body = {"chain": "ethereum", "tx_hash": "0x01", "log_index": 0, "address": ADDR, "asset": "USDT",
            "amount": "100", "block_number": 1, "account": "spot"}
    state, out = apply(state, Command("ethereum:0x01:0", 2, "u", "DepositConfirmed", body), ctx(CFG))
    assert out.result.status == "ACCEPTED"
    state, out = apply(state, Command("h", 3, "u", "OrderHold",
                                      {"order_id": "o1", "account": "spot", "asset": "USDT", "amount": "10"}), ctx(CFG))
    assert out.result.status == "ACCEPTED"
    return state


def wd(**over: Any) -> dict[str, Any]:
    return {"withdrawal_id": "w1", "account": "spot", "chain": "ethereum", "asset": "USDT", "amount": "20",
            "fee": "1", "address": ADDR, **over}


def tr(amount: str = "1", src: str = "spot", dst: str = "margin", asset: str = "USDT") -> dict[str, Any]:
    return {"asset": asset, "amount": amount, "from_account": src, "to_account": dst}


CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("transfer too much", "Transfer", tr("91"), "INSUFFICIENT_FUNDS"),
    ("unknown asset", "Transfer", tr(asset="DOGE"), "UNKNOWN_ASSET"),
    ("unknown sub-account", "Transfer", tr(dst="savings"), "UNKNOWN_ACCOUNT"),
    ("isolated pair without the asset", "Transfer", tr(dst="isolated:ETH-BTC"), "UNKNOWN_ACCOUNT"),
    ("same account", "Transfer", tr(dst="spot"), "SAME_ACCOUNT"),
    ("wrong scale", "Transfer", tr("0.0000001"), "BAD_AMOUNT_SCALE"),
    ("negative", "Transfer", tr("-1"), "NON_POSITIVE_AMOUNT"),
    ("beyond 38 digits", "Transfer", tr("1" * 40), "AMOUNT_TOO_LARGE"),
    ("hold twice", "OrderHold", {"order_id": "o1", "account": "spot", "asset": "USDT", "amount": "1"},
     "DUPLICATE_ORDER_ID"),
    ("release unknown", "OrderRelease", {"order_id": "nope", "amount": None}, "UNKNOWN_HOLD"),
    ("release too much", "OrderRelease", {"order_id": "o1", "amount": "11"}, "HOLD_EXCEEDED"),
    ("fill wrong asset", "FillSettle", {"fill_id": "f", "order_id": "o1", "account": "spot", "pay_asset": "BTC",
                                        "pay_amount": "1", "receive_asset": "USDT", "receive_amount": "1",
                                        "fee_amount": "0"}, "ASSET_MISMATCH"),
    ("fill fee above proceeds", "FillSettle", {"fill_id": "f", "order_id": "o1", "account": "spot",
                                               "pay_asset": "USDT", "pay_amount": "1", "receive_asset": "BTC",
                                               "receive_amount": "0.001", "fee_amount": "0.002"}, "BAD_FEE"),
    ("withdraw to bad address", "WithdrawalRequest", wd(address="0x12"), "BAD_ADDRESS"),
    ("withdraw on unknown chain", "WithdrawalRequest", wd(chain="solana"), "UNKNOWN_CHAIN"),
    ("withdraw BTC on ethereum", "WithdrawalRequest", wd(asset="BTC", amount="0.01", fee="0.001"), "UNKNOWN_ASSET"),
    ("withdraw below minimum", "WithdrawalRequest", wd(amount="5"), "BELOW_MINIMUM"),
    ("withdraw fee too low", "WithdrawalRequest", wd(fee="0.5"), "BAD_FEE"),
    ("withdraw more than available", "WithdrawalRequest", wd(amount="90"), "INSUFFICIENT_FUNDS"),
    ("approve unknown", "WithdrawalApprove", {"withdrawal_id": "w9", "approver": "ops"}, "UNKNOWN_WITHDRAWAL"),
    ("cancel unknown", "WithdrawalCancel", {"withdrawal_id": "w9", "reason": ""}, "UNKNOWN_WITHDRAWAL"),
    ("revert unknown deposit", "DepositReverted", {"deposit_id": "ethereum:0x99:0", "reason": "reorg"},
     "UNKNOWN_DEPOSIT"),
    ("open twice", "OpenAccount", {"kyc_tier": 1, "region": "DE"}, "USER_EXISTS"),
    ("unknown kind", "Teleport", {}, "MALFORMED_COMMAND"),
]


@pytest.mark.parametrize(("why", "kind", "body", "reason"), CASES, ids=[c[0] for c in CASES])
def test_refused_with_reason_and_nothing_changes(why: str, kind: str, body: dict[str, Any], reason: str) -> None:
    state = funded()
    before = copy.deepcopy(state)
    after, out = apply(state, Command("bad", 10, "u", kind, body), ctx(CFG))
    assert (out.result.status, out.result.reason) == ("REJECTED", reason), out.result.detail
    assert out.lines == () and out.events == ()
    assert after == before, "a refusal changes nothing and is not remembered"


def test_deposit_id_must_be_the_chain_position() -> None:
    state = funded()
    body = {"chain": "ethereum", "tx_hash": "0x02", "log_index": 0, "address": ADDR, "asset": "USDT",
            "amount": "5", "block_number": 2, "account": "spot"}
    _, out = apply(state, Command("some-uuid", 5, "u", "DepositConfirmed", body), ctx(CFG))
    assert out.result.reason == "BAD_DEPOSIT_ID"


def test_a_refusal_is_not_remembered() -> None:
    """An input refused for a state that can change (no account yet, no funds yet) applies when sent again
    once it can: only accepted inputs are remembered (a redelivery after a crash is caught by positions)."""
    cmd = Command("t", 1, "ghost", "Transfer", {"asset": "USDT", "amount": "1", "from_account": "spot",
                                                "to_account": "margin"})
    state, out = apply(None, cmd, ctx(CFG))
    assert out.result.reason == "UNKNOWN_USER" and not state.opened and not state.applied
    state, _ = apply(state, Command("open", 2, "ghost", "OpenAccount", {"kyc_tier": 0, "region": "DE"}), ctx(CFG))
    _, again = apply(state, cmd, ctx(CFG))
    assert again.result.reason == "INSUFFICIENT_FUNDS", "decided again on the state it meets now"


def test_frozen_account_refuses_new_exposure_but_accepts_chain_events() -> None:
    state = funded()
    state.status = "frozen"
    _, out = apply(state, Command("t", 9, "u", "Transfer", {"asset": "USDT", "amount": "1", "from_account": "spot",
                                                             "to_account": "margin"}), ctx(CFG))
    assert out.result.reason == "ACCOUNT_FROZEN"
    body = {"chain": "ethereum", "tx_hash": "0x03", "log_index": 0, "address": ADDR, "asset": "USDT",
            "amount": "5", "block_number": 3, "account": "spot"}
    _, out = apply(state, Command("ethereum:0x03:0", 10, "u", "DepositConfirmed", body), ctx(CFG))
    assert out.result.status == "ACCEPTED"


def test_applied_window_is_bounded() -> None:
    state = funded()
    for i in range(CFG.applied_window + 50):
        state, _ = apply(state, Command(f"r{i}", 100 + i, "u", "Transfer", {
            "asset": "USDT", "amount": "1", "from_account": "spot" if i % 2 else "margin",
            "to_account": "margin" if i % 2 else "spot"}), ctx(CFG))
    assert len(state.applied) == CFG.applied_window
    assert "user/r0" not in state.applied and f"user/r{CFG.applied_window + 49}" in state.applied


def test_chain_event_ahead_of_its_withdrawal_waits_for_it() -> None:
    """After a crash the request is re-applied from the commands topic while the chain's confirmation,
    on its own topic, may already be there: it is parked and applied when the withdrawal appears."""
    state = funded()
    state, out = apply(state, Command("c1", 20, "u", "WithdrawalConfirmed", {"withdrawal_id": "w1", "tx_hash": "0x"}),
                       ctx(CFG))
    assert (out.result.status, out.result.reason, out.lines) == ("ACCEPTED", "PARKED", ())
    state, out = apply(state, Command("r1", 21, "u", "WithdrawalRequest", wd()), ctx(CFG))
    assert out.result.status == "ACCEPTED"
    assert [ln.entry_type for ln in out.lines] == [WITHDRAWAL_FREEZE] * 2 + [WITHDRAWAL] * 3
    assert {ln.entry_id for ln in out.lines if ln.entry_type == WITHDRAWAL} == {"c1"}
    assert state.withdrawals["w1"].status == "completed" and not state.parked
    assert state.balance("spot", "USDT") == [69_000_000, 10_000_000, 0]  # 100 - 21 - 10 held by o1
    state.check()


def test_parked_events_wait_for_approval_and_are_bounded() -> None:
    usdt = dataclasses.replace(CFG.rules["USDT"], auto_approve_below=1_000_000)  # 1 USDT: 50 needs an approver
    cfg = dataclasses.replace(CFG, rules={**CFG.rules, "USDT": usdt})
    state = funded()
    for i in range(cfg.parked_max):
        state, out = apply(state, Command(f"b{i}", 30 + i, "u", "WithdrawalBroadcast",
                                          {"withdrawal_id": f"x{i}", "tx_hash": "0x"}), ctx(cfg))
        assert out.result.reason == "PARKED"
    state, out = apply(state, Command("late", 99, "u", "WithdrawalBroadcast", {"withdrawal_id": "y", "tx_hash": "0x"}),
                       ctx(cfg))
    assert (out.result.status, out.result.reason) == ("REJECTED", "UNKNOWN_WITHDRAWAL")
    state, _ = apply(state, Command("r", 100, "u", "WithdrawalRequest", wd(withdrawal_id="x0", amount="50")), ctx(cfg))
    assert state.withdrawals["x0"].status == "pending_approval" and "x0" in state.parked, "waits for approval"
    state, _ = apply(state, Command("a", 101, "u", "WithdrawalApprove", {"withdrawal_id": "x0", "approver": "ops"}),
                     ctx(cfg))
    assert state.withdrawals["x0"].status == "broadcast" and "x0" not in state.parked
