"""Session fixtures for the real parts: a Kafka bootstrap address and an anvil RPC URL.

Order of preference: the address in the environment (KAFKA_BOOTSTRAP / ANVIL_URL); a testcontainers
Kafka where a Docker engine answers; else the local stack (deploy/local). Whatever a fixture starts,
it stops; a service that was already running (say, after `make up`) is reused and left running.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sinks.migrations import migrate
from sinks.store import ChdbStore
from streams.config import REPO_ROOT, Settings

LOCAL = REPO_ROOT / "deploy" / "local"


def _docker_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # no socket, no daemon, no permission: all mean "no Docker here"
        return False


@contextmanager
def _local_service(script: str) -> Iterator[None]:
    """Start a local-stack service unless it already runs; stop it afterwards only if we started it."""
    path = str(LOCAL / script)
    was_running = subprocess.run([path, "status"], capture_output=True).returncode == 0
    if not was_running:
        subprocess.run([path, "start"], check=True)
    try:
        yield
    finally:
        if not was_running:
            subprocess.run([path, "stop"], check=False)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield os.environ["KAFKA_BOOTSTRAP"]
    elif _docker_reachable():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        with _local_service("kafka.sh"):
            yield Settings().kafka_bootstrap


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    if os.environ.get("ANVIL_URL"):
        yield os.environ["ANVIL_URL"]
    else:
        # No anvil image is pulled here: the npm-installed binary is the one path, with or without Docker.
        with _local_service("anvil.sh"):
            yield Settings().anvil_url


@pytest.fixture
def isolated_env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    """Environment for one test's workers: its own topic prefix and consumer group, so tests never
    see each other's records, and state under the test's tmp dir."""
    tag = uuid.uuid4().hex[:10]
    return {
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "POSFLOW_TOPIC_PREFIX": f"t{tag}.",
        "POSFLOW_APP_ID": f"posflow-test-{tag}",
        "POSFLOW_HOME": str(tmp_path / "home"),
    }


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """chDB opens one data directory per process, so the tests share one and each gets a database."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def chdb_store(chdb_dir: Path) -> Iterator[ChdbStore]:
    store = ChdbStore(chdb_dir, database=f"t_{uuid.uuid4().hex[:10]}")
    migrate(store)
    yield store
    store.command(f"DROP DATABASE IF EXISTS {store.database}")
    store.close()
