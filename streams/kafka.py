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


def watermarks(consumer: Any, topic: str, partition: int, timeout_s: float = 30.0) -> tuple[int, int]:
    """(low, high) offsets of a partition, retrying while a new partition's leader settles."""
    import time

    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    settling = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0]
            if not (err.retriable() or err.code() in settling) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_range(consumer: Any, topic: str, partition: int, first: int, last: int,
               timeout_s: float = 60.0) -> dict[int, tuple[bytes | None, bytes | None, int]]:
    """Records first..last of one partition: offset -> (key, value, timestamp ms). Raises unless all are
    there (a gap means the log lost records: retention, or a topic recreated)."""
    import time

    from confluent_kafka import TopicPartition

    consumer.assign([TopicPartition(topic, partition, first)])
    found: dict[int, tuple[bytes | None, bytes | None, int]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while first + len(found) <= last:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}/{partition}: read {len(found)} of offsets {first}..{last} "
                                   f"in {timeout_s:.0f}s")
            for msg in consumed(consumer, 1000, 1.0, f"{topic}/{partition}"):
                expected = first + len(found)
                if expected > last:
                    break
                if msg.offset() != expected:
                    raise RuntimeError(f"{topic}/{partition}: offset {expected} is not in the log "
                                       f"(got {msg.offset()}); offsets {first}..{last} were journaled")
                found[expected] = (msg.key(), msg.value(), msg.timestamp()[1])
    finally:
        consumer.unassign()
    return found


def consumed(consumer: Any, max_records: int, timeout_s: float, what: str) -> list[Any]:
    """One `consume` call's records; end-of-partition events are skipped, any other error raises."""
    from confluent_kafka import KafkaError

    records = []
    for msg in consumer.consume(max_records, timeout_s):
        err = msg.error()
        if err is None:
            records.append(msg)
        elif err.code() != KafkaError._PARTITION_EOF:
            raise RuntimeError(f"reading {what}: {err}")
    return records
