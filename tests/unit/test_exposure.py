"""The columnar screen (processors.exposure) against exact valuation: every account whose exact band at the
new prices differs from the band it holds is among the rows the screen returns (it may return more)."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.exposure import Exposure, Row
from processors.margin import CROSS_3X, CROSS_5X, PRICE_ONE, MarginTier, band, value_down, value_up
from processors.rates import interest

SCALES = {"BTC": 8, "ETH": 18, "USDT": 6}
QUOTE = 6


def valued(row: Row, prices: dict[str, int], index_now: dict[str, int]) -> tuple[int, int] | None:
    """As processors.loans.valued: None when a held or owed asset has no price."""
    assets = liabilities = 0
    for asset, scale in SCALES.items():
        held = row.held.get(asset, 0)
        p = row.principal.get(asset, 0)
        reading = row.reading.get(asset, 0)
        owed = p + row.booked.get(asset, 0) + (interest(p, reading, max(index_now.get(asset, 0), reading)) if p else 0)
        if not (held or owed):
            continue
        price = PRICE_ONE if asset == "USDT" else prices.get(asset)
        if price is None:
            return None
        assets += value_down(held, scale, price, QUOTE) if held else 0
        liabilities += value_up(owed, scale, price, QUOTE) if owed else 0
    return assets, liabilities


def near_a_line(assets: int, liabilities: int, tier: MarginTier) -> bool:
    if not liabilities:
        return False
    level = Fraction(assets, liabilities)
    lines = (tier.liquidate_at, tier.call_at, tier.borrow_above, tier.transfer_out_above)
    return any(abs(level - line) <= line * Fraction(1, 10**6) for line in lines)


amount = st.integers(0, 10**12)
rows = st.builds(
    Row,
    held=st.fixed_dictionaries({"BTC": amount, "USDT": amount}),
    principal=st.fixed_dictionaries({"BTC": amount, "USDT": amount}),
    booked=st.fixed_dictionaries({"USDT": st.integers(0, 10**6)}),
    reading=st.fixed_dictionaries({"BTC": st.integers(0, 10**15), "USDT": st.integers(0, 10**15)}),
    tier=st.sampled_from([CROSS_3X, CROSS_5X]),
    band=st.just(0),
)
btc_prices = st.integers(10**18, 10**24)


@settings(max_examples=300, deadline=None)
@given(st.lists(rows, min_size=1, max_size=30), btc_prices, st.one_of(st.none(), st.just(0), btc_prices),
       st.integers(0, 10**16), st.integers(0, 3 * 10**17))
def test_the_screen_finds_exactly_the_accounts_whose_band_changes(
        accounts: list[Row], before: int, after: int | None, index: int, hours: int) -> None:
    """Each row holds the band of an earlier price and index; at the new ones the screen returns every row whose
    exact band changed, and besides those only rows whose level is within a millionth of a line. (`after` 0:
    the same price, so only interest moves the levels; None: no fresh price.)"""
    after = before if after == 0 else after
    exposure = Exposure(SCALES, capacity=4)
    earlier = {"BTC": index, "USDT": index}
    later = {"BTC": index + hours, "USDT": index + hours}
    held_bands = []
    for n, row in enumerate(accounts):
        found = valued(row, {"BTC": before}, earlier)
        assert found is not None
        row = dataclasses.replace(row, band=band(*found, row.tier))
        held_bands.append(row)
        exposure.put(f"u{n}", "margin", row)
    prices: dict[str, Fraction | int | float | None] = {"BTC": None if after is None else Fraction(after, PRICE_ONE),
                                                        "USDT": 1}
    picked = set(exposure.screen("BTC", prices, later))
    for n, row in enumerate(held_bands):
        exposed = row.held["BTC"] or row.principal["BTC"]
        now = valued(row, {} if after is None else {"BTC": after}, later)
        changed = exposed and now is not None and band(*now, row.tier) != row.band
        if changed:
            assert (f"u{n}", "margin") in picked, (row, now)
        elif (f"u{n}", "margin") in picked:
            assert now is not None and near_a_line(*now, row.tier), (row, now)


def test_rows_come_and_go() -> None:
    exposure = Exposure(SCALES, capacity=1)
    healthy = Row({"BTC": 10**8}, {"USDT": 10**9}, {}, {}, CROSS_3X, 0)  # 1 BTC against 1,000 USDT
    for n in range(3):
        exposure.put(f"u{n}", "margin", healthy)
    exposure.drop("u1", "margin")
    assert len(exposure) == 2 and exposure.screen("BTC", {"BTC": Fraction(60_000), "USDT": 1}, {}) == []
    # at 1,200 the level is 1.2: margin call for both left
    assert exposure.screen("BTC", {"BTC": Fraction(1_200), "USDT": 1}, {}) == [("u0", "margin"), ("u2", "margin")]
    exposure.put("u3", "margin", healthy)  # takes the freed row
    assert len(exposure) == 3 and len(exposure.keys) == 3


def test_interest_since_the_loans_reading_counts() -> None:
    """1 BTC against 50,000 USDT at 60,000: level 1.2, margin call. 30% of interest since the reading (index
    +0.3): 60,000 / 65,000 = 0.92, liquidation, at the same price."""
    row = Row({"BTC": 10**8}, {"USDT": 50_000 * 10**6}, {}, {"USDT": 0}, CROSS_3X, band=3)
    exposure = Exposure(SCALES)
    exposure.put("u", "margin", row)
    same: dict[str, Fraction | int | float | None] = {"BTC": Fraction(60_000), "USDT": 1}
    assert exposure.screen("BTC", same, {"USDT": 0}) == []
    assert exposure.screen("BTC", same, {"USDT": 3 * 10**17}) == [("u", "margin")]
