"""CommandClient against the real broker: a command Kafka refuses is never reported as sent. `flush()`
raises with the first refusal, naming the topic and what to do; a client whose records all arrive says
nothing."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from processors.inputs import command
from processors.messages import Command, OpenAccount
from streams.client import CommandClient, read_topic
from streams.config import Settings
from streams.output import DeliveryFailed
from streams.topics import create_all

pytestmark = pytest.mark.integration


def _settings(env: dict[str, str], **overrides: object) -> Settings:
    base = {"kafka_bootstrap": env["KAFKA_BOOTSTRAP"], "topic_prefix": env["POSFLOW_TOPIC_PREFIX"],
            "app_id": env["POSFLOW_APP_ID"], "home": Path(env["POSFLOW_HOME"])}
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


def _open(user: str, cid: str | None = None) -> Command:
    return command(OpenAccount, cid or f"open-{user}", user, kyc_tier=1, region="DE")._replace(ts_ms=1_700_000_000_000)


def _create_with_record_limit(settings: Settings, topic: str, max_bytes: int) -> None:
    """The limit is set when the topic is created: a config altered later reaches the partition's log
    some time after the admin call returns, and a record sent in between would still be taken."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    new = NewTopic(topic, settings.partitions, settings.replication, config={"max.message.bytes": str(max_bytes)})
    for future in admin.create_topics([new]).values():
        future.result(30)


def test_a_record_larger_than_the_topic_takes_fails_flush(isolated_env: dict[str, str]) -> None:
    settings = _settings(isolated_env)
    client = CommandClient(settings)
    topic = client._topic(_open("u1"))
    _create_with_record_limit(settings, topic, 4096)
    create_all(settings)  # the other topics; this one exists with its limit
    client.send(_open("u1"))
    client.flush()  # a record that fits: acknowledged, nothing raised
    huge = base64.b64encode(os.urandom(48_000)).decode()  # random: no compression shrinks it under the limit
    client.send(_open("u2", cid=huge))  # the producer's own limit (1 MB) lets it go; the broker refuses it
    with pytest.raises(DeliveryFailed, match=rf"to {topic} .*too large.*max\.message\.bytes"):
        client.flush()
    client.send(_open("u3"))
    client.flush()  # the error was reported once; the client goes on
    ids = {len(v) > 4096 for *_, v in read_topic(settings, topic)}
    assert ids == {False}, "the refused record is not on the topic"


def test_a_partition_the_topic_does_not_have_fails_flush(isolated_env: dict[str, str]) -> None:
    """A client configured for more partitions than the topics have (POSFLOW_PARTITIONS differs)."""
    create_all(_settings(isolated_env, partitions=4))
    client = CommandClient(_settings(isolated_env, partitions=16))
    topic = client._topic(_open("u1"))
    with pytest.raises(DeliveryFailed, match=rf"{topic}.*(Unknown partition|UNKNOWN_PARTITION).*POSFLOW_PARTITIONS"):
        client.send_batch([_open(f"u{i}") for i in range(64)])  # users on all 16 partitions
        client.flush()
