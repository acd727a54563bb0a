"""Avro object container files built from single-object encoded messages, for ClickHouse's `Avro` input.

A topic record is `C3 01`, the writer's fingerprint and the body. The body of a message in the current
schema is already what an Avro file block holds, so the sink moves bytes instead of decoding them in
Python: ClickHouse parses the file (and checks it: a block's byte count and its sync marker must
match). Each message gets its own block, so a corrupt body cannot shift its neighbours.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache

from fastavro.schema import to_parsing_canonical_form

from schemas import CODEC
from schemas.compiled import write_long


def _long(n: int) -> bytes:
    out = bytearray()
    write_long(out, n)
    return bytes(out)


def _bytes(data: bytes) -> bytes:
    return _long(len(data)) + data


@cache
def _schema_text(message: str) -> bytes:
    return to_parsing_canonical_form(CODEC.schema(message)).encode()


def file_header(message: str, sync: bytes) -> bytes:
    """Magic, metadata (the message's current schema, no codec) and the sync marker."""
    schema = _schema_text(message)
    meta = _long(2) + _bytes(b"avro.schema") + _bytes(schema) + _bytes(b"avro.codec") + _bytes(b"null") + _long(0)
    return b"Obj\x01" + meta + sync


def container(message: str, bodies: Sequence[bytes]) -> bytes:
    """An object container file of `bodies` (encoded in the current schema of `message`)."""
    assert bodies, "an empty file inserts nothing"
    sync = os.urandom(16)
    parts = [file_header(message, sync)]
    for body in bodies:
        parts.append(b"\x02" + _long(len(body)))  # one object per block
        parts.append(body)
        parts.append(sync)
    return b"".join(parts)
