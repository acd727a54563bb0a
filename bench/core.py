"""Pure core throughput: apply() over the workload, one process, no Kafka, no encoding; the core as the
worker runs it (compiled when `make compile` has built it, with the worker's collector settings)."""

from __future__ import annotations

import time
from typing import Any

import processors
from bench.workload import commands, expected_balances, user_name
from processors.batch import Step
from processors.config import EngineConfig, default_config
from processors.context import Context, Memory
from processors.engine import apply
from processors.state import UserState
from streams.app import collector_paused, tune_gc

STEP_INPUTS = 1000  # a worker's step: processors.agents.TAKE_MAX records (the bench's inputs are single)


def run(users: int = 10_000, rounds: int = 8) -> dict[str, Any]:
    cfg = default_config()
    cmds = commands(users, rounds)
    states: dict[str, UserState] = {}
    accepted = 0
    # The engine's memory outside the hot state, as a worker's step holds it: what one step wrote, until the
    # step stores it (then the worker's Memory is dropped; the bench keeps the steps' for its byte figures).
    steps: list[Memory] = []
    tune_gc()  # as the worker runs
    start = time.perf_counter()
    for first in range(0, len(cmds), STEP_INPUTS):
        memory = Memory()
        steps.append(memory)
        with collector_paused():  # as a worker's step runs
            for n in range(first, min(first + STEP_INPUTS, len(cmds))):
                cmd = cmds[n]
                # engine time and position as the worker gives them: the input record's timestamp and offset
                ctx = Context(1_700_000_000_000 + n, cfg, memory, "in", n)
                state, outcome = apply(states.get(cmd.user_id), cmd, ctx)
                states[cmd.user_id] = state
                accepted += outcome.result.status == "ACCEPTED"
    elapsed = time.perf_counter() - start
    assert accepted == len(cmds), f"{len(cmds) - accepted} commands refused in a workload meant to be valid"
    want = expected_balances(rounds)
    got = states[user_name(users - 1)].balances
    assert {k: (v[0], v[1]) for k, v in got.items()} == want, "the workload's reference balances disagree"
    return {"core_commands": len(cmds), "core_seconds": round(elapsed, 3),
            "core_commands_per_s": round(len(cmds) / elapsed),
            "core_compiled": processors.COMPILED or processors.NOT_COMPILED_BECAUSE,
            **stored_bytes(states, steps, cfg)}


def stored_bytes(states: dict[str, UserState], steps: list[Memory], cfg: EngineConfig) -> dict[str, Any]:
    """What the worker stores per user after the workload: the state (its users-table value), and the engine's
    memory records (ids of applied inputs, deposits, closed orders, fills, withdrawal ids) with their keys
    and their share of the index entries that let clock ticks sweep them (processors.batch)."""
    sizes = sorted(len(state.to_bytes()) for state in states.values())
    memory = Memory()
    for one_step in steps:
        for user, by_key in one_step.written.items():
            memory.written.setdefault(user, {}).update(by_key)
    step = Step(memory=memory)
    step.runs = {0: [["in", 0, 0]]}
    memory_bytes = sum(len(key) + len(value or b"") for _, key, value in step.memory_entries(lambda u: 0,
                                                                                          cfg.sweep_period_ms))
    records = sum(len(written) for written in memory.written.values())
    return {"state_bytes_p50": sizes[len(sizes) // 2], "state_bytes_p99": sizes[len(sizes) * 99 // 100],
            "state_bytes_max": sizes[-1], "dedup_ids_bytes_per_user": round(memory_bytes / len(states)),
            "dedup_records_per_user": round(records / len(states), 1)}


if __name__ == "__main__":
    print(run())
