"""The engine's memory records and states survive the store exactly: amounts in minor units pass 64 bits (100 ETH is
10**20 wei), which a fast JSON library refuses to write and reads back as a float. An accepted input's id goes to
the memory when the state's window lets it go, and is found there as long as it lives."""

from __future__ import annotations

import json
from typing import Any

from processors.config import DAY_MS
from processors.inputs import command
from processors.messages import DepositConfirmed, DepositReverted, WithdrawalBroadcast, WithdrawalConfirmed
from tests.unit.test_clock_tick import CFG, T0, USER, Partition, deposit, open_account, results, tick, transfer

WEI_100_ETH = 10**20


def test_a_100_eth_deposit_is_stored_and_reversed_to_the_wei() -> None:
    part = Partition()
    dep = command(DepositConfirmed, "ethereum:0xbig:0", USER, chain="ethereum", tx_hash="0xbig", log_index=0,
                  address="0x" + "11" * 20, asset="ETH", amount="100", block_number=1, account="spot")
    first = part.step(open_account(T0), ("t.chain-events", T0, dep._replace(ts_ms=T0)))
    assert results(first)[dep.id]["status"] == "ACCEPTED"
    stored = json.loads(part.store.data[f"\x00m/{USER}\x00d/{dep.id}".encode()])
    assert stored[3][1] == WEI_100_ETH and isinstance(stored[3][1], int)
    credited = part.store.load(USER, 0)
    assert credited is not None and credited.balances[("spot", "ETH")][0] == WEI_100_ETH, "the state too"

    # a later step reads the record back from the store (not from the step that wrote it)
    revert = command(DepositReverted, "ethereum:0xbig:0/reverted", USER, deposit_id=dep.id, reason="reorg")
    second = part.step(("t.chain-events", T0 + 1, revert._replace(ts_ms=T0 + 1)))
    assert results(second)[revert.id]["status"] == "ACCEPTED"
    state = part.store.load(USER, 0)
    assert state is not None and ("spot", "ETH") not in state.balances, "all 10**20 wei taken back, none left"


def input_records(part: Partition) -> dict[str, list[Any]]:
    return {k.split("\x00i/")[1]: v for k, v in part.store.memory().items() if "\x00i/" in k}


def test_an_input_id_goes_to_the_memory_when_the_window_lets_it_go() -> None:
    part = Partition()
    window = CFG.applied_window
    # a deposit is deduplicated by its record, not by the window
    part.step(open_account(T0), deposit(T0, "0xfund"), *(transfer(T0 + 1 + i, f"t{i}") for i in range(window - 1)))
    state = part.store.load(USER, 0)
    assert state is not None and len(state.applied) == window
    assert input_records(part) == {} and state.memory_until == 0, "a window not full yet: nothing in the memory"

    later = T0 + DAY_MS
    part.step(transfer(later, "t-last"))  # the window lets the opening go, a horizon from now
    assert list(input_records(part)) == ["user/open"]
    assert input_records(part)["user/open"][0] == later + CFG.dedup_horizon_ms
    state = part.store.load(USER, 0)
    assert state is not None and state.memory_until == later + CFG.dedup_horizon_ms and "user/open" not in state.applied

    again = results(part.step(open_account(later + 1)))  # resent past the window: its first answer, from the memory
    assert (again["open"]["status"], again["open"]["reason"]) == ("ACCEPTED", None)
    other = results(part.step(transfer(later + 2, "open")))  # the same id, another body
    assert other["open"]["reason"] == "ID_REUSED"


def test_a_chain_event_resent_after_its_waiting_state_was_dropped_waits_again() -> None:
    """A user who never opens an account is not stored once nothing waits, and the memory records of a state
    never stored do not count (processors.context): a chain event resent after its wait expired waits again,
    and is applied if the account opens this time. Nothing applies twice: it never applied."""
    part = Partition()
    confirmed = command(WithdrawalConfirmed, "c1", USER, withdrawal_id="w1", tx_hash="0x" + "ab" * 32)
    first = results(part.step(("t.chain-events", T0, confirmed._replace(ts_ms=T0))))["c1"]
    assert (first["status"], first["reason"]) == ("ACCEPTED", "PARKED")
    expired = T0 + CFG.parked_ttl_ms + CFG.sweep_grace_ms + CFG.sweep_period_ms
    assert results(part.step(tick(expired)))["c1"]["reason"] == "PARKED_EXPIRED"
    assert part.store.load(USER, 0) is None and input_records(part) == {}
    again = part.step(("t.chain-events", expired + 1, confirmed._replace(ts_ms=expired + 1)))
    assert results(again)["c1"]["reason"] == "PARKED"
    state = part.store.load(USER, 0)
    assert state is not None and state.parked_count() == 1


def test_an_input_let_go_by_one_from_a_topic_read_behind_keeps_its_horizon() -> None:
    """Engine time is in order within one topic only. A chain event from a backlog days behind the commands
    topic lets a transfer go: the transfer's record still lasts a horizon from when it applied, so its resend
    6.5 days later (inside the topics' 7-day retention) gets its first answer and moves nothing (found by
    an adversarial review: the record expired a horizon from the backlog event's time)."""
    part = Partition()
    part.step(open_account(T0), deposit(T0, "0xfund"))
    applied_at = T0 + 2 * DAY_MS  # the commands topic is read 2 days ahead of the chain events
    first = results(part.step(transfer(applied_at, "y")))["y"]
    part.step(*(transfer(applied_at, f"f{i}") for i in range(CFG.applied_window - 1)))
    late = command(WithdrawalBroadcast, "wb-1", USER, withdrawal_id="w-unknown", tx_hash="0x" + "ab" * 32)
    assert results(part.step(("t.chain-events", T0 + 1, late._replace(ts_ms=T0 + 1))))["wb-1"]["status"] == "ACCEPTED"
    assert input_records(part)["user/y"][0] >= applied_at + CFG.dedup_horizon_ms
    state = part.store.load(USER, 0)
    assert state is not None and state.memory_until >= applied_at + CFG.dedup_horizon_ms
    before = state.available("spot", "USDT")
    resent_at = applied_at + 6 * DAY_MS + DAY_MS // 2
    again = results(part.step(transfer(resent_at, "y")))["y"]
    assert again == first, "its first answer"
    state = part.store.load(USER, 0)
    assert state is not None and state.available("spot", "USDT") == before, "nothing moved"
