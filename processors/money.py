"""Exact amounts: integers in an asset's smallest unit, parsed from and printed as decimal text.

Anything finer than the asset's scale, signed, in exponent notation or longer than 38 digits is
refused with a reason a client can act on; a float never appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from processors.reasons import Reason

MAX_DIGITS: Final = 38  # what ClickHouse's Decimal(38, s) / Int128 columns hold
MAX_MINOR: Final = 10**MAX_DIGITS
MAX_TEXT: Final = MAX_DIGITS + 20  # the longest amount text worth parsing: 38 digits, a dot, 18 decimals, slack
_POW10: Final[list[int]] = [10**i for i in range(MAX_DIGITS + 19)]


class Rejected(Exception):
    """An input refused for a reason the client can act on; nothing was applied."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Asset:
    symbol: str
    scale: int  # decimals of the smallest unit: BTC 8, ETH 18, USDT 6

    def __post_init__(self) -> None:
        assert 0 <= self.scale <= 18, f"{self.symbol}: scale {self.scale} out of range"


def parse_amount(text: str, scale: int, *, allow_zero: bool = False) -> int:
    """'12.5' at scale 6 -> 12500000. Raises Rejected, never returns a negative."""
    if not isinstance(text, str) or not text or not text.isascii():
        raise Rejected(Reason.BAD_AMOUNT, f"{text!r} is not a decimal number")
    if len(text) > MAX_TEXT:
        # before int(): Python refuses to parse more than 4,300 digits, with a ValueError, not a refusal
        raise Rejected(Reason.AMOUNT_TOO_LARGE, f"{len(text)} characters: an amount has at most {MAX_TEXT}")
    if text.isdigit():  # the common case, a whole number
        minor = int(text) * _POW10[scale]
        if minor >= MAX_MINOR:
            raise Rejected(Reason.AMOUNT_TOO_LARGE, f"{text} exceeds {MAX_DIGITS} digits in minor units")
        if minor == 0 and not allow_zero:
            raise Rejected(Reason.NON_POSITIVE_AMOUNT, f"{text} is zero")
        return minor
    if text[0] == "-":
        raise Rejected(Reason.NON_POSITIVE_AMOUNT, f"{text} is negative")
    whole, dot, frac = text.partition(".")
    if not whole.isdigit() or (dot and not frac.isdigit()):
        raise Rejected(Reason.BAD_AMOUNT, f"{text!r} is not a plain decimal number (digits, one '.')")
    frac = frac.rstrip("0")  # trailing zeros are not finer than the scale
    if len(frac) > scale:
        raise Rejected(Reason.BAD_AMOUNT_SCALE, f"{text} has {len(frac)} decimals, the asset allows {scale}")
    minor = int(whole) * _POW10[scale] + (int(frac) * _POW10[scale - len(frac)] if frac else 0)
    if minor >= MAX_MINOR:
        raise Rejected(Reason.AMOUNT_TOO_LARGE, f"{text} exceeds {MAX_DIGITS} digits in minor units")
    if minor == 0 and not allow_zero:
        raise Rejected(Reason.NON_POSITIVE_AMOUNT, f"{text} is zero")
    assert isinstance(minor, int)
    return minor


def format_amount(minor: int, scale: int) -> str:
    """12500000 at scale 6 -> '12.500000'; always `scale` decimals so text compares as the number."""
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor))
    if scale == 0:
        return sign + digits
    digits = digits.rjust(scale + 1, "0")
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"


def parse_signed(text: str, scale: int) -> int:
    """A signed amount as the engine writes it (ledger lines): '-12.500000' -> -12500000."""
    if text.startswith("-"):
        return -parse_amount(text[1:], scale, allow_zero=True)
    return parse_amount(text, scale, allow_zero=True)
