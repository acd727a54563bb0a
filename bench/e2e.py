"""End to end through Kafka with one engine worker, and the passthrough ceiling on the same machine.

Phase 1, saturation: the whole workload is sent as fast as the client can; the rate is commands
divided by the time from the first send to the last result read back.
Phase 2, latency: a fresh workload is paced at 70% of the phase-1 rate (at most 20,000/s), a load
the worker sustains; p50 / p99 is the time from the batch record's send to its command's result being
read by a consumer.
Phase 3, passthrough: the phase-1 records through a worker that forwards them unchanged.
The client, the broker and the worker share this machine's cores, so every figure includes the
client's own encoding and decoding.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench import workload
from bench.stack import fresh, kafka
from processors.messages import Command
from streams.client import CommandClient, ResultWatcher
from streams.config import Settings
from streams.workers import WorkerProcess

CHUNK = 2000  # commands handed to the client at a time (it splits them per partition)


def _send_tracked(client: CommandClient, cmds: list[Command], rate: float | None) -> dict[str, float]:
    """Send in chunks (paced when `rate` is set); returns command id -> monotonic send time."""
    sent: dict[str, float] = {}
    start = time.monotonic()
    for i in range(0, len(cmds), CHUNK):
        chunk = cmds[i : i + CHUNK]
        if rate is not None:
            due = start + i / rate
            while (now := time.monotonic()) < due:
                time.sleep(min(due - now, 0.01))
        client.send_batch(chunk)
        now = time.monotonic()
        for c in chunk:
            sent[c.id] = now
    client.flush()
    return sent


def _collect(watcher: ResultWatcher, ids: list[str], stop: threading.Event, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    want = len(ids)
    have = len(watcher.results)
    while len(watcher.results) < have + want and time.monotonic() < deadline and not stop.is_set():
        watcher.poll(0.1)


def _engine_phase(settings: Settings, setup: list[list[Command]], cmds: list[Command], rate: float | None
                  ) -> dict[str, Any]:
    """Untimed: each setup step, waiting for its results. Timed: `cmds`."""
    watcher = ResultWatcher(settings)
    client = CommandClient(settings)
    for step in setup:
        client.send_batch(step)
        client.flush()
        watcher.wait_for([c.id for c in step], timeout=300)
    ids = [c.id for c in cmds]
    stop = threading.Event()
    reader = threading.Thread(target=_collect, args=(watcher, ids, stop, 600.0), daemon=True)
    reader.start()
    t0 = time.monotonic()
    sent = _send_tracked(client, cmds, rate)
    reader.join(600)
    stop.set()
    missing = [i for i in ids if i not in watcher.results]
    assert not missing, f"{len(missing)} results never arrived"
    refused = sum(watcher.results[i].status != "ACCEPTED" for i in ids)
    if refused:
        from collections import Counter

        why = Counter((r.kind, r.reason) for i in ids if (r := watcher.results[i]).status != "ACCEPTED")
        raise AssertionError(f"{refused} commands refused in a workload meant to be valid: {why.most_common(6)}")
    last = max(watcher.received[i] for i in ids)
    lat = sorted(watcher.received[i] - sent[i] for i in ids)
    watcher.close()
    return {"commands": len(cmds), "seconds": round(last - t0, 3), "per_s": round(len(cmds) / (last - t0)),
            "p50_ms": round(lat[len(lat) // 2] * 1000, 1), "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1)}


def _worker(module: str, env: dict[str, str], port: int, settings: Settings) -> WorkerProcess:
    w = WorkerProcess(module, port, env, Path(env["POSFLOW_HOME"]) / f"worker-{port}.log", supervise=True).start()
    w.wait_until("/stats/", lambda s: True, timeout=120)
    return w


def run(users: int = 5000, rounds: int = 9, paced_share: float = 0.7) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with kafka() as base:
        settings, env = fresh(base, "engine")
        worker = _worker("streams.worker", env, 16301, settings)
        try:
            accounts, deposits, cmds, _ = workload.steps(users, rounds)
            print(f"  engine, saturation: {len(cmds)} commands for {users} users ...", flush=True)
            before = worker.get_json("/stats/")
            sat = _engine_phase(settings, [accounts, deposits], cmds, None)
            print(f"    {sat}", flush=True)
            busy = _worker_time(before, worker.get_json("/stats/"))
            print(f"    worker seconds during the phase: {busy}", flush=True)
            # twin users, so phase 2 does not pile onto phase 1's states
            setup2 = [[_renamed(c) for c in accounts], [_renamed(c) for c in deposits]]
            paced = [_renamed(c) for c in cmds]
            paced_rate = min(20_000.0, paced_share * sat["per_s"])
            print(f"  engine, paced at {paced_rate:.0f}/s: {len(paced)} commands ...", flush=True)
            lat = _engine_phase(settings, setup2, paced, paced_rate)
            print(f"    {lat}", flush=True)
        finally:
            worker.stop()
        out.update(e2e_commands=sat["commands"], e2e_commands_per_s=sat["per_s"], e2e_seconds=sat["seconds"],
                   e2e_saturated_p50_ms=sat["p50_ms"], e2e_saturated_p99_ms=sat["p99_ms"],
                   e2e_paced_rate=round(paced_rate), e2e_paced_commands_per_s=lat["per_s"],
                   e2e_p50_ms=lat["p50_ms"], e2e_p99_ms=lat["p99_ms"],
                   **{f"e2e_worker_{k}": v for k, v in busy.items()})
        out.update(_passthrough(base, users, rounds))
    out["e2e_vs_passthrough"] = round(out["e2e_commands_per_s"] / out["passthrough_per_s"], 3)
    return out


def _worker_time(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Where the worker's time went between two /stats/ readings: applying and encoding a step
    (process), storing its journal before the outputs (journal), waiting for its outputs' acks (deliver),
    storing states (store), waiting for input (idle)."""
    return {k: round(after[f"{k}_s"] - before[f"{k}_s"], 2) for k in ("process", "journal", "deliver", "store", "idle")}


def _renamed(c: Command) -> Command:
    """The same command for a twin user (deposit ids carry the chain position: a new log index)."""
    if c.kind == "DepositConfirmed":
        return c._replace(id=c.id[:-2] + ":1", user_id=c.user_id + "p", body={**c.body, "log_index": 1})
    return c._replace(id=c.id + "-p", user_id=c.user_id + "p")


def _passthrough(base: Settings, users: int, rounds: int) -> dict[str, Any]:
    settings, env = fresh(base, "passthrough")
    worker = _worker("bench.passthrough", env, 16302, settings)
    try:
        cmds = workload.steps(users, rounds)[2]
        expected = _record_count(cmds, settings.partitions)
        client = CommandClient(settings)
        t0 = time.monotonic()
        client.send_batch(cmds)
        client.flush()
        worker.wait_until("/stats/", lambda s: s["records"] >= expected, timeout=600)
        elapsed = time.monotonic() - t0
        print(f"  passthrough: {expected} records ({len(cmds)} commands) in {elapsed:.2f}s", flush=True)
        return {"passthrough_records": expected, "passthrough_commands": len(cmds),
                "passthrough_per_s": round(len(cmds) / elapsed)}
    finally:
        worker.stop()


def _record_count(cmds: list[Command], partitions: int) -> int:
    """CommandBatch records the client makes of `cmds` (per input topic and partition)."""
    from collections import Counter

    from processors.inputs import CHAIN_KINDS
    from streams.client import BATCH_MAX
    from streams.partitioner import partition_for

    per = Counter((c.kind in CHAIN_KINDS, partition_for(c.user_id.encode(), partitions)) for c in cmds)
    return sum(-(-n // BATCH_MAX) for n in per.values())
