"""Mapping between Avro records (schemas/) and the core's values (processors/messages.py).

Amounts leave the core as integers in minor units and go on the wire as decimal text at the asset's
scale; nothing in between is a float.
"""

from __future__ import annotations

from typing import Any

from processors.config import EngineConfig
from processors.messages import Command, LedgerLine, Result, WithdrawalToSign
from processors.money import format_amount

SCHEMA_VERSION = 1
_NS = "posflow."


def command_from_avro(record: dict[str, Any]) -> Command:
    name, body = record["body"]
    return Command(record["id"], record["ts_ms"], record["user_id"], name.removeprefix(_NS), body)


def command_to_avro(cmd: Command) -> dict[str, Any]:
    return {"id": cmd.id, "ts_ms": cmd.ts_ms, "schema_version": SCHEMA_VERSION, "user_id": cmd.user_id,
            "body": (_NS + cmd.kind, dict(cmd.body))}


def result_to_avro(r: Result) -> dict[str, Any]:
    return {"id": r.id, "ts_ms": r.ts_ms, "schema_version": SCHEMA_VERSION, "user_id": r.user_id, "kind": r.kind,
            "status": r.status, "reason": r.reason, "detail": r.detail, "ledger_lines": r.ledger_lines}


def result_from_avro(d: dict[str, Any]) -> Result:
    return Result(d["id"], d["ts_ms"], d["user_id"], d["kind"], d["status"], d["reason"], d["detail"],
                  d["ledger_lines"])


def line_to_avro(line: LedgerLine, cfg: EngineConfig) -> dict[str, Any]:
    scale = cfg.assets[line.asset].scale
    return {
        "id": line.id, "ts_ms": line.ts_ms, "schema_version": SCHEMA_VERSION, "entry_id": line.entry_id,
        "entry_type": line.entry_type, "line_no": line.line_no, "user_id": line.user_id, "account": line.account,
        "bucket": line.bucket, "asset": line.asset, "amount": format_amount(line.amount, scale),
        "balance_before": None if line.balance_before is None else format_amount(line.balance_before, scale),
        "balance_after": None if line.balance_after is None else format_amount(line.balance_after, scale),
        "seq": line.seq,
    }


def to_sign_to_avro(ev: WithdrawalToSign, cfg: EngineConfig) -> dict[str, Any]:
    return {"id": ev.id, "ts_ms": ev.ts_ms, "schema_version": SCHEMA_VERSION, "user_id": ev.user_id,
            "chain": ev.chain, "asset": ev.asset, "amount": format_amount(ev.amount, cfg.assets[ev.asset].scale),
            "address": ev.address}


def dead_letter_to_avro(topic: str, partition: int, offset: int, ts_ms: int, key: bytes | None, value: bytes | None,
                        error: str) -> dict[str, Any]:
    """A record that could not be used, with its original bytes; the id is its position, so a retry repeats it."""
    return {"id": f"{topic}/{partition}/{offset}", "ts_ms": ts_ms, "schema_version": SCHEMA_VERSION,
            "source_topic": topic, "source_partition": partition, "source_offset": offset, "key": key,
            "value": value, "error": error}
