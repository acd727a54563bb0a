"""The pure domain core (no Kafka inside) and the Faust agents around it.

The core modules (CORE_MODULES) also run compiled to C by mypyc, from the very same sources:
`make compile` (which `make test`, `make demo` and `make bench` run first) builds them into
.local/compiled/processors/ and records a digest of the sources they were built from. They are used
only while that digest matches the sources on disk, so an edited module runs as Python until it is
compiled again: a compiled build can be missing, never stale. POSFLOW_PURE_PYTHON=1 forces Python.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
COMPILED_DIR = SOURCE_DIR.parent / ".local" / "compiled" / "processors"
DIGEST_FILE = COMPILED_DIR / "SOURCES.sha256"
# Everything a worker step runs (processors.batch down to apply()); not the Faust shell.
CORE_MODULES = ("reasons", "money", "rates", "margin", "market", "config", "messages", "state", "applied",
                "context", "ledger", "checks", "loans", "orders", "liquidation", "monitor", "accounts", "deposits",
                "withdrawals", "inputs", "engine", "wire", "batch")


def sources_digest() -> str:
    """What a compiled build must have been built from: the core's sources and this interpreter."""
    h = hashlib.sha256(f"{sys.implementation.cache_tag} {sys.version}".encode())
    for name in CORE_MODULES:
        h.update(f"\0{name}\0".encode())
        h.update((SOURCE_DIR / f"{name}.py").read_bytes())
    return h.hexdigest()


def why_not_compiled(digest_file: Path = DIGEST_FILE) -> str:
    """'' when the compiled build is there and was built from the sources on disk; else the reason."""
    if os.environ.get("POSFLOW_PURE_PYTHON"):
        return "POSFLOW_PURE_PYTHON is set"
    try:
        built = digest_file.read_text().strip()
    except OSError:
        return "not built (make compile)"
    if built != sources_digest():
        return "sources changed since the build (make compile)"
    return ""


NOT_COMPILED_BECAUSE = why_not_compiled()
COMPILED = not NOT_COMPILED_BECAUSE
if COMPILED:
    # Searched first: a core module is found as the compiled extension, the rest as source.
    __path__.insert(0, str(COMPILED_DIR))
