"""Sending a step's outputs: librdkafka (confluent-kafka) is far cheaper per record than Faust's
Python producer, and `deliver` returns only when every record is acknowledged, which is what lets
the worker store user states afterwards (outputs are durable before the state that records them)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, Producer

from streams.config import Settings
from streams.kafka import producer_config
from streams.topics import TopicSpec


class DeliveryFailed(RuntimeError):
    """Kafka refused or timed out an output; the caller must not store the state that follows it."""


class OutputProducer:
    def __init__(self, settings: Settings, **extra: Any) -> None:
        self.settings = settings
        # linger 1 ms: a worker step flushes anyway, so waiting longer only adds latency
        self._producer = Producer(producer_config(settings, **{"linger.ms": 1, **extra}))
        self._names: dict[TopicSpec, str] = {}
        self._errors: list[KafkaError] = []

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._errors.append(err)

    def produce(self, records: Iterable[tuple[TopicSpec, bytes | None, bytes, int]]) -> int:
        """(topic, key, value, partition); partition -1 lets the key's murmur2 hash choose."""
        n = 0
        for spec, key, value, partition in records:
            name = self._names.get(spec) or self._names.setdefault(spec, spec.name(self.settings))
            while True:
                try:
                    self._producer.produce(name, value, key, partition=partition, on_delivery=self._on_delivery)
                    break
                except BufferError:  # local queue full: let librdkafka send some first
                    self._producer.poll(0.05)
            n += 1
        self._producer.poll(0)
        return n

    def flush(self, timeout: float = 60.0) -> None:
        left = self._producer.flush(timeout)
        if left or self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryFailed(f"{left} outputs unsent, errors: {errors[:3]}")

    async def deliver(self, records: Iterable[tuple[TopicSpec, bytes | None, bytes, int]]) -> int:
        n = self.produce(records)
        await asyncio.to_thread(self.flush)  # the event loop keeps heartbeating meanwhile
        return n
