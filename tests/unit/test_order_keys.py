"""Order ids and fill ids, once (processors.orders): the state keeps the recent closed orders and each open
order's latest fill ids; what it lets go is in the engine's memory for the dedup horizon, looked up only
while the state's `memory_until` says it let go of any. Run through the step over a store like the worker's."""

from __future__ import annotations

import json
from typing import Any

from processors.config import EngineConfig, with_overrides
from processors.engine import apply
from processors.inputs import command
from processors.messages import Command, FillSettle, OrderHold, OrderRelease
from processors.state import MEMORY_UNKNOWN, UserState
from tests.unit.core import Engine, ctx
from tests.unit.test_clock_tick import CFG, T0, USER, Partition, deposit, open_account, results, user_input
from tests.unit.test_exactly_once import as_version_8, opened

KEEP_ONE = with_overrides(CFG, {"closed_orders_kept": 1, "fills_per_hold": 1})


def hold(ts_ms: int, cmd_id: str, order: str, amount: str = "10") -> tuple[str, int, Command]:
    return user_input(ts_ms, command(OrderHold, cmd_id, USER, order_id=order, account="spot", asset="USDT",
                                     amount=amount))


def fill(ts_ms: int, cmd_id: str, order: str, fill_id: str, pay: str = "1") -> tuple[str, int, Command]:
    return user_input(ts_ms, command(FillSettle, cmd_id, USER, fill_id=fill_id, order_id=order, account="spot",
                                     pay_asset="USDT", pay_amount=pay, receive_asset="BTC", receive_amount="0.0001",
                                     fee_amount="0"))


def release(ts_ms: int, cmd_id: str, order: str) -> tuple[str, int, Command]:
    return user_input(ts_ms, command(OrderRelease, cmd_id, USER, order_id=order, amount=None))


def order_records(part: Partition) -> dict[str, list[Any]]:
    """The memory records of orders: `o/<order>` (closed) and `fill/<length>/<order>/<fill>` (fill ids)."""
    return {k.split("\x00", 2)[2]: v for k, v in part.store.memory().items()
            if k.split("\x00", 2)[2].startswith(("o/", "fill/"))}


def reason(part: Partition, *inputs: tuple[str, int, Command]) -> str:
    (out,) = results(part.step(*inputs)).values()
    return str(out["reason"] if out["status"] == "REJECTED" else out["status"])


def stored(part: Partition) -> UserState:
    state = part.store.load(USER, 0)
    assert state is not None
    return state


def test_orders_the_state_keeps_cost_no_memory_record_and_apply_once() -> None:
    part = Partition()
    part.step(open_account(T0), deposit(T0, "0xfund"))
    for n in range(3):
        order = f"o{n}"
        part.step(hold(T0 + n, f"h{n}", order), fill(T0 + n, f"f{n}", order, "x"), release(T0 + n, f"r{n}", order))
    part.step(hold(T0 + 5, "h9", "o9"), fill(T0 + 5, "f9", "o9", "x"))
    assert order_records(part) == {} and stored(part).memory_until == 0, "nothing let go: no record, no lookup"
    assert reason(part, fill(T0 + 6, "f9-replayed", "o9", "x")) == "FILL_SETTLED", "the open order keeps its fills"
    assert reason(part, hold(T0 + 6, "h0-again", "o0")) == "DUPLICATE_ORDER_ID"
    assert reason(part, fill(T0 + 6, "f0-late", "o0", "y")) == "ORDER_CLOSED"
    assert stored(part).holds["o9"].fills == ["x"] and list(stored(part).closed) == ["o0", "o1", "o2"]
    # a horizon after it closed, the id is free again, as it was when every closed order went to the memory
    assert reason(part, hold(T0 + CFG.dedup_horizon_ms, "h0-later", "o0")) == "ACCEPTED"


def test_a_closed_order_the_state_lets_go_is_found_in_the_memory_for_the_horizon() -> None:
    part = Partition(KEEP_ONE)
    part.step(open_account(T0), deposit(T0, "0xfund"))
    part.step(hold(T0, "h1", "o1"), release(T0 + 1, "r1", "o1"))
    assert order_records(part) == {}
    part.step(hold(T0 + 2, "h2", "o2"), release(T0 + 3, "r2", "o2"))  # lets o1 go: a horizon from its closing
    expires = T0 + 1 + CFG.dedup_horizon_ms
    assert list(order_records(part)) == ["o/o1"] and order_records(part)["o/o1"][0] == expires
    state = stored(part)
    assert list(state.closed) == ["o2"] and state.memory_until == expires
    assert reason(part, hold(T0 + 4, "h1-again", "o1")) == "DUPLICATE_ORDER_ID"
    assert reason(part, release(T0 + 4, "r1-again", "o1")) == "ORDER_CLOSED"
    # past the horizon the id is free again, as it was when every closed order went to the memory
    assert reason(part, hold(expires, "h1-later", "o1")) == "ACCEPTED"


def test_a_fill_id_its_open_order_lets_go_still_settles_once() -> None:
    part = Partition(KEEP_ONE)
    part.step(open_account(T0), deposit(T0, "0xfund"))
    part.step(hold(T0, "h1", "o1"), fill(T0 + 1, "f1", "o1", "x1"))
    part.step(fill(T0 + 2, "f2", "o1", "x2"))  # lets x1 go
    assert list(order_records(part)) == ["fill/2/o1/x1"] and stored(part).holds["o1"].fills == ["x2"]
    btc = stored(part).available("spot", "BTC")
    assert reason(part, fill(T0 + 3, "f1-replayed", "o1", "x1")) == "FILL_SETTLED"
    assert reason(part, fill(T0 + 3, "f2-replayed", "o1", "x2")) == "FILL_SETTLED"
    assert stored(part).available("spot", "BTC") == btc and stored(part).holds["o1"].remaining == 8_000_000
    # the fill that closes the order takes its fill ids along: every later fill on it is ORDER_CLOSED
    part.step(fill(T0 + 4, "f3", "o1", "x3", pay="8"))
    assert reason(part, fill(T0 + 5, "f3-replayed", "o1", "x3")) == "ORDER_CLOSED"


def test_orders_of_a_state_stored_before_version_9_are_looked_up_in_the_memory() -> None:
    """Before version 9 every closed order and fill id went to the memory as it applied, past the state's
    `memory_until`: a state read from then looks them up until two horizons after its next accepted input."""
    state = opened()
    hold_o1 = command(OrderHold, "h1", "u", order_id="o1", account="spot", asset="USDT", amount="100")
    state, _ = apply(state, hold_o1, ctx(CFG))
    x1 = command(FillSettle, "f1", "u", fill_id="x1", order_id="o1", account="spot", pay_asset="USDT",
                 pay_amount="10", receive_asset="BTC", receive_amount="0.001", fee_amount="0")
    state, _ = apply(state, x1, ctx(CFG))
    # as the code before version 9 wrote them
    ctx(CFG).remember(state, "f/o1/x1", 1, ctx(CFG).horizon())
    ctx(CFG).remember(state, "o/o0", 1, ctx(CFG).horizon())
    doc = as_version_8(json.loads(state.to_bytes()))
    doc["holds"] = {k: v[:3] for k, v in doc["holds"].items()}
    del doc["closed"]
    old = UserState.from_bytes(json.dumps(doc).encode())
    assert old.holds["o1"].fills == [] and old.memory_until == MEMORY_UNKNOWN
    old, out = apply(old, x1._replace(id="f1-replayed"), ctx(CFG))
    assert out.result.reason == "FILL_SETTLED" and old.memory_until == MEMORY_UNKNOWN, "a refusal changes nothing"
    hold_o0 = hold_o1._replace(id="h0", body={**hold_o1.body, "order_id": "o0"})
    old, out = apply(old, hold_o0, ctx(CFG))
    assert out.result.reason == "DUPLICATE_ORDER_ID"
    old, out = apply(old, command(OrderRelease, "r1", "u", order_id="o1", amount="1"), ctx(CFG))
    assert out.result.status == "ACCEPTED" and old.memory_until == Engine.now_ms + 2 * CFG.dedup_horizon_ms
    old, out = apply(old, x1._replace(id="f1-replayed-again"), ctx(CFG, Engine.now_ms + CFG.dedup_horizon_ms - 1))
    assert out.result.reason == "FILL_SETTLED", "still looked up"


def test_fill_ids_of_two_orders_never_shadow_each_other() -> None:
    """Ids may hold "/": order "a/b" with fill "c" let go must not settle fill "b/c" of order "a"."""
    part = Partition(KEEP_ONE)
    part.step(open_account(T0), deposit(T0, "0xfund"))
    part.step(hold(T0, "h1", "a/b"), hold(T0, "h2", "a"))
    part.step(fill(T0 + 1, "f1", "a/b", "c"), fill(T0 + 2, "f2", "a/b", "d"))  # lets "c" of "a/b" go
    assert list(order_records(part)) == ["fill/3/a/b/c"]
    assert reason(part, fill(T0 + 3, "f3", "a", "b/c")) == "ACCEPTED"
    assert reason(part, fill(T0 + 4, "f1-replayed", "a/b", "c")) == "FILL_SETTLED"


SMALLER = with_overrides(CFG, {"closed_orders_kept": 2, "fills_per_hold": 2})


def shrink_to(part: Partition, cfg: EngineConfig) -> None:
    """The same stored states, read under smaller caps (a config override, or a later release's defaults)."""
    part.processor.cfg = cfg


def test_closing_an_order_under_a_smaller_closed_orders_kept_trims_to_it() -> None:
    part = Partition()
    part.step(open_account(T0), deposit(T0, "0xfund"))
    for n in range(5):
        part.step(hold(T0 + n, f"h{n}", f"o{n}", "1"), release(T0 + n, f"r{n}", f"o{n}"))
    part.step(hold(T0 + 10, "h9", "o9", "1"))
    shrink_to(part, SMALLER)
    assert reason(part, release(T0 + 11, "r9", "o9")) == "ACCEPTED"
    assert list(stored(part).closed) == ["o4", "o9"] and sorted(order_records(part)) == [f"o/o{n}" for n in range(4)]
    assert reason(part, hold(T0 + 12, "h0-again", "o0")) == "DUPLICATE_ORDER_ID"


def test_a_fill_under_a_smaller_fills_per_hold_trims_to_it() -> None:
    part = Partition()
    part.step(open_account(T0), deposit(T0, "0xfund"))
    part.step(hold(T0, "h1", "o1", "50"), *(fill(T0 + n, f"f{n}", "o1", f"x{n}") for n in range(4)))
    shrink_to(part, SMALLER)
    assert reason(part, fill(T0 + 10, "f9", "o1", "x9")) == "ACCEPTED"
    assert stored(part).holds["o1"].fills == ["x3", "x9"]
    for n in range(4):
        assert reason(part, fill(T0 + 11, f"f{n}-replayed", "o1", f"x{n}")) == "FILL_SETTLED"
