"""The core's context for tests that call apply() directly: one engine memory per test (reset by the
autouse fixture in tests/unit/conftest.py, and by a stateful machine's __init__), engine time settable."""

from __future__ import annotations

from processors.config import EngineConfig
from processors.context import Context, Memory


class Engine:
    memory = Memory()
    now_ms = 1_700_000_000_000

    @classmethod
    def reset(cls) -> None:
        cls.memory = Memory()
        cls.now_ms = 1_700_000_000_000


def ctx(cfg: EngineConfig, now_ms: int | None = None) -> Context:
    """A context as the worker gives one: engine time, config, and this test's engine memory."""
    return Context(Engine.now_ms if now_ms is None else now_ms, cfg, Engine.memory)
