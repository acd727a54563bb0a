"""The one declaration of every posflow topic.

Used by the Faust app, by the sink, and by topic creation in the local stack
(`python -m streams.topics create`). Every user-keyed topic has the same
partition count so that all of a user's inputs and state live on one partition (DESIGN §1).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any

from streams.config import Settings


class Key(Enum):
    USER = "user_id"  # murmur2(user id) picks the partition
    SYMBOL = "symbol"
    CONFIG = "config key"
    NONE = "none"


@dataclass(frozen=True)
class TopicSpec:
    short: str
    key: Key
    compacted: bool
    retention_ms: int  # -1 keeps forever
    doc: str

    def name(self, settings: Settings) -> str:
        return f"{settings.topic_prefix}{self.short}"

    # The time of record of an input is the broker's (DESIGN §1a): LogAppendTime stamps each record when
    # the broker appends it, whatever timestamp the producer set.
    log_append_time: bool = False

    def config(self) -> dict[str, str]:
        conf = {"retention.ms": str(self.retention_ms)}
        conf["cleanup.policy"] = "compact" if self.compacted else "delete"
        if self.log_append_time:
            conf["message.timestamp.type"] = "LogAppendTime"
        return conf


WEEK_MS = 7 * 24 * 3600 * 1000

COMMANDS = TopicSpec("commands", Key.USER, False, WEEK_MS, "user commands, single or batched per partition", True)
CHAIN_EVENTS = TopicSpec("chain-events", Key.USER, False, WEEK_MS, "deposits and withdrawals seen on chain", True)
OPERATOR = TopicSpec("operator-commands", Key.USER, False, WEEK_MS, "approvals and risk decisions by operators", True)
# Written to each partition by the worker that owns it (clock ticks): the partition's own inputs, so the
# journal orders them with the rest and a re-applied step sees the same ticks (DESIGN §1a).
SYSTEM = TopicSpec("system-inputs", Key.NONE, False, WEEK_MS, "clock ticks, liquidations: the partition's own", True)
# Stamped by the broker: a price's age counts from when the exchange received it (streams.market).
PRICES = TopicSpec("prices", Key.SYMBOL, True, -1, "mark prices and pool rates, latest per key", True)
RESULTS = TopicSpec("results", Key.USER, False, WEEK_MS, "a result per command, in ResultBatch records per partition")
LEDGER = TopicSpec("ledger", Key.USER, False, -1, "double-entry ledger lines in LedgerBatch records, kept forever")
MARGIN_EVENTS = TopicSpec("margin-events", Key.USER, False, WEEK_MS, "margin levels, calls, liquidations")
# Written by the engine for the matching engine: what a liquidation sells (processors.liquidation).
LIQUIDATION_ORDERS = TopicSpec("liquidation-orders", Key.USER, False, WEEK_MS, "liquidations' orders to the matcher")
TO_SIGN = TopicSpec("withdrawals-to-sign", Key.USER, False, WEEK_MS, "approved withdrawals for the signer")
DEAD_LETTER = TopicSpec("dead-letter", Key.NONE, False, -1, "undecodable records with original bytes")
LIMITS = TopicSpec("limits-config", Key.CONFIG, True, -1, "limit configuration, latest per key")

ALL: tuple[TopicSpec, ...] = (
    COMMANDS, CHAIN_EVENTS, OPERATOR, SYSTEM, PRICES, RESULTS, LEDGER, MARGIN_EVENTS, LIQUIDATION_ORDERS, TO_SIGN,
    DEAD_LETTER, LIMITS,
)
# The engine's input topics, one per source of inputs (processors.inputs): who may write a topic is who
# the engine takes that source's inputs from.
INPUTS: dict[str, TopicSpec] = {"user": COMMANDS, "chain": CHAIN_EVENTS, "operator": OPERATOR, "system": SYSTEM}


def input_sources(settings: Settings) -> dict[str, str]:
    """input topic name -> the source its records are taken as"""
    return {spec.name(settings): source for source, spec in INPUTS.items()}


def create_all(settings: Settings, timeout_s: float = 30.0) -> list[tuple[str, str]]:
    """Create every topic that is missing; returns (name, what happened) rows. Idempotent."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(t.name(settings), settings.partitions, settings.replication, config=t.config())
        for t in ALL
        if t.name(settings) not in existing
    ]
    rows = [(t.name(settings), "exists") for t in ALL if t.name(settings) in existing]
    if wanted:
        for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
            try:
                future.result()
                rows.append((name, "created"))
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
                rows.append((name, "exists"))
    _wait_for_leaders(admin, [t.name(settings) for t in ALL], timeout_s)
    return sorted(rows)


def delete_with_prefix(settings: Settings, prefix: str, keep_prefix: str | None = None,
                       timeout_s: float = 60.0) -> None:
    """Delete every topic whose name starts with `prefix` but not with `keep_prefix` (what earlier demo runs or
    benchmark phases left: a broker keeps every partition's files open)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    old = [t for t in admin.list_topics(timeout=timeout_s).topics
           if t.startswith(prefix) and (keep_prefix is None or not t.startswith(keep_prefix))]
    if old:
        for future in admin.delete_topics(old, operation_timeout=timeout_s).values():
            future.result()


def _wait_for_leaders(admin: Any, names: list[str], timeout_s: float) -> None:
    """A new topic is usable once every partition has a leader; clients fail before that."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        meta = admin.list_topics(timeout=timeout_s).topics
        pending = [n for n in names if n not in meta or not meta[n].partitions
                   or any(p.leader < 0 for p in meta[n].partitions.values())]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without leaders after {timeout_s}s: {pending}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    from streams.table import print_table

    parser = argparse.ArgumentParser(prog="python -m streams.topics", description=__doc__)
    parser.add_argument("action", choices=["create", "list"])
    parser.add_argument("--bootstrap", help="Kafka bootstrap address (default: $KAFKA_BOOTSTRAP)")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.bootstrap:
        settings = Settings(kafka_bootstrap=args.bootstrap)
    if args.action == "list":
        print_table(
            ["topic", "key", "compacted", "retention_ms", "what"],
            [(t.name(settings), t.key.value, t.compacted, t.retention_ms, t.doc) for t in ALL],
        )
        return 0
    print_table(["topic", "status"], create_all(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
