"""`make bench`: run the benchmarks, print their figures, save them to bench/results/*.json."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import core, e2e, liquidation, margin, sink

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


def _margin() -> dict[str, Any]:
    figures = margin.run()
    print("== margin: price to liquidation through Kafka (one worker, background at half its saturated rate)",
          flush=True)
    figures.update(liquidation.run())
    return figures


def _liquidation_only() -> None:
    """`python -m bench.run liquidation`: the liquidation figures alone, merged into the margin figures saved."""
    print("== margin: price to liquidation through Kafka (one worker, background at half its saturated rate)",
          flush=True)
    figures = liquidation.run()
    for key, value in figures.items():
        print(f"  {key:<32} {value}")
    path = RESULTS / "margin.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    kept.pop("machine", None)
    save("margin", {**kept, **figures})


def main(argv: list[str]) -> int:
    wanted = set(argv) or {"engine", "sink", "margin"}
    if "engine" in wanted:
        _phase("engine", "engine: pure core", _engine)
    if "sink" in wanted:
        _phase("sink", "sink: ledger lines into chDB", sink.run)
    if "margin" in wanted:
        _phase("margin", "margin: re-evaluation of watched accounts on price moves", _margin)
    elif "liquidation" in wanted:
        _liquidation_only()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
