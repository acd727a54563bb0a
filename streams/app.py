"""The Faust app factory: one place that turns Settings into a configured faust.App."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust

from streams.config import Settings
from streams.topics import TopicSpec

YOUNG_GENERATION = 50_000  # container allocations between collections of the youngest generation


def tune_gc() -> None:
    """For a worker process, once its modules are loaded. The core's values only refer downward (tuples,
    dicts, slotted objects: no cycles), yet CPython's default of a young collection every 700 allocations
    took ~20% of apply()'s time. Fewer, larger collections still find Faust's and asyncio's cycles; what
    is loaded at start is moved out of the collector's sight for good. The older generations are collected
    5x less often than by default (every 50 young collections, every 10 of those): the states a step
    changes keep getting new objects that outlive the young collection, and traversing them again in
    CPython's default rhythm cost ~12% of the core (bench/core.py, thresholds compared in one run)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION, 50, 10)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection during a worker's step, from its first input to its stored states (the other
    tasks of the process run in its awaits; at most one step's worth of cyclic garbage waits). The step's
    decoded records, states and outputs all outlive a young collection until the step is stored, so a
    collection in the middle traverses them and promotes them for older collections to traverse again;
    once the step is done they are freed by reference counting, and the collection owed runs at the next
    allocation over what is left (a profile of the e2e bench: 9% of a step in collections when they ran
    at the end of the step's apply, before its outputs were sent)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def create_app(settings: Settings, **overrides: Any) -> faust.App:
    settings.data_dir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    options: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "store": "rocksdb://",
        "datadir": str(settings.data_dir),
        "web_enabled": True,
        "web_host": "127.0.0.1",
        "web_bind": "127.0.0.1",
        "web_port": settings.web_port,
        "canonical_url": f"http://127.0.0.1:{settings.web_port}",  # where other workers forward queries
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication,
        # Nothing is skipped on a new consumer group: a fresh deployment processes the whole topic.
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        # posflow encodes its own bytes (Avro on topics, versioned JSON for table values)
        "key_serializer": "raw",
        "value_serializer": "raw",
        "producer_partitioner": None,  # aiokafka's default is murmur2, as the Java client and our helpers use
        "stream_recovery_delay": 0.0,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": max(1.0, settings.session_timeout_s / 5),
        "table_standby_replicas": 1,
    }
    options.update(overrides)
    return faust.App(settings.app_id, **options)


def raw_topic(app: faust.App, spec: TopicSpec, settings: Settings) -> Any:
    """A Faust topic carrying bytes: posflow decodes Avro itself so undecodable records reach the
    dead-letter topic instead of dying inside Faust's deserializer."""
    return app.topic(
        spec.name(settings),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
