from __future__ import annotations

import pytest

from tests.unit.core import Engine


@pytest.fixture(autouse=True)
def fresh_engine_memory() -> None:
    Engine.reset()
