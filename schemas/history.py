"""Schema versions: `python -m schemas.history snapshot` records each message's current schema
(fully expanded) as history/<Name>.v<N>.avsc when it differs from the latest recorded version.

Run it after changing any .avsc; tests/unit/test_schema_compat.py then checks the new version against
every earlier one, and fails if a change was not recorded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fastavro.schema import load_schema, parse_schema

from schemas.codec import MESSAGES, NAMESPACE, SCHEMA_DIR, fingerprint_of

HISTORY = SCHEMA_DIR / "history"


def expanded(name: str) -> Any:
    """The message's schema with every referenced type inlined, as plain JSON data."""
    return load_schema(str(SCHEMA_DIR / f"{NAMESPACE}.{name}.avsc"), _write_hint=False)


def versions(name: str) -> list[tuple[int, Path]]:
    found = []
    for path in HISTORY.glob(f"{name}.v*.avsc"):
        found.append((int(path.name.split(".v")[1].split(".")[0]), path))
    return sorted(found)


def snapshot() -> list[str]:
    written = []
    for name in MESSAGES:
        current = expanded(name)
        known = versions(name)
        if known:
            latest = parse_schema(json.loads(known[-1][1].read_text()), _write_hint=False)
            if fingerprint_of(latest) == fingerprint_of(current):
                continue
        number = known[-1][0] + 1 if known else 1
        path = HISTORY / f"{name}.v{number}.avsc"
        path.write_text(json.dumps(current, indent=1) + "\n")
        written.append(str(path.relative_to(SCHEMA_DIR.parent)))
    return written


if __name__ == "__main__":
    if sys.argv[1:] != ["snapshot"]:
        print("usage: python -m schemas.history snapshot", file=sys.stderr)
        sys.exit(2)
    for line in snapshot() or ["no schema changed"]:
        print(line)
