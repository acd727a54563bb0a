"""Issue 10's holes, closed in the core: each test is an attack an adversarial client can make."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.batch import BatchProcessor, Source
from processors.config import default_config
from processors.engine import apply
from processors.inputs import KINDS, USER, command
from processors.messages import (
    AccountUnfreeze,
    Command,
    DepositConfirmed,
    DepositReverted,
    FillSettle,
    OpenAccount,
    OrderHold,
    OrderRelease,
    Transfer,
    WithdrawalCancel,
    WithdrawalConfirmed,
    WithdrawalFailed,
    WithdrawalRequest,
)
from processors.reasons import Reason
from processors.state import MEMORY_UNKNOWN, Accepted, UserState, accepted, entry_text
from streams.topics import RESULTS
from tests.unit.core import Engine, ctx
from tests.unit.test_batch import PARTITIONS, SOURCES, batched, encoded, user_on

CFG = default_config()
ADDR = "0x" + "11" * 20


def deposit(tx: str, amount: str = "1000", user: str = "u", account: str = "spot") -> Command:
    return command(DepositConfirmed, f"ethereum:{tx}:0", user, chain="ethereum", tx_hash=tx, log_index=0, address=ADDR,
                   asset="USDT", amount=amount, block_number=1, account=account)


def opened(user: str = "u") -> UserState:
    state, _ = apply(None, command(OpenAccount, f"{user}-open", user, kyc_tier=1, region="DE"), ctx(CFG))
    state, out = apply(state, deposit("0xfund", user=user), ctx(CFG))
    assert out.result.status == "ACCEPTED"
    return state


def transfer(cmd_id: str, amount: str = "1", src: str = "spot", dst: str = "margin") -> Command:
    return command(Transfer, cmd_id, "u", asset="USDT", amount=amount, from_account=src, to_account=dst)


def past_window(state: UserState) -> UserState:
    """Every input the window holds let go into the engine's memory, as a full window lets go its oldest: one
    more input under a window of none."""
    state, out = apply(state, transfer(f"filler-{len(state.applied)}-{state.seq}"),
                       ctx(dataclasses.replace(CFG, applied_window=0)))
    assert out.result.status == "ACCEPTED" and not state.applied and state.memory_until > Engine.now_ms
    return state


def test_a_fill_resent_after_10000_inputs_settles_once() -> None:
    state = opened()
    state, _ = apply(state, command(OrderHold, "h", "u", order_id="o1", account="spot", asset="USDT", amount="100"),
                     ctx(CFG))
    fill = command(FillSettle, "f1", "u", fill_id="x1", order_id="o1", account="spot", pay_asset="USDT",
                   pay_amount="10", receive_asset="BTC", receive_amount="0.001", fee_amount="0")
    state, first = apply(state, fill, ctx(CFG))
    assert first.result.status == "ACCEPTED" and first.lines
    for i in range(10_000):
        state, _ = apply(state, transfer(f"t{i}", src="spot" if i % 2 else "margin",
                                         dst="margin" if i % 2 else "spot"), ctx(CFG))
    btc = state.balances[("spot", "BTC")][0]
    state, again = apply(state, fill, ctx(CFG))
    assert again.result == first.result and again.lines == (), "the same input: its first answer, nothing applied"
    replayed = fill._replace(id="f1-replayed-by-the-matching-engine")
    state, other = apply(state, replayed, ctx(CFG))
    assert (other.result.status, other.result.reason) == ("REJECTED", "FILL_SETTLED")
    assert state.balances[("spot", "BTC")][0] == btc


def test_a_user_command_cannot_squat_a_deposit_id() -> None:
    state = opened()
    dep = deposit("0xcoming", "500")
    state, squat = apply(state, transfer(dep.id), ctx(CFG))  # the user's own source, the deposit's id
    assert squat.result.status == "ACCEPTED"
    state, out = apply(state, dep, ctx(CFG))
    assert (out.result.status, out.result.reason, len(out.lines)) == ("ACCEPTED", None, 2), "the deposit is credited"


def test_the_same_id_with_another_body_is_id_reused() -> None:
    state = opened()
    state, first = apply(state, transfer("t1", "1"), ctx(CFG))
    state, out = apply(state, transfer("t1", "2"), ctx(CFG))
    assert (out.result.status, out.result.reason) == ("REJECTED", "ID_REUSED")
    state, out = apply(state, command(OrderRelease, "t1", "u", order_id="o", amount=None), ctx(CFG))
    assert out.result.reason == "ID_REUSED"
    state = past_window(state)  # the engine's memory knows it
    state, out = apply(state, transfer("t1", "2"), ctx(CFG))
    assert out.result.reason == "ID_REUSED"
    state, out = apply(state, transfer("t1", "1"), ctx(CFG))
    assert out.result == first.result and out.lines == (), "a resend long after: its first answer, nothing applied"


def test_a_keyed_input_resent_past_the_window_gets_its_first_answer() -> None:
    """Orders and withdrawals have business keys, but their input ids are remembered for the horizon too:
    past the window a resend gets its first answer (not the key's refusal, which the results table would
    keep in place of the acceptance), and the same id with another key is refused, not applied (a client
    that regenerates a withdrawal id on retry does not withdraw twice)."""
    state = opened()
    request = command(WithdrawalRequest, "req-1", "u", withdrawal_id="w1", account="spot", chain="ethereum",
                      asset="USDT", amount="20", fee="1", address="0x" + "5a" * 20)
    state, first = apply(state, request, ctx(CFG))
    assert first.result.status == "ACCEPTED"
    state = past_window(state)
    balances = {k: list(v) for k, v in state.balances.items()}
    state, again = apply(state, request, ctx(CFG))
    assert again.result == first.result and again.lines == () and again.events == ()
    regenerated = command(WithdrawalRequest, "req-1", "u", withdrawal_id="w2", account="spot", chain="ethereum",
                          asset="USDT", amount="20", fee="1", address="0x" + "5a" * 20)
    state, other = apply(state, regenerated, ctx(CFG))
    assert (other.result.status, other.result.reason, other.events) == ("REJECTED", "ID_REUSED", ())
    assert {k: list(v) for k, v in state.balances.items()} == balances


def whole_results(state: UserState) -> list[list[object]]:
    """The window as versions 2 to 6 stored it: whole results (id, client time, user, kind, status, reason,
    detail, ledger lines)."""
    return [[key.partition("/")[2], ts_ms, state.user_id, kind, "ACCEPTED", reason, detail, count]
            for key, (ts_ms, kind, reason, detail, count, _) in window(state).items()]


def window(state: UserState) -> dict[str, Accepted]:
    return {key: accepted(text) for key, text in state.applied.items()}


def as_version_8(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored state's document as versions 7 and 8 had its window: keys, then entries as lists."""
    entries = [list(accepted(text)) for text in doc["applied"].values()]
    return {**doc, "v": 8, "keys": list(doc["applied"]), "applied": entries}


@given(ts_ms=st.integers(-2**63, 2**63 - 1), kind=st.sampled_from(sorted(KINDS)),
       reason=st.none() | st.sampled_from([r.value for r in Reason]), count=st.integers(0, 10**6),
       digest=st.sampled_from(["", "x0123456789abcdef", "0123456789abcdef"]), detail=st.text())
def test_a_window_entry_reads_back_as_it_was_written(ts_ms: int, kind: str, reason: str | None, count: int,
                                                     digest: str, detail: str) -> None:
    """Whatever the detail holds (the separator too: it goes last)."""
    text = entry_text(ts_ms, kind, reason, count, digest, detail)
    assert accepted(text) == (ts_ms, kind, reason, detail, count, digest)


# A version 9 state as the first commits of version 9 (a8da92b..48aa7d4, landed) stored it: the window a list of
# entries with its keys beside, as versions 7 and 8; later ones store an object of entry texts by key.
EARLY_VERSION_9 = (
    b'{"v":9,"user":"u","opened":true,"kyc":1,"region":"DE","status":"normal","seq":4,"balances":[["spot","USDT",'
    b'999000000,0,0],["margin","USDT",1000000,0,0]],"holds":{},"withdrawals":{},"parked":{},"through":{"":0},'
    b'"mu":0,"wm":1700000000000,"keys":["user/u-open","user/t1"],"closed":{},"applied":[[0,"OpenAccount",null,'
    b'"",0,"x4334d43482481f6c"],[0,"Transfer",null,"",2,"xe4cccd36833888dd"]]}'
)


def test_a_version_9_state_stored_with_its_window_as_a_list_loads_and_answers_resends() -> None:
    state = UserState.from_bytes(EARLY_VERSION_9)
    assert list(state.applied) == ["user/u-open", "user/t1"]
    state, out = apply(state, transfer("t1", "1"), ctx(CFG))
    assert out.result.status == "ACCEPTED" and out.lines == (), "the resend answered from the window"
    state, out = apply(state, transfer("t1", "2"), ctx(CFG))
    assert out.result.reason == "ID_REUSED", "another body under the id"
    assert UserState.from_bytes(state.to_bytes()).applied == state.applied


def test_a_window_stored_with_refusals_loads_without_them() -> None:
    """Windows stored before refusals stopped being remembered held them: loaded, they are dropped (a
    state stored again holds accepted inputs only)."""
    state = opened()
    state, _ = apply(state, transfer("t1", "1"), ctx(CFG))
    doc = as_version_8(json.loads(state.to_bytes()))
    doc["v"] = 5
    refused = ["t0", 1, "u", "Transfer", "REJECTED", "INSUFFICIENT_FUNDS", "", 0]
    doc["applied"] = [refused, *whole_results(state)]
    doc["keys"] = ["user/t0", *state.applied]
    old = UserState.from_bytes(json.dumps(doc).encode())
    assert list(old.applied) == list(state.applied)
    assert UserState.from_bytes(old.to_bytes()).applied == old.applied


def test_a_window_stored_before_digests_answers_from_the_memory_records() -> None:
    """A state stored at version 5 has no digests in its window: a resend is told from another input under
    the same id by the input's memory record, as before."""
    state = opened()
    state, first = apply(state, transfer("t1", "1"), ctx(CFG))
    # before version 8 every accepted input was remembered in the engine's memory as it applied
    ts_ms, kind, reason, detail, count, digest = window(state)["user/t1"]
    ctx(CFG).remember(state, "i/user/t1", (kind, digest, ts_ms, reason, detail, count), ctx(CFG).horizon())
    doc = as_version_8(json.loads(state.to_bytes()))
    doc["v"] = 5
    doc["applied"] = whole_results(state)  # no digests
    old = UserState.from_bytes(json.dumps(doc).encode())
    assert window(old)["user/t1"] == (*window(state)["user/t1"][:5], "") and old.memory_until == MEMORY_UNKNOWN
    old, out = apply(old, transfer("t1", "2"), ctx(CFG))
    assert out.result.reason == "ID_REUSED" and old.memory_until == MEMORY_UNKNOWN, "a refusal changes nothing"
    old, out = apply(old, transfer("t1", "1"), ctx(CFG))
    assert out.result == first.result and out.lines == ()
    old, out = apply(old, transfer("t2", "1"), ctx(CFG))
    # the records written as inputs applied, before version 8, are looked up for two horizons from now on
    assert out.result.status == "ACCEPTED" and old.memory_until == Engine.now_ms + 2 * CFG.dedup_horizon_ms
    assert UserState.from_bytes(old.to_bytes()).applied == old.applied, "stored again, with the digest it had"
    doc["v"] = 6  # whole results followed by their digests
    digests = [entry[5] for entry in window(state).values()]
    doc["applied"] = [[*result, digest] for result, digest in zip(whole_results(state), digests, strict=True)]
    assert UserState.from_bytes(json.dumps(doc).encode()).applied == state.applied
    # versions 7 and 8: keys, then entries as lists
    stored = json.loads(state.to_bytes())
    assert UserState.from_bytes(json.dumps(as_version_8(stored)).encode()).applied == state.applied


def test_a_window_stored_before_the_memory_is_not_forgotten_past_it() -> None:
    """A version 4 state's window had no digests, and its inputs no memory records: let go, an entry gets a
    record that knows no body, and a resend still gets its first answer and moves nothing."""
    state = opened()
    state, first = apply(state, transfer("t1", "1"), ctx(CFG))
    doc = as_version_8(json.loads(state.to_bytes()))
    doc["v"] = 4
    doc["applied"] = whole_results(state)
    del doc["keys"]
    old = UserState.from_bytes(json.dumps(doc).encode())
    assert window(old)["user/t1"][5] == "" and "i/user/t1" not in Engine.memory.written.get("u", {})
    old = past_window(old)
    balance = old.available("spot", "USDT")
    old, out = apply(old, transfer("t1", "1"), ctx(CFG))
    assert out.result == first.result and out.lines == () and old.available("spot", "USDT") == balance


def test_memory_records_with_the_earlier_digest_still_answer_resends() -> None:
    """Memory records written before the digest changed (blake2b of the items' repr) keep working."""
    state = opened()
    state, first = apply(state, transfer("t1", "1"), ctx(CFG))
    state = past_window(state)
    expires, topic, offset, data, prior = Engine.memory.written["u"]["i/user/t1"]
    assert data[1].startswith("x")
    legacy = hashlib.blake2b(repr(sorted(transfer("t1", "1").body.items())).encode(), digest_size=8).hexdigest()
    Engine.memory.written["u"]["i/user/t1"] = (expires, topic, offset, (data[0], legacy, *data[2:]), prior)
    state, out = apply(state, transfer("t1", "1"), ctx(CFG))
    assert out.result == first.result and out.lines == ()
    state, out = apply(state, transfer("t1", "2"), ctx(CFG))
    assert out.result.reason == "ID_REUSED"

def test_a_deposit_before_its_account_waits_and_is_credited_on_opening() -> None:
    dep = deposit("0xearly", "700", user="late")
    state, out = apply(None, dep, ctx(CFG))
    assert (out.result.status, out.result.reason) == ("ACCEPTED", "PARKED") and not state.opened
    state, out = apply(state, dep, ctx(CFG))
    assert out.result.reason == "PARKED" and state.parked_count() == 1, "a resend waits once"
    state, out = apply(state, command(OpenAccount, "open", "late", kyc_tier=1, region="DE"), ctx(CFG))
    assert out.result.status == "ACCEPTED" and len(out.lines) == 2 and not state.parked
    assert state.available("spot", "USDT") == 700 * 10**6


def test_parked_events_expire_by_engine_time_with_a_result() -> None:
    state, _ = apply(None, deposit("0xlost", user="ghost"), ctx(CFG))
    later = Engine.now_ms + CFG.parked_ttl_ms + 1
    state, out = apply(state, command(OpenAccount, "open", "ghost", kyc_tier=1, region="DE"), ctx(CFG, later))
    assert [(r.id, r.reason) for r in out.more] == [("ethereum:0xlost:0", "PARKED_EXPIRED")]
    assert not out.lines and state.available("spot", "USDT") == 0


def test_a_5000_digit_amount_is_refused_not_raised() -> None:
    _, out = apply(opened(), transfer("big", "9" * 5000), ctx(CFG))
    assert (out.result.status, out.result.reason) == ("REJECTED", "AMOUNT_TOO_LARGE")


def test_operator_lifts_a_risk_freeze_ledger_neutral() -> None:
    state = opened()
    state.status = "frozen"
    lift = command(AccountUnfreeze, "lift", "u", approver="risk-ops", reason="reviewed")
    _, forged = apply(state, lift._replace(source=USER), ctx(CFG))
    assert forged.result.reason == "WRONG_SOURCE" and state.status == "frozen", "a user cannot lift it"
    state, out = apply(state, lift, ctx(CFG))
    assert (out.result.status, out.lines) == ("ACCEPTED", ()) and state.status == "normal"
    assert "risk-ops" in out.result.detail


def test_a_confirmation_for_a_pruned_withdrawal_is_answered_not_parked() -> None:
    cfg = dataclasses.replace(CFG, closed_withdrawals_kept=0)
    state = opened()
    req = command(WithdrawalRequest, "r", "u", withdrawal_id="w1", account="spot", chain="ethereum", asset="USDT",
                  amount="20", fee="1", address=ADDR)
    state, _ = apply(state, req, ctx(cfg))
    state, _ = apply(state, command(WithdrawalCancel, "c", "u", withdrawal_id="w1", reason="user"), ctx(cfg))
    assert "w1" not in state.withdrawals, "pruned"
    state, out = apply(state, command(WithdrawalConfirmed, "late", "u", withdrawal_id="w1", tx_hash="0x"), ctx(cfg))
    assert (out.result.status, out.result.reason) == ("REJECTED", "WITHDRAWAL_CLOSED") and not state.parked
    state, out = apply(state, req._replace(id="r2"), ctx(cfg))
    assert out.result.reason == "DUPLICATE_WITHDRAWAL_ID", "a withdrawal id is used once"


def test_a_withdrawal_a_parked_event_failed_is_not_sent_to_sign() -> None:
    state = opened()
    state, out = apply(state, command(WithdrawalFailed, "fail", "u", withdrawal_id="w9", reason="dropped"), ctx(CFG))
    assert out.result.reason == "PARKED"
    state, out = apply(state, command(WithdrawalRequest, "r", "u", withdrawal_id="w9", account="spot", chain="ethereum",
                                      asset="USDT", amount="20", fee="1", address=ADDR), ctx(CFG))
    assert out.result.status == "ACCEPTED" and out.events == () and state.withdrawals["w9"].status == "failed"


def test_a_reverted_deposit_reincluded_is_credited_again() -> None:
    state = opened()
    dep = deposit("0xreorg", "300")
    state, _ = apply(state, dep, ctx(CFG))
    state, _ = apply(state, command(DepositReverted, "rv", "u", deposit_id=dep.id, reason="reorg"), ctx(CFG))
    before = state.available("spot", "USDT")
    state, out = apply(state, dep, ctx(CFG))
    assert out.result.status == "ACCEPTED" and len(out.lines) == 2
    assert state.available("spot", "USDT") == before + 300 * 10**6
    state, again = apply(state, dep, ctx(CFG))
    assert again.lines == (), "and once only"


ASTRAL = "\U0001d431"  # printable, 4 bytes of UTF-8: an id of them is a quarter as long in characters


@pytest.mark.parametrize("char, rich", [("x", False), (ASTRAL, True)], ids=["ascii", "4-byte-json-fallback"])
def test_caps_bound_what_a_user_can_make_the_engine_keep(char: str, rich: bool) -> None:
    state = opened()
    if rich:  # 19 ETH in wei passes 64 bits: orjson refuses the state and the json module writes it
        eth = command(DepositConfirmed, "ethereum:0xeth:0", "u", chain="ethereum", tx_hash="0xeth", log_index=0,
                      address=ADDR, asset="ETH", amount="19", block_number=1, account="spot")
        state, out = apply(state, eth, ctx(CFG))
        assert out.result.status == "ACCEPTED" and state.available("spot", "ETH") > 2**64
    for i in range(CFG.funded_accounts_max + 5):
        state, out = apply(state, transfer(f"iso{i}", "1", dst=f"isolated:X{i:02d}-USDT"), ctx(CFG))
        assert out.result.reason == "UNKNOWN_ACCOUNT", "isolated pairs are listed markets"
    for too_long in ("long-id" * 50, ASTRAL * (CFG.id_max // 4 + 1)):
        _, out = apply(state, transfer(too_long), ctx(CFG))
        assert out.result.reason == "MALFORMED_COMMAND", too_long
    for escaped in ('quote"d', "back\\slash"):  # stored escaped, in twice the bytes
        _, out = apply(state, command(OrderHold, "h", "u", order_id=escaped, account="spot", asset="USDT",
                                      amount="0.01"), ctx(CFG))
        assert out.result.reason == "MALFORMED_COMMAND", escaped
    # ids as many bytes as allowed, and each open order with as many fill ids as it keeps
    longest = char * (CFG.id_max // len(char.encode()))

    def longest_id(prefix: str) -> str:
        return prefix + longest[len(prefix.encode()) // len(char.encode()) + 1:]

    for i in range(CFG.open_holds_max):
        order = longest_id(f"{i:04d}")
        assert len(order.encode()) <= CFG.id_max
        hold = command(OrderHold, f"h{i}", "u", order_id=order, account="spot", asset="USDT", amount="0.01")
        state, out = apply(state, hold, ctx(CFG))
        assert out.result.status == "ACCEPTED", out.result
        for n in range(CFG.fills_per_hold + 1):
            fill = command(FillSettle, f"f{i}/{n}", "u", fill_id=longest_id(str(n)), order_id=order,
                           account="spot", pay_asset="USDT", pay_amount="0.000001", receive_asset="BTC",
                           receive_amount="0.00000001", fee_amount="0")
            state, out = apply(state, fill, ctx(CFG))
            assert out.result.status == "ACCEPTED", out.result
    assert all(len(held.fills) == CFG.fills_per_hold for held in state.holds.values())
    _, out = apply(state, command(OrderHold, "one-more", "u", order_id="x", account="spot", asset="USDT",
                                  amount="0.01"), ctx(CFG))
    assert out.result.reason == "TOO_MANY_OPEN_HOLDS"
    # 677 KB in ASCII, 666 KB in 4-byte characters: 1,000 order ids and 4,000 fill ids of 125 to 128 bytes
    assert len(state.to_bytes()) < 1_000_000, "under Kafka's default record limit with the most holds allowed"


def test_dust_and_invented_sub_accounts_leave_the_state_small() -> None:
    state = opened()
    for i in range(20_000):
        state, _ = apply(state, deposit(f"0xdust{i}", "0.000001"), ctx(CFG))
        state, _ = apply(state, transfer(f"sub{i}", "0.000001", dst=["margin", "futures", "staking"][i % 3]), ctx(CFG))
    assert len(state.to_bytes()) < 64_000
    assert len(state.balances) <= CFG.funded_accounts_max * len(CFG.assets)


def test_the_step_quarantines_an_input_the_core_fails_on() -> None:
    user = user_on(1)
    stored: dict[str, UserState] = {}
    inputs = [(Source("t.commands", 1, n, b"k", 1_700_000_000_000), encoded(cmd)) for n, cmd in enumerate([
        command(OpenAccount, "open", user, kyc_tier=1, region="DE"),
        command(OpenAccount, "boom", user, kyc_tier=1, region="DE"),
        command(Transfer, "next", user, asset="USDT", amount="1", from_account="spot", to_account="margin"),
    ])]
    step = BatchProcessor(CFG, PARTITIONS, SOURCES, fail_on="boom").run(inputs, lambda u, p: stored.get(u))
    results = {r["id"]: (r["status"], r["reason"]) for _, r in batched(step, RESULTS, "ResultBatch", "results")}
    assert results == {"open": ("ACCEPTED", None), "boom": ("REJECTED", "INTERNAL_ERROR"),
                       "next": ("REJECTED", "INSUFFICIENT_FUNDS")}
    assert step.quarantined == 1 and step.dead_letters == 1
    assert step.states[user][1].opened, "the user's state is as before the poisoned input"
