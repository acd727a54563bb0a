"""Writing a Faust table's entries in bulk: to its changelog topic first, then to the local store.

Faust sends one changelog record per `table[key] = value` through its Python producer, and the crash
test showed its local RocksDB write can land before (and without) the changelog record. This writer
sends a whole step's entries with librdkafka, waits for Kafka's acknowledgement, and only then puts
them into the local store and advances the store's persisted changelog offsets, the same bookkeeping
Faust's own `_on_changelog_sent` does, so Faust's recovery and standby replicas read it unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, Producer
from faust.types import TP

from streams.config import Settings
from streams.kafka import producer_config
from streams.output import DeliveryFailed

Entry = tuple[int, bytes, bytes]  # partition, key, value


class ChangelogWriter:
    def __init__(self, settings: Settings, table: Any) -> None:
        self._producer = Producer(producer_config(settings, **{"linger.ms": 1}))
        self._table = table

    async def write(self, entries: Sequence[Entry], select_partition: Callable[[int], None]) -> None:
        """`select_partition(p)` makes the local store address partition p (see processors.agents)."""
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
        store = self._table.data
        for partition, key, value in entries:  # in order: a partition's progress entry comes last
            select_partition(partition)
            store[key] = value
        for partition, offset in acked.items():
            store.set_persisted_offset(TP(topic, partition), offset)
