"""`make bench`: run the benchmarks, print their figures, save them to bench/results/*.json."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import core, e2e, margin, sink

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import os

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def save(name: str, figures: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**figures, "machine": machine()}, indent=2) + "\n")
    print(f"saved {path.relative_to(RESULTS.parent.parent)}")


def _phase(name: str, title: str, run: Callable[[], dict[str, Any]]) -> None:
    print(f"== {title}", flush=True)
    figures = run()
    for key, value in figures.items():
        print(f"  {key:<32} {value}")
    save(name, figures)


def _engine() -> dict[str, Any]:
    figures = core.run()
    print(f"  pure core: {figures}", flush=True)
    print("== engine: end to end through Kafka (one worker)", flush=True)
    figures.update(e2e.run())
    return figures


def main(argv: list[str]) -> int:
    wanted = set(argv) or {"engine", "sink", "margin"}
    if "engine" in wanted:
        _phase("engine", "engine: pure core", _engine)
    if "sink" in wanted:
        _phase("sink", "sink: ledger lines into chDB", sink.run)
    if "margin" in wanted:
        _phase("margin", "margin: re-evaluation of watched accounts on price moves", margin.run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
