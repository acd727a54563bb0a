"""The sink against the real broker and the ClickHouse engine (chDB), for what goes wrong in ClickHouse:
a transient error is waited out without a dead letter; a table made unavailable dead-letters its
records, and once it is back `posflow sink --replay-dead-letters` lands them, once however often it runs;
client times far past and far future land everywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from schemas import CODEC
from sinks.reconcile import wait_for_sink
from sinks.replay import Replay, ReplayReport, print_report
from sinks.sink import Sink
from sinks.store import ChdbStore
from streams.client import read_topic
from streams.config import Settings
from streams.kafka import producer_config
from streams.topics import CHAIN_EVENTS, DEAD_LETTER, LEDGER, create_all
from tests.unit.test_sink_errors import FlakyStore
from tests.unit.test_sink_time import chain_event, check_landed, dead_letter, extreme_records, ledger_batch, line

pytestmark = pytest.mark.integration


def _settings(env: dict[str, str]) -> Settings:
    return Settings(kafka_bootstrap=env["KAFKA_BOOTSTRAP"], topic_prefix=env["POSFLOW_TOPIC_PREFIX"],
                    app_id=env["POSFLOW_APP_ID"], home=Path(env["POSFLOW_HOME"]))


def _produce(settings: Settings, records: list[tuple[str, bytes]]) -> None:
    producer = Producer(producer_config(settings))
    for topic, value in records:
        producer.produce(topic, value, b"u1")
    assert producer.flush(30) == 0


def _sink_until(settings: Settings, store: object, done: Callable[[Sink], bool], timeout_s: float = 90.0) -> Sink:
    sink = Sink(settings, store, max_records=50, linger_s=0.1, backoff_max_s=0.2)  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout_s
    sink.run(until=lambda: done(sink) or time.monotonic() > deadline)
    assert done(sink), f"the sink did not get there in {timeout_s}s: {sink.counters}"
    return sink


def _ledger(n: int) -> list[tuple[str, bytes]]:
    return [("ledger", ledger_batch(f"b{i}", [line(f"e{i}", k, 1_700_000_000_000 + i, seq=2 * i + k + 1)
                                              for k in range(2)])) for i in range(n)]


def test_extreme_client_times_through_the_sink(isolated_env: dict[str, str], chdb_store: ChdbStore) -> None:
    settings = _settings(isolated_env)
    create_all(settings)
    records = extreme_records(settings)
    _produce(settings, records)
    sink = _sink_until(settings, chdb_store, lambda s: s.counters.records >= len(records))
    assert sink.counters.dead_letters == 0 and sink.counters.reconnects == 0
    check_landed(chdb_store)
    assert wait_for_sink(settings, 30) == {}  # committed
    on_topic = len(read_topic(settings, DEAD_LETTER.name(settings)))
    assert on_topic == sum(1 for t, _ in records if t == DEAD_LETTER.name(settings))  # none added by the sink


def test_a_transient_error_is_waited_out_without_dead_letters(isolated_env: dict[str, str],
                                                              chdb_store: ChdbStore) -> None:
    settings = _settings(isolated_env)
    create_all(settings)
    records = [(LEDGER.name(settings), v) for _, v in _ledger(40)]
    _produce(settings, records)
    busy = [RuntimeError("Code: 241. DB::Exception: Memory limit (total) exceeded (MEMORY_LIMIT_EXCEEDED)"),
            RuntimeError("Code: 252. DB::Exception: Too many parts (3001). Merges are processing significantly "
                         "slower than inserts (TOO_MANY_PARTS)"),
            RuntimeError("Code: 242. DB::Exception: Table is in readonly mode (TABLE_IS_READ_ONLY)")]
    store = FlakyStore(chdb_store, busy * 2)
    sink = _sink_until(settings, store, lambda s: s.counters.records >= len(records))
    assert sink.counters.retries == 6 and sink.counters.dead_letters == 0
    assert chdb_store.query("SELECT count() FROM ledger_lines FINAL").scalar() == 80
    assert read_topic(settings, DEAD_LETTER.name(settings)) == []
    assert wait_for_sink(settings, 30) == {}


def test_dead_letters_of_an_unavailable_table_land_after_replay_once(
        isolated_env: dict[str, str], chdb_store: ChdbStore, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _settings(isolated_env)
    create_all(settings)
    ledger, chain = LEDGER.name(settings), CHAIN_EVENTS.name(settings)
    records = [(ledger, v) for _, v in _ledger(5)] + [(chain, chain_event(f"c{i}", 1_700_000_000_000))
                                                      for i in range(3)]
    records.append((ledger, b"\x00 not avro: refused whatever ClickHouse does"))
    records.append((DEAD_LETTER.name(settings), dead_letter(f"{settings.topic_prefix}commands", 0, 1, b"x")))
    _produce(settings, records)

    # The tables the sink writes to are gone for a while (an operator's mistake, a restore in progress).
    chdb_store.command("RENAME TABLE ledger_batches_in TO ledger_batches_in_away, chain_events TO chain_events_away")
    sink = _sink_until(settings, chdb_store, lambda s: s.counters.records >= len(records))
    assert sink.counters.dead_letters == 9 and sink.counters.reconnects == 8  # each asked again, then believed
    dead = [CODEC.decode_as("DeadLetter", v) for *_, v in read_topic(settings, DEAD_LETTER.name(settings))]
    assert sorted(d["error"].split(":")[0] for d in dead if d["source_topic"] != f"{settings.topic_prefix}commands") \
        == ["NOT_AVRO"] + ["REFUSED_BY_CLICKHOUSE"] * 8
    assert any("UNKNOWN_TABLE" in d["error"] for d in dead)

    chdb_store.command("RENAME TABLE ledger_batches_in_away TO ledger_batches_in, chain_events_away TO chain_events")
    progress: list[ReplayReport] = []
    report = Replay(settings, chdb_store).run(progress=progress.append, progress_every_s=0)
    assert progress, "a long replay shows its progress"
    assert report.read == 10 and report.skipped == 1 and report.landed == 8 and not report.interrupted
    assert {t: (c.dead_letters, c.landed, c.still_refused) for t, c in report.per_topic.items()} == {
        ledger: (6, 5, 1), chain: (3, 3, 0)}
    assert [why.split(":")[0] for _, _, why in report.refused] == ["NOT_AVRO"]
    counts = "SELECT (SELECT count() FROM ledger_lines), (SELECT count() FROM chain_events)"
    assert chdb_store.query(counts).rows == [(10, 3)]
    print_report(report)
    out = capsys.readouterr().out
    assert "source topic" in out and "still refused because" in out and "8 landed, 1 still refused" in out

    again = Replay(settings, chdb_store).run()  # from where the first one stopped: nothing to do
    assert again.read == 0 and again.landed == 0
    everything = Replay(settings, chdb_store).run(from_beginning=True)  # all of it again: lands once
    assert everything.read == 10 and everything.landed == 8
    assert chdb_store.query(counts).rows == [(10, 3)]  # not even a physical duplicate: same tokens


def test_posflow_sink_replay_dead_letters_cli(isolated_env: dict[str, str], tmp_path: Path) -> None:
    """The command as an operator runs it, on its own chDB directory."""
    settings = _settings(isolated_env)
    create_all(settings)
    ledger = LEDGER.name(settings)
    _produce(settings, [(DEAD_LETTER.name(settings), dead_letter(ledger, 0, 1, ledger_batch("b", [
        line("e", 0, 1_700_000_000_000, seq=1), line("e", 1, 1_700_000_000_000, seq=2)]))),
        (DEAD_LETTER.name(settings), dead_letter(ledger, 1, 1, b"\x00 still not avro"))])
    env = {**os.environ, **isolated_env, "CLICKHOUSE_URL": "", "POSFLOW_HOME": str(tmp_path / f"h{uuid.uuid4().hex}")}

    def posflow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, text=True,
                              timeout=180)

    first = posflow("sink", "--replay-dead-letters")
    assert first.returncode == 1, first.stderr  # one record is still refused
    assert "replay done: 2 dead letters read, 1 landed, 1 still refused" in first.stdout, first.stdout
    assert f"{ledger}/0/1" in first.stdout and "NOT_AVRO" in first.stdout
    second = posflow("sink", "--replay-dead-letters")
    assert second.returncode == 0 and "0 dead letters read" in second.stdout, second.stdout

    def rows(sql: str) -> str:
        out = posflow("sql", sql)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()[2]  # header, rule, the value

    third = posflow("sink", "--replay-dead-letters", "--from-beginning")
    assert "2 dead letters read, 1 landed" in third.stdout, third.stdout
    assert rows("SELECT count() FROM ledger_lines FINAL") == "2"  # the entry's two lines, once
    # Physically too, from one process to the next: the same chunk carries the same token. (Not across the
    # first run: it applied migration 0004 in-process, and chDB derives a view's token differently
    # before and after reloading a view changed by MODIFY QUERY; FINAL still counts them once.)
    physical = rows("SELECT count() FROM ledger_lines")
    fourth = posflow("sink", "--replay-dead-letters", "--from-beginning")
    assert "2 dead letters read, 1 landed" in fourth.stdout, fourth.stdout
    assert rows("SELECT count() FROM ledger_lines") == physical
