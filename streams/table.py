"""Plain-text tables for the CLI: every command prints its answer this way."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TextIO


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        # Numbers read best right-aligned; text left-aligned.
        return "  ".join(
            c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)
        ).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def _numeric(text: str) -> bool:
    return bool(text) and text.lstrip("-").replace(".", "", 1).replace(",", "").isdigit()


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO | None = None) -> None:
    import sys

    print(format_table(headers, rows), file=out or sys.stdout, flush=True)
