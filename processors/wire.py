"""Mapping between Avro records (schemas/) and the core's values (processors/messages.py).

Amounts leave the core as integers in minor units and go on the wire as decimal text at the asset's
scale; nothing in between is a float.
"""

from __future__ import annotations

from typing import Any, Final

from processors.config import EngineConfig
from processors.messages import Command, LedgerLine, LiquidationOrder, MarginEvent, Result, WithdrawalToSign
from processors.money import format_amount
from schemas.compiled import write_long

SCHEMA_VERSION: Final = 1
_NS: Final = "posflow."


def command_from_avro(record: dict[str, Any], source: str = "") -> Command:
    """`source`: the source whose topic the record came from (processors.inputs); the shell always names it."""
    name, body = record["body"]
    return Command(record["id"], record["ts_ms"], record["user_id"], name.removeprefix(_NS), body, source)


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


def margin_event_to_avro(ev: MarginEvent, cfg: EngineConfig) -> dict[str, Any]:
    return {"id": ev.id, "ts_ms": ev.ts_ms, "schema_version": SCHEMA_VERSION, "user_id": ev.user_id,
            "account": ev.account, "kind": ev.kind, "band": ev.band, "previous_band": ev.previous_band,
            "level": ev.level, "tier": ev.tier, "detail": ev.detail,
            "shortfall": format_amount(ev.shortfall_value, cfg.assets[cfg.valuation_asset].scale)}


def liquidation_order_to_avro(order: LiquidationOrder, cfg: EngineConfig) -> dict[str, Any]:
    return {"id": order.id, "ts_ms": order.ts_ms, "schema_version": SCHEMA_VERSION, "user_id": order.user_id,
            "account": order.account, "sell_asset": order.sell_asset,
            "sell_amount": format_amount(order.sell_amount, cfg.assets[order.sell_asset].scale),
            "buy_asset": order.buy_asset, "mark_price": order.mark_price, "part": order.part}


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


# -- the two records every step writes, encoded straight from the core's tuples ---------------------
# CODEC.encode("LedgerBatch", {..., "lines": [line_to_avro(...), ...]}) writes the same bytes
# (tests/unit/test_wire.py); these skip the dict per line and run compiled, for the step's hot path.


def _long(out: bytearray, n: int) -> None:
    if 0 <= n < 64:  # one zig-zag byte: the common case of small numbers
        out.append(n << 1)
    else:
        write_long(out, n)


def _string(out: bytearray, text: str) -> None:
    data = text.encode()
    _long(out, len(data))
    out += data


def _optional(out: bytearray, text: str | None) -> None:
    """A ["null", "string"] union."""
    if text is None:
        out.append(0)
    else:
        out.append(2)
        _string(out, text)


def _batch_start(batch_id: str, ts_ms: int, items: int) -> bytearray:
    """A batch record's id, ts_ms and schema_version, and its array's item count (none if empty)."""
    out = bytearray()
    _string(out, batch_id)
    _long(out, ts_ms)
    out.append(SCHEMA_VERSION << 1)
    if items:
        _long(out, items)
    return out


def ledger_batch_body(batch_id: str, ts_ms: int, lines: list[LedgerLine], cfg: EngineConfig) -> bytes:
    """The Avro body (no single-object header) of a LedgerBatch holding `lines`."""
    out = _batch_start(batch_id, ts_ms, len(lines))
    if lines:
        scales = {symbol: a.scale for symbol, a in cfg.assets.items()}
        for line in lines:
            _, ts, entry_id, entry_type, line_no, user_id, account, bucket, asset, amount, before, after, seq = (
                line.fields())
            scale = scales[asset]
            _string(out, line.id)
            _long(out, ts)
            out.append(SCHEMA_VERSION << 1)
            _string(out, entry_id)
            _string(out, entry_type)
            _long(out, line_no)
            _string(out, user_id)
            _string(out, account)
            _string(out, bucket)
            _string(out, asset)
            _string(out, format_amount(amount, scale))
            _optional(out, None if before is None else format_amount(before, scale))
            _optional(out, None if after is None else format_amount(after, scale))
            _long(out, seq)
    out.append(0)
    return bytes(out)


def result_batch_body(batch_id: str, ts_ms: int, results: list[Result]) -> bytes:
    """The Avro body (no single-object header) of a ResultBatch holding `results`."""
    out = _batch_start(batch_id, ts_ms, len(results))
    if results:
        for r in results:
            _string(out, r.id)
            _long(out, r.ts_ms)
            out.append(SCHEMA_VERSION << 1)
            _string(out, r.user_id)
            _string(out, r.kind)
            out.append(_STATUS[r.status])
            _optional(out, r.reason)
            _string(out, r.detail)
            _long(out, r.ledger_lines)
    out.append(0)
    return bytes(out)


_STATUS: Final = {"ACCEPTED": 0, "REJECTED": 2}  # the Status enum's symbols, zig-zag encoded
