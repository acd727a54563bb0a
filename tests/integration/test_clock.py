"""Clock ticks against the real broker and worker: the worker writes a tick to each partition it owns, the
ticks are applied like any input, and the engine's memory records are deleted from RocksDB and from the
changelog (tombstones, so a worker recovering from the changelog does not bring them back) once they
expire by engine time. The worker runs with a dedup horizon of seconds and a window of one input
(POSFLOW_ENGINE_OVERRIDES)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from streams.client import CommandClient, read_topic
from streams.config import Settings
from streams.topics import SYSTEM, create_all
from streams.workers import WorkerProcess
from tests.integration.engine_run import Answers, accepted, open_funded, send, transfer

pytestmark = pytest.mark.integration

HORIZON_MS = 3000
# A window of one input: an accepted input's id goes to the engine's memory when the window lets it go
OVERRIDES = {"dedup_horizon_ms": HORIZON_MS, "sweep_period_ms": 1000, "sweep_grace_ms": 1000, "applied_window": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ticks_sweep_expired_memory_records_from_the_store_and_the_changelog(
        isolated_env: dict[str, str], tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap=isolated_env["KAFKA_BOOTSTRAP"],
                        topic_prefix=isolated_env["POSFLOW_TOPIC_PREFIX"], app_id=isolated_env["POSFLOW_APP_ID"],
                        home=Path(isolated_env["POSFLOW_HOME"]))
    create_all(settings)
    env = {**isolated_env, "POSFLOW_TICK_S": "1", "POSFLOW_ENGINE_OVERRIDES": json.dumps(OVERRIDES)}
    worker = WorkerProcess("streams.worker", _free_port(), env, tmp_path / "w.log").start()
    try:
        worker.wait_until("/stats/", lambda s: True, timeout=120)
        users = [f"u{i}" for i in range(8)]  # on several partitions
        client, answers = CommandClient(settings), Answers(settings)
        for u in users:
            open_funded(client, answers, u, "100")
        # every accepted input's id is remembered until the horizon, in the memory once the window lets it go;
        # the first transfers' ids are the ones checked here
        accepted(send(client, answers, [transfer(f"move-{u}", u, "1") for u in users]))
        accepted(send(client, answers, [transfer(f"push-{u}", u, "1") for u in users]))
        # the sweep deletes records in the order they expire, and the deposits of open_funded expire first:
        # so wait on the checked ids' tombstones themselves, not on a count of deleted records
        ids = {f"\x00m/{u}\x00i/user/move-{u}".encode() for u in users}
        changelog = f"{settings.app_id}-users-changelog"
        last: dict[bytes, bytes] = {}
        deadline = time.monotonic() + 90
        while True:
            for _, _, key, value in read_topic(settings, changelog):
                assert key is not None
                last[key] = value
            index = [k for k, v in last.items() if k.startswith(b"\x00x/") and v]
            swept = ids <= set(last) and {last[k] for k in ids} == {b""} and index == []
            if swept or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert ids <= set(last), "each accepted input was remembered"
        assert {last[k] for k in ids} == {b""}, "and deleted (a tombstone) once it expired"
        stats = worker.wait_until("/stats/", lambda s: s["swept"] >= len(users), timeout=30)
        assert stats["ticks"] >= settings.partitions and stats["quarantined"] == 0
        ticks = read_topic(settings, SYSTEM.name(settings))
        assert {p for p, *_ in ticks} == set(range(settings.partitions)), "every partition gets ticks"
        assert index == [], "no index entry is left for swept records"
        assert all(last[u.encode()] for u in users), "the states stay"
    finally:
        worker.stop()
