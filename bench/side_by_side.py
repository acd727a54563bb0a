"""Two versions of the engine benchmark in one run: `python -m bench.side_by_side REF [--rounds N]`.

This machine's speed drifts, so figures of two versions are comparable only when measured together:
the version at git REF is checked out into a worktree under .local/, its core compiled there, and
`bench.run engine` runs alternately in that tree and in this one (REF first, then this, N times), each
against the same broker. The table shows every run and the median per version; the figures are saved
to bench/results/side_by_side.json, and this tree's last run stays in bench/results/engine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.run import save
from bench.stack import kafka
from streams.config import REPO_ROOT
from streams.table import print_table

KEYS = ("core_commands_per_s", "e2e_commands_per_s", "e2e_paced_commands_per_s", "e2e_p99_ms")


def _worktree(ref: str) -> Path:
    tree = REPO_ROOT / ".local" / "side_by_side" / ref
    if not tree.exists():
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(tree), ref], check=True)
    if (tree / "deploy" / "local" / "compile_core.py").exists():
        subprocess.run([sys.executable, "deploy/local/compile_core.py"], cwd=tree, env=_env(tree), check=True)
    return tree


def _env(tree: Path, bootstrap: str = "") -> dict[str, str]:
    """The tree's modules first on the path (the virtual environment's editable install points at this
    tree), and this tree's broker for both (the other tree's scripts would take it for a stranger's)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if bootstrap:
        env["KAFKA_BOOTSTRAP"] = bootstrap
    return env


def _bench(tree: Path, bootstrap: str) -> dict[str, Any]:
    """`bench.run engine` in `tree`, its figures."""
    subprocess.run([sys.executable, "-m", "bench.run", "engine"], cwd=tree, env=_env(tree, bootstrap), check=True)
    figures: dict[str, Any] = json.loads((tree / "bench" / "results" / "engine.json").read_text())
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.side_by_side", description=__doc__)
    parser.add_argument("ref", help="the git revision to compare with (e.g. the commit before an issue)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    base = _worktree(args.ref)
    head = REPO_ROOT
    runs: list[tuple[str, dict[str, Any]]] = []
    with kafka() as settings:
        for n in range(args.rounds):
            for label, tree in ((args.ref, base), ("HEAD", head)):
                print(f"== side by side, round {n + 1}/{args.rounds}: {label}", flush=True)
                runs.append((label, _bench(tree, settings.kafka_bootstrap)))
    rows = [(label, *(figures.get(k, "") for k in KEYS)) for label, figures in runs]
    medians = {label: {k: statistics.median(f[k] for lab, f in runs if lab == label and k in f) for k in KEYS}
               for label in (args.ref, "HEAD")}
    ratio = {k: round(medians["HEAD"][k] / medians[args.ref][k], 3) for k in KEYS}
    rows += [(f"median {label}", *medians[label].values()) for label in medians]
    rows.append(("HEAD / ref", *ratio.values()))
    print_table(["run", *KEYS], rows)
    save("side_by_side", {"ref": args.ref, "rounds": args.rounds, "medians": medians, "head_over_ref": ratio,
                          "runs": [{"version": label, **{k: f.get(k) for k in KEYS}} for label, f in runs]})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
