"""The engine worker: `faust -A streams.worker worker` (or `posflow worker`). Settings from the environment."""

from __future__ import annotations

from processors.agents import register
from processors.config import default_config
from streams.app import create_app, tune_gc
from streams.config import Settings

settings = Settings()
app = create_app(settings)
counters = register(app, settings, default_config())
tune_gc()
