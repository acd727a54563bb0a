"""The chain of real parts: Avro records -> Faust agent -> RocksDB table with a changelog -> recovery."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from processors.inputs import command
from processors.messages import Transfer
from processors.wire import command_to_avro
from schemas import CODEC
from streams.config import Settings
from streams.kafka import consumer_config, producer_config, watermarks
from streams.topics import COMMANDS, create_all
from streams.workers import WorkerProcess

pytestmark = pytest.mark.integration

APP = "tests.integration.apps.counter"


def _produce(settings: Settings, n: int, users: int) -> dict[str, int]:
    producer = Producer(producer_config(settings))
    rng = random.Random(7)
    expected: dict[str, int] = {}
    for i in range(n):
        user = f"u{rng.randrange(users)}"
        expected[user] = expected.get(user, 0) + 1
        cmd = command(Transfer, f"c{i}", user, asset="USDT", amount="1", from_account="spot", to_account="margin")
        value = CODEC.encode("Command", command_to_avro(cmd._replace(ts_ms=i)))
        producer.produce(COMMANDS.name(settings), key=user.encode(), value=value)
        producer.poll(0)
    assert producer.flush(30) == 0, "records left unsent"
    return expected


def _lag(settings: Settings) -> int:
    """Records of the commands topic not yet committed by the app's consumer group."""
    consumer = Consumer(consumer_config(settings, settings.app_id))
    try:
        tps = [TopicPartition(COMMANDS.name(settings), p) for p in range(settings.partitions)]
        lag = 0
        for tp in consumer.committed(tps, timeout=10):
            _, high = watermarks(consumer, tp.topic, tp.partition)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def test_fresh_worker_recovers_table_from_changelog(isolated_env: dict[str, str], tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap=isolated_env["KAFKA_BOOTSTRAP"],
        topic_prefix=isolated_env["POSFLOW_TOPIC_PREFIX"],
        app_id=isolated_env["POSFLOW_APP_ID"],
    )
    create_all(settings)
    expected = _produce(settings, n=3000, users=40)

    first = WorkerProcess(APP, 16101, {**isolated_env, "POSFLOW_HOME": str(tmp_path / "a")}, tmp_path / "a.log")
    try:
        first.start()
        first.wait_until("/counts/", lambda got: got == expected)
    finally:
        first.stop()
    # Every input is committed, so the next worker cannot rebuild the counts by re-reading the
    # input topic: whatever it shows must come from the changelog.
    assert _lag(settings) == 0

    fresh_home = tmp_path / "b"
    assert not fresh_home.exists()
    second = WorkerProcess(APP, 16102, {**isolated_env, "POSFLOW_HOME": str(fresh_home)}, tmp_path / "b.log")
    try:
        second.start()
        second.wait_until("/counts/", lambda got: got == expected)
        assert any(fresh_home.rglob("*.sst")) or any(fresh_home.rglob("CURRENT")), "no RocksDB store"
    finally:
        second.stop()
    assert not second.alive()
