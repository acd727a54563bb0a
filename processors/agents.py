"""The Faust shell around the core: one agent over the input topics, one changelog table of user
states, and the web view that answers balance queries from the worker that owns the user.

Per poll (`take_events`): decode and apply everything (processors.batch), send the outputs and wait
for their acknowledgement, then store the touched user states. Faust acks the events only after the
loop body returns and flushes the table's changelog before committing offsets, so after a crash
either the state is unchanged (the inputs are re-applied and yield identical outputs with identical
ids) or it already records the inputs (they are recognised as applied and change nothing).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any

import faust
from faust.streams import _current_event  # private, see _in_partition
from faust.web import Request, Response, View

from processors.batch import BatchProcessor, Source
from processors.config import EngineConfig
from processors.money import format_amount
from processors.state import UserState
from streams.config import Settings
from streams.output import OutputProducer
from streams.topics import CHAIN_EVENTS, COMMANDS

TAKE_MAX = 1000  # input records per step
TAKE_WITHIN_S = 0.005  # a step waits this long at most for TAKE_MAX records
STATE_CACHE_MAX = 200_000


@dataclass
class Counters:
    steps: int = 0
    records: int = 0
    commands: int = 0
    outputs: int = 0
    dead_letters: int = 0
    started: float = time.time()


def _in_partition(event: Any) -> None:
    """Make `event` Faust's current event. Table reads and writes pick their RocksDB partition and
    changelog partition from the current event; in a multi-event step the current one is merely the
    last buffered, so before touching a user's state we select an event from that user's partition."""
    _current_event.set(weakref.ref(event))


def register(app: faust.App, settings: Settings, cfg: EngineConfig) -> Counters:
    inputs = app.topic(
        COMMANDS.name(settings), CHAIN_EVENTS.name(settings),
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        partitions=settings.partitions,
    )
    users = app.Table("users", default=None, key_type=bytes, value_type=bytes, partitions=settings.partitions)
    processor = BatchProcessor(cfg, settings.partitions)
    counters = Counters()
    # user -> (stored bytes, decoded state): skips JSON decoding while the stored bytes are unchanged
    # (after a recovery or rebalance they differ, and the stored state wins).
    cache: dict[str, tuple[bytes, UserState]] = {}
    output: list[OutputProducer] = []  # created on first use, inside the worker process

    @app.agent(inputs)
    async def engine(stream: Any) -> None:
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            by_partition = {ev.message.partition: ev for ev in events}

            def load(user: str, partition: int, by_partition: dict[int, Any] = by_partition) -> UserState | None:
                _in_partition(by_partition[partition])
                raw = users.get(user.encode())
                if raw is None:
                    return None
                hit = cache.get(user)
                return hit[1] if hit is not None and hit[0] == raw else UserState.from_bytes(raw)

            step = processor.run(
                ((Source(ev.message.topic, ev.message.partition, ev.message.offset, ev.message.key,
                         int(ev.message.timestamp * 1000)), ev.message.value) for ev in events),
                load,
            )
            if not output:
                output.append(OutputProducer(settings))
            counters.outputs += await output[0].deliver(step.records)
            if len(cache) > STATE_CACHE_MAX:
                cache.clear()
            for user, (partition, state) in step.states.items():
                _in_partition(by_partition[partition])
                data = state.to_bytes()
                users[user.encode()] = data
                cache[user] = (data, state)
            counters.steps += 1
            counters.records += len(events)
            counters.commands += step.commands
            counters.dead_letters += step.dead_letters

    @app.page("/users/{user_id}/balances")
    class Balances(View):
        @app.table_route(table=users, match_info="user_id")  # type: ignore[arg-type]
        async def get(self, request: Request, user_id: str) -> Response:
            raw = users.get(user_id.encode())
            if raw is None:
                return self.json({"user_id": user_id, "error": "UNKNOWN_USER"}, status=404)
            return self.json(balances_view(UserState.from_bytes(raw), cfg))

    @app.page("/stats/")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            owned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == inputs.topics[0])
            return self.json({**vars(counters), "partitions": owned})

    return counters


def balances_view(state: UserState, cfg: EngineConfig) -> dict[str, Any]:
    rows = []
    for (account, asset), (available, frozen, borrowed) in sorted(state.balances.items()):
        scale = cfg.assets[asset].scale
        rows.append({"account": account, "asset": asset, "available": format_amount(available, scale),
                     "frozen": format_amount(frozen, scale), "borrowed": format_amount(borrowed, scale)})
    return {
        "user_id": state.user_id, "opened": state.opened, "status": state.status, "kyc_tier": state.kyc_tier,
        "balances": rows, "open_holds": len(state.holds),
        "withdrawals": {wid: w.status for wid, w in state.withdrawals.items()}, "ledger_seq": state.seq,
    }
