"""The ClickHouse sink: ledger lines, results, approved withdrawals, chain events and dead letters from
Kafka into ClickHouse, exactly once as far as a reader of the tables can tell.

* At least once from Kafka: offsets are committed only after ClickHouse acknowledged the insert of
  every record up to them. A crash or a rebalance re-reads from the last commit.
* At most once in ClickHouse: every row has a deterministic id in its table's sorting key
  (ReplacingMergeTree, read with FINAL), and each insert carries a token made of the Kafka positions
  it holds, so a retried insert of the same records is dropped by ClickHouse before it is written.
* ClickHouse unreachable, or answering with an error that passes (memory, parts, read-only, disk,
  timeouts: `sinks.store.classify`): the batch is retried with capped exponential backoff, forever;
  nothing is committed meanwhile, so nothing is lost.
* A record the sink cannot store (not decodable, the wrong message for its topic, or data ClickHouse
  refuses, found by bisecting a refused insert and refused again on a new connection) goes to the
  dead-letter topic with its original bytes, and the records around it still land. Once the cause is
  fixed, `posflow sink --replay-dead-letters` (sinks.replay) lands them through the same `Lander`.
* Client timestamps are never converted in a way that can fail: `ts` is clamped to ClickHouse's
  DateTime64 range and `ts_ms` keeps the value as sent (migration 0004).

The hot path does not decode Avro in Python: a ledger batch's body already is an Avro datum, so the
sink frames the bodies as an Avro file (`sinks.avro_file`) and ClickHouse parses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from processors.inputs import CHAIN, KINDS
from processors.wire import dead_letter_to_avro
from schemas import CODEC, DecodeError
from schemas.codec import HEADER_LEN
from sinks.avro_file import container
from sinks.store import Store, StoreRejected, StoreUnavailable, clamp_ms
from streams.config import Settings
from streams.kafka import consumer_config
from streams.output import OutputProducer
from streams.topics import CHAIN_EVENTS, DEAD_LETTER, LEDGER, MARGIN_EVENTS, RESULTS, TO_SIGN, TopicSpec

log = logging.getLogger("posflow.sink")

GROUP = "posflow-sink"


@dataclass(frozen=True)
class AvroRoute:
    """Records of `message` (or lone `single` records, wrapped) into a landing table of its shape."""

    spec: TopicSpec
    table: str
    message: str
    single: str | None = None  # e.g. a lone LedgerLine, wrapped into a LedgerBatch of one
    items: str | None = None  # the batch's list field


AVRO_ROUTES = (
    AvroRoute(LEDGER, "ledger_batches_in", "LedgerBatch", "LedgerLine", "lines"),
    AvroRoute(RESULTS, "result_batches_in", "ResultBatch", "Result", "results"),
    AvroRoute(TO_SIGN, "withdrawals_to_sign_in", "WithdrawalToSign"),
    AvroRoute(MARGIN_EVENTS, "margin_events_in", "MarginEvent"),
    AvroRoute(DEAD_LETTER, "dead_letters_in", "DeadLetter"),
)
CHAIN_TABLE = "chain_events"
# What chain_events holds of an input, beyond its envelope: every field of the kinds the registry says the
# sink lands (processors.inputs, Kind.landed), one column each (sinks/sql; test_sink_store holds the table
# to this). A kind without a field leaves it empty: "" for text, NULL for numbers.
LANDED_KINDS = tuple(k for k in KINDS.values() if k.landed)
assert {k.source for k in LANDED_KINDS} == {CHAIN}, "the sink lands one input topic, the chain's, into chain_events"
CHAIN_FIELDS: dict[str, str | None] = {
    name: "" if hint is str else None
    for kind in LANDED_KINDS for name, hint in typing.get_type_hints(kind.body).items()
}
SINK_TOPICS = (LEDGER, RESULTS, TO_SIGN, MARGIN_EVENTS, DEAD_LETTER, CHAIN_EVENTS)
# whose records a dead letter may be replayed into
LANDED_TOPICS = (LEDGER, RESULTS, TO_SIGN, MARGIN_EVENTS, CHAIN_EVENTS)


class Unstorable(ValueError):
    pass


class Abandoned(RuntimeError):
    """Stopped with records not landed; they are not committed, so the next start reads them again."""


@dataclass
class Item:
    """One Kafka record, prepared for its table: an Avro body, or JSON rows."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    payload: bytes  # Avro body, or JSONEachRow lines


@dataclass
class Counters:
    records: int = 0
    inserts: int = 0
    retries: int = 0
    reconnects: int = 0
    dead_letters: int = 0
    per_table: dict[str, int] = field(default_factory=dict)


def _token(table: str, items: Sequence[Item]) -> str:
    """Names exactly the Kafka positions inserted: the same records again give the same token."""
    spans: dict[tuple[str, int], list[int]] = {}
    for it in items:
        span = spans.setdefault((it.topic, it.partition), [it.offset, it.offset, 0])
        span[0], span[1], span[2] = min(span[0], it.offset), max(span[1], it.offset), span[2] + 1
    text = table + ";" + ";".join(f"{t}/{p}/{a}-{b}/{n}" for (t, p), (a, b, n) in sorted(spans.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _chain_rows(value: bytes, source: str) -> bytes:
    name, record = CODEC.decode(value)
    if name == "Command":
        commands = [record]
    elif name == "CommandBatch":
        commands = record["commands"]
    else:
        raise Unstorable(f"WRONG_MESSAGE_TYPE: {name} on the chain-events topic")
    lines = []
    for cmd in commands:
        # Any kind found on the topic lands (a user's command sent there is audited too, its result says
        # WRONG_SOURCE), with the landed kinds' fields it has.
        kind, body = cmd["body"]
        row = {
            "id": cmd["id"], "ts": _iso(cmd["ts_ms"]), "ts_ms": cmd["ts_ms"], "user_id": cmd["user_id"],
            "kind": kind.removeprefix("posflow."), "source": source,
            **{name: body.get(name, empty) for name, empty in CHAIN_FIELDS.items()},
        }
        lines.append(json.dumps(row, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(ts_ms: int) -> str:
    """A DateTime64(3) text for any ms value: clamped as the views clamp (migration 0004), and in integer
    arithmetic (a float of ms is off by one ms near the range's ends)."""
    return (_EPOCH + timedelta(milliseconds=clamp_ms(ts_ms))).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


class Lander:
    """Prepares Kafka records for their tables and lands them in ClickHouse: what the sink does with a
    batch, without the Kafka side, so that `--replay-dead-letters` lands a record exactly as the sink
    would have (same rows, same ids, same tokens for the same positions)."""

    def __init__(self, settings: Settings, store: Store, counters: Counters, stop: threading.Event,
                 backoff_max_s: float = 10.0) -> None:
        self.store = store
        self.counters = counters
        self.backoff_max_s = backoff_max_s
        self._stop = stop
        self._routes = {r.spec.name(settings): r for r in AVRO_ROUTES}
        self._headers = {name: CODEC.header(r.message) for name, r in self._routes.items()}
        self._chain_topic = CHAIN_EVENTS.name(settings)

    def prepare(self, item: Item) -> bytes:
        """The record as its table takes it; DecodeError or Unstorable if it cannot be."""
        value = item.value
        if value is None:
            raise Unstorable("EMPTY_RECORD: a record without a value (tombstone) is not an event")
        if item.topic == self._chain_topic:
            return _chain_rows(value, f"{item.topic}/{item.partition}/{item.offset}")
        route = self._routes.get(item.topic)
        if route is None:
            raise Unstorable(f"NOT_LANDED: the sink does not land topic {item.topic}")
        if value[:HEADER_LEN] == self._headers[item.topic]:
            return value[HEADER_LEN:]  # the current batch schema: the body is the Avro datum
        name, record = CODEC.decode(value)  # an older version, or a lone item: rewrite in the current shape
        if name == route.single and route.items:
            record = {"id": f"{item.topic}/{item.partition}/{item.offset}", "ts_ms": record["ts_ms"],
                      "schema_version": 1, route.items: [record]}
        elif name != route.message:
            raise Unstorable(f"WRONG_MESSAGE_TYPE: {name} on {item.topic}")
        return CODEC.encode(route.message, record)[HEADER_LEN:]

    def table_of(self, item: Item) -> str:
        return CHAIN_TABLE if item.topic == self._chain_topic else self._routes[item.topic].table

    def land(self, items: Sequence[Item]) -> list[tuple[Item, str]]:
        """Insert prepared items, one insert per table (bisected on refusal); returns the refused ones with
        why. Returns only when everything else is in ClickHouse; Abandoned if stopped during an outage."""
        groups: dict[str, list[Item]] = {}
        for it in items:
            groups.setdefault(self.table_of(it), []).append(it)
        refused: list[tuple[Item, str]] = []
        for table, group in groups.items():
            self._insert_or_bisect(table, group, refused)
        return refused

    def _encode(self, table: str, items: Sequence[Item]) -> tuple[str, bytes]:
        if table == CHAIN_TABLE:
            return "JSONEachRow", b"".join(it.payload for it in items)
        return "Avro", container(self._routes[items[0].topic].message, [it.payload for it in items])

    def _insert_or_bisect(self, table: str, items: list[Item], refused: list[tuple[Item, str]]) -> None:
        try:
            self._insert(table, items)
        except StoreRejected as exc:
            if len(items) > 1:
                half = len(items) // 2
                self._insert_or_bisect(table, items[:half], refused)
                self._insert_or_bisect(table, items[half:], refused)
                return
            # One record refused. The code may be one nobody listed as transient (sinks.store.classify),
            # so the refusal is believed only if ClickHouse repeats it on a new connection.
            it = items[0]
            log.warning("ClickHouse refused %s/%s/%s (%s); reconnecting to ask once more", it.topic, it.partition,
                        it.offset, str(exc)[:300])
            self.counters.reconnects += 1
            try:
                self._insert(table, items, reopen=True)
            except StoreRejected as again:
                refused.append((it, f"REFUSED_BY_CLICKHOUSE: {again}"[:2000]))

    def _insert(self, table: str, items: list[Item], reopen: bool = False) -> None:
        """Retries forever what may pass (StoreUnavailable, which includes StoreTransient: it is caught
        here, before any caller sees it as a StoreRejected); raises StoreRejected for a refusal."""
        fmt, data = self._encode(table, items)
        token = _token(table, items)
        delay = 0.2
        while True:
            try:
                if reopen:
                    self.store.reopen()
                    reopen = False
                self.store.insert(table, fmt, data, token)
                break
            except StoreUnavailable as exc:
                self.counters.retries += 1
                log.warning("ClickHouse unavailable (%s); retrying in %.1fs, nothing committed", exc, delay)
                if self._stop.wait(delay):
                    raise Abandoned(f"stopped while ClickHouse was unavailable: {exc}") from exc
                delay = min(delay * 2, self.backoff_max_s)
        self.counters.inserts += 1
        self.counters.per_table[table] = self.counters.per_table.get(table, 0) + len(items)


class Sink:
    def __init__(self, settings: Settings, store: Store, *, max_records: int = 2000, linger_s: float = 0.2,
                 group: str = GROUP, backoff_max_s: float = 10.0, max_bytes: int = 64 << 20) -> None:
        self.settings = settings
        self.store = store
        self.max_records = max_records
        self.max_bytes = max_bytes  # a worker's LedgerBatch holds up to 2,500 lines: bound memory by size too
        self._pending_bytes = 0
        self.linger_s = linger_s
        self.backoff_max_s = backoff_max_s
        self.counters = Counters()
        self._stop = threading.Event()
        self.lander = Lander(settings, store, self.counters, self._stop, backoff_max_s)
        self._dead_letter_topic = DEAD_LETTER.name(settings)
        self._consumer = Consumer(consumer_config(
            settings, group,
            # a long ClickHouse outage must not cost the group membership (the sink retries without polling)
            **{"max.poll.interval.ms": 3_600_000, "session.timeout.ms": int(settings.session_timeout_s * 1000)}))
        self._producer: OutputProducer | None = None
        self._pending: list[Item] = []
        self._dead: list[tuple[Item, str]] = []
        self._first_at = 0.0

    # -- the loop ----------------------------------------------------------------------------
    def run(self, until: Callable[[], bool] | None = None, progress: Callable[[Counters], None] | None = None,
            progress_every_s: float = 5.0) -> Counters:
        """Consume until `stop()` (or `until()` is true); lands what is pending before returning."""
        topics = [t.name(self.settings) for t in SINK_TOPICS]
        self._consumer.subscribe(topics, on_revoke=self._on_revoke)
        last_progress = time.monotonic()
        try:
            while not self._stop.is_set() and not (until and until()):
                self.step()
                if progress and time.monotonic() - last_progress >= progress_every_s:
                    progress(self.counters)
                    last_progress = time.monotonic()
            self.flush()
        except Abandoned as exc:
            log.warning("%s; %d records not committed will be read again at the next start", exc, len(self._pending))
            self._pending, self._dead, self._pending_bytes = [], [], 0  # closing must not try them again
        finally:
            self._consumer.close()
            if self._producer is not None:
                self._producer.flush()
        return self.counters

    def stop(self) -> None:
        self._stop.set()

    def step(self) -> None:
        room = self.max_records - len(self._pending)
        for msg in self._consumer.consume(max(room, 1), timeout=min(self.linger_s, 0.1)):
            self._take(msg)
        due = self._pending and time.monotonic() - self._first_at >= self.linger_s
        full = len(self._pending) >= self.max_records or self._pending_bytes >= self.max_bytes
        if full or due or self._dead:
            self.flush()

    def _on_revoke(self, _consumer: Any, _partitions: list[TopicPartition]) -> None:
        """Land and commit what this member read before its partitions move on."""
        try:
            self.flush()
        except Abandoned as exc:  # stopping during an outage: the next owner reads them again
            log.warning("%s; %d records left uncommitted", exc, len(self._pending))
            self._pending, self._dead, self._pending_bytes = [], [], 0

    def _take(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return
            if err.retriable() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                log.warning("Kafka: %s (the client retries)", err)  # e.g. a topic not created yet
                return
            raise KafkaException(err)
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None, "a consumed record has a position"
        value = msg.value()
        item = Item(topic, partition, offset, msg.key(), value, b"")
        if not self._pending:
            self._first_at = time.monotonic()
        self.counters.records += 1
        try:
            item.payload = self.lander.prepare(item)
        except (DecodeError, Unstorable) as exc:
            self._dead.append((item, str(exc)))
        self._pending.append(item)
        self._pending_bytes += len(item.payload)

    # -- landing -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Insert everything pending, send dead letters, then commit. Returns only when all of it is done."""
        if not self._pending:
            return
        dead_ids = {id(it) for it, _ in self._dead}
        self._dead.extend(self.lander.land([it for it in self._pending if id(it) not in dead_ids]))
        self._send_dead_letters()
        self._commit(self._pending)
        self._pending = []
        self._pending_bytes = 0

    def _send_dead_letters(self) -> None:
        if not self._dead:
            return
        records = []
        for it, error in self._dead:
            if it.topic == self._dead_letter_topic:
                # Never loop a dead letter back to its own topic; it stays there, where it already is.
                log.error("dead letter %s/%s/%s cannot be stored: %s", it.topic, it.partition, it.offset, error)
                continue
            ts_ms = int(time.time() * 1000)
            record = dead_letter_to_avro(it.topic, it.partition, it.offset, ts_ms, it.key, it.value, error)
            records.append((DEAD_LETTER, it.key, CODEC.encode("DeadLetter", record), -1))
        if records:
            if self._producer is None:
                self._producer = OutputProducer(self.settings)
            self._producer.produce(records)
            self._producer.flush()  # acknowledged before the offsets that skip them are committed
        self.counters.dead_letters += len(self._dead)
        self._dead = []

    def _commit(self, items: Sequence[Item]) -> None:
        ends: dict[tuple[str, int], int] = {}
        for it in items:
            ends[(it.topic, it.partition)] = max(ends.get((it.topic, it.partition), -1), it.offset + 1)
        offsets = [TopicPartition(t, p, o) for (t, p), o in ends.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The group moved on (rebalance): the new owner re-reads these records; the insert tokens
            # and ReplacingMergeTree make that harmless.
            log.warning("offset commit refused (%s); the records will be read again", exc)
