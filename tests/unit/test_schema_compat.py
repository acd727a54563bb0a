"""Schemas evolve only compatibly: every recorded version stays readable by the current schema."""

from __future__ import annotations

import io
import json

import pytest
from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import parse_schema
from fastavro.utils import generate_many

from schemas import CODEC
from schemas.codec import MAGIC, MESSAGES, fingerprint_of
from schemas.history import expanded, versions

CASES = [(name, number, path) for name in MESSAGES for number, path in versions(name)]


@pytest.mark.parametrize("name", MESSAGES)
def test_current_schema_is_recorded(name: str) -> None:
    """A change to an .avsc without `python -m schemas.history snapshot` fails here."""
    known = versions(name)
    assert known, f"{name} has no recorded version"
    latest = parse_schema(json.loads(known[-1][1].read_text()), _write_hint=False)
    assert fingerprint_of(latest) == fingerprint_of(expanded(name)), f"{name} changed: run the snapshot"


@pytest.mark.parametrize(("name", "number", "path"), CASES, ids=[f"{n}.v{v}" for n, v, _ in CASES])
def test_old_versions_decode_with_current(name: str, number: int, path: object) -> None:
    old = parse_schema(json.loads(versions(name)[number - 1][1].read_text()))
    current = CODEC.schema(name)
    for record in generate_many(old, 200):
        buf = io.BytesIO()
        schemaless_writer(buf, old, record)
        buf.seek(0)
        schemaless_reader(buf, old, current)  # raises on an incompatible change
        # and through the codec, which finds the writer schema by the fingerprint in the header
        framed = MAGIC + fingerprint_of(parse_schema(old, _write_hint=False)) + buf.getvalue()
        got_name, _ = CODEC.decode(framed)
        assert got_name == name


def test_incompatible_change_is_detected() -> None:
    """The check above can fail: a new field without a default breaks old data."""
    old = expanded("Result")
    new = json.loads(json.dumps(old))
    new["fields"].append({"name": "must_exist", "type": "string"})
    record = next(iter(generate_many(parse_schema(old), 1)))
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(old), record)
    buf.seek(0)
    with pytest.raises(Exception, match=r"must_exist|default"):
        schemaless_reader(buf, parse_schema(old), parse_schema(new))
