"""Hourly interest recognition (processors.accrual), against a model of loans that attributes interest the way
processors.loans does (rounded up per loan, a loan's first hour as it is made): after every full hour the
partition's sys:interest_accrued holds exactly minus the interest accrued and not attributed, rounded up, and
income equals what was attributed plus that; the aggregates equal the loans' own sums."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.accrual import Accrual, Sums, owner
from processors.ledger import INTEREST_ACCRUED, INTEREST_HOURLY, INTEREST_INCOME, REPAY
from processors.messages import LedgerLine
from processors.rates import RATE_ONE

ASSET = "USDT"


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def attribution(amount: int) -> LedgerLine:
    """The system side of a user's interest line (processors.loans)."""
    return LedgerLine("u", 0, "user/x", REPAY, 1, "", INTEREST_ACCRUED, "balance", ASSET, amount, None, None, 1)


ops = st.lists(st.one_of(
    st.tuples(st.just("borrow"), st.integers(1, 10**12)),
    st.tuples(st.just("touch"), st.integers(0, 20)),
    st.tuples(st.just("repay"), st.integers(0, 20), st.integers(1, 10**12)),
    st.tuples(st.just("hour"), st.integers(1, 10**15)),  # the hour's rate, RATE_ONE = 100%
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_after_each_hour_the_accrued_account_holds_minus_what_is_not_attributed(script: list[tuple[Any, ...]]
                                                                                ) -> None:
    accrual = Accrual()
    index, rate = 0, 10**13
    loans: list[list[int]] = []  # [principal, reading]
    attributed = income = 0
    hours = 0

    def total() -> Sums:
        p = sum(loan[0] for loan in loans)
        return {ASSET: (p, sum(loan[0] * loan[1] for loan in loans))} if p else {}

    def attribute(loan: list[int], reading: int) -> None:
        nonlocal attributed
        due = ceil_div(loan[0] * (reading - loan[1]), RATE_ONE)
        if due:
            accrual.attributed([attribution(due)])
            attributed += due
        loan[1] = reading

    for op in script:
        before = total()
        if op[0] == "borrow":
            loan = [int(op[1]), index]
            loans.append(loan)
            attribute(loan, index + rate)  # the first hour, as the loan is made: it reads the index past it
        elif op[0] == "touch" and loans:
            attribute(loans[op[1] % len(loans)], index)
        elif op[0] == "repay" and loans:
            loan = loans[op[1] % len(loans)]
            attribute(loan, max(loan[1], index))
            loan[0] -= min(loan[0], int(op[2]))
            if not loan[0]:
                loans.remove(loan)
        elif op[0] == "hour":
            index += rate
            rate = int(op[1])
            hours += 1
            lines = accrual.hour(3, hours, hours * 3_600_000, {ASSET: index})
            assert all(ln.owner == owner(3) and ln.entry_type == INTEREST_HOURLY for ln in lines)
            assert sum(ln.amount for ln in lines) == 0
            income += sum(ln.amount for ln in lines if ln.account == INTEREST_INCOME)
            p, s = total().get(ASSET, (0, 0))
            balance = accrual.pools.get(ASSET, [0, 0, 0])[2]
            assert balance == -ceil_div(index * p - s, RATE_ONE)
            assert income == attributed - balance, "income: what was attributed, and what is accrued but not yet"
            assert [ln.seq for ln in lines] == list(range(accrual.seq - len(lines) + 1, accrual.seq + 1))
        accrual.add(before, total())
        p, s = total().get(ASSET, (0, 0))
        assert accrual.pools.get(ASSET, [0, 0, 0])[:2] == [p, s]
    assert Accrual.from_doc(accrual.to_doc()).to_doc() == accrual.to_doc()


def test_an_hour_with_nothing_to_move_books_nothing() -> None:
    accrual = Accrual()
    assert accrual.hour(0, 1, 3_600_000, {ASSET: 5}) == [] and accrual.seq == 0
    accrual.add({}, {ASSET: (1_000, 0)})
    # 1,000 x 5 / 10^18 is a fraction of a minor unit: rounded up, 1
    assert [(ln.account, ln.amount) for ln in accrual.hour(0, 1, 3_600_000, {ASSET: 5})] == [
        (INTEREST_ACCRUED, -1), (INTEREST_INCOME, 1)]
    assert accrual.hour(0, 1, 3_600_000, {ASSET: 5}) == [], "the same hour again: nothing left to recognize"
