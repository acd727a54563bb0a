"""The registry of input kinds (processors.inputs.KINDS) against the wire: each kind's body type has its
Avro schema's fields, in order and of its types (the schemas are the wire truth); the Command union
carries exactly the registered kinds; the builder names the kind and source from the registry."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest

import schemas
from processors.inputs import KINDS, USER, command
from processors.messages import DepositConfirmed, OpenAccount, WithdrawalRef

SCHEMA_DIR = Path(schemas.__file__).resolve().parent
_AVRO: dict[str, type] = {"string": str, "int": int, "long": int, "boolean": bool, "double": float, "null": type(None)}


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"posflow.{name}.avsc").read_text())
    return schema


def _avro_types(avro: Any) -> set[type]:
    """An Avro field type as the set of Python types its values have (a union: each branch's)."""
    return set().union(*map(_avro_types, avro)) if isinstance(avro, list) else {_AVRO[avro]}


def _python_types(hint: Any) -> set[type]:
    return set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_kind_has_its_schemas_fields_in_order(name: str) -> None:
    body = KINDS[name].body
    assert body.__name__ == name
    hints = typing.get_type_hints(body)
    fields = _schema(name)["fields"]
    assert list(hints) == [f["name"] for f in fields], f"{name}: the body's fields are not the schema's"
    for f in fields:
        assert _python_types(hints[f["name"]]) == _avro_types(f["type"]), f"{name}.{f['name']}"
    assert body.__required_keys__ == frozenset(hints)  # type: ignore[attr-defined]  # every field is sent


def test_the_command_union_carries_exactly_the_registered_kinds() -> None:
    (body,) = [f for f in _schema("Command")["fields"] if f["name"] == "body"]
    assert sorted(t.removeprefix("posflow.") for t in body["type"]) == sorted(KINDS)
    assert len({k.body for k in KINDS.values()}) == len(KINDS), "one body type per kind"


def test_the_builder_takes_kind_and_source_from_the_registry() -> None:
    cmd = command(OpenAccount, "c1", "alice", kyc_tier=1, region="DE")
    assert (cmd.id, cmd.ts_ms, cmd.user_id, cmd.kind, dict(cmd.body), cmd.source) == \
        ("c1", 0, "alice", "OpenAccount", {"kyc_tier": 1, "region": "DE"}, USER)
    deposit = command(DepositConfirmed, "ethereum:0x1:0", "bob", chain="ethereum", tx_hash="0x1", log_index=0,
                      address="0xab", asset="ETH", amount="1", block_number=7, account="spot")
    assert (deposit.kind, deposit.source) == ("DepositConfirmed", KINDS["DepositConfirmed"].source)
    with pytest.raises(AssertionError, match="not the body type of a kind"):
        command(WithdrawalRef, "w", "bob", withdrawal_id="w1")  # a shared part, not a kind's body
