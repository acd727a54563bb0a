"""Avro single-object encoding: `C3 01`, the writer schema's 8-byte CRC-64-AVRO fingerprint, the body.

A consumer looks the fingerprint up among every schema version it knows (the current `.avsc` files
and `history/`), so it decodes any version and resolves it to the current one. The Confluent framing
(magic 0, 4-byte registry id) is the other option DESIGN §5 names; it needs a registry, which the
local stack does not run, so only single-object encoding is implemented here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader
from fastavro.schema import fingerprint, load_schema, parse_schema, to_parsing_canonical_form

from schemas.compiled import Writer, compile_writer

SCHEMA_DIR = Path(__file__).resolve().parent
MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8
NAMESPACE = "posflow"
# The message types that travel on topics; the other .avsc files are their parts.
MESSAGES = ("Command", "CommandBatch", "Result", "LedgerLine", "WithdrawalToSign", "DeadLetter",
            "ResultBatch", "LedgerBatch", "MarginEvent", "LiquidationOrder")


class DecodeError(ValueError):
    """The bytes are not a message this codec can read; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class _Version:
    name: str  # short record name, e.g. "Command"
    schema: Any  # fastavro parsed schema
    current: bool


def fingerprint_of(parsed: Any) -> bytes:
    """The 8 header bytes: CRC-64-AVRO of the parsing canonical form, little-endian as the spec says."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


class Codec:
    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        self._current: dict[str, tuple[bytes, Any]] = {}
        self._writers: dict[str, tuple[bytes, Writer]] = {}  # name -> (header, compiled writer)
        self._by_fp: dict[bytes, _Version] = {}
        for name in MESSAGES:
            path = schema_dir / f"{NAMESPACE}.{name}.avsc"
            fp = fingerprint_of(load_schema(str(path), _write_hint=False))
            parsed = load_schema(str(path))  # with fastavro's "already parsed" hint, else it re-parses per call
            self._current[name] = (fp, parsed)
            self._writers[name] = (MAGIC + fp, compile_writer(parsed))
            self._by_fp[fp] = _Version(name, parsed, current=True)
        # history/<Name>.v<N>.avsc: earlier versions, fully expanded, kept so old messages still decode.
        for path in sorted((schema_dir / "history").glob("*.avsc")):
            name = path.name.split(".")[0]
            raw = _read_json(path)
            fp = fingerprint_of(parse_schema(raw, _write_hint=False))
            self._by_fp.setdefault(fp, _Version(name, parse_schema(raw), current=False))

    def schema(self, name: str) -> Any:
        return self._current[name][1]

    def header(self, name: str) -> bytes:
        """The 10 bytes every message of `name` in the current schema starts with."""
        return self._writers[name][0]

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        header, write = self._writers[name]
        return header + write(record)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Returns (message name, record in the current version of that message)."""
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("NOT_AVRO", "missing the Avro single-object header C3 01")
        version = self._by_fp.get(data[2:HEADER_LEN])
        if version is None:
            raise DecodeError("UNKNOWN_SCHEMA", f"writer schema fingerprint {data[2:HEADER_LEN].hex()} unknown")
        reader = None if version.current else self._current[version.name][1]
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            record = schemaless_reader(buf, version.schema, reader, return_record_name=True)
        except Exception as exc:  # fastavro raises several types for corrupt bodies
            raise DecodeError("CORRUPT_BODY", f"{type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(data):
            raise DecodeError("TRAILING_BYTES", f"{len(data) - buf.tell()} bytes after the record")
        assert isinstance(record, dict)
        return version.name, record

    def decode_as(self, name: str, data: bytes) -> dict[str, Any]:
        got, record = self.decode(data)
        if got != name:
            raise DecodeError("WRONG_MESSAGE_TYPE", f"expected {name}, got {got}")
        return record


def _read_json(path: Path) -> Any:
    import json

    return json.loads(path.read_text())


CODEC = Codec()
