"""The sink against the real broker and the ClickHouse engine: killed mid-batch, and ClickHouse down
for a while. Either way ClickHouse ends up with exactly the lines of the topic (count and sums per
asset), and the records it cannot store are on the dead-letter topic with their original bytes."""

from __future__ import annotations

import random
import socket
import sys
import threading
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka import Producer

from schemas import CODEC
from sinks.reconcile import wait_for_sink
from sinks.store import ServerStore, StoreUnavailable, connect_when_up
from streams.client import read_topic
from streams.config import Settings
from streams.kafka import producer_config
from streams.topics import DEAD_LETTER, LEDGER, create_all
from streams.workers import WorkerProcess, sink_process

pytestmark = pytest.mark.integration

ASSETS = (("BTC", 8), ("USDT", 6), ("ETH", 18))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(env: dict[str, str]) -> Settings:
    return Settings(kafka_bootstrap=env["KAFKA_BOOTSTRAP"], topic_prefix=env["POSFLOW_TOPIC_PREFIX"],
                    app_id=env["POSFLOW_APP_ID"], home=Path(env["POSFLOW_HOME"]))


class LedgerFeed:
    """Streams LedgerBatch records onto the ledger topic in a thread and keeps the expected sums."""

    def __init__(self, settings: Settings, records: int, lines_per_record: int, seconds: float) -> None:
        self.settings = settings
        self.records, self.per, self.seconds = records, lines_per_record, seconds
        self.sums: dict[str, Decimal] = defaultdict(Decimal)
        self.lines = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _batch(self, b: int) -> bytes:
        lines = []
        for i in range(self.per):
            asset, scale = ASSETS[(b + i) % 3]
            minor = random.randint(-(10**12), 10**12) or 1
            amount = Decimal(minor).scaleb(-scale)
            self.sums[asset] += amount
            lines.append({"id": f"u{b % 97}/e{b}/{i}", "ts_ms": 1_700_000_000_000 + b, "schema_version": 1,
                          "entry_id": f"e{b}", "entry_type": "TEST", "line_no": i, "user_id": f"u{b % 97}",
                          "account": "spot", "bucket": "available", "asset": asset, "amount": f"{amount:f}",
                          "balance_before": None, "balance_after": None, "seq": b * self.per + i + 1})
        self.lines += self.per
        return CODEC.encode("LedgerBatch", {"id": f"feed/{b}", "ts_ms": 1, "schema_version": 1, "lines": lines})

    def _run(self) -> None:
        producer = Producer(producer_config(self.settings))
        topic = LEDGER.name(self.settings)
        start = time.monotonic()
        for b in range(self.records):
            producer.produce(topic, self._batch(b), f"u{b % 97}".encode())
            producer.poll(0)
            time.sleep(max(0.0, start + b * self.seconds / self.records - time.monotonic()))
        assert producer.flush(60) == 0

    def start(self) -> LedgerFeed:
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(120)
        assert not self.thread.is_alive(), "the feed did not finish"


def _wait_for_more(url: str, seen: int, timeout_s: float = 90.0) -> int:
    """Blocks until the sink at `url` has landed more lines than `seen`; returns the new count."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            store = ServerStore(url)
            count = int(store.query("SELECT count() FROM ledger_lines").scalar())
            store.close()
            if count > seen:
                return count
        except StoreUnavailable:
            pass  # restarting
        time.sleep(0.2)
    raise TimeoutError(f"the sink at {url} landed nothing more than {seen} lines in {timeout_s}s")


def _landed(store: ServerStore) -> tuple[int, int, dict[str, Decimal]]:
    final = store.query("SELECT count() FROM ledger_lines FINAL").scalar()
    physical = store.query("SELECT count() FROM ledger_lines").scalar()
    sums = {a: s for a, s in store.query("SELECT asset, sum(amount) FROM ledger_lines FINAL GROUP BY asset").rows}
    return final, physical, sums


def _caught_up(settings: Settings, feed: LedgerFeed) -> None:
    feed.join()
    lag = wait_for_sink(settings, timeout_s=120)
    assert not lag, f"sink still behind: {lag}"


def test_sink_killed_mid_batch_lands_exactly_the_topic(isolated_env: dict[str, str], tmp_path: Path) -> None:
    settings = _settings(isolated_env)
    create_all(settings)
    raw = Producer(producer_config(settings))
    ledger = LEDGER.name(settings)
    bad = [b"\x00 not avro", CODEC.encode("Result", {"id": "r", "ts_ms": 1, "schema_version": 1, "user_id": "u",
                                                       "kind": "Transfer", "status": "ACCEPTED", "reason": None,
                                                       "detail": "", "ledger_lines": 0})]
    unparsable = {"id": "u1/bad/0", "ts_ms": 1, "schema_version": 1, "entry_id": "bad", "entry_type": "TEST",
                  "line_no": 0, "user_id": "u1", "account": "spot", "bucket": "available", "asset": "BTC",
                  "amount": "one bitcoin", "balance_before": None, "balance_after": None, "seq": 1}
    # decodes fine, but ClickHouse refuses its amount: found by bisecting the refused insert
    bad.append(CODEC.encode("LedgerBatch", {"id": "bad", "ts_ms": 1, "schema_version": 1, "lines": [unparsable]}))
    for value in bad:
        raw.produce(ledger, value, b"u1")
    lone = {"id": "u1/lone/0", "ts_ms": 1_700_000_000_000, "schema_version": 1, "entry_id": "lone",
            "entry_type": "TEST", "line_no": 0, "user_id": "u1", "account": "spot", "bucket": "available",
            "asset": "BTC", "amount": "0.00000001", "balance_before": None, "balance_after": None, "seq": 1}
    raw.produce(ledger, CODEC.encode("LedgerLine", lone), b"u1")  # a lone line, not in a batch
    assert raw.flush(30) == 0

    feed = LedgerFeed(settings, records=600, lines_per_record=250, seconds=20).start()
    port = _free_port()
    env = {**isolated_env, "POSFLOW_SESSION_TIMEOUT_S": "6"}  # a killed member's partitions move on sooner
    sink = sink_process(env, tmp_path / "sink.log", port, True, "--max-records", "40", "--linger-ms", "100")
    sink.start()
    try:
        seen = 0
        for _ in range(3):  # SIGKILL while batches are landing: once this incarnation has landed more
            seen = _wait_for_more(sink.url, seen)
            time.sleep(random.uniform(0.0, 0.3))
            sink.kill()
        _caught_up(settings, feed)
        store = connect_when_up(sink.url)
        final, physical, sums = _landed(store)
        want = dict(feed.sums)
        want["BTC"] += Decimal("0.00000001")
        assert final == feed.lines + 1, f"{final} distinct lines landed, {feed.lines + 1} on the topic"
        assert sums == want
        print(f"\n{final} lines landed; {physical - final} physical duplicates collapsed by FINAL; "
              f"sink exits: {sink.exits}")
        assert len(sink.exits) == 3, "each kill was a real crash of the sink"
        # the three records it could not store: on the dead-letter topic with their bytes, and in ClickHouse
        dead = {}
        for *_, value in read_topic(settings, DEAD_LETTER.name(settings)):
            d = CODEC.decode_as("DeadLetter", value)
            dead[d["id"]] = d
        assert sorted(d["value"] for d in dead.values()) == sorted(bad)
        assert {d["error"].split(":")[0] for d in dead.values()} == {"NOT_AVRO", "WRONG_MESSAGE_TYPE",
                                                                      "REFUSED_BY_CLICKHOUSE"}
        deadline = time.monotonic() + 30
        while store.query("SELECT count() FROM dead_letters FINAL").scalar() < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert store.query("SELECT count() FROM dead_letters FINAL").scalar() == 3
        store.close()
    finally:
        sink.stop()


def test_clickhouse_down_for_a_while_loses_and_doubles_nothing(isolated_env: dict[str, str], tmp_path: Path) -> None:
    settings = _settings(isolated_env)
    create_all(settings)
    ch_port = _free_port()
    clickhouse = WorkerProcess("clickhouse", ch_port, isolated_env, tmp_path / "clickhouse.log",
                               command=[sys.executable, "-m", "sinks.http", "--path", str(tmp_path / "ch"),
                                        "--port", str(ch_port)])
    env = {**isolated_env, "CLICKHOUSE_URL": f"http://127.0.0.1:{ch_port}"}
    sink = sink_process(env, tmp_path / "sink.log", 0, False, "--max-records", "40", "--linger-ms", "100")
    feed = LedgerFeed(settings, records=400, lines_per_record=250, seconds=10)
    clickhouse.start()
    try:
        connect_when_up(clickhouse.url).close()
        sink.start()
        feed.start()
        time.sleep(3)
        clickhouse.kill()  # ClickHouse gone mid-stream
        clickhouse.proc.wait(10)  # type: ignore[union-attr]
        time.sleep(5)
        clickhouse.start()  # and back, with its data
        _caught_up(settings, feed)
        store = connect_when_up(clickhouse.url)
        final, physical, sums = _landed(store)
        assert final == feed.lines
        assert sums == dict(feed.sums)
        print(f"\n{final} lines landed after the outage; {physical - final} physical duplicates")
        store.close()
        log = sink.log_tail(400)
        assert "ClickHouse unavailable" in log, "the outage was never seen by the sink"
    finally:
        sink.stop()
        clickhouse.stop()
