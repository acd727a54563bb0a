"""Kafka client configuration shared by every confluent-kafka producer and consumer in posflow."""

from __future__ import annotations

from typing import Any

from streams.config import Settings


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        # librdkafka's default (consistent_random, CRC32) would put a user on a different partition
        # than Faust/aiokafka and the Java client do; murmur2_random is the Java-compatible one.
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        **extra,
    }


def consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **extra,
    }
