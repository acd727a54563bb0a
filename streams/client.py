"""Producer helpers for upstream services: send commands with the right key, partitioner and
encoding, batch them per partition, and wait for their results.

A single command goes out keyed by its user (Kafka's murmur2 picks the partition). A batch goes out
as CommandBatch records, each holding only users of one partition and sent to that partition, so a
worker pays Faust's per-record cost once per batch. Chain events go to their own topic (only the
chain watcher may write there), operators' decisions to theirs, users' commands to the commands topic.

Every record has a delivery callback: `flush()` waits for Kafka's acknowledgements and raises
DeliveryFailed with the first refusal (a record too large, no permission, no such partition), naming
the topic and what to do. A sender must never believe a command was sent when it was not.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from processors.inputs import source_of
from processors.messages import Command, Result
from processors.wire import command_to_avro, result_from_avro
from schemas import CODEC
from streams.config import Settings
from streams.kafka import consumed, consumer_config, producer_config, watermarks
from streams.output import DeliveryFailed
from streams.partitioner import partition_for
from streams.topics import INPUTS, LEDGER, RESULTS

BATCH_MAX = 500  # commands per CommandBatch record


def _what_to_do(err: KafkaError, topic: str, partition: int | None, settings: Settings) -> str:
    """The operator's next step for a produce error, by its code."""
    code = err.code()
    if code == KafkaError.MSG_SIZE_TOO_LARGE:
        return (f"the record is larger than {topic} takes (the topic's max.message.bytes, or the producer's "
                "message.max.bytes): send fewer commands per batch (send_batch(batch_max=...)) or raise the limit")
    if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
        return f"this client may not write to {topic}: grant its principal WRITE on the topic (Kafka ACLs)"
    if code == KafkaError._UNKNOWN_PARTITION:
        return (f"{topic} has no partition {partition}: its partition count differs from POSFLOW_PARTITIONS="
                f"{settings.partitions}; use the same count everywhere (`posflow topics list`)")
    if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        return f"{topic} does not exist: create the topics with `posflow topics create`"
    if code in (KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
        return f"Kafka at {settings.kafka_bootstrap} did not acknowledge in time: check it runs (`make status`)"
    return "the command was not sent: send it again once the cause is fixed"


class CommandClient:
    def __init__(self, settings: Settings, **producer_extra: Any) -> None:
        self.settings = settings
        self._producer = Producer(producer_config(settings, **producer_extra))
        self._batch_seq = 0
        self._errors: list[tuple[KafkaError, str, int | None]] = []  # (error, topic, partition) not yet raised

    def _topic(self, cmd: Command) -> str:
        """Each source has its topic (streams.topics.INPUTS); a kind's source is in the registry."""
        return INPUTS[cmd.source or source_of(cmd.kind)].name(self.settings)

    def send(self, cmd: Command) -> None:
        """One command, one record, keyed by the user."""
        self._produce(self._topic(cmd), CODEC.encode("Command", command_to_avro(cmd)), key=cmd.user_id.encode())

    def send_batch(self, cmds: Iterable[Command], batch_max: int = BATCH_MAX) -> int:
        """Group by (topic, partition) keeping each user's order, and send CommandBatch records."""
        groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        n = 0
        for cmd in cmds:
            p = partition_for(cmd.user_id.encode(), self.settings.partitions)
            groups[(self._topic(cmd), p)].append(command_to_avro(cmd))
            n += 1
        for (topic, p), records in groups.items():
            for i in range(0, len(records), batch_max):
                self._batch_seq += 1
                chunk = records[i : i + batch_max]
                value = CODEC.encode("CommandBatch", {"id": f"batch-{time.time_ns()}-{self._batch_seq}",
                                                      "ts_ms": int(time.time() * 1000), "schema_version": 1,
                                                      "commands": chunk})
                self._produce(topic, value, partition=p)
        return n

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:  # kept for flush(): a callback runs inside poll/flush and must not raise
            self._errors.append((err, msg.topic() or "?", msg.partition()))

    def _produce(self, topic: str, value: bytes, key: bytes | None = None, partition: int = -1) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, partition=partition, on_delivery=self._on_delivery)
                self._producer.poll(0)
                return
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as exc:  # refused before sending (known too large, no such partition)
                err = exc.args[0]
                where = partition if partition >= 0 else None
                raise DeliveryFailed(f"command record to {topic} refused: {err.str()}; "
                                     f"{_what_to_do(err, topic, where, self.settings)}") from exc

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until Kafka acknowledged every record sent; raise with the first refusal if any was refused."""
        left = self._producer.flush(timeout)
        errors, self._errors = self._errors, []
        if errors:
            err, topic, partition = errors[0]
            more = f" ({len(errors) - 1} more records refused)" if len(errors) > 1 else ""
            raise DeliveryFailed(f"command record to {topic} [partition {partition}] not delivered: {err.str()}"
                                 f"{more}; {_what_to_do(err, topic, partition, self.settings)}")
        if left:
            raise TimeoutError(f"{left} command records not acknowledged by Kafka within {timeout}s")


def consumer_at_end(settings: Settings, topic: str, group: str) -> Consumer:
    """A consumer assigned every partition of `topic` at its end: it reads what is written from now on."""
    consumer = Consumer(consumer_config(settings, group))
    start = []
    for p in range(settings.partitions):
        _, high = watermarks(consumer, topic, p)
        start.append(TopicPartition(topic, p, high if high >= 0 else OFFSET_END))
    consumer.assign(start)
    return consumer


class ResultWatcher:
    """Reads the results topic from 'now' on; create it before sending what you will wait for."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer = consumer_at_end(settings, RESULTS.name(settings), f"posflow-results-{time.time_ns()}")
        self.results: dict[str, Result] = {}
        self.received: dict[str, float] = {}  # id -> time.monotonic() when read

    def poll(self, timeout: float = 0.2, max_records: int = 10_000) -> int:
        got = 0
        for msg in consumed(self._consumer, max_records, timeout, "results"):
            now = time.monotonic()
            for record in results_in(msg.value() or b""):
                result = result_from_avro(record)
                self.results.setdefault(result.id, result)
                self.received.setdefault(result.id, now)
                got += 1
        return got

    def wait_for(self, ids: Sequence[str], timeout: float = 60.0) -> dict[str, Result]:
        deadline = time.monotonic() + timeout
        missing = [i for i in ids if i not in self.results]
        while missing and time.monotonic() < deadline:
            self.poll()
            missing = [i for i in missing if i not in self.results]
        if missing:
            raise TimeoutError(f"{len(missing)} results missing after {timeout}s, e.g. {missing[:3]}")
        return {i: self.results[i] for i in ids}

    def close(self) -> None:
        self._consumer.close()


def read_topic(settings: Settings, topic: str, timeout: float = 30.0) -> list[tuple[int, int, bytes | None, bytes]]:
    """Every record of a topic as (partition, offset, key, value), up to its end at call time."""
    consumer = Consumer(consumer_config(settings, f"posflow-reader-{time.time_ns()}"))
    try:
        ends = {p: watermarks(consumer, topic, p)[1] for p in range(settings.partitions)}
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        pos = dict.fromkeys(ends, 0)
        out: list[tuple[int, int, bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout
        while any(pos[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: got {len(out)} records before {timeout}s")
            for msg in consumer.consume(10_000, 0.5):
                if msg.error() is not None:
                    continue
                p, off = msg.partition(), msg.offset()
                assert p is not None and off is not None, "a consumed record has a position"
                if off < ends[p]:
                    out.append((p, off, msg.key(), msg.value() or b""))
                pos[p] = max(pos[p], off + 1)
        return out
    finally:
        consumer.close()


def results_in(value: bytes) -> list[dict[str, Any]]:
    """The Result records of a results-topic record (a ResultBatch, or one Result)."""
    name, record = CODEC.decode(value)
    if name == "ResultBatch":
        return list(record["results"])
    if name == "Result":
        return [record]
    raise ValueError(f"{name} on the results topic")


def read_ledger(settings: Settings, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every ledger line on the ledger topic, in topic order (LedgerBatch records, or single lines)."""
    lines: list[dict[str, Any]] = []
    for *_, value in read_topic(settings, LEDGER.name(settings), timeout):
        name, record = CODEC.decode(value)
        if name == "LedgerBatch":
            lines.extend(record["lines"])
        elif name == "LedgerLine":
            lines.append(record)
        else:
            raise ValueError(f"{name} on the ledger topic")
    return lines
