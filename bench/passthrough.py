"""The transport ceiling: a Faust worker that forwards every input record unchanged, with the same
take_events loop and the same confluent producer as the engine, but no decoding and no core."""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response, View

from streams.app import create_app
from streams.config import Settings
from streams.output import OutputProducer
from streams.topics import CHAIN_EVENTS, COMMANDS, RESULTS

settings = Settings()
app = create_app(settings)
inputs = app.topic(COMMANDS.name(settings), CHAIN_EVENTS.name(settings), key_type=bytes, value_type=bytes,
                   partitions=settings.partitions)
counts = {"records": 0}
out: list[OutputProducer] = []


@app.agent(inputs)
async def forward(stream: Any) -> None:
    async for events in stream.take_events(1000, within=0.005):
        if not out:
            out.append(OutputProducer(settings))
        await out[0].deliver((RESULTS, ev.message.key, ev.message.value, -1) for ev in events)
        counts["records"] += len(events)


@app.page("/stats/")
class Stats(View):
    async def get(self, request: Request) -> Response:
        return self.json(counts)
