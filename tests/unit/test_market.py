"""A partition's market (processors.market): hours charged into the borrow index by engine time, readings
between hours, prices in force and their age; checked against a model that charges each full hour at the
rate in force at its mark."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from processors.market import Market
from processors.rates import HOUR_MS

H = HOUR_MS
T0 = 1_000 * H  # a full hour


def test_hours_are_charged_at_the_rate_in_force_at_each_mark() -> None:
    market = Market()
    market.set_rate("USDT", 10, T0 + 5)  # the first system input starts the count at its hour
    assert market.index_at("USDT", T0 + 20 * 60_000) == 0, "10:20: the hour of 10:00 is the one the loan pays up front"
    assert market.advance(T0 + H - 1) == 0
    assert market.index_at("USDT", T0 + H) == 10, "11:00 is charged as it strikes, tick or no tick"
    market.set_rate("USDT", 30, T0 + 2 * H + 60_000)  # 12:01: 11:00 and 12:00 at the old rate first
    assert market.index == {"USDT": 20} and market.charged_hour == 1_002
    assert market.index_at("USDT", T0 + 5 * H + 1) == 20 + 3 * 30
    assert market.advance(T0 + H) == 0 and market.index_at("USDT", T0) == 20, "a time behind charges nothing"


def test_a_stale_price_is_no_price() -> None:
    market = Market()
    market.set_price("BTC", 64_000, T0 - 1_000, T0)
    assert market.price("BTC", T0 + 29_000, max_age_ms=30_000) == 64_000, "its age counts from when it was priced"
    assert market.price("BTC", T0 + 29_001, max_age_ms=30_000) is None
    assert market.price("ETH", T0, max_age_ms=30_000) is None


def test_the_market_is_stored_as_it_is() -> None:
    market = Market()
    market.set_rate("USDT", 7, T0)
    market.set_price("BTC", 64_000, T0 + 3 * H, T0 + 3 * H)
    again = Market.from_doc(market.to_doc())
    assert again.to_doc() == market.to_doc() and again.index_at("USDT", T0 + 9 * H) == 63


changes = st.lists(st.tuples(st.integers(0, 30 * H), st.integers(0, 10**15)), max_size=20)


@given(changes, st.integers(0, 40 * H))
def test_the_index_is_the_rates_in_force_at_each_full_hour(changes: list[tuple[int, int]], later: int) -> None:
    changes.sort(key=lambda c: c[0])
    market = Market()
    for at, rate in changes:
        market.set_rate("BTC", rate, T0 + at)
    if not changes:
        return
    start = changes[0][0] // H
    read = max(changes[-1][0], later)

    def rate_at_mark(hour: int) -> int:
        before = [rate for at, rate in changes if at < hour * H]
        return before[-1] if before else 0

    expected = sum(rate_at_mark(h) for h in range(start + 1, read // H + 1))
    assert market.index_at("BTC", T0 + read) == expected
