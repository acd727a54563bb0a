from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.money import MAX_MINOR, Rejected, format_amount, parse_amount, parse_signed
from processors.reasons import Reason


@given(st.integers(min_value=1, max_value=MAX_MINOR - 1), st.integers(min_value=0, max_value=18))
def test_format_then_parse_is_identity(minor: int, scale: int) -> None:
    assert parse_amount(format_amount(minor, scale), scale) == minor


@given(st.integers(min_value=-(MAX_MINOR - 1), max_value=MAX_MINOR - 1), st.integers(min_value=0, max_value=18))
def test_signed_round_trip(minor: int, scale: int) -> None:
    assert parse_signed(format_amount(minor, scale), scale) == minor


@pytest.mark.parametrize(
    ("text", "scale", "reason"),
    [
        ("1.0000001", 6, Reason.BAD_AMOUNT_SCALE),
        ("0.000000001", 8, Reason.BAD_AMOUNT_SCALE),
        ("-5", 6, Reason.NON_POSITIVE_AMOUNT),
        ("0", 6, Reason.NON_POSITIVE_AMOUNT),
        ("0.000", 6, Reason.NON_POSITIVE_AMOUNT),
        ("1" + "0" * 32, 6, Reason.AMOUNT_TOO_LARGE),  # 33 digits + 6 decimals = 39 digits in minor units
        ("9" * 39, 0, Reason.AMOUNT_TOO_LARGE),
        ("abc", 6, Reason.BAD_AMOUNT),
        ("1e5", 6, Reason.BAD_AMOUNT),
        ("1.", 6, Reason.BAD_AMOUNT),
        (".5", 6, Reason.BAD_AMOUNT),
        ("+1", 6, Reason.BAD_AMOUNT),
        (" 1", 6, Reason.BAD_AMOUNT),
        ("１", 6, Reason.BAD_AMOUNT),  # a full-width digit: isdigit() says yes, we say no
        ("NaN", 6, Reason.BAD_AMOUNT),
        ("", 6, Reason.BAD_AMOUNT),
    ],
)
def test_refusals_name_the_reason(text: str, scale: int, reason: Reason) -> None:
    with pytest.raises(Rejected) as info:
        parse_amount(text, scale)
    assert info.value.reason is reason


def test_trailing_zeros_are_not_finer_than_the_scale() -> None:
    assert parse_amount("1.50000000000", 6) == 1_500_000


def test_largest_amount_fits_38_digits() -> None:
    assert parse_amount("9" * 38, 0) == MAX_MINOR - 1
