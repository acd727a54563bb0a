"""Margin arithmetic (processors.margin, processors.rates), the figures worked out by hand from Binance's cross
margin rules and Aave's rate model, and its rounding checked against exact fractions."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.margin import (
    BAND_NAMES,
    CROSS_3X,
    CROSS_5X,
    HEALTHY,
    LIQUIDATION,
    MARGIN_CALL,
    NO_BORROW,
    NO_TRANSFER,
    PRICE_ONE,
    at_or_below,
    band,
    level_text,
    max_borrow,
    parse_price,
    tier,
    value_down,
    value_up,
)
from processors.money import Rejected
from processors.rates import HOUR_MS, RATE_ONE, hour_of, interest, model

USDT = 10**6  # minor units of one USDT (scale 6)
BTC_SCALE, USDT_SCALE = 8, 6


def test_a_holding_is_valued_down_and_a_debt_up() -> None:
    price = parse_price("64250.5")
    assert price == 64_250_500_000_000_000_000_000
    # 0.5 BTC at 64,250.5 USDT is 32,125.25 USDT exactly: both roundings agree
    assert value_down(50_000_000, BTC_SCALE, price, USDT_SCALE) == 32_125_250_000
    assert value_up(50_000_000, BTC_SCALE, price, USDT_SCALE) == 32_125_250_000
    # one satoshi is 0.000642505 USDT: 642.505 minor units, held as 642, owed as 643
    assert value_down(1, BTC_SCALE, price, USDT_SCALE) == 642
    assert value_up(1, BTC_SCALE, price, USDT_SCALE) == 643
    assert value_down(7 * USDT, USDT_SCALE, PRICE_ONE, USDT_SCALE) == 7 * USDT, "USDT is worth itself"


@pytest.mark.parametrize("text", ["0", "-1", "1e3", "0.0000000000000000001", "1" + "0" * 18, "abc", ""])
def test_a_price_that_is_no_market_price_is_refused(text: str) -> None:
    with pytest.raises(Rejected) as refused:
        parse_price(text)
    assert refused.value.reason == "BAD_PRICE"


def test_margin_levels_along_a_falling_price_at_3x() -> None:
    """1,000 USDT of margin, 2,000 USDT borrowed (3x: the most the tier lends), all 3,000 bought as 0.05 BTC
    at 60,000. Margin level = assets / liabilities (interest left out here)."""
    debt = 2_000 * USDT
    assert max_borrow(1_000 * USDT, 0, CROSS_3X.borrow_above) == debt, "3x: up to twice the equity"
    assert max_borrow(1_000 * USDT, 0, CROSS_5X.borrow_above) == 4_000 * USDT, "5x: four times"
    btc = 5_000_000  # 0.05 BTC

    def assets(price: str) -> int:
        return value_down(btc, BTC_SCALE, parse_price(price), USDT_SCALE)

    assert level_text(assets("60000"), debt) == "1.5000"  # 3,000 / 2,000: no more borrowing (at 1.5 exactly: allowed)
    assert at_or_below(assets("60000"), debt, CROSS_3X.transfer_out_above), "nor any transfer out (above 2 only)"
    assert at_or_below(assets("79999.99"), debt, CROSS_3X.transfer_out_above)  # 3,999.9995 / 2,000 <= 2
    assert not at_or_below(assets("80000.01"), debt, CROSS_3X.transfer_out_above)
    # 52,000: 2,600 / 2,000 = 1.3, the margin call line (at or below); a cent above is not
    assert at_or_below(assets("52000"), debt, CROSS_3X.call_at)
    assert not at_or_below(assets("52000.01"), debt, CROSS_3X.call_at)
    assert not at_or_below(assets("52000"), debt, CROSS_3X.liquidate_at)
    # 44,000: 2,200 / 2,000 = 1.1, liquidation
    assert at_or_below(assets("44000"), debt, CROSS_3X.liquidate_at)
    assert level_text(assets("44000"), debt) == "1.1000"
    assert not at_or_below(assets("44000.01"), debt, CROSS_3X.liquidate_at)
    assert level_text(assets("1"), 0) == "inf" and not at_or_below(0, 0, CROSS_3X.liquidate_at)


def test_tiers_keep_their_lines_in_order() -> None:
    assert (CROSS_5X.borrow_above, CROSS_5X.call_at, CROSS_5X.liquidate_at) == (
        Fraction("1.25"), Fraction("1.16"), Fraction("1.1"))
    with pytest.raises(AssertionError):
        tier("bad", 3, "2", "1.3", "1.5", "1.1")  # a call line above the borrow line
    with pytest.raises(AssertionError):
        tier("bad", 10, "2", "1.1", "1.05", "1.02")  # 10x needs a borrow line of 10/9 or more


def test_the_hourly_rate_follows_utilization_with_a_kink() -> None:
    """An Aave-like stablecoin pool: 0% base, 4% a year up to 80% utilization, 75% more over the last 20%."""
    usdt = model("0", "0.04", "0.75", "0.8")
    # 40% lent out: 0.04 * 0.4 / 0.8 = 2% a year = 0.02 / 8,760 an hour = 2,283,105,022,831.05... e-18, up
    assert usdt.hourly(400, 1_000) == 2_283_105_022_832
    # 90%: 0.04 + 0.75 * 0.1 / 0.2 = 41.5% a year = 47,374,429,223,744.29... e-18 an hour
    assert usdt.hourly(900, 1_000) == 47_374_429_223_745
    assert usdt.hourly(2_000, 1_000) == usdt.hourly(1, 0) == -(-Fraction("0.79") * RATE_ONE // 8_760), "capped at 100%"
    assert usdt.hourly(0, 1_000) == 0


def test_interest_is_simple_hourly_and_rounded_up() -> None:
    rate = model("0", "0.04", "0.75", "0.8").hourly(400, 1_000)
    principal = 2_000 * USDT
    # the first hour, charged as the loan is made: 2,000 * 2,283,105,022,832e-18 = 0.004566210045664 USDT
    assert interest(principal, 0, rate) == 4_567
    # three more full hours at that rate: 0.013698630136992 USDT, up; simple: on the principal only
    assert interest(principal, rate, 4 * rate) == 13_699
    assert interest(principal, 5 * rate, 5 * rate) == 0
    assert hour_of(10 * HOUR_MS - 1) == 9 and hour_of(10 * HOUR_MS) == 10


amounts = st.integers(0, 10**30)
prices = st.integers(1, 10**36 - 1)
scales = st.integers(0, 18)


@given(amounts, scales, prices, scales)
def test_valuation_brackets_the_exact_value_within_one_unit(amount: int, scale: int, price: int, quote: int) -> None:
    exact = Fraction(amount * price * 10**quote, 10**scale * PRICE_ONE)
    down, up = value_down(amount, scale, price, quote), value_up(amount, scale, price, quote)
    assert down <= exact <= up and up - down <= 1 and (up == down) == (exact.denominator == 1)


ratios = st.fractions(Fraction(101, 100), Fraction(5)).filter(lambda r: r > 1)


@given(st.integers(0, 10**24), st.integers(0, 10**24), ratios)
def test_lines_compare_as_the_exact_level(assets: int, liabilities: int, ratio: Fraction) -> None:
    expected = liabilities > 0 and Fraction(assets, liabilities) <= ratio
    assert at_or_below(assets, liabilities, ratio) == expected


@given(st.integers(0, 10**24), st.integers(0, 10**24), ratios)
def test_the_most_one_can_borrow_keeps_the_line_and_one_unit_more_does_not(assets: int, liabilities: int,
                                                                          ratio: Fraction) -> None:
    most = max_borrow(assets, liabilities, ratio)

    def keeps(x: int) -> bool:
        return liabilities + x == 0 or Fraction(assets + x, liabilities + x) >= ratio

    if most > 0:
        assert keeps(most) and not keeps(most + 1)
    else:
        assert most == 0 and (not keeps(1) or liabilities + 1 == 0)


def test_bands_along_a_falling_price_at_3x() -> None:
    """The 3x lines on 0.05 BTC against 2,000 USDT of debt: 2 at 80,000, 1.5 at 60,000, 1.3 at 52,000, 1.1 at
    44,000 (assets = 0.05 x price; level = assets / 2,000)."""
    debt = 2_000 * USDT

    def at(price: str) -> int:
        return band(value_down(5_000_000, BTC_SCALE, parse_price(price), USDT_SCALE), debt, CROSS_3X)

    assert [at(p) for p in ("80000.01", "80000", "60000", "59999.99", "52000", "44000.01", "44000", "1")] == [
        HEALTHY, NO_TRANSFER, NO_TRANSFER, NO_BORROW, MARGIN_CALL, MARGIN_CALL, LIQUIDATION, LIQUIDATION]
    assert band(0, 0, CROSS_3X) == HEALTHY and BAND_NAMES[MARGIN_CALL] == "margin-call"
