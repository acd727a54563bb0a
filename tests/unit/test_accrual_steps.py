"""The hourly interest entries through the step (processors.batch, processors.accrual), without Kafka: a loan of
150 USDT made at 20:06 (T0), the clock ticks of the next hours, a repayment. Each full hour the partition books
one entry per asset from sys:interest_accrued to sys:interest_income; what the user's loan is charged is
attributed to it when it is touched; in the end income equals what the user paid, and a re-applied step books
the same entries and stores the same aggregates."""

from __future__ import annotations

import json

from processors.accrual import owner
from processors.batch import Source, Step, market_key
from processors.inputs import command
from processors.ledger import INTEREST_ACCRUED, INTEREST_HOURLY, INTEREST_INCOME
from processors.messages import Borrow, Command, OpenAccount, Repay, Transfer
from processors.rates import HOUR_MS, RATE_ONE
from sinks.reconcile import MARKET_PREFIX, accrual_seqs
from tests.unit.test_batch import encoded
from tests.unit.test_clock_tick import CFG, T0, USER, P, Partition, deposit, open_account, results, tick, user_input
from tests.unit.test_market_inputs import price, rate

USDT = 10**6
RATE = CFG.rate_models["USDT"].hourly(450, 1000)
HOUR = -(-150 * USDT * RATE // RATE_ONE)  # 150 USDT's interest of one hour, rounded up


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def hourly(step: Step) -> list[tuple[str, int, str, int]]:
    return [(ln.account, ln.amount, ln.owner, ln.seq) for ln in step.lines.get(P, ())
            if ln.entry_type == INTEREST_HOURLY]


def borrowed() -> Partition:
    part = Partition()
    part.step(open_account(T0), deposit(T0, "0x01"), price(T0, "BTC", "60000"), rate(T0, "USDT", "450", "1000"))
    step = part.step(
        user_input(T0 + 1, command(Transfer, "in", USER, asset="USDT", amount="100", from_account="spot",
                                   to_account="margin")),
        user_input(T0 + 2, command(Borrow, "b", USER, account="margin", asset="USDT", amount="150")))
    assert {r["status"] for r in results(step).values()} == {"ACCEPTED"}
    assert hourly(step) == [], "no full hour yet"
    return part


def test_each_full_hour_recognizes_the_partition_s_interest_and_income_ends_as_what_the_user_paid() -> None:
    part = borrowed()
    who = owner(P)
    # 21:00: the first hour (attributed as the loan was made) and the hour the tick charges (not yet attributed)
    first = part.step(tick(T0 + HOUR_MS))
    assert hourly(first) == [(INTEREST_ACCRUED, -2 * HOUR, who, 1), (INTEREST_INCOME, 2 * HOUR, who, 2)]
    # 22:00: sys:interest_accrued held -HOUR (the 21:00 hour, not attributed); it is to hold -ceil(2 hours)
    second = part.step(tick(T0 + 2 * HOUR_MS))
    two_hours = ceil_div(150 * USDT * 2 * RATE, RATE_ONE)
    x = two_hours - HOUR
    assert hourly(second) == [(INTEREST_ACCRUED, -x, who, 3), (INTEREST_INCOME, x, who, 4)]
    # 22:10: repaid; the loan is charged its two hours since 20:00 (ceil(2 x 150 x rate)) and pays them
    repaid = part.step(user_input(T0 + 2 * HOUR_MS + 1, command(Repay, "r", USER, account="margin", asset="USDT",
                                                                 amount="1000")))
    charged = [ln.amount for ln in repaid.lines[P] if ln.account == INTEREST_ACCRUED]
    assert charged == [two_hours]
    # 23:00: no loan left: the rounding between the hourly and the loan's figures is recognized, and
    # sys:interest_accrued is back to 0
    last = part.step(tick(T0 + 3 * HOUR_MS))
    lines = [ln for s in (first, second, repaid, last) for ln in s.lines.get(P, ())]
    assert sum(ln.amount for ln in lines if ln.account == INTEREST_ACCRUED) + HOUR == 0, \
        "with the first hour's attribution (in the borrowing step), the account nets to 0"
    income = sum(ln.amount for ln in lines if ln.account == INTEREST_INCOME)
    assert income == HOUR + two_hours, "income is every hour the loan was charged"
    stored = json.loads(part.store.data[market_key(P)])
    assert stored["accrual_now"] == {"pools": {}, "seq": 6 if hourly(last) else 4}


def test_a_re_applied_step_books_the_same_hour_and_stores_the_same_aggregates() -> None:
    part = borrowed()
    offset = part.offsets["t.system"] + 1
    inputs: list[tuple[str, int, Command]] = [
        tick(T0 + HOUR_MS),
        user_input(T0 + HOUR_MS + 1, command(Borrow, "b2", USER, account="margin", asset="USDT", amount="10")),
    ]

    def run() -> Step:
        offsets = {"t.system": offset, "t.commands": part.offsets["t.commands"] + 1}
        sources = [(Source(topic, P, offsets[topic], None, ts), encoded(cmd)) for topic, ts, cmd in inputs]
        step = part.processor.run(sources, part.store.load, part.store.recall, part.store.scan)
        part.store.commit(step)
        return step

    once = run()
    stored = part.store.data[market_key(P)]
    again = run()  # interrupted after its states were stored, re-applied from its journal
    assert hourly(again) == hourly(once) != []
    assert part.store.data[market_key(P)] == stored
    assert json.loads(stored)["accrual_now"]["pools"]["USDT"][0] == 160 * USDT, "both loans' principal"


def test_a_user_id_may_not_take_the_ledger_s_own_prefix() -> None:
    part = Partition()
    step = part.step(user_input(T0, command(OpenAccount, "o", owner(P), kyc_tier=1, region="DE")))
    [result] = results(step).values()
    assert (result["status"], result["reason"]) == ("REJECTED", "MALFORMED_COMMAND")


def test_reconcile_knows_each_partition_s_accrual_ledger_from_its_market_record() -> None:
    part = borrowed()
    part.step(tick(T0 + HOUR_MS))
    markets = {k: v for k, v in part.store.data.items() if k.startswith(MARKET_PREFIX)}
    assert accrual_seqs({**markets, market_key(P + 1): None}) == {owner(P): 2}
