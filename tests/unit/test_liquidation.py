"""Liquidation (processors.liquidation), worked out by hand from Binance's cross margin rules (3x: liquidation at a
margin level of 1.1) and this exchange's config: a clearance fee of 2% of the proceeds to the insurance fund,
orders sized for the debt plus 7% (the fee and 5% slippage), parts of at most liquidation_part_value.

The account of every test: 1,000 USDT of the user's own in cross margin, 1,990 USDT borrowed at 10:20 (first hour
0.004544), all 2,990 spent on 0.04983333 BTC at 60,000. Its level at a BTC price P is
0.04983333 P / 1,990.004544: margin call at P <= 51,913, liquidation at P <= 43,926.
"""

from __future__ import annotations

import dataclasses

from processors.config import EngineConfig, default_config
from processors.context import Context
from processors.engine import apply, tick
from processors.inputs import command
from processors.ledger import CLEARING, INSURANCE_FUND, LENDING_POOL, LOANS_RECEIVABLE
from processors.margin import parse_price
from processors.market import Market
from processors.messages import (
    Borrow,
    Command,
    DepositConfirmed,
    Event,
    FillSettle,
    LedgerLine,
    LiquidationFill,
    LiquidationOrder,
    LiquidationOrderClosed,
    MarginEvent,
    OrderHold,
    Outcome,
    Repay,
    Transfer,
    WithdrawalApprove,
    WithdrawalConfirmed,
    WithdrawalFailed,
    WithdrawalRequest,
)
from processors.state import Liquidation, UserState
from tests.unit.core import Engine
from tests.unit.test_exactly_once import deposit, opened, transfer

CFG = default_config()
USDT = 10**6
SAT = 10**8
T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000 + 20 * 60_000  # 20 minutes past a full hour
BTC_HELD = 4_983_333  # sat: 2,990 USDT at 60,000 is 0.0498333.. BTC, down to the satoshi
DEBT = 1_990 * USDT + 4_544  # principal and the first hour


ETH = ["3000"]  # the ETH price of the markets made from here on


def market(btc: str, now_ms: int = T0) -> Market:
    m = Market()
    m.set_rate("USDT", CFG.rate_models["USDT"].hourly(450, 1000), T0)
    m.set_price("BTC", parse_price(btc), now_ms, now_ms)
    m.set_price("ETH", parse_price(ETH[0]), now_ms, now_ms)
    return m


class Desk:
    """One user's state driven through the core, with the market of the moment; checks the invariants after each
    input and keeps every ledger line and event."""

    def __init__(self, state: UserState, cfg: EngineConfig = CFG) -> None:
        self.state = state
        self.cfg = cfg
        self.lines: list[LedgerLine] = []
        self.events: list[Event] = []
        self.offset = 10

    def ctx(self, m: Market, now_ms: int) -> Context:
        self.offset += 1
        return Context(now_ms, self.cfg, Engine.memory, "t", self.offset, m)

    def send(self, cmd: Command, btc: str = "60000", now_ms: int = T0) -> str:
        self.state, out = apply(self.state, cmd, self.ctx(market(btc, now_ms), now_ms))
        return self._took(out)

    def price(self, btc: str, now_ms: int = T0) -> Outcome:
        """A price move touching the user (processors.batch gives it to users whose band it changes)."""
        self.state, out = tick(self.state, self.ctx(market(btc, now_ms), now_ms), f"price/{btc}/{now_ms}")
        self._took(out)
        return out

    def _took(self, out: Outcome) -> str:
        self.state.check()
        self.lines += out.lines
        self.events += out.events
        return out.result.reason or out.result.status

    def liquidate_requests(self) -> list[Command]:
        return [e for e in self.events if isinstance(e, Command) and e.kind == "Liquidate"]

    def orders(self) -> list[LiquidationOrder]:
        return [e for e in self.events if isinstance(e, LiquidationOrder)]

    def margin_events(self, kind: str) -> list[MarginEvent]:
        return [e for e in self.events if isinstance(e, MarginEvent) and e.kind == kind]

    def fill(self, order: LiquidationOrder, receive: int, btc: str, now_ms: int = T0, pay: int | None = None,
             fill_id: str = "f1") -> str:
        paid = order.sell_amount if pay is None else pay
        return self.send(command(LiquidationFill, f"fill/{order.id}/{fill_id}", "u", fill_id=fill_id,
                                 order_id=order.id, pay_amount=f"{paid / SAT:.8f}",
                                 receive_amount=f"{receive / USDT:.6f}"), btc, now_ms)


def long_btc(cfg: EngineConfig = CFG) -> Desk:
    desk = Desk(opened(), cfg)
    assert desk.send(command(Transfer, "in", "u", asset="USDT", amount="1000", from_account="spot",
                             to_account="margin")) == "ACCEPTED"
    assert desk.send(command(Borrow, "b", "u", account="margin", asset="USDT", amount="1990")) == "ACCEPTED"
    assert desk.send(command(OrderHold, "buy", "u", order_id="buy", account="margin", asset="USDT",
                             amount="2990")) == "ACCEPTED"
    assert desk.send(command(FillSettle, "buy-f", "u", fill_id="f", order_id="buy", account="margin",
                             pay_asset="USDT", pay_amount="2990", receive_asset="BTC", receive_amount="0.04983333",
                             fee_amount="0")) == "ACCEPTED"
    assert desk.state.balances[("margin", "BTC")] == [BTC_HELD, 0, 0]
    assert desk.state.balances[("margin", "USDT")] == [0, 0, 1_990 * USDT]
    return desk


def crash_to(desk: Desk, btc: str, now_ms: int = T0) -> LiquidationOrder:
    """The price falls to `btc`: the monitor asks for a liquidation, which applies and places its order."""
    desk.price(btc, now_ms)
    requests = desk.liquidate_requests()
    assert len(requests) >= 1 and requests[0].body == {"account": "margin"} and requests[0].source == "system"
    assert desk.send(requests[0], btc, now_ms) == "ACCEPTED"
    assert desk.state.liquidations["margin"].part == 1
    orders = desk.orders()
    assert len(orders) == 1
    return orders[0]


def test_a_liquidation_at_43000_sells_what_the_debt_needs_and_returns_the_rest() -> None:
    desk = long_btc()
    # 43,000: assets 0.04983333 x 43,000 = 2,142.833190, liabilities 1,990.004544: level 1.0768 <= 1.1
    assert 4_983_333 * 43_000 * USDT // SAT == 2_142_833_190
    order = crash_to(desk, "43000")
    assert [e.band for e in desk.margin_events("MarginLevel")][-1] == "liquidation"
    assert len(desk.margin_events("MarginCall")) == 1, "a fall through the call line into liquidation calls too"
    # sized for the debt plus 7%: 1,990.004544 x 1.07 = 2,129.304862.08 -> 2,129.304863 USDT of BTC at 43,000:
    # 2,129.304863 / 43,000 = 0.04951871.77 BTC -> up to 0.04951872
    budget = -(-DEBT * 107 // 100)
    assert budget == 2_129_304_863
    assert order.sell_amount == -(-budget * SAT // (43_000 * USDT)) == 4_951_872
    assert (order.sell_asset, order.buy_asset, order.mark_price, order.part) == ("BTC", "USDT", "43000", 1)
    assert desk.state.balances[("margin", "BTC")] == [BTC_HELD - 4_951_872, 4_951_872, 0]
    # filled at the mark: 0.04951872 x 43,000 = 2,129.304960 USDT; the debt first (0.004544 interest, then 1,990),
    # then the fee: 2% of 2,129.304960 = 42.5860992 -> 42.586100 (up), the rest 96.714316 to the account
    proceeds = 4_951_872 * 43_000 * USDT // SAT
    assert proceeds == 2_129_304_960
    assert desk.fill(order, proceeds, "43000") == "ACCEPTED"
    fee = -(-proceeds * 2 // 100)
    assert fee == 42_586_100
    assert desk.state.balances[("margin", "USDT")] == [proceeds - DEBT - fee, 0, 0] == [96_714_316, 0, 0]
    assert desk.state.balances[("margin", "BTC")] == [BTC_HELD - 4_951_872, 0, 0] == [31_461, 0, 0]
    assert not desk.state.loans and not desk.state.liquidations and not desk.state.bands
    completed = desk.margin_events("LiquidationCompleted")
    assert [(e.band, e.shortfall_value) for e in completed] == [("healthy", 0)]
    fund = [ln for ln in desk.lines if ln.account == INSURANCE_FUND]
    assert [ln.amount for ln in fund] == [fee], "the fund takes the fee and pays nothing"


def test_a_gap_below_the_debt_leaves_a_shortfall_the_insurance_fund_pays() -> None:
    desk = long_btc()
    # 20,000: 0.04983333 x 20,000 = 996.6666 USDT against 1,990.004544: everything is sold, and falls short
    order = crash_to(desk, "20000")
    assert order.sell_amount == BTC_HELD, "sized beyond what the account holds: all of it"
    proceeds = BTC_HELD * 20_000 * USDT // SAT
    assert proceeds == 996_666_600
    assert desk.fill(order, proceeds, "20000") == "ACCEPTED"
    # the proceeds pay the interest and 996.662056 of the principal; the fund pays the 993.337944 left, no fee
    shortfall = DEBT - proceeds
    assert shortfall == 993_337_944
    assert not desk.state.balances.get(("margin", "USDT")) and not desk.state.balances.get(("margin", "BTC"))
    assert not desk.state.loans and not desk.state.liquidations
    fund = [(ln.bucket, ln.amount) for ln in desk.lines if ln.account == INSURANCE_FUND]
    assert fund == [("balance", -shortfall)]
    [completed] = desk.margin_events("LiquidationCompleted")
    assert completed.shortfall_value == shortfall
    # every entry balances, and the loan's books close: what the pool lent came back, from the fills and the fund
    pool = sum(ln.amount for ln in desk.lines if ln.account == LENDING_POOL)
    receivable = sum(ln.amount for ln in desk.lines if ln.account == LOANS_RECEIVABLE)
    assert pool == 0 and receivable == 0
    clearing: dict[str, int] = {}
    for ln in desk.lines:
        if ln.account == CLEARING:
            clearing[ln.asset] = clearing.get(ln.asset, 0) + ln.amount
    assert clearing == {"USDT": 2_990 * USDT - proceeds, "BTC": BTC_HELD - BTC_HELD}, "the market's side in clearing"


def test_slippage_beyond_the_allowance_liquidates_in_a_second_part_after_the_cooldown() -> None:
    desk = long_btc()
    order = crash_to(desk, "43000")
    # filled 10% under the mark: 1,916.374464 USDT does not pay the 1,990.004544 owed
    receive = 4_951_872 * 43_000 * 9 * USDT // (SAT * 10)
    assert desk.fill(order, receive, "43000") == "ACCEPTED"
    left = DEBT - receive
    liquidation = desk.state.liquidations["margin"]
    assert liquidation.due_ms == T0 + CFG.liquidation_cooldown_ms and not liquidation.orders
    assert desk.state.balances[("margin", "USDT")] == [0, 0, left]
    # a price before the cooldown is over starts nothing; the first after it starts part 2, at its price
    desk.price("43000", T0 + 1_000)
    assert len(desk.orders()) == 1
    out = desk.price("43100", T0 + CFG.liquidation_cooldown_ms)
    part2 = desk.orders()[1]
    assert part2.part == 2 and part2.sell_amount == 31_461, "all that is left (worth less than the debt + 7%)"
    assert out.lines and all(ln.entry_id.startswith("system/price/") for ln in out.lines)
    proceeds = 31_461 * 43_100 * USDT // SAT
    assert desk.fill(part2, proceeds, "43100", T0 + CFG.liquidation_cooldown_ms) == "ACCEPTED"
    [completed] = desk.margin_events("LiquidationCompleted")
    assert completed.shortfall_value == left - proceeds > 0, "the rest falls short: the fund pays it"


def test_large_accounts_liquidate_in_parts_of_at_most_the_part_value() -> None:
    desk = long_btc(dataclasses.replace(CFG, liquidation_part_value=800 * USDT))
    order = crash_to(desk, "43000")
    # at most 800 USDT of BTC a part: 800 / 43,000 = 0.01860465.11 -> 0.01860466 BTC; 1,990.004544 owed takes 3
    assert order.sell_amount == -(-800 * USDT * SAT // (43_000 * USDT)) == 1_860_466
    assert desk.fill(order, 1_860_466 * 43_000 * USDT // SAT, "43000") == "ACCEPTED"
    assert desk.state.liquidations["margin"].due_ms, "debt left: the next part waits for the cooldown"
    parts = 1
    now = T0
    while desk.state.liquidations:
        now += CFG.liquidation_cooldown_ms
        desk.price("43000", now)
        parts += 1
        order = desk.orders()[-1]
        assert order.part == parts and value_of(order.sell_amount) <= 800 * USDT + 430
        assert desk.fill(order, order.sell_amount * 43_000 * USDT // SAT, "43000", now) == "ACCEPTED"
        assert parts < 10
    assert parts == 3 and not desk.state.loans
    assert desk.margin_events("LiquidationCompleted")[0].shortfall_value == 0


def value_of(sat: int, price: int = 43_000) -> int:
    return sat * price * USDT // SAT


def test_a_liquidating_account_is_locked_and_its_holds_are_released() -> None:
    desk = long_btc()
    assert desk.send(command(OrderHold, "sell-some", "u", order_id="s", account="margin", asset="BTC",
                             amount="0.01")) == "ACCEPTED"
    crash_to(desk, "43000")
    assert "s" not in desk.state.holds, "released by the liquidation's start"
    locked = [
        command(OrderHold, "h2", "u", order_id="s2", account="margin", asset="BTC", amount="0.001"),
        command(Borrow, "b2", "u", account="margin", asset="USDT", amount="1"),
        command(Repay, "r2", "u", account="margin", asset="USDT", amount="1"),
        command(Transfer, "t-in", "u", asset="USDT", amount="1", from_account="spot", to_account="margin"),
        command(Transfer, "t-out", "u", asset="BTC", amount="0.0001", from_account="margin", to_account="spot"),
    ]
    for cmd in locked:
        assert desk.send(cmd, "43000") == "ACCOUNT_LIQUIDATING", cmd.kind
    # a fill of the released order, in flight at the matching engine, finds it closed
    assert desk.send(command(FillSettle, "late", "u", fill_id="late", order_id="s", account="margin",
                             pay_asset="BTC", pay_amount="0.01", receive_asset="USDT", receive_amount="430",
                             fee_amount="0"), "43000") == "ORDER_CLOSED"


def test_one_crossing_one_liquidation() -> None:
    desk = long_btc()
    desk.price("43000")
    desk.price("42000")  # deeper in the same band: asked again, under the same id (nothing changed the state)
    desk.price("41000")
    requests = desk.liquidate_requests()
    assert len(requests) == 3 and len({r.id for r in requests}) == 1
    request = requests[0]
    assert desk.send(request, "41000") == "ACCEPTED"
    assert desk.send(request, "41000") == "ACCEPTED" and len(desk.orders()) == 1, "a resend applies nothing"
    again = request._replace(id="liq/margin/other")
    assert desk.send(again, "41000") == "ALREADY_LIQUIDATING"
    [order] = desk.orders()
    assert desk.fill(order, order.sell_amount * 41_000 * USDT // SAT, "41000") == "ACCEPTED"
    assert desk.fill(order, order.sell_amount * 41_000 * USDT // SAT, "41000", fill_id="f2") == \
        "UNKNOWN_LIQUIDATION_ORDER", "a filled order takes no more fills"
    assert len(desk.margin_events("LiquidationStarted")) == len(desk.margin_events("LiquidationCompleted")) == 1


def test_a_fill_id_settles_once_and_partial_fills_add_up() -> None:
    desk = long_btc()
    order = crash_to(desk, "43000")
    half = order.sell_amount // 2
    assert desk.fill(order, value_of(half), "43000", pay=half, fill_id="a") == "ACCEPTED"
    assert desk.send(command(LiquidationFill, "another-input", "u", fill_id="a", order_id=order.id,
                             pay_amount="0.00000001", receive_amount="1"), "43000") == "FILL_SETTLED"
    rest = order.sell_amount - half
    assert desk.fill(order, value_of(rest), "43000", pay=rest + 1, fill_id="b") == "HOLD_EXCEEDED"
    assert desk.fill(order, value_of(rest), "43000", pay=rest, fill_id="b") == "ACCEPTED"
    assert not desk.state.liquidations and not desk.state.loans


def test_the_price_back_above_the_line_before_the_input_applies_refuses_it() -> None:
    desk = long_btc()
    desk.price("43000")
    [request] = desk.liquidate_requests()
    # asked again at the next valuation while none applied: a refused one (its price stale) is not the last word
    desk.price("43000", T0 + 1)
    assert [r.id for r in desk.liquidate_requests()] == [request.id] * 2
    # 45,000: 0.04983333 x 45,000 = 2,242.49985 / 1,990.004544 = 1.1268 > 1.1
    assert desk.send(request, "45000") == "NOT_LIQUIDATABLE"
    assert not desk.state.liquidations
    # a stale price neither asks nor applies one
    stale = market("30000", T0)
    later = T0 + CFG.price_max_age_ms + 1
    desk.state, out = apply(desk.state, request, desk.ctx(stale, later))
    assert out.result.reason == "PRICE_UNAVAILABLE"


def test_isolated_margin_is_not_touched_by_a_cross_liquidation_nor_the_other_way() -> None:
    desk = long_btc()
    assert desk.send(deposit("0xmore")) == "ACCEPTED"
    assert desk.send(command(Transfer, "iso-in", "u", asset="USDT", amount="100", from_account="spot",
                             to_account="isolated:ETH-USDT")) == "ACCEPTED"
    assert desk.send(command(Borrow, "iso-b", "u", account="isolated:ETH-USDT", asset="USDT",
                             amount="100")) == "ACCEPTED"
    crash_to(desk, "43000")
    assert list(desk.state.liquidations) == ["margin"]
    assert desk.state.balances[("isolated:ETH-USDT", "USDT")][0] == 200 * USDT, "isolated: untouched"
    assert desk.send(command(Borrow, "iso-b2", "u", account="isolated:ETH-USDT", asset="USDT",
                             amount="1"), "43000") == "ACCEPTED", "and not locked"
    assert all(o.account == "margin" for o in desk.orders())


def test_an_isolated_liquidation_leaves_cross_margin_alone() -> None:
    desk = long_btc()
    assert desk.send(command(DepositConfirmed, "ethereum:0xeth:0", "u", chain="ethereum", tx_hash="0xeth",
                             log_index=0, address="0x" + "ab" * 20, asset="ETH", amount="0.1", block_number=1,
                             account="isolated:ETH-USDT")) == "ACCEPTED"
    # 0.1 ETH at 3,000 and 200 USDT borrowed: (300 + 200) / 200.000457 = 2.49 (isolated 5x borrows down to 1.25)
    assert desk.send(command(Borrow, "iso-b", "u", account="isolated:ETH-USDT", asset="USDT",
                             amount="200")) == "ACCEPTED"
    ETH[0] = "150"
    try:
        # (15 + 200) / 200.000457 = 1.0749 <= 1.1 in isolated; cross at 60,000 is healthy
        desk.price("60000")
        [request] = desk.liquidate_requests()
        assert request.body == {"account": "isolated:ETH-USDT"}
        assert desk.send(request) == "ACCEPTED"
        # its own 200 USDT pay the interest (0.000457) and 199.999543 of the principal; the 0.000457 left is
        # bought with ETH: 0.000457 x 1.07 = 0.00048899 -> 0.000489 USDT of ETH at 150
        [order] = desk.orders()
        assert (order.account, order.sell_asset, order.buy_asset) == ("isolated:ETH-USDT", "ETH", "USDT")
        assert order.sell_amount == -(-489 * 10**18 // (150 * USDT))
        assert desk.state.balances[("margin", "BTC")] == [BTC_HELD, 0, 0] and "margin" not in desk.state.liquidations
        assert desk.send(command(Borrow, "cross-b", "u", account="margin", asset="USDT", amount="1")) == "ACCEPTED"
    finally:
        ETH[0] = "3000"


# Withdrawals from a margin account. The account of these tests: `long_btc` plus 2,000 USDT deposited into margin,
# of which 1,000 (and the 1 USDT fee) asked out. No valuation counts the 1,001 USDT frozen for the withdrawal.
ADDR_OUT = "0x" + "5a" * 20


def withdrawing(cfg: EngineConfig = CFG) -> Desk:
    desk = long_btc(cfg)
    assert desk.send(deposit("0xmargin", amount="2000", account="margin")) == "ACCEPTED"
    # at 60,000: assets 2,990 + 2,000 = 4,990 against 1,990.004544 (2.51 > 2): 1,001 out leaves 3,989 (2.0045)
    assert desk.send(command(WithdrawalRequest, "w-req", "u", withdrawal_id="w1", account="margin", chain="ethereum",
                             asset="USDT", amount="1000", fee="1", address=ADDR_OUT)) == "ACCEPTED"
    assert desk.state.balances[("margin", "USDT")] == [999 * USDT, 1_001 * USDT, 1_990 * USDT]
    return desk


def test_a_withdrawal_s_frozen_coins_count_for_no_valuation() -> None:
    desk = withdrawing()
    # Counted, the first withdrawal's 1,001 USDT would let 501 more out: 4,990 - 501 = 4,489 (2.26 > 2).
    # Not counted: 4,990 - 1,001 - 501 = 3,488 against 1,990.004544 is 1.75 <= 2, refused.
    assert desk.send(command(WithdrawalRequest, "w-req2", "u", withdrawal_id="w2", account="margin",
                             chain="ethereum", asset="USDT", amount="500", fee="1",
                             address=ADDR_OUT)) == "MARGIN_LEVEL_TOO_LOW"
    assert desk.send(transfer("t-out", "501", "margin", "spot")) == "MARGIN_LEVEL_TOO_LOW"
    # what the line allows: 3,989 - 2 x 1,990.004544 = 8.990912 -> 8.99 leaves the account above 2
    assert desk.send(transfer("t-out-2", "8.99", "margin", "spot")) == "ACCEPTED"


def gap_to_10000(desk: Desk) -> LiquidationOrder:
    """BTC gaps to 10,000: 0.04983333 BTC is 498.333300 and the 999 USDT available pay 999 of the debt first; the
    BTC sold leaves 1,990.004544 - 999 - 498.333300 = 492.671244 owed and nothing to sell."""
    order = crash_to(desk, "10000")
    assert order.sell_amount == BTC_HELD
    assert desk.fill(order, BTC_HELD * 10_000 * USDT // SAT, "10000") == "ACCEPTED"
    assert desk.state.balances[("margin", "USDT")] == [0, 1_001 * USDT, 492_671_244]
    return order


def test_the_fund_waits_for_a_withdrawal_with_the_signer_and_its_failure_pays_the_debt() -> None:
    desk = withdrawing()
    gap_to_10000(desk)
    later = T0 + CFG.liquidation_cooldown_ms
    liquidation = desk.state.liquidations["margin"]
    assert liquidation.due_ms == later, "nothing to sell, but 1,001 USDT may come back: no shortfall yet"
    desk.price("10000", later)
    assert desk.state.liquidations["margin"].due_ms == later + CFG.liquidation_cooldown_ms, "still with the signer"
    assert not [ln for ln in desk.lines if ln.account == INSURANCE_FUND and ln.amount < 0]
    # the chain says the withdrawal failed: its 1,001 USDT come back, and the next part pays the debt with them
    assert desk.send(command(WithdrawalFailed, "ethereum:w1:failed", "u", withdrawal_id="w1", reason="reverted"),
                     "10000", later) == "ACCEPTED"
    desk.price("10000", later + CFG.liquidation_cooldown_ms)
    [completed] = desk.margin_events("LiquidationCompleted")
    assert completed.shortfall_value == 0
    assert desk.state.balances[("margin", "USDT")] == [1_001 * USDT - 492_671_244, 0, 0]
    assert not [ln for ln in desk.lines if ln.account == INSURANCE_FUND and ln.amount < 0], "the fund paid nothing"


def test_the_fund_pays_once_the_withdrawal_left() -> None:
    desk = withdrawing()
    gap_to_10000(desk)
    later = T0 + CFG.liquidation_cooldown_ms
    assert desk.send(command(WithdrawalConfirmed, "ethereum:w1:done", "u", withdrawal_id="w1", tx_hash="0xw1"),
                     "10000", later) == "ACCEPTED"
    desk.price("10000", later)
    [completed] = desk.margin_events("LiquidationCompleted")
    assert completed.shortfall_value == 492_671_244
    assert [ln.amount for ln in desk.lines if ln.account == INSURANCE_FUND and ln.amount < 0] == [-492_671_244]
    assert not desk.state.balances.get(("margin", "USDT"))


def test_a_liquidation_cancels_the_account_s_withdrawals_awaiting_approval() -> None:
    rules = dict(CFG.rules)
    rules["USDT"] = dataclasses.replace(rules["USDT"], auto_approve_below=500 * USDT)
    desk = withdrawing(dataclasses.replace(CFG, rules=rules))
    w1 = desk.state.withdrawals["w1"]
    assert w1.status == "pending_approval"
    # BTC at 10,000, as above: but the 1,001 USDT come back as the liquidation starts, and with the 999 available
    # pay the whole debt: nothing is sold, and the BTC stays the user's
    desk.price("10000")
    [request] = desk.liquidate_requests()
    assert desk.send(request, "10000") == "ACCEPTED"
    assert desk.state.withdrawals["w1"].status in ("cancelled",), "the state's own object, read again"
    [started] = desk.margin_events("LiquidationStarted")
    assert started.detail == "0 orders released, 1 withdrawals cancelled"
    assert not desk.orders() and not desk.state.liquidations and not desk.state.loans
    assert [e.shortfall_value for e in desk.margin_events("LiquidationCompleted")] == [0]
    assert desk.state.balances[("margin", "USDT")] == [2_000 * USDT - DEBT, 0, 0]
    assert desk.state.balances[("margin", "BTC")] == [BTC_HELD, 0, 0]
    assert desk.send(command(WithdrawalApprove, "ok", "u", withdrawal_id="w1", approver="ops-1"),
                     "10000") == "BAD_WITHDRAWAL_STATE"


def test_an_approval_during_a_liquidation_is_refused() -> None:
    rules = dict(CFG.rules)
    rules["USDT"] = dataclasses.replace(rules["USDT"], auto_approve_below=500 * USDT)
    desk = withdrawing(dataclasses.replace(CFG, rules=rules))
    crash_to_state = desk.state  # a second pending withdrawal made while the account is locked cannot exist:
    # put the account in a liquidation by hand, with the withdrawal still pending, to see approve's own check
    crash_to_state.liquidations["margin"] = Liquidation("liq/margin/1", 1, T0 + 10**9)
    assert desk.send(command(WithdrawalApprove, "ok", "u", withdrawal_id="w1", approver="ops-1"),
                     "10000") == "ACCOUNT_LIQUIDATING"


def test_an_order_the_book_cannot_fill_is_closed_and_the_next_part_sells_the_rest() -> None:
    desk = long_btc()
    order = crash_to(desk, "43000")
    half = order.sell_amount // 2  # 2,475,936 sat of 4,951,872
    assert desk.fill(order, half * 43_000 * USDT // SAT, "43000", pay=half) == "ACCEPTED"
    closed = command(LiquidationOrderClosed, f"closed/{order.id}", "u", order_id=order.id,
                     reason="no liquidity within the order's limit")
    assert desk.send(closed, "43000") == "ACCEPTED"
    # what was not sold is the account's again, not frozen; the part is done, with debt left: the next after the
    # cooldown
    rest = order.sell_amount - half
    assert desk.state.balances[("margin", "BTC")] == [BTC_HELD - half, 0, 0]
    liquidation = desk.state.liquidations["margin"]
    assert not liquidation.orders and liquidation.due_ms == T0 + CFG.liquidation_cooldown_ms
    assert desk.send(closed, "43000") == "ACCEPTED", "a resend of the same report answers as the first"
    assert desk.send(closed._replace(id="closed-again"), "43000") == "UNKNOWN_LIQUIDATION_ORDER"
    # the next part: 1,990.004544 - 1,064.652480 = 925.352064 USDT owed, x 1.07 = 990.126709 at 43,000
    desk.price("43000", T0 + CFG.liquidation_cooldown_ms)
    part2 = desk.orders()[-1]
    left = DEBT - half * 43_000 * USDT // SAT
    assert left == 925_352_064
    budget = -(-left * 107 // 100)
    assert budget == 990_126_709
    assert part2.part == 2 and part2.sell_amount == -(-budget * SAT // (43_000 * USDT)) == 2_302_621
    assert part2.sell_amount < rest + 31_461
    assert desk.fill(part2, part2.sell_amount * 43_000 * USDT // SAT, "43000",
                     T0 + CFG.liquidation_cooldown_ms) == "ACCEPTED"
    assert [e.shortfall_value for e in desk.margin_events("LiquidationCompleted")] == [0]
