"""Avro binary writers compiled from the schemas: one straight-line Python function per message.

fastavro interprets the schema on every call (~10 us for a ledger line); a function generated once
from the same parsed schema writes the same bytes in a fraction of that. Covered types are the ones
posflow's schemas use: record, string, bytes, int, long, boolean, null, enum, array and unions
(of null and one type, or of named records given as (name, record) tuples). Anything else is
refused at compile time. tests/unit/test_compiled_codec.py checks byte equality with fastavro.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Writer = Callable[[dict[str, Any]], bytes]


def write_long(out: bytearray, n: int) -> None:
    """Zigzag varint, as Avro encodes int and long."""
    assert -(1 << 63) <= n < (1 << 63), f"{n} does not fit an Avro long"
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


class _Gen:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.named: dict[str, Any] = {}  # full name -> schema, for later references by name
        self.n = 0

    def var(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def value(self, schema: Any, expr: str, indent: int) -> None:
        if isinstance(schema, str) and schema in self.named:
            schema = self.named[schema]
        if isinstance(schema, dict) and "name" in schema:
            self.named.setdefault(schema["name"], schema)
        t = schema if isinstance(schema, str) else schema["type"] if isinstance(schema, dict) else "union"
        if isinstance(schema, list):
            self.union(schema, expr, indent)
        elif t in ("string", "bytes"):
            # inlined: a length under 64 is one zigzag byte (2n), the common case
            b, n = self.var("b"), self.var("n")
            self.emit(indent, f"{b} = {expr}.encode()" if t == "string" else f"{b} = {expr}")
            self.emit(indent, f"{n} = len({b})")
            self.emit(indent, f"if {n} < 64:")
            self.emit(indent + 1, f"out.append({n} << 1)")
            self.emit(indent, "else:")
            self.emit(indent + 1, f"write_long(out, {n})")
            self.emit(indent, f"out += {b}")
        elif t in ("int", "long"):
            n = self.var("n")
            self.emit(indent, f"{n} = {expr}")
            self.emit(indent, f"if 0 <= {n} < 64:")
            self.emit(indent + 1, f"out.append({n} << 1)")
            self.emit(indent, "else:")
            self.emit(indent + 1, f"write_long(out, {n})")
        elif t == "boolean":
            self.emit(indent, f"out.append(1 if {expr} else 0)")
        elif t == "null":
            self.emit(indent, "pass")
        elif t == "enum":
            table = self.var("enum")
            self.consts[table] = {s: i for i, s in enumerate(schema["symbols"])}
            self.emit(indent, f"write_long(out, {table}[{expr}])")
        elif t == "array":
            items, item = self.var("items"), self.var("item")
            self.emit(indent, f"{items} = {expr}")
            self.emit(indent, f"if {items}:")
            self.emit(indent + 1, f"write_long(out, len({items}))")
            self.emit(indent + 1, f"for {item} in {items}:")
            self.value(schema["items"], item, indent + 2)
            self.emit(indent, "out.append(0)")
        elif t == "record":
            rec = self.var("rec")
            self.emit(indent, f"{rec} = {expr}")
            for f in schema["fields"]:
                self.value(f["type"], f"{rec}[{f['name']!r}]", indent)
        else:
            raise TypeError(f"compiled writers do not cover Avro type {t!r}")

    def union(self, branches: list[Any], expr: str, indent: int) -> None:
        v = self.var("u")
        self.emit(indent, f"{v} = {expr}")
        names = [b.get("name") if isinstance(b, dict) else b for b in branches]
        if len(branches) == 2 and "null" in names:
            i_null = names.index("null")
            other = branches[1 - i_null]
            self.emit(indent, f"if {v} is None:")
            self.emit(indent + 1, f"out.append({2 * i_null})")
            self.emit(indent, "else:")
            self.emit(indent + 1, f"out.append({2 * (1 - i_null)})")
            self.value(other, v, indent + 1)
            return
        if not all(isinstance(b, dict) and b.get("type") == "record" for b in branches):
            raise TypeError("compiled writers cover unions of null and one type, or of named records")
        self.emit(indent, f"{v}_name, {v}_rec = {v}")
        for i, b in enumerate(branches):
            self.emit(indent, f"{'if' if i == 0 else 'elif'} {v}_name == {b['name']!r}:")
            self.emit(indent + 1, f"write_long(out, {i})")
            self.value(b, f"{v}_rec", indent + 1)
        self.emit(indent, "else:")
        self.emit(indent + 1, f"raise ValueError(f'{{{v}_name!r}} is not a branch of this union')")


def compile_writer(parsed: Any) -> Writer:
    """`parsed`: a fastavro-parsed record schema (named types inlined, full names)."""
    gen = _Gen()
    gen.emit(0, "def write(record):")
    gen.emit(1, "out = bytearray()")
    gen.value(parsed, "record", 1)
    gen.emit(1, "return bytes(out)")
    namespace: dict[str, Any] = {"write_long": write_long, **gen.consts}
    exec(compile("\n".join(gen.lines), f"<avro writer {parsed.get('name')}>", "exec"), namespace)
    writer: Writer = namespace["write"]
    return writer
