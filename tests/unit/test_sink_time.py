"""Client timestamps far past and far future (year 1, year 9999, negative, 2**62, the ends of an Avro
long) through the sink's landing path into the real ClickHouse engine (chDB): every record lands, `ts`
is clamped into ClickHouse's DateTime64 range the same way on the SQL path (ledger, results,
withdrawals, dead letters) and the Python path (chain events), `ts_ms` keeps the value as sent, and
reconciliation reads such a ledger without failing. The records builders here serve the sink's
integration tests too."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from processors.inputs import command
from processors.ledger import SYSTEM_USER, custody
from processors.messages import DepositConfirmed
from processors.wire import command_to_avro
from schemas import CODEC
from sinks.reconcile import EngineState, print_report, reconcile
from sinks.sink import Counters, Item, Lander, _iso
from sinks.store import TS_MAX_MS, TS_MIN_MS, ChdbStore, clamp_ms
from streams.config import Settings
from streams.topics import CHAIN_EVENTS, DEAD_LETTER, LEDGER, RESULTS, TO_SIGN

SETTINGS = Settings(topic_prefix="t.")
YEAR_1 = -62_135_596_800_000  # 0001-01-01
YEAR_9999 = 253_402_300_799_999  # 9999-12-31 23:59:59.999
EXTREME = [YEAR_1, YEAR_9999, -1, 0, 2**62, -(2**62), 2**63 - 1, -(2**63), TS_MIN_MS - 1, TS_MAX_MS + 1]
BTC_ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"


# -- record builders (Avro, as the engine and the chain watcher write them) ---------------------------
def line(entry: str, n: int, ts_ms: int, *, user: str = "u1", amount: str = "0.00000001", seq: int = 1,
         account: str = "spot", bucket: str = "available") -> dict[str, Any]:
    """A ledger line of an entry owned by u1 (a system account's line too: the entry's owner names it)."""
    return {"id": f"u1/{entry}/{n}", "ts_ms": ts_ms, "schema_version": 1, "entry_id": entry,
            "entry_type": "TEST", "line_no": n, "user_id": user, "account": account, "bucket": bucket,
            "asset": "BTC", "amount": amount, "balance_before": None, "balance_after": None, "seq": seq}


def ledger_batch(batch_id: str, lines: list[dict[str, Any]], ts_ms: int = 1) -> bytes:
    return CODEC.encode("LedgerBatch", {"id": batch_id, "ts_ms": ts_ms, "schema_version": 1, "lines": lines})


def result(rid: str, ts_ms: int) -> dict[str, Any]:
    return {"id": rid, "ts_ms": ts_ms, "schema_version": 1, "user_id": "u1", "kind": "Transfer",
            "status": "ACCEPTED", "reason": None, "detail": "", "ledger_lines": 2}


def result_batch(batch_id: str, results: list[dict[str, Any]]) -> bytes:
    return CODEC.encode("ResultBatch", {"id": batch_id, "ts_ms": 1, "schema_version": 1, "results": results})


def to_sign(wid: str, ts_ms: int) -> bytes:
    return CODEC.encode("WithdrawalToSign", {"id": wid, "ts_ms": ts_ms, "schema_version": 1, "user_id": "u1",
                                             "chain": "bitcoin", "asset": "BTC", "amount": "0.5",
                                             "address": BTC_ADDRESS})


def chain_event(cid: str, ts_ms: int) -> bytes:
    deposit = command(DepositConfirmed, cid, "u1", chain="bitcoin", tx_hash=f"0x{cid}", log_index=0,
                      address=BTC_ADDRESS, asset="BTC", amount="1", block_number=7, account="spot")
    return CODEC.encode("Command", command_to_avro(deposit._replace(ts_ms=ts_ms)))


def dead_letter(source: str, offset: int, ts_ms: int, value: bytes) -> bytes:
    return CODEC.encode("DeadLetter", {"id": f"{source}/0/{offset}", "ts_ms": ts_ms, "schema_version": 1,
                                       "source_topic": source, "source_partition": 0, "source_offset": offset,
                                       "key": None, "value": value, "error": "test"})


def extreme_records(settings: Settings) -> list[tuple[str, bytes]]:
    """(topic, value) of every landed kind at every extreme time; ledger entries balance (two lines each)."""
    out: list[tuple[str, bytes]] = []
    for i, ts in enumerate(EXTREME):
        lines = [line(f"t{i}", 0, ts, seq=2 * i + 1, amount="-0.5"),
                 line(f"t{i}", 1, ts, seq=2 * i + 2, user=SYSTEM_USER, account=custody("bitcoin"), bucket="balance",
                      amount="0.5")]
        out.append((LEDGER.name(settings), ledger_batch(f"lb{i}", lines, ts)))
        out.append((RESULTS.name(settings), result_batch(f"rb{i}", [result(f"t{i}", ts)])))
        out.append((TO_SIGN.name(settings), to_sign(f"w{i}", ts)))
        out.append((CHAIN_EVENTS.name(settings), chain_event(f"c{i}", ts)))
        out.append((DEAD_LETTER.name(settings), dead_letter("t.commands", i, ts, b"\x00")))
    return out


def expected_ts(ts_ms: int) -> str:
    """ClickHouse's text of the clamped time, computed independently of the sink's own conversion."""
    clamped = min(max(ts_ms, -2_208_988_800_000), 10_413_791_999_999)
    seconds, ms = divmod(clamped, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S") + f".{ms:03d}"


def check_landed(store: Any) -> None:
    """Every extreme time landed in every table, clamped in ts and exact in ts_ms."""
    want = sorted((expected_ts(ts), ts) for ts in EXTREME)
    for table, where in (("ledger_lines", "user_id = 'u1'"), ("results", "1"), ("withdrawals_to_sign", "1"),
                         ("chain_events", "1"), ("dead_letters", "1")):
        got = store.query(f"SELECT toString(ts), ts_ms FROM {table} FINAL WHERE {where} ORDER BY ts, ts_ms").rows
        assert sorted(got) == want, table


# -- tests -------------------------------------------------------------------------------------------
def test_every_time_conversion_is_total_and_clamped() -> None:
    assert _iso(YEAR_1) == "1900-01-01 00:00:00.000" and _iso(-(2**63)) == "1900-01-01 00:00:00.000"
    assert _iso(YEAR_9999) == "2299-12-31 23:59:59.999" and _iso(2**63 - 1) == "2299-12-31 23:59:59.999"
    assert _iso(1_700_000_000_123) == "2023-11-14 22:13:20.123"
    assert all(_iso(ts) == expected_ts(ts) for ts in EXTREME)
    assert clamp_ms(TS_MAX_MS) == TS_MAX_MS and clamp_ms(TS_MIN_MS) == TS_MIN_MS


def test_extreme_client_times_land_in_every_table(chdb_store: ChdbStore) -> None:
    lander = Lander(SETTINGS, chdb_store, Counters(), threading.Event())
    items = []
    for offset, (topic, value) in enumerate(extreme_records(SETTINGS)):
        item = Item(topic, 0, offset, b"u1", value, b"")
        item.payload = lander.prepare(item)
        items.append(item)
    assert lander.land(items) == []  # one insert per table, each spanning every month in range: one try
    assert lander.counters.inserts == 5 and lander.counters.retries == 0
    check_landed(chdb_store)


def test_clamped_times_agree_between_sql_and_python(chdb_store: ChdbStore) -> None:
    """Migration 0004 clamps in SQL, the chain rows in Python (sinks.store.TS_MIN_MS / TS_MAX_MS)."""
    bounds = chdb_store.query("SELECT toUnixTimestamp64Milli(toDateTime64('1900-01-01 00:00:00.000', 3, 'UTC')), "
                              "toUnixTimestamp64Milli(toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'))").rows
    assert bounds == [(TS_MIN_MS, TS_MAX_MS)]
    views = chdb_store.query("SELECT as_select FROM system.tables WHERE database = currentDatabase() "
                             "AND name LIKE '%\\_mv'").rows
    assert len(views) == 5  # ledger, results, withdrawals to sign, dead letters, margin events
    assert all(f"least(ts_ms, {TS_MAX_MS}), {TS_MIN_MS})" in q.replace("l.ts_ms", "ts_ms").replace("r.ts_ms", "ts_ms")
               for (q,) in views), views


def test_reconcile_reads_a_ledger_of_extreme_times(chdb_store: ChdbStore) -> None:
    lander = Lander(SETTINGS, chdb_store, Counters(), threading.Event())
    items = []
    for offset, (topic, value) in enumerate(extreme_records(SETTINGS)):
        if topic == LEDGER.name(SETTINGS):
            item = Item(topic, 0, offset, b"u1", value, b"")
            item.payload = lander.prepare(item)
            items.append(item)
    assert lander.land(items) == []
    engine = EngineState({("u1", "spot", "available", "BTC"): Decimal("-0.5") * len(EXTREME)}, {"u1": 2 * len(EXTREME)})
    report = reconcile(chdb_store, engine, lag={})
    assert report.ok, report.differences
    print_report(report)
    at = chdb_store.query("SELECT sum(balance) FROM balances_at(at = '2299-12-31 23:59:59.999') "
                          "WHERE user_id = 'u1'").scalar()
    assert at == Decimal("-0.5") * len(EXTREME)


@pytest.mark.parametrize("ts", [YEAR_1, YEAR_9999])
def test_a_chain_event_row_keeps_the_time_sent(ts: int) -> None:
    from sinks.sink import _chain_rows

    row = _chain_rows(chain_event("c", ts), "t.chain-events/0/0").decode()
    assert f'"ts_ms":{ts}' in row and f'"ts":"{expected_ts(ts)}"' in row


def test_an_insert_spanning_many_months_lands_in_one_try(chdb_store: ChdbStore) -> None:
    """ClickHouse refuses an insert into more than 100 partitions with TOO_MANY_PARTS, the code that
    otherwise means "wait for merges": without the sink's insert setting this batch would be retried
    forever. Client times a month apart, 150 of them, in one record."""
    stop = threading.Event()
    lander = Lander(SETTINGS, chdb_store, Counters(), stop)
    month_ms = 31 * 24 * 3600 * 1000
    lines = [line(f"m{i}", 0, 1_000_000_000_000 + i * month_ms, seq=i + 1) for i in range(150)]
    item = Item(LEDGER.name(SETTINGS), 0, 0, b"u1", ledger_batch("months", lines), b"")
    item.payload = lander.prepare(item)
    timer = threading.Timer(20, stop.set)  # retrying forever fails the test (Abandoned) instead of hanging it
    timer.start()
    try:
        assert lander.land([item]) == []
    finally:
        timer.cancel()
    assert lander.counters.retries == 0 and lander.counters.reconnects == 0
    assert chdb_store.query("SELECT uniqExact(toYYYYMM(ts)) FROM ledger_lines").scalar() == 150


def test_a_command_squatting_a_deposit_id_keeps_both_result_rows(chdb_store: ChdbStore) -> None:
    """A user's Transfer under the id of their coming deposit and the deposit itself are two inputs (two
    sources): both answers stay in `results` (migration 0005 keys it by kind too), and a resend of either
    still lands as one row."""
    lander = Lander(SETTINGS, chdb_store, Counters(), threading.Event())
    squat = result("ethereum:0xabc:0", 1)
    deposit = {**result("ethereum:0xabc:0", 2), "kind": "DepositConfirmed"}
    items = []
    for offset, batch in enumerate([[squat], [deposit], [deposit]]):
        item = Item(RESULTS.name(SETTINGS), 0, offset, b"u1", result_batch(f"rb{offset}", batch), b"")
        item.payload = lander.prepare(item)
        items.append(item)
    assert lander.land(items) == []
    rows = chdb_store.query("SELECT kind, input_kind, ts_ms FROM results FINAL WHERE id = 'ethereum:0xabc:0' "
                            "ORDER BY kind").rows
    assert rows == [("DepositConfirmed", "DepositConfirmed", 2), ("Transfer", "Transfer", 1)]
