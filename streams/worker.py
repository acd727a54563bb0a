"""The engine worker: `faust -A streams.worker worker` (or `posflow worker`). Settings from the environment."""

from __future__ import annotations

from processors.agents import register
from processors.config import default_config, with_overrides
from streams.app import create_app, tune_gc
from streams.config import Settings

settings = Settings()
app = create_app(settings)
counters = register(app, settings, with_overrides(default_config(), settings.engine_overrides))
tune_gc()
