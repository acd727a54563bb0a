"""The ClickHouse sink's figures (issue 4): throughput into chDB over >= 1M ledger lines, and the delay from a
line's production to its being visible in a query, at 10,000 lines/s offered.

Both phases use fresh topics and a fresh chDB directory. Ledger lines are realistic (a fill's four
lines: two user buckets, clearing, fee) and travel as LedgerBatch records, as the engine writes them.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.stack import fresh, kafka
from processors.ledger import CLEARING, FEE_REVENUE, FILL, SYSTEM_PREFIX, SYSTEM_USER
from schemas import CODEC
from sinks.migrations import migrate
from sinks.sink import Sink
from sinks.store import ChdbStore
from streams.config import Settings
from streams.kafka import producer_config
from streams.partitioner import partition_for
from streams.topics import LEDGER

LINES = 1_200_000
LINES_PER_RECORD = 200
OFFERED_PER_S = 10_000
LATENCY_S = 30.0


def _lines(first_seq: int, n: int, ts_ms: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        seq = first_seq + i
        user = f"u{seq // 4 % 5000}"
        entry = f"cmd-{seq // 4}"
        line_no = seq % 4
        account, bucket, asset, amount = (
            ("spot", "frozen", "USDT", "-1234.500000"), ("spot", "available", "BTC", "0.01990000"),
            (CLEARING, "balance", "BTC", "-0.02000000"), (FEE_REVENUE, "balance", "BTC", "0.00010000"),
        )[line_no]
        system = account.startswith(SYSTEM_PREFIX)
        yield {"id": f"{user}/{entry}/{line_no}", "ts_ms": ts_ms, "schema_version": 1, "entry_id": entry,
               "entry_type": FILL, "line_no": line_no, "user_id": SYSTEM_USER if system else user, "account": account,
               "bucket": bucket, "asset": asset, "amount": amount,
               "balance_before": None if system else "10000.000000",
               "balance_after": None if system else "8765.500000", "seq": seq}


def _record(batch_no: int, first_seq: int, n: int, ts_ms: int) -> bytes:
    return CODEC.encode("LedgerBatch", {"id": f"bench/{batch_no}", "ts_ms": ts_ms, "schema_version": 1,
                                        "lines": list(_lines(first_seq, n, ts_ms))})


def _store(settings: Settings, label: str) -> ChdbStore:
    path = settings.home / "bench" / f"sink-{label}-chdb"
    shutil.rmtree(path, ignore_errors=True)
    store = ChdbStore(Path(path))
    migrate(store)
    return store


def throughput(base: Settings) -> dict[str, Any]:
    settings, _ = fresh(base, "sink")
    topic = LEDGER.name(settings)
    producer = Producer(producer_config(settings, **{"linger.ms": 20, "batch.size": 1_000_000}))
    records = LINES // LINES_PER_RECORD
    now = int(time.time() * 1000)
    for b in range(records):
        value = _record(b, b * LINES_PER_RECORD + 1, LINES_PER_RECORD, now)
        while True:
            try:
                producer.produce(topic, value, partition=partition_for(str(b).encode(), settings.partitions))
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    print(f"  {LINES:,} lines in {records:,} LedgerBatch records on {topic}; landing them", flush=True)
    store = _store(settings, "throughput")
    sink = Sink(settings, store, group=f"{settings.app_id}-sink")
    started: list[float] = []

    def done() -> bool:
        if not started and sink.counters.records:
            started.append(time.perf_counter())
        return sink.counters.per_table.get("ledger_batches_in", 0) >= records

    t0 = time.perf_counter()
    sink.run(until=done, progress=lambda c: print(f"  ... {c.per_table.get('ledger_batches_in', 0):,} records "
                                                 f"landed", flush=True), progress_every_s=5)
    t1 = time.perf_counter()
    landed = store.query("SELECT count() FROM ledger_lines FINAL").scalar()
    store.close()
    assert landed == LINES, f"landed {landed} lines of {LINES}"
    elapsed = t1 - started[0]
    return {"lines": LINES, "lines_per_record": LINES_PER_RECORD, "sink_elapsed_s": round(elapsed, 2),
            "sink_elapsed_with_group_join_s": round(t1 - t0, 2), "lines_per_s": int(LINES / elapsed)}


def latency(base: Settings) -> dict[str, Any]:
    settings, _ = fresh(base, "sinklat")
    topic = LEDGER.name(settings)
    store = _store(settings, "latency")
    sink = Sink(settings, store, group=f"{settings.app_id}-sink")
    stop = threading.Event()
    runner = threading.Thread(target=sink.run, kwargs={"until": stop.is_set}, daemon=True)
    runner.start()
    time.sleep(5)  # the sink joins its group before the clock starts
    produced: dict[str, float] = {}
    seen: dict[str, float] = {}

    def poll() -> None:
        while not stop.is_set():
            t = time.time()
            since = int((t - 10) * 1000)
            rows = store.query("SELECT DISTINCT batch_id FROM ledger_lines WHERE ts >= fromUnixTimestamp64Milli("
                               "{since:Int64}, 'UTC')", {"since": since}).rows
            now = time.time()
            for (batch_id,) in rows:
                seen.setdefault(batch_id, now)
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    producer = Producer(producer_config(settings, **{"linger.ms": 5}))
    per_tick = 100  # one record of 100 lines every 10 ms
    ticks = int(LATENCY_S * OFFERED_PER_S / per_tick)
    start = time.time()
    for b in range(ticks):
        due = start + b * per_tick / OFFERED_PER_S
        while time.time() < due:
            time.sleep(max(0.0, due - time.time()))
        now = time.time()
        value = _record(b, b * per_tick + 1, per_tick, int(now * 1000))
        producer.produce(topic, value, partition=b % settings.partitions)
        producer.poll(0)
        produced[f"bench/{b}"] = now
    producer.flush(30)
    offered = ticks * per_tick / (time.time() - start)
    deadline = time.time() + 30
    while len(seen) < len(produced) and time.time() < deadline:
        time.sleep(0.1)
    stop.set()
    runner.join(60)
    poller.join(10)
    store.close()
    delays = sorted(seen[b] - t for b, t in produced.items() if b in seen)
    assert len(delays) == len(produced), f"{len(produced) - len(delays)} batches never became visible"
    return {"offered_lines_per_s": int(offered), "latency_lines": ticks * per_tick,
            "visible_p50_s": round(delays[len(delays) // 2], 3),
            "visible_p99_s": round(delays[int(len(delays) * 0.99)], 3), "visible_max_s": round(delays[-1], 3)}


def run() -> dict[str, Any]:
    with kafka() as base:
        figures = throughput(base)
        print(f"  {figures}", flush=True)
        figures.update(latency(base))
    return figures
