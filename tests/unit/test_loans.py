"""Margin loans (processors.loans), worked out by hand from Binance's cross margin rules (3x: borrowing up to a
margin level of 1.5, transfers out only above 2; simple hourly interest, the first hour as the loan is made,
then one at each full hour; repayment pays interest first) and the USDT pool's rate model in the config."""

from __future__ import annotations

from fractions import Fraction

from processors.config import default_config
from processors.context import Context
from processors.engine import apply
from processors.inputs import command
from processors.ledger import INTEREST_ACCRUED, LENDING_POOL, LOANS_RECEIVABLE
from processors.margin import parse_price
from processors.market import Market
from processors.messages import Borrow, Command, DepositConfirmed, LedgerLine, Repay, Transfer
from processors.rates import HOUR_MS, RATE_ONE, hour_of
from processors.state import UserState
from tests.unit.core import Engine
from tests.unit.test_exactly_once import opened

CFG = default_config()
USDT = 10**6
T0 = hour_of(Engine.now_ms) * HOUR_MS + 20 * 60_000  # 20 minutes past a full hour
# The USDT pool 45% lent out: half its 90% kink, so 4% / 2 = 2% a year, 0.02 / 8,760 an hour:
# 2,283,105,022,831.05e-18, rounded up
RATE = 2_283_105_022_832


def market(now_ms: int = T0, btc: str = "60000") -> Market:
    m = Market()
    m.set_rate("USDT", CFG.rate_models["USDT"].hourly(450, 1000), now_ms)
    m.set_price("BTC", parse_price(btc), now_ms, now_ms)
    return m


def at(now_ms: int, m: Market | None) -> Context:
    return Context(now_ms, CFG, Engine.memory, market=m)


def run(state: UserState, cmd: Command, now_ms: int = T0,
        m: Market | None = None) -> tuple[UserState, str, tuple[LedgerLine, ...]]:
    state, out = apply(state, cmd, at(now_ms, market(now_ms) if m is None else m))
    state.check()
    return state, out.result.reason or out.result.status, out.lines


def borrow(cmd_id: str, amount: str, asset: str = "USDT", account: str = "margin") -> Command:
    return command(Borrow, cmd_id, "u", account=account, asset=asset, amount=amount)


def repay(cmd_id: str, amount: str, asset: str = "USDT", account: str = "margin") -> Command:
    return command(Repay, cmd_id, "u", account=account, asset=asset, amount=amount)


def to(account: str, amount: str, src: str = "spot", asset: str = "USDT") -> Command:
    return command(Transfer, f"to-{account}-{amount}-{src}", "u", asset=asset, amount=amount, from_account=src,
                   to_account=account)


def with_margin(usdt: str = "1000") -> UserState:
    """1,000 USDT deposited to spot, moved to the cross margin account."""
    state, reason, _ = run(opened(), to("margin", usdt))
    assert reason == "ACCEPTED"
    return state


def test_the_rate_is_the_one_worked_out_by_hand() -> None:
    assert CFG.rate_models["USDT"].hourly(450, 1000) == RATE == -(-Fraction("0.02") * RATE_ONE // 8_760)


def test_a_loan_at_3x_stops_at_a_margin_level_of_1_5_with_its_first_hour() -> None:
    state = with_margin()
    # 2,000 USDT on 1,000: assets 3,000, liabilities 2,000 + the first hour, 2,000 x RATE = 0.004566210045664
    # USDT, up to 0.004567: 3,000 / 2,000.004567 < 1.5
    _, reason, _ = run(state, borrow("b1", "2000"))
    assert reason == "MARGIN_LEVEL_TOO_LOW"
    # 1,990: first hour 1,990 x RATE = 0.004543379 -> 0.004544; 2,990 / 1,990.004544 = 1.50250...
    state, reason, lines = run(state, borrow("b2", "1990"))
    assert reason == "ACCEPTED"
    assert state.balances[("margin", "USDT")] == [2_990 * USDT, 0, 1_990 * USDT]
    # the index as charged through 10:00 (the pool's count began at 10:20: nothing charged yet)
    assert state.loans[("margin", "USDT")].fields() == (4_544, 0)
    posted = {(ln.account, ln.bucket): ln.amount for ln in lines}
    assert posted == {("margin", "available"): 1_990 * USDT, (LENDING_POOL, "balance"): -1_990 * USDT,
                      ("margin", "borrowed"): -1_990 * USDT, (LOANS_RECEIVABLE, "balance"): 1_990 * USDT,
                      ("margin", "interest"): -4_544, (INTEREST_ACCRUED, "balance"): 4_544}


def test_transfers_out_of_an_indebted_margin_account_stay_above_2() -> None:
    state, _, _ = run(with_margin(), borrow("b", "500"))
    # assets 1,500; liabilities 500 + 500 x RATE = 0.0011415525 -> 500.001142: 1,500 / 500.001142 = 2.99999...
    # out 499: 1,001 / 500.001142 = 2.00199 > 2, allowed; then 2 more: 999 / 500.001142 = 1.998 <= 2, refused
    state, reason, _ = run(state, to("spot", "499", src="margin"))
    assert reason == "ACCEPTED"
    _, reason, _ = run(state, to("spot", "2", src="margin"))
    assert reason == "MARGIN_LEVEL_TOO_LOW"
    # repaid, the account owes nothing: all of it may go
    state, reason, _ = run(state, repay("r", "600"))
    assert reason == "ACCEPTED" and not state.loans
    state, reason, _ = run(state, to("spot", "500.998858", src="margin"))  # 1,001 - 500 - 0.001142
    assert reason == "ACCEPTED" and ("margin", "USDT") not in state.balances


def test_interest_is_charged_at_each_full_hour_and_repaid_before_principal() -> None:
    state, _, _ = run(with_margin(), borrow("b", "1990"))  # 10:20, the first hour: 4,544
    m = market()
    later = T0 + 3 * HOUR_MS + 10 * 60_000  # 13:30: the hours of 11:00, 12:00 and 13:00 are charged
    m.set_price("BTC", parse_price("60000"), later, later)
    # 1,990 x 3 x RATE = 0.013630136986 USDT -> 0.013631; owed interest 0.004544 + 0.013631 = 0.018175
    state, reason, lines = run(state, repay("r1", "10"), later, m)
    assert reason == "ACCEPTED"
    assert [(ln.bucket, ln.amount) for ln in lines if ln.bucket in ("interest", "borrowed")] == [
        ("interest", -13_631), ("interest", 18_175), ("borrowed", 10 * USDT - 18_175)]
    assert state.balances[("margin", "USDT")] == [2_980 * USDT, 0, 1_980 * USDT + 18_175]
    assert state.loans[("margin", "USDT")].fields() == (0, 3 * RATE)


def test_a_loan_repaid_within_its_hour_pays_that_hour_only() -> None:
    state, _, _ = run(with_margin(), borrow("b", "1990"))
    # 10:50, the same hour: 1,990 + 0.004544 owed; an amount above it pays what is owed
    state, reason, lines = run(state, repay("r", "5000"), T0 + 30 * 60_000)
    assert reason == "ACCEPTED" and not state.loans
    assert state.balances[("margin", "USDT")] == [1_000 * USDT - 4_544, 0, 0]
    assert sum(ln.amount for ln in lines if ln.account == INTEREST_ACCRUED) == 0, "no hour booked on repayment"
    _, reason, _ = run(state, repay("r-again", "1"))
    assert reason == "NOTHING_TO_REPAY"


def test_a_loan_needs_a_margin_account_a_pool_rate_and_fresh_prices() -> None:
    state = with_margin()
    assert run(state, borrow("spot", "1", account="spot"))[1] == "NOT_A_MARGIN_ACCOUNT"
    assert run(state, borrow("no-rate-yet", "1"), T0, Market())[1] == "NO_LENDING_POOL"
    assert apply(state, borrow("no-market", "1"), at(T0, None))[1].result.reason == "PRICE_UNAVAILABLE"
    # borrowing BTC values it: its price must be at most price_max_age_ms old
    m = market()
    m.set_rate("BTC", CFG.rate_models["BTC"].hourly(1, 10), T0)
    assert run(state, borrow("btc", "0.001", asset="BTC"), T0, m)[1] == "ACCEPTED"
    too_late = T0 + CFG.price_max_age_ms + 1
    assert run(state, borrow("btc-stale", "0.001", asset="BTC"), too_late, m)[1] == "PRICE_UNAVAILABLE"


def test_isolated_margin_is_valued_apart_from_cross() -> None:
    state = with_margin("500")
    state, reason, _ = run(state, to("isolated:BTC-USDT", "500"))
    assert reason == "ACCEPTED"
    # cross 3x lends at most twice the equity: 1,990 on 500 is refused there
    assert run(state, borrow("cross", "1990"))[1] == "MARGIN_LEVEL_TOO_LOW"
    # isolated 5x (config): up to a level of 1.25: 2,490 / 1,990.004544 = 1.2513 >= 1.25
    state, reason, _ = run(state, borrow("iso", "1990", account="isolated:BTC-USDT"))
    assert reason == "ACCEPTED" and list(state.loans) == [("isolated:BTC-USDT", "USDT")]
    # the isolated account's debt is not the cross account's: all of cross margin may leave, none of isolated
    assert run(state, to("spot", "1", src="isolated:BTC-USDT"))[1] == "MARGIN_LEVEL_TOO_LOW"
    state, reason, _ = run(state, to("spot", "500", src="margin"))
    assert reason == "ACCEPTED"


def test_holdings_count_rounded_down_and_debts_up() -> None:
    """1 satoshi at 64,250.5 USDT is 0.000642505 USDT: it counts as 0.000642. A loan of 0.001282 USDT (first hour
    0.000000003 -> 0.000001): (0.000642 + 0.001282) / 0.001283 = 1.49961 < 1.5, refused; had the satoshi counted
    0.000643, 1.50039 would pass."""
    btc = command(DepositConfirmed, "bitcoin:0xbtc:0", "u", chain="bitcoin", tx_hash="0xbtc", log_index=0,
                  address="bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", asset="BTC", amount="0.001",
                  block_number=1, account="spot")
    state, reason, _ = run(opened(), btc)
    assert reason == "ACCEPTED"
    state, reason, _ = run(state, to("margin", "0.00000001", asset="BTC"))
    assert reason == "ACCEPTED"
    m = market(btc="64250.5")
    assert run(state, borrow("b", "0.001282"), T0, m)[1] == "MARGIN_LEVEL_TOO_LOW"
    assert run(state, borrow("b-less", "0.001281"), T0, m)[1] == "ACCEPTED"  # (642 + 1281) / 1282 = 1.50000
