"""The smallest real pipeline: Avro commands in, a RocksDB-backed changelog table of per-user counts.

Run by tests as `faust -A tests.integration.apps.counter worker`; settings come from the environment.
"""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response, View

from schemas import CODEC
from streams.app import create_app, raw_topic
from streams.config import Settings
from streams.topics import COMMANDS

settings = Settings()
app = create_app(settings, value_serializer="json")  # the counts table holds ints
commands = raw_topic(app, COMMANDS, settings)
counts = app.Table("counts", default=int, partitions=settings.partitions)


@app.agent(commands)
async def count(stream: Any) -> None:
    async for value in stream:
        _, record = CODEC.decode(value)
        counts[record["user_id"]] += 1


@app.page("/counts/")
class Counts(View):
    async def get(self, request: Request) -> Response:
        return self.json({k: v for k, v in counts.items()})
