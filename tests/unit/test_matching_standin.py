"""The matching engine's stand-in (streams.matching_standin) answers a liquidation order as the engine expects: a
thin book fills part of it and closes the rest, and the core settles both (test_liquidation's account at 43,000)."""

from __future__ import annotations

from decimal import Decimal

from processors.config import default_config
from processors.wire import liquidation_order_to_avro
from streams.matching_standin import fill_for
from tests.unit.test_liquidation import BTC_HELD, SAT, USDT, crash_to, long_btc

CFG = default_config()


def test_a_thin_book_fills_part_of_an_order_and_closes_the_rest() -> None:
    desk = long_btc()
    order = crash_to(desk, "43000")
    record = liquidation_order_to_avro(order, CFG)
    reports = fill_for(record, Decimal("0.01"), CFG, liquidity=Decimal("0.25"))
    assert [r.kind for r in reports] == ["LiquidationFill", "LiquidationOrderClosed"]
    sold = order.sell_amount // 4  # 4,951,872 / 4 = 1,237,968 sat
    assert reports[0].body["pay_amount"] == f"{Decimal(sold) / SAT:f}" == "0.01237968"
    # at 43,000 less 1%: 0.01237968 x 42,570 = 527.0029776 -> 527.002977 USDT, rounded down
    assert reports[0].body["receive_amount"] == "527.002977"
    for report in reports:
        assert desk.send(report, "43000") == "ACCEPTED", report
    assert desk.state.balances[("margin", "BTC")] == [BTC_HELD - sold, 0, 0]
    assert desk.state.balances[("margin", "USDT")] == [0, 0, 1_990 * USDT + 4_544 - 527_002_977]
    assert desk.state.liquidations["margin"].due_ms, "debt left: the next part after the cooldown"
    assert fill_for(record, Decimal(0), CFG) == fill_for(record, Decimal(0), CFG, liquidity=Decimal(1))
    assert [r.kind for r in fill_for(record, Decimal(0), CFG)] == ["LiquidationFill"], "a deep book: one fill"
    assert [r.kind for r in fill_for(record, Decimal(0), CFG, liquidity=Decimal(0))] == ["LiquidationOrderClosed"]
