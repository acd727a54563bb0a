"""Writing a Faust table's entries in bulk: to its changelog topic first, then to the local store.

Faust sends one changelog record per `table[key] = value` through its Python producer, and the crash
test showed its local RocksDB write can land before (and without) the changelog record. This writer
sends a whole step's entries with librdkafka, waits for Kafka's acknowledgement, and only then writes
them to the local store the way Faust's own recovery does (`apply_changelog_batch`): one RocksDB write
batch per partition, atomic, with the persisted changelog offset, so Faust's recovery and standby
replicas read it unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, Producer
from faust.types import TP

from streams.config import Settings
from streams.kafka import producer_config
from streams.output import DeliveryFailed

Entry = tuple[int, bytes, bytes | None]  # partition, key, value (None: a tombstone, the key is deleted)


class _Message(NamedTuple):
    """What the store's apply_changelog_batch reads of a changelog event's message."""

    tp: TP
    partition: int
    offset: int
    key: bytes
    value: bytes | None


class _Event(NamedTuple):
    message: _Message


class ChangelogWriter:
    def __init__(self, settings: Settings, table: Any) -> None:
        self._producer = Producer(producer_config(settings, **{"linger.ms": 1}))
        self._table = table

    async def write(self, entries: Sequence[Entry]) -> None:
        """Entries in order; within a partition the store applies them in that order, all or none."""
        if not entries:
            return
        topic = self._table.changelog_topic_name
        acked: dict[int, int] = {}
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                acked[msg.partition()] = max(acked.get(msg.partition(), -1), msg.offset())

        for partition, key, value in entries:
            while True:
                try:
                    self._producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery)
                    break
                except BufferError:
                    self._producer.poll(0.05)
        left = await asyncio.to_thread(self._producer.flush, 60.0)
        if left or errors:
            raise DeliveryFailed(f"changelog: {left} unsent, errors {errors[:3]}")
        tps = {partition: TP(topic, partition) for partition in acked}
        events = [_Event(_Message(tps[partition], partition, acked[partition], key, value))
                  for partition, key, value in entries]
        self._table.data.apply_changelog_batch(events, to_key=None, to_value=None)
