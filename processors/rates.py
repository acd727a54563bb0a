"""Borrow interest: the lending pool's rate by utilization, and the per-asset index that accrues it.

The hourly rate of an asset follows the pool's utilization U = borrowed / supplied, exchange-wide (Aave v3's
kinked model, `DefaultReserveInterestRateStrategyV2`): base + slope1 * U / Uopt up to the optimal utilization,
then + slope2 * (U - Uopt) / (1 - Uopt) above it. Rates are annual in config and charged by the hour (8,760 a
year), as an integer of `RATE_DECIMALS` decimals rounded up (the exchange's favour).

Interest is simple and hourly (Binance): the first hour is charged when a loan is made, then one hour at each
full hour of engine time while it is open; a loan repaid within its first hour pays that hour only. A per-asset
index, the sum of the hourly rates charged so far, makes an hour cost O(assets), not O(users): a loan of
principal P last charged at index I0 owes P * (I - I0) more at index I (`interest`), rounded up.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Final

RATE_DECIMALS: Final = 18
RATE_ONE: Final = 10**RATE_DECIMALS  # a rate of 100% an hour
HOURS_PER_YEAR: Final = 8_760
HOUR_MS: Final = 3_600_000


@dataclass(frozen=True, slots=True)
class RateModel:
    """Annual rates of one asset's pool, as fractions (0.05 is 5% a year)."""

    base: Fraction
    slope1: Fraction
    slope2: Fraction
    optimal: Fraction  # the utilization where slope2 starts

    def __post_init__(self) -> None:
        assert 0 < self.optimal < 1, f"optimal utilization {self.optimal} must be inside (0, 1)"
        assert self.base >= 0 and self.slope1 >= 0 and self.slope2 >= 0, "rates are not negative"

    def annual(self, utilization: Fraction) -> Fraction:
        """The annual rate at `utilization` (capped at 1: a pool lent out entirely)."""
        u = min(max(utilization, Fraction(0)), Fraction(1))
        if u <= self.optimal:
            return self.base + self.slope1 * u / self.optimal
        return self.base + self.slope1 + self.slope2 * (u - self.optimal) / (1 - self.optimal)

    def hourly(self, borrowed: int, supplied: int) -> int:
        """The hourly rate, in RATE_ONE units, rounded up, at the utilization of `borrowed` of `supplied`
        (nothing supplied: fully utilized, the highest rate)."""
        assert borrowed >= 0 and supplied >= 0
        u = Fraction(borrowed, supplied) if supplied else Fraction(1)
        rate = self.annual(u) * RATE_ONE / HOURS_PER_YEAR
        return -(-rate.numerator // rate.denominator)


def model(base: str, slope1: str, slope2: str, optimal: str) -> RateModel:
    return RateModel(Fraction(base), Fraction(slope1), Fraction(slope2), Fraction(optimal))


def interest(principal: int, index_then: int, index_now: int) -> int:
    """What `principal` owes for the hours charged between two readings of its asset's index, rounded up."""
    assert principal >= 0 and index_now >= index_then >= 0
    return -(-principal * (index_now - index_then) // RATE_ONE)


def hour_of(ts_ms: int) -> int:
    """The full hour of engine time `ts_ms` falls in (hours since the epoch): interest is charged at each one."""
    return ts_ms // HOUR_MS
