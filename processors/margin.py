"""Margin arithmetic, exact: what a holding is worth at a mark price, an account's margin level, its lines.

Pure integers. A mark price is an integer of `PRICE_DECIMALS` decimals: units of the valuation asset (USDT)
per whole unit of the priced asset, times 10**18 (`parse_price`). A value is in minor units of the valuation
asset. Rounding is always in the exchange's favour (Kava #320, umee #545: "rounding errors should always
benefit the module"): what the user holds is valued down, what the user owes is valued up, so an account is
never seen healthier than it is.

Margin level (Binance) = total asset value / (total liabilities + accrued interest). Compared with a line
without dividing: level <= line  <=>  assets * line.den <= line.num * liabilities. No liabilities: no level
(infinitely healthy), above every line.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from processors.money import Rejected, parse_amount
from processors.reasons import Reason

PRICE_DECIMALS: Final = 18
PRICE_ONE: Final = 10**PRICE_DECIMALS  # the valuation asset's own price
PRICE_MAX: Final = 10**36  # 10**18 of the valuation asset per unit: beyond any market, within Int128's digits
_POW10: Final[list[int]] = [10**i for i in range(2 * PRICE_DECIMALS + 1)]


def parse_price(text: str) -> int:
    """'64250.5' -> 64250500000000000000000: positive, at most 18 decimals, below PRICE_MAX. Raises Rejected."""
    try:
        price = parse_amount(text, PRICE_DECIMALS)
    except Rejected as refused:
        raise Rejected(Reason.BAD_PRICE, f"mark price {text!r}: {refused.detail}") from None
    if price >= PRICE_MAX:
        raise Rejected(Reason.BAD_PRICE, f"mark price {text} is beyond any market")
    return price


def value_down(amount: int, scale: int, price: int, quote_scale: int) -> int:
    """`amount` minor units of an asset of `scale` decimals, at `price`, in minor units of the valuation asset
    (`quote_scale` decimals), rounded down: what a holding counts for."""
    assert amount >= 0 and price > 0
    return amount * price * _POW10[quote_scale] // (_POW10[scale] * PRICE_ONE)


def value_up(amount: int, scale: int, price: int, quote_scale: int) -> int:
    """As `value_down`, rounded up: what a debt counts for."""
    assert amount >= 0 and price > 0
    return -(-amount * price * _POW10[quote_scale] // (_POW10[scale] * PRICE_ONE))


def amount_worth(value: int, scale: int, price: int, quote_scale: int) -> int:
    """The least amount of an asset of `scale` decimals whose value at `price` is at least `value` minor units of
    the valuation asset (rounded up: what must be sold to raise it at that price)."""
    assert value >= 0 and price > 0
    return -(-value * _POW10[scale] * PRICE_ONE // (price * _POW10[quote_scale]))


def cross_price(price: int, per: int) -> int:
    """The price of an asset priced `price` in units of an asset priced `per` (both in valuation units), 18
    decimals rounded down."""
    assert price > 0 and per > 0
    return price * PRICE_ONE // per


def price_text(price: int) -> str:
    """An 18-decimal price as decimal text, trailing zeros dropped ('61000.5')."""
    whole, frac = divmod(price, PRICE_ONE)
    text = f"{whole}.{frac:0{PRICE_DECIMALS}d}".rstrip("0")
    return text.rstrip(".")


def line(text: str) -> Fraction:
    """A margin line from config text ('1.1'): exact, above 1 (at or below 1 the debt exceeds the assets)."""
    ratio = Fraction(text)
    assert ratio > 1, f"a margin line is above 1, not {text}"
    return ratio


def line_text(ratio: Fraction) -> str:
    """A line for people, as config writes it: '1.25' (four decimals at most, rounded down)."""
    tenths = ratio.numerator * 10_000 // ratio.denominator
    text = f"{tenths // 10_000}.{tenths % 10_000:04d}".rstrip("0")
    return text.rstrip(".")


def at_or_below(assets: int, liabilities: int, ratio: Fraction) -> bool:
    """Margin level assets / liabilities at or below `ratio`; never with no liabilities."""
    assert assets >= 0 and liabilities >= 0
    return liabilities > 0 and assets * ratio.denominator <= ratio.numerator * liabilities


def level_text(assets: int, liabilities: int) -> str:
    """The margin level for people: four decimals, rounded down (a level shown is never better than it is);
    "inf" with no liabilities."""
    if liabilities == 0:
        return "inf"
    tenths = assets * 10_000 // liabilities
    return f"{tenths // 10_000}.{tenths % 10_000:04d}"


@dataclass(frozen=True, slots=True)
class MarginTier:
    """The lines of one leverage tier (Binance cross margin; isolated pairs configure their own). Ordered:
    transfer_out > borrow > call > liquidation > 1."""

    name: str
    leverage: int  # at most this many times the account's equity in assets
    transfer_out_above: Fraction  # a transfer out of the account must leave the level above this
    borrow_above: Fraction  # a loan must leave the level at or above this (no new borrowing below)
    call_at: Fraction  # at or below: margin call
    liquidate_at: Fraction  # at or below: liquidation

    def __post_init__(self) -> None:
        assert self.leverage >= 2, f"{self.name}: leverage {self.leverage}"
        assert self.transfer_out_above >= self.borrow_above > self.call_at > self.liquidate_at > 1, self.name
        # The borrow line is the leverage cap: assets / debt >= L / (L - 1)  <=>  debt <= (L - 1) * equity.
        assert self.borrow_above >= Fraction(self.leverage, self.leverage - 1), f"{self.name}: borrow line too low"


# Bands of margin level, from healthy to liquidation: above the transfer line; at or below it; at or below the
# borrow line (below it, strictly: no new loan is allowed there); at or below the call line; at or below the
# liquidation line. An account enters a band when its level crosses the band's line.
HEALTHY: Final = 0
NO_TRANSFER: Final = 1
NO_BORROW: Final = 2
MARGIN_CALL: Final = 3
LIQUIDATION: Final = 4
BAND_NAMES: Final = ("healthy", "no-transfer-out", "no-borrowing", "margin-call", "liquidation")


def band(assets: int, liabilities: int, lines: MarginTier) -> int:
    """The account's band: the deepest line its level is at or below (HEALTHY with no liabilities). The
    borrow line counts strictly below it, as `Borrow` allows a loan down to it."""
    if liabilities == 0:
        return HEALTHY
    if at_or_below(assets, liabilities, lines.liquidate_at):
        return LIQUIDATION
    if at_or_below(assets, liabilities, lines.call_at):
        return MARGIN_CALL
    ratio = lines.borrow_above
    if assets * ratio.denominator < ratio.numerator * liabilities:
        return NO_BORROW
    if at_or_below(assets, liabilities, lines.transfer_out_above):
        return NO_TRANSFER
    return HEALTHY


def tier(name: str, leverage: int, transfer_out: str, borrow: str, call: str, liquidate: str) -> MarginTier:
    return MarginTier(name, leverage, line(transfer_out), line(borrow), line(call), line(liquidate))


# Binance cross margin, Classic (3x) and Pro (5x) modes. The 5x transfer line is not in Binance's FAQ we
# read: 2, as 3x (a stricter line than any the tier needs; a config value, not a constant).
CROSS_3X: Final = tier("cross-3x", 3, "2", "1.5", "1.3", "1.1")
CROSS_5X: Final = tier("cross-5x", 5, "2", "1.25", "1.16", "1.1")


def max_borrow(assets: int, liabilities: int, ratio: Fraction) -> int:
    """The most a loan can add to the liabilities (valued in the valuation asset, as a loan of it would count)
    and leave the level at or above `ratio`: the borrowed coins count as assets too, so with assets A and
    liabilities L, a loan x keeps (A + x) / (L + x) >= r  <=>  x <= (A - r * L) / (r - 1). Rounded down."""
    assert ratio > 1 and assets >= 0 and liabilities >= 0
    num = assets * ratio.denominator - ratio.numerator * liabilities
    if num <= 0:
        return 0
    return num // (ratio.numerator - ratio.denominator)
