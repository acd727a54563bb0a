"""A Kafka for benchmarks: KAFKA_BOOTSTRAP if set, else the local stack (started and stopped here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from streams.config import REPO_ROOT, Settings
from streams.topics import create_all, delete_with_prefix

KAFKA_SH = str(REPO_ROOT / "deploy" / "local" / "kafka.sh")


@contextmanager
def kafka() -> Iterator[Settings]:
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield Settings()
        return
    was_running = subprocess.run([KAFKA_SH, "status"], capture_output=True).returncode == 0
    if not was_running:
        subprocess.run([KAFKA_SH, "start"], check=True)
    try:
        yield Settings()
    finally:
        if not was_running:
            subprocess.run([KAFKA_SH, "stop"], check=False)


BENCH_PREFIX = "bench-"


def fresh(base: Settings, label: str) -> tuple[Settings, dict[str, str]]:
    """New topics and consumer group for one benchmark phase; returns settings and worker env. The topics
    and worker directories of earlier phases go first: the broker keeps every partition's files open, and
    after a few hundred phases (side-by-side runs) it ran out of file descriptors and stopped."""
    delete_with_prefix(base, BENCH_PREFIX)
    shutil.rmtree(base.home / "bench", ignore_errors=True)
    tag = f"{BENCH_PREFIX}{label}-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:4]}"
    env = {"KAFKA_BOOTSTRAP": base.kafka_bootstrap, "POSFLOW_TOPIC_PREFIX": f"{tag}.", "POSFLOW_APP_ID": tag,
           "POSFLOW_HOME": str(base.home / "bench" / tag)}
    settings = Settings(kafka_bootstrap=base.kafka_bootstrap, topic_prefix=f"{tag}.", app_id=tag)
    create_all(settings)
    return settings, env

