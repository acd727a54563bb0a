"""Margin monitoring through the step (processors.monitor, processors.batch): a short at 3x whose BTC rises,
price by price. Each band change is one MarginLevel event, entering margin call also a MarginCall; a price
that changes no band stores no state; a stale price moves nothing."""

from __future__ import annotations

from typing import Any

from processors import monitor
from processors.batch import Step
from processors.inputs import command
from processors.messages import Borrow, Command, Transfer
from schemas import CODEC
from streams.topics import MARGIN_EVENTS
from tests.unit.test_clock_tick import T0, USER, Partition, deposit, open_account, results, user_input
from tests.unit.test_market_inputs import price, rate


def events(step: Step) -> list[dict[str, Any]]:
    return [CODEC.decode(value)[1] for topic, _, value, _ in step.records if topic is MARGIN_EVENTS]


def crossings(step: Step) -> list[tuple[str, str, str]]:
    return [(e["kind"], e["previous_band"], e["band"]) for e in events(step)]


def short_at_20000() -> Partition:
    """1,000 USDT of margin (the deposit is 100: ten of them), 0.05 BTC borrowed at 20,000 and kept: a short
    of 1,000 USDT. Level = (1,000 + 0.05 p) / (0.05 p + interest)."""
    part = Partition()
    part.step(open_account(T0), *(deposit(T0, f"0xf{i}") for i in range(10)))
    part.step(user_input(T0, command(Transfer, "in", USER, asset="USDT", amount="1000", from_account="spot",
                                     to_account="margin")))
    part.step(rate(T0, "BTC", "10", "100"), price(T0, "BTC", "20000"))
    return part


def borrow(ts_ms: int) -> tuple[str, int, Command]:
    return user_input(ts_ms, command(Borrow, "short", USER, account="margin", asset="BTC", amount="0.05"))


def test_a_short_at_3x_crosses_each_line_once_as_btc_rises() -> None:
    part = short_at_20000()
    step = part.step(borrow(T0 + 1))
    assert results(step)["short"]["status"] == "ACCEPTED"
    # 2,000 / 1,000.0012 = 1.9999 <= 2: no transfers out from here; the borrow that made it names the event
    assert crossings(step) == [("MarginLevel", "healthy", "no-transfer-out")]
    assert events(step)[0]["id"].endswith("/user/short/MarginLevel/no-transfer-out")
    step = part.step(price(T0 + 2, "BTC", "30000"))
    assert step.records == [] and step.states == {}, "1.667: no line crossed, nothing sent, no state stored"
    assert crossings(part.step(price(T0 + 3, "BTC", "45000"))) == [("MarginLevel", "no-transfer-out", "no-borrowing")]
    # 4,500 / 3,500 = 1.2857 <= 1.3
    assert crossings(part.step(price(T0 + 4, "BTC", "70000"))) == [
        ("MarginLevel", "no-borrowing", "margin-call"), ("MarginCall", "no-borrowing", "margin-call")]
    assert crossings(part.step(price(T0 + 5, "BTC", "71000"))) == [], "still in margin call: no second call"
    assert crossings(part.step(price(T0 + 6, "BTC", "25000"))) == [("MarginLevel", "margin-call", "no-transfer-out")]
    # 13,500 / 12,500 = 1.08 <= 1.1
    step = part.step(price(T0 + 7, "BTC", "250000"))
    assert crossings(step) == [("MarginLevel", "no-transfer-out", "liquidation"),
                               ("MarginCall", "no-transfer-out", "liquidation")]
    stored = part.store.load(USER, 2)
    assert stored is not None and stored.bands == {"margin": 4}


def test_a_stale_price_moves_no_band() -> None:
    part = short_at_20000()
    part.step(borrow(T0 + 1))
    later = T0 + 60_000  # the price of T0 is 60 s old: stale
    step = part.step(price(later, "BTC", "250000", priced_ms=T0))
    stored = part.store.load(USER, 2)
    assert crossings(step) == [] and stored is not None and stored.bands == {"margin": 1}


def test_the_margin_view_shows_level_band_lines_and_interest() -> None:
    from processors.context import Context
    from processors.market import Market
    from tests.unit.test_clock_tick import CFG

    part = short_at_20000()
    part.step(borrow(T0 + 1))
    state = part.store.load(USER, 2)
    assert state is not None
    market = Market()
    market.set_rate("BTC", CFG.rate_models["BTC"].hourly(10, 100), T0)
    market.set_price("BTC", 20_000 * 10**18, T0, T0)
    later = T0 + 2 * 3_600_000  # two full hours on, the price renewed
    market.set_price("BTC", 20_000 * 10**18, later, later)
    [row] = monitor.view(state, Context(later, CFG, market=market))
    assert (row["account"], row["tier"], row["band"]) == ("margin", "cross-3x", "no-transfer-out")
    assert row["lines"] == {"transfer_out_above": "2", "borrow_above": "1.5", "call_at": "1.3", "liquidate_at": "1.1"}
    [loan] = row["loans"]
    assert loan["asset"] == "BTC" and loan["principal"] == 5_000_000 and loan["interest_booked"] > 0
    rate = CFG.rate_models["BTC"].hourly(10, 100)
    assert loan["interest_booked"] == -(-5_000_000 * rate // 10**18), "the first hour, up"
    assert loan["interest_since"] == -(-2 * 5_000_000 * rate // 10**18), "two full hours since, up"
    assert row["level"] == "1.9999"
    stale = Context(later + 31_000, CFG, market=market)
    [row] = monitor.view(state, stale)
    assert row["level"] == "" and "BTC" in row["why"]


def test_the_hour_s_interest_moves_a_band_at_the_clock_tick() -> None:
    """A pool at 10,000% a year (1.14% an hour) so that one hour's interest crosses a line: at 61,000 the short is
    at 4,050 / (3,050 x 1.0114) = 1.3129, no borrowing; the tick of the next full hour charges another 1.14%:
    4,050 / (3,050 x 1.0228) = 1.2983, margin call, with the price still fresh."""
    import dataclasses

    from processors.rates import HOUR_MS, model
    from tests.unit.test_clock_tick import CFG, tick

    cfg = dataclasses.replace(CFG, rate_models={**CFG.rate_models, "BTC": model("100", "0", "0", "0.5")})
    start = (T0 // HOUR_MS + 1) * HOUR_MS - 40_000  # 40 s before a full hour
    part = Partition(cfg)
    part.step(open_account(start), *(deposit(start, f"0xf{i}") for i in range(10)))
    part.step(user_input(start, command(Transfer, "in", USER, asset="USDT", amount="1000", from_account="spot",
                                        to_account="margin")))
    part.step(rate(start, "BTC", "10", "100"), price(start, "BTC", "20000"))
    part.step(borrow(start + 1))
    assert crossings(part.step(price(start + 25_000, "BTC", "61000"))) == [("MarginLevel", "no-transfer-out",
                                                                             "no-borrowing")]
    assert crossings(part.step(tick(start + 30_000))) == [], "the same hour: nothing charged"
    step = part.step(tick(start + 45_000))  # 5 s past the hour, the price 20 s old: fresh
    assert crossings(step) == [("MarginLevel", "no-borrowing", "margin-call"),
                               ("MarginCall", "no-borrowing", "margin-call")]
    assert events(step)[0]["id"].startswith(f"{USER}/margin/system/tick/")
    stored = part.store.load(USER, 2)
    assert stored is not None and stored.bands == {"margin": 3}
