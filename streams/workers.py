"""Start, watch and stop Faust worker processes (used by the demo, the tests and the benchmarks)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.config import REPO_ROOT


@dataclass
class WorkerProcess:
    """One `faust worker` subprocess of the app in `module`, with its own web port and data dir.

    With `supervise`, a worker that exits on its own (a crash, a SIGKILL, the engine's watchdog) is
    started again after `restart_delay_s`, as Kubernetes restarts a pod; only `stop()` ends it.
    """

    module: str
    web_port: int
    env: dict[str, str]
    log_path: Path
    loglevel: str = "warn"
    supervise: bool = False
    restart_delay_s: float = 0.5
    command: list[str] = field(default_factory=list)  # another program than a Faust worker, e.g. the sink
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    exits: list[int] = field(default_factory=list, init=False)  # exit codes of unplanned exits
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def start(self) -> WorkerProcess:
        with self._lock:
            self._spawn()
        if self.supervise:
            self._stopping.clear()
            threading.Thread(target=self._watch, daemon=True, name=f"supervise-{self.web_port}").start()
        return self

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            with self._lock:
                proc = self.proc
                if proc is None or proc.poll() is None or self._stopping.is_set():
                    continue
                self.exits.append(proc.returncode)
            time.sleep(self.restart_delay_s)
            with self._lock:
                if not self._stopping.is_set():
                    self._spawn()

    def _spawn(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "worker already running"
        env = {**os.environ, **self.env, "POSFLOW_WEB_PORT": str(self.web_port)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command or [sys.executable, "-m", "faust", "-A", self.module, "worker", "-l", self.loglevel,
                             "--web-port", str(self.web_port), "--web-host", "127.0.0.1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            start_new_session=True,  # its own process group: a kill reaches its children too
        )
        log.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get_json(self, path: str, timeout: float = 5.0) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def wait_until(self, path: str, predicate: Any, timeout: float = 90.0) -> Any:
        """Poll GET path until predicate(json) holds; fails with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if not self.alive() and not self.supervise:
                raise RuntimeError(f"worker on :{self.web_port} exited\n{self.log_tail()}")
            try:
                last = self.get_json(path)
                if predicate(last):
                    return last
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"GET {path} on :{self.web_port} never satisfied; last={last!r}\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful: SIGTERM lets Faust commit offsets and flush; SIGKILL if it hangs. Ends supervision."""
        self._stopping.set()
        with self._lock:
            self._signal(signal.SIGTERM)
            self._reap(timeout)

    def kill(self) -> None:
        """A crash: SIGKILL with no chance to flush or commit (a supervised worker comes back)."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):  # it exited between the check and the kill
                os.killpg(self.proc.pid, sig)

    def _reap(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def sink_process(env: dict[str, str], log_path: Path, http_port: int, supervise: bool = False,
                 *extra: str) -> WorkerProcess:
    """`posflow sink` as a subprocess; with chDB it serves ClickHouse's HTTP interface on `http_port`."""
    return WorkerProcess("sinks", http_port, env, log_path, supervise=supervise,
                         command=[sys.executable, "-m", "streams.cli", "sink", "--http-port", str(http_port), *extra])
