"""Liquidations in ClickHouse (migration 0007): margin events with their detail and shortfall, the insurance fund's
history and one row per liquidation, landed through the sink's own path (sinks.sink.Lander) into the real engine
(chDB). The ledger and the events are the core's: one user of tests/unit/test_liquidation liquidated twice, at
43,000 on one day (the fund takes the clearance fee) and in a gap to 20,000 the next (the fund pays a shortfall)."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime
from decimal import Decimal

from fastavro import parse_schema, schemaless_writer

from processors.config import default_config
from processors.inputs import command
from processors.ledger import INSURANCE_FUND
from processors.liquidation import COMPLETED, STARTED
from processors.messages import Borrow, FillSettle, LedgerLine, MarginEvent, OrderHold, Transfer
from processors.wire import line_to_avro, margin_event_to_avro
from schemas import CODEC
from schemas.codec import MAGIC, fingerprint_of
from schemas.history import versions
from sinks.sink import Counters, Item, Lander
from sinks.store import ChdbStore
from streams.config import Settings
from streams.topics import LEDGER, MARGIN_EVENTS
from tests.unit.test_exactly_once import deposit
from tests.unit.test_liquidation import SAT, T0, USDT, Desk, crash_to, long_btc

CFG = default_config()
SETTINGS = Settings(topic_prefix="t.")
T1 = T0 + 86_400_000  # the next day, same time
FEE = Decimal("42.5861")  # 2% of 0.04951872 BTC sold at 43,000, up (test_liquidation)
# Day 2: the account holds 96.714316 USDT (day 1's rest) and 0.05014794 BTC against 1,990.004544 owed. The USDT
# pays the interest and 96.709772 of the principal; all the BTC sold at 20,000 brings 1,002.9588; the fund pays
# 1,990.004544 - 96.714316 - 1,002.9588 = 890.331428.
SHORTFALL = Decimal("890.331428")


def twice_liquidated() -> tuple[Desk, list[str]]:
    """The user's desk, and the ids of the two Liquidate inputs that applied."""
    desk = long_btc()
    order = crash_to(desk, "43000")
    applied = [desk.liquidate_requests()[0].id]
    assert desk.fill(order, order.sell_amount * 43_000 * USDT // SAT, "43000") == "ACCEPTED"
    for cmd in [deposit("0xfund2"),
                command(Transfer, "in2", "u", asset="USDT", amount="1000", from_account="spot", to_account="margin"),
                command(Borrow, "b2", "u", account="margin", asset="USDT", amount="1990"),
                command(OrderHold, "buy2", "u", order_id="buy2", account="margin", asset="USDT", amount="2990"),
                command(FillSettle, "buy2-f", "u", fill_id="f", order_id="buy2", account="margin", pay_asset="USDT",
                        pay_amount="2990", receive_asset="BTC", receive_amount="0.04983333", fee_amount="0")]:
        assert desk.send(cmd, "60000", T1) == "ACCEPTED", cmd
    desk.price("20000", T1)
    applied.append(desk.liquidate_requests()[-1].id)
    assert desk.send(desk.liquidate_requests()[-1], "20000", T1) == "ACCEPTED"
    order = desk.orders()[-1]
    assert order.sell_amount == 4_983_333 + 31_461, "this day's BTC and the last day's rest"
    assert desk.fill(order, order.sell_amount * 20_000 * USDT // SAT, "20000", T1, fill_id="f2") == "ACCEPTED"
    assert not desk.state.liquidations and not desk.state.loans
    return desk, applied


def _items(topic: str, values: list[bytes]) -> list[Item]:
    return [Item(topic, 0, offset, b"u", value, b"") for offset, value in enumerate(values)]


def _land(store: ChdbStore, lines: list[LedgerLine], margin_events: list[bytes]) -> None:
    lander = Lander(SETTINGS, store, Counters(), threading.Event())
    batch = CODEC.encode("LedgerBatch", {"id": "b", "ts_ms": T0, "schema_version": 1,
                                         "lines": [line_to_avro(ln, CFG) for ln in lines]})
    items = _items(LEDGER.name(SETTINGS), [batch] if lines else []) + _items(MARGIN_EVENTS.name(SETTINGS),
                                                                              margin_events)
    for item in items:
        item.payload = lander.prepare(item)
    assert lander.land(items) == []


def _day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date().isoformat()


def test_the_insurance_fund_and_the_liquidations_from_the_core(chdb_store: ChdbStore) -> None:
    desk, (first, second) = twice_liquidated()
    events = [e for e in desk.events if isinstance(e, MarginEvent)]
    fund = [ln.amount for ln in desk.lines if ln.account == INSURANCE_FUND]
    assert fund == [FEE * USDT, -SHORTFALL * USDT], "the figures this test expects of the views"
    under_way = MarginEvent(f"w/isolated:BTC-USDT/liq/isolated:BTC-USDT/7/{STARTED}", T1 + 1, "w",
                            "isolated:BTC-USDT", STARTED, "liquidation", "margin-call", "1.0912", "isolated-5x",
                            "2 orders released")
    for _ in range(2):  # a retried batch: the same rows
        _land(chdb_store, desk.lines, [CODEC.encode("MarginEvent", margin_event_to_avro(e, CFG))
                                       for e in [*events, under_way]])

    assert _day(T1) != _day(T0)
    rows = chdb_store.query("SELECT day, asset, fees, fee_fills, shortfalls_paid, shortfalls, other, balance "
                            "FROM insurance_fund ORDER BY asset, day").rows
    assert rows == [(_day(T0), "USDT", FEE, 1, Decimal(0), 0, Decimal(0), FEE),
                    (_day(T1), "USDT", Decimal(0), 0, SHORTFALL, 1, Decimal(0), FEE - SHORTFALL)]

    # the liquidation id is the Liquidate input's, found inside each event's id; 20,000: 1,099.673116 USDT of
    # assets against 1,990.004544 owed
    rows = chdb_store.query("SELECT user_id, account, liquidation_id, tier, toUnixTimestamp64Milli(started_at), "
                            "level_at_start, toUnixTimestamp64Milli(completed_at), parts, shortfall "
                            "FROM liquidations ORDER BY user_id, started_at").rows
    assert rows == [
        ("u", "margin", first, "cross-3x", T0, "1.0767", T0, 1, Decimal(0)),
        ("u", "margin", second, "cross-3x", T1, "0.5525", T1, 1, SHORTFALL),
        # cut by lengths: the slashes and colon in the account and liquidation id do not matter
        ("w", "isolated:BTC-USDT", "liq/isolated:BTC-USDT/7", "isolated-5x", T1 + 1, "1.0912", None, None, None),
    ]
    assert [c.shortfall_value for c in events if c.kind == COMPLETED] == [0, SHORTFALL * USDT]
    detail = chdb_store.query("SELECT kind, detail, shortfall FROM margin_events FINAL WHERE user_id = 'u' "
                              "AND kind IN ({s:String}, {c:String}) ORDER BY ts, kind DESC",
                              {"s": STARTED, "c": COMPLETED}).rows
    assert detail == [(STARTED, "0 orders released, 0 withdrawals cancelled", 0), (COMPLETED, "1 parts", 0),
                      (STARTED, "0 orders released, 0 withdrawals cancelled", 0), (COMPLETED, "1 parts", SHORTFALL)]


def test_a_v1_margin_event_lands_with_the_new_columns_empty(chdb_store: ChdbStore) -> None:
    """A record written before MarginEvent v2 (still on the topic, or replayed from a dead letter) is resolved to v2
    with its defaults by the sink, then lands like any other."""
    _, path = versions("MarginEvent")[0]
    raw = json.loads(path.read_text())
    assert "shortfall" not in {f["name"] for f in raw["fields"]}
    v1 = parse_schema(raw)
    out = io.BytesIO()
    schemaless_writer(out, v1, {"id": "u/margin/user/b/MarginCall", "ts_ms": T0, "schema_version": 1,
                                "user_id": "u", "account": "margin", "kind": "MarginCall", "band": "margin-call",
                                "previous_band": "no-borrowing", "level": "1.2999", "tier": "cross-3x"})
    _land(chdb_store, [], [MAGIC + fingerprint_of(v1) + out.getvalue()])
    assert chdb_store.query("SELECT id, kind, level, detail, shortfall FROM margin_events FINAL").rows == [
        ("u/margin/user/b/MarginCall", "MarginCall", "1.2999", "", Decimal(0))]
    assert chdb_store.query("SELECT count() FROM liquidations").scalar() == 0
