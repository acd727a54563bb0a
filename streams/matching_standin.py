"""A STAND-IN for the exchange's matching engine, for the demo, tests and benchmarks: matching itself stays outside
posflow. It speaks the matching engine's side of posflow's protocol: it reads the liquidation orders the engine
writes (topic liquidation-orders, Avro LiquidationOrder) and answers each with one `LiquidationFill` on the user
commands' topic, as the matching engine reports fills: the whole order (or, with --liquidity, the part a thin
book takes, and a `LiquidationOrderClosed` for the rest), at its mark price less a given slippage, rounded down
to the bought asset's minor unit.

With a market maker (a user and one of its open orders holding the bought asset), it also reports the other side
of each trade as a matching engine does: the maker's `FillSettle`, paying what the liquidation received and
receiving what it sold, so clearing nets to zero as with any trade.

At least once: it commits an order's offset only after Kafka acknowledged its fill, and a fill sent twice (after
a crash) has the same input id, so the engine applies it once.

    python -m streams.matching_standin [--slippage 0.01]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from decimal import ROUND_DOWN, Decimal
from typing import Any

from confluent_kafka import Consumer

from processors.config import EngineConfig, default_config
from processors.inputs import command
from processors.messages import Command, FillSettle, LiquidationFill, LiquidationOrderClosed
from schemas import CODEC
from streams.client import CommandClient
from streams.config import Settings
from streams.kafka import consumed, consumer_config
from streams.topics import LIQUIDATION_ORDERS

GROUP = "posflow-matching-standin"


def fill_for(order: dict[str, Any], slippage: Decimal, cfg: EngineConfig,
             maker: tuple[str, str, str] | None = None, liquidity: Decimal = Decimal(1)) -> list[Command]:
    """The reports a matching engine would send for a liquidation order (a decoded LiquidationOrder record): a
    fill of `liquidity` of it (all by default; rounded down to the sold asset's minor unit) at mark x (1 -
    slippage), rounded down; the maker's side (`maker`: user, order id, the asset its order holds) when it holds
    the asset bought; and, when the book had less than the order, a `LiquidationOrderClosed` for the rest. Their
    ids follow from the order's: sent again, they are the same reports."""
    sell_scale, scale = cfg.assets[order["sell_asset"]].scale, cfg.assets[order["buy_asset"]].scale
    sell = (Decimal(order["sell_amount"]) * liquidity).quantize(Decimal(1).scaleb(-sell_scale), rounding=ROUND_DOWN)
    reports: list[Command] = []
    if sell > 0:
        proceeds = sell * Decimal(order["mark_price"]) * (1 - slippage)
        receive = f"{max(proceeds.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_DOWN), Decimal(0)):f}"
        reports.append(command(LiquidationFill, f"standin-fill/{order['id']}", order["user_id"], fill_id="standin-1",
                               order_id=order["id"], pay_amount=f"{sell:f}", receive_amount=receive))
        if maker is not None and maker[2] == order["buy_asset"] and Decimal(receive) > 0:
            user, maker_order, _ = maker
            reports.append(command(FillSettle, f"standin-maker/{order['user_id']}/{order['id']}", user,
                                   fill_id=f"{order['user_id']}/{order['id']}", order_id=maker_order,
                                   account="spot", pay_asset=order["buy_asset"], pay_amount=receive,
                                   receive_asset=order["sell_asset"], receive_amount=f"{sell:f}", fee_amount="0"))
    if sell < Decimal(order["sell_amount"]):
        reports.append(command(LiquidationOrderClosed, f"standin-closed/{order['id']}", order["user_id"],
                               order_id=order["id"], reason="no liquidity within the order's limit"))
    return reports


class MatchingStandIn:
    def __init__(self, settings: Settings, slippage: Decimal = Decimal(0), cfg: EngineConfig | None = None,
                 group: str = GROUP, maker: tuple[str, str, str] | None = None,
                 liquidity: Decimal = Decimal(1)) -> None:
        assert 0 <= slippage < 1, "slippage is a fraction of the mark price"
        assert 0 <= liquidity <= 1, "liquidity is the fraction of each order the book can take"
        self.settings = settings
        self.slippage = slippage
        self.liquidity = liquidity
        self.maker = maker
        self.cfg = cfg or default_config()
        self.client = CommandClient(settings)
        self.consumer = Consumer(consumer_config(settings, group))  # from the earliest order; commits by hand
        self.consumer.subscribe([LIQUIDATION_ORDERS.name(settings)])
        self.filled = 0

    def poll(self, timeout: float = 0.5) -> int:
        """Fill the orders of one poll; the number filled."""
        msgs = consumed(self.consumer, 1000, timeout, "liquidation orders")
        if not msgs:
            return 0
        for msg in msgs:
            name, record = CODEC.decode(msg.value())
            assert name == "LiquidationOrder", f"{name} on the liquidation-orders topic"
            for fill in fill_for(record, self.slippage, self.cfg, self.maker, self.liquidity):
                self.client.send(fill)
        self.client.flush()
        self.consumer.commit(asynchronous=False)
        self.filled += len(msgs)
        return len(msgs)

    def close(self) -> None:
        self.consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.matching_standin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slippage", default="0", help="fraction below the mark price each fill gets (e.g. 0.01)")
    parser.add_argument("--liquidity", default="1", help="fraction of each order the book can fill; the rest is "
                                                         "closed unfilled (e.g. 0.5)")
    args = parser.parse_args(argv)
    standin = MatchingStandIn(Settings(), Decimal(args.slippage), liquidity=Decimal(args.liquidity))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    print(f"matching engine stand-in: filling liquidation orders at mark - {args.slippage}", flush=True)
    try:
        while not stop:
            if standin.poll():
                print(f"{time.strftime('%H:%M:%S')} filled {standin.filled} liquidation orders so far", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        standin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
