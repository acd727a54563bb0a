"""The Faust shell around the core: one agent over the input topics, one changelog table of user
states, and the web view that answers balance queries from the worker that owns the user.

Per step (a poll of `take_events`, cut into runs of at most STEP_BYTES of input): decode and apply
everything (processors.batch); store the order in which each partition's records were applied (its
journal); send the outputs and wait for their acknowledgement; then store the touched user states,
the partitions' progress (the last input offset applied per topic) and clear the journals. Faust acks
the events only after the loop body returns, so after a crash a step's records come again, and:
- if its journal was not stored, no output was sent: the records are applied afresh;
- if its journal was stored and its progress was not, the outputs may be out: the journaled records are
  re-applied in the journaled order before anything newer of the partition (`finish_interrupted`),
  which gives the same outputs with the same ids; a state the step did store holds its inputs
  (`UserState.through`) and skips them;
- if its progress was stored, the records are replays: their users' states are stored again, and
  nothing is applied or sent.

Two guards against Faust rebalance defects seen in the crash test (faust-streaming issues #216 and
#629): inputs must arrive in offset order (our input topics have contiguous offsets: idempotent,
non-transactional producers, no compaction), so a record beyond progress + 1 means Faust skipped
records, and the worker exits to be restarted and re-seek; and a partition that has records waiting
but makes no progress for `stall_s` also makes the worker exit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import weakref
from dataclasses import dataclass
from typing import Any

import faust
from faust.streams import _current_event  # private, see _in_partition
from faust.web import Request, Response, View

import processors
from processors import monitor
from processors.batch import BatchProcessor, Source, Step, market_key, spans
from processors.config import EngineConfig
from processors.context import Context
from processors.inputs import SYSTEM, command
from processors.market import Market
from processors.messages import ClockTick
from processors.money import format_amount
from processors.state import UserState
from processors.wire import command_to_avro, dead_letter_to_avro
from schemas import CODEC, DecodeError
from streams.app import collector_paused
from streams.changelog import ChangelogWriter
from streams.config import Settings
from streams.kafka import consumer_config, read_range, watermarks
from streams.market import copies
from streams.output import OutputProducer
from streams.topics import DEAD_LETTER, INPUTS, PRICES, input_sources

TAKE_MAX = 1000  # input records per poll
TAKE_WITHIN_S = 0.01  # a poll waits this long at most for TAKE_MAX records
STEP_BYTES = 1024 * 1024  # input bytes per step (~10,000 commands): bounds how long a command waits
STATE_CACHE_BYTES = 256 * 1024 * 1024  # decoded states kept between steps, counted by their stored bytes
EXIT_RESTART = 75  # "temporary failure": the supervisor (Kubernetes, the tests) starts the worker again
log = logging.getLogger("posflow.engine")


def progress_key(topic: str, partition: int) -> bytes:
    """Lives in the users table (same changelog partition, written after the states it covers).
    User ids cannot start with NUL, so the keys never meet."""
    return f"\x00progress/{topic}/{partition}".encode()


def journal_key(partition: int) -> bytes:
    """The order in which the partition's current step applied its records (`Step.runs`, JSON); empty
    (`NO_JOURNAL`) once the step's states are stored."""
    return f"\x00journal/{partition}".encode()


NO_JOURNAL = b"[]"


def _by_size(events: list[Any], limit: int) -> list[list[Any]]:
    """Consecutive runs of events of at most `limit` value bytes (at least one event each)."""
    chunks: list[list[Any]] = [[]]
    size = 0
    for ev in events:
        n = len(ev.message.value or b"")
        if chunks[-1] and size + n > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(ev)
        size += n
    return chunks


def _exit_for_restart(reason: str) -> None:
    log.critical("exiting for a restart: %s", reason)
    logging.shutdown()
    os._exit(EXIT_RESTART)


def _kill_if_applied(done: Step, input_id: str) -> None:
    """Fault injection (`Settings.fault_kill_after`): die the way a crash does, between outputs and states."""
    if any(result.id == input_id for results in done.results.values() for result in results):
        log.critical("fault injection: SIGKILL after the outputs of %s, before storing states", input_id)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Counters:
    steps: int = 0
    records: int = 0
    commands: int = 0
    outputs: int = 0
    dead_letters: int = 0
    quarantined: int = 0  # inputs the core failed on: dead-lettered with INTERNAL_ERROR, the partition went on
    redelivered: int = 0  # commands at or below progress: their users re-stored, nothing re-applied
    reapplied: int = 0  # records of interrupted steps re-applied in their journaled order
    skipped: int = 0  # commands an interrupted step had already stored in their user's state
    ticks: int = 0  # clock ticks applied (each sweeps its partition's expired memory records)
    swept: int = 0  # expired memory records deleted by ticks
    fanned_out: int = 0  # prices and rates copied to every partition of system-inputs
    decoded: int = 0  # user states decoded from the table (not found in the cache of live states)
    # seconds spent per phase of a step, and waiting for the next poll
    process_s: float = 0.0
    journal_s: float = 0.0
    deliver_s: float = 0.0
    store_s: float = 0.0
    idle_s: float = 0.0
    started: float = time.time()


def _clock_tick(partition: int, now_ms: int) -> bytes:
    tick = command(ClockTick, f"tick/{partition}/{now_ms}", "", partition=partition)._replace(ts_ms=now_ms)
    return CODEC.encode("Command", command_to_avro(tick))


def _in_partition(event: Any) -> None:
    """Make `event` Faust's current event. Table reads and writes pick their RocksDB partition and
    changelog partition from the current event; in a multi-event step the current one is merely the
    last buffered, so before touching a user's state we select an event from that user's partition."""
    _current_event.set(weakref.ref(event))


def register(app: faust.App, settings: Settings, cfg: EngineConfig) -> Counters:
    inputs = app.topic(
        *(spec.name(settings) for spec in INPUTS.values()),
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        partitions=settings.partitions,
    )
    users = app.Table("users", default=None, key_type=bytes, value_type=bytes, partitions=settings.partitions)
    processor = BatchProcessor(cfg, settings.partitions, input_sources(settings), settings.fault_assert_on)
    counters = Counters()
    # user -> (stored bytes, decoded state): skips JSON decoding while the stored bytes are unchanged
    # (after a recovery or rebalance they differ, and the stored state wins).
    cache: dict[str, tuple[bytes, UserState]] = {}
    cached_bytes = [0]
    output: list[OutputProducer] = []
    changelog: list[ChangelogWriter] = []

    processed: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset applied, this process
    range_reader: list[Any] = []  # a consumer that reads journaled records back, created on first use

    def stored_progress(topic: str, partition: int) -> int:
        """The last offset of topic/partition whose step is stored; -1 for none. Call in the partition."""
        raw = users.get(progress_key(topic, partition))
        return int(raw) if raw is not None else -1

    def in_order(events: list[Any]) -> tuple[list[tuple[Any, bool]], dict[tuple[str, int], int]]:
        """Mark records already applied as replays; exit if Faust skipped any (see the module docstring).
        Returns (event, replay) pairs and the progress to store per (topic, partition)."""
        progress: dict[tuple[str, int], int] = {}
        marked = []
        for ev in events:
            m = ev.message
            tp = (m.topic, m.partition)
            if tp not in progress:
                _in_partition(ev)
                progress[tp] = stored_progress(*tp)
            done = progress[tp]
            if m.offset <= done:
                marked.append((ev, True))
                continue
            if done >= 0 and m.offset != done + 1:
                _exit_for_restart(f"{tp}: got offset {m.offset} after {done}; records were skipped")
            progress[tp] = m.offset
            marked.append((ev, False))
        return marked, {tp: done for tp, done in progress.items() if done >= 0}

    def clients() -> tuple[OutputProducer, ChangelogWriter]:
        if not output:  # created on first use, inside the worker process
            output.append(OutputProducer(settings))
            changelog.append(ChangelogWriter(settings, users))
        return output[0], changelog[0]

    def db(partition: int) -> Any:
        """The partition's RocksDB store (rocksdict). Read directly: the Table's `get` goes through four
        Python layers and two lookups (contains, then get), a sixth of a step's time in the profile; the
        keys are only ever written by ChangelogWriter, straight to this store, so the two agree."""
        return users.data._db_for_partition(partition)  # type: ignore[attr-defined]

    def load(user: str, partition: int) -> UserState | None:
        raw: bytes | None = db(partition).get(user.encode())
        if raw is None:
            return None
        # Taken out while the step mutates it: if the step is interrupted before the store,
        # the next load decodes the stored bytes instead of a half-stepped object.
        hit = cache.pop(user, None)
        if hit is not None:
            cached_bytes[0] -= len(hit[0])
            if hit[0] == raw:
                return hit[1]
        counters.decoded += 1
        return UserState.from_bytes(raw)

    def recall(partition: int, key: bytes) -> bytes | None:
        raw: bytes | None = db(partition).get(key)
        return raw

    def scan(partition: int, lo: bytes, hi: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """In key order, from the partition's RocksDB (the keys a tick sweeps: processors.batch)."""
        out: list[tuple[bytes, bytes]] = []
        for key, value in db(partition).items(from_key=lo):
            if key >= hi or len(out) >= limit:
                break
            out.append((key, value))
        return out

    async def commit(done: Step, reached: dict[tuple[str, int], int], journaled: bool) -> None:
        """Journal the step's order (unless it is already journaled), send its outputs and wait for their
        acknowledgement, then store its states, the partitions' progress, and clear the journals."""
        sender, store = clients()
        t0 = time.perf_counter()
        if not journaled:
            # Before any output is visible: the order a re-application must follow (see finish_interrupted).
            await store.write([(p, journal_key(p), json.dumps(runs).encode()) for p, runs in done.runs.items()])
        t1 = time.perf_counter()
        counters.outputs += await sender.deliver(done.records)
        t2 = time.perf_counter()
        if settings.fault_kill_after and not journaled:
            _kill_if_applied(done, settings.fault_kill_after)
        if cached_bytes[0] > STATE_CACHE_BYTES:
            cache.clear()
            cached_bytes[0] = 0
        encoded = done.encoded_states()
        # first the engine's memory records: a stored state implies the records of the inputs it holds
        entries = done.memory_entries(processor.owner, cfg.sweep_period_ms)
        entries += [(partition, user.encode(), encoded[user]) for user, (partition, _) in done.states.items()]
        # then: a progress entry in the changelog implies the states written before it
        entries += [(partition, progress_key(topic, partition), str(offset).encode())
                    for (topic, partition), offset in reached.items()]
        # last: a cleared journal implies the progress written before it
        entries += [(partition, journal_key(partition), NO_JOURNAL) for partition in done.runs]
        await store.write(entries)
        for user, (_, state) in done.states.items():
            stored = encoded[user]
            if stored is not None:
                cache[user] = (stored, state)
                cached_bytes[0] += len(stored)
        processed.update(reached)
        counters.journal_s += t1 - t0
        counters.deliver_s += t2 - t1
        counters.store_s += time.perf_counter() - t2
        counters.commands += done.commands
        counters.dead_letters += done.dead_letters
        counters.quarantined += done.quarantined
        counters.redelivered += done.replayed
        counters.skipped += done.skipped
        counters.ticks += done.ticks
        counters.swept += done.swept

    async def finish_interrupted(events: list[Any]) -> None:
        """Re-apply a step that was interrupted after its journal was stored but before its progress was.

        Its outputs may be out already, so it must give the same outputs again: the same records in the
        same order, which a new poll cannot promise (the commands and chain-event topics have no order
        between them, and newer records may have arrived). So the journaled records are read back from
        the log and applied in the journaled order, before anything else of their partition; states the
        step did store already hold their inputs and skip them (`UserState.through`)."""
        first_event: dict[int, Any] = {}
        for ev in events:
            first_event.setdefault(ev.message.partition, ev)
        for partition, ev in first_event.items():
            _in_partition(ev)
            raw = users.get(journal_key(partition))
            if raw is None or raw == NO_JOURNAL:
                continue
            journal = json.loads(raw)
            progress = {topic: stored_progress(topic, partition) for topic, _, _ in journal}
            # progress is stored per step, so a run is wholly before it or wholly after it
            assert all(first > progress[t] or last <= progress[t] for t, first, last in journal), (journal, progress)
            runs = [run for run in journal if run[2] > progress[run[0]]]
            if not runs:  # the step's progress was stored, the clearing of its journal was not
                await clients()[1].write([(partition, journal_key(partition), NO_JOURNAL)])
                continue
            span = spans(runs)
            log.warning("partition %d: re-applying the interrupted step %s in its journaled order", partition, runs)
            if not range_reader:
                from confluent_kafka import Consumer

                range_reader.append(Consumer(consumer_config(settings, f"{settings.app_id}-journal")))
            records = {topic: await asyncio.to_thread(read_range, range_reader[0], topic, partition, lo, hi)
                       for topic, (lo, hi) in span.items()}
            inputs = []
            for topic, first, last in runs:
                for offset in range(first, last + 1):
                    key, value, ts_ms = records[topic][offset]
                    inputs.append((Source(topic, partition, offset, key, ts_ms), value))
            done = processor.run(inputs, load, recall, scan)
            assert done.runs == {partition: runs}, f"re-applied {done.runs}, journaled {runs}"
            await commit(done, {(topic, partition): hi for topic, (_, hi) in span.items()}, journaled=True)
            counters.reapplied += len(inputs)

    async def step(events: list[Any]) -> None:
        """One step: apply, journal the order, send the outputs, then store states and progress."""
        await finish_interrupted(events)
        t0 = time.perf_counter()
        marked, reached = in_order(events)
        done = processor.run(
            ((Source(ev.message.topic, ev.message.partition, ev.message.offset, ev.message.key,
                     round(ev.message.timestamp * 1000), replay), ev.message.value) for ev, replay in marked),
            load, recall, scan,
        )
        counters.process_s += time.perf_counter() - t0
        await commit(done, reached, journaled=False)
        counters.steps += 1
        counters.records += len(events)

    @app.agent(inputs)
    async def engine(stream: Any) -> None:
        idle_from = time.perf_counter()
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            counters.idle_s += time.perf_counter() - idle_from
            for chunk in _by_size(events, STEP_BYTES):
                with collector_paused():
                    await step(chunk)
            idle_from = time.perf_counter()

    stalled: dict[tuple[str, int], tuple[int, float]] = {}
    watermark_reader: list[Any] = []

    @app.timer(max(1.0, settings.stall_s / 6))  # type: ignore[untyped-decorator]
    async def watchdog() -> None:
        """Exit when an assigned input partition has records waiting and its progress stands still."""
        if app.rebalancing or not app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
            stalled.clear()  # recovery time is not a stall
            return
        tps = [(tp.topic, tp.partition) for tp in app.consumer.assignment() if tp.topic in inputs.topics]
        if not watermark_reader:
            from confluent_kafka import Consumer

            watermark_reader.append(Consumer(consumer_config(settings, f"{settings.app_id}-watchdog")))
        highs = await asyncio.to_thread(lambda: {tp: watermarks(watermark_reader[0], *tp)[1] for tp in tps})
        now = time.monotonic()
        for tp in tps:
            done = processed.get(tp)
            if done is None:
                done = stored_progress(*tp)
            if highs[tp] - 1 <= done:
                stalled.pop(tp, None)
                continue
            since = stalled.get(tp)
            if since is None or since[0] != done:
                stalled[tp] = (done, now)
            elif now - since[1] > settings.stall_s:
                _exit_for_restart(f"{tp}: {highs[tp] - 1 - done} records waiting, "
                                  f"no progress for {now - since[1]:.0f}s (Faust left the partition unfetched)")

    system_topic = INPUTS[SYSTEM].name(settings)
    # Its own producer: a tick that fails must not fail the delivery of a step's outputs, nor wait for it.
    ticker: list[OutputProducer] = []

    @app.timer(settings.tick_s)  # type: ignore[untyped-decorator]
    async def clock() -> None:
        """Write a clock tick to each system-inputs partition this worker owns. The tick's time is the
        broker's (LogAppendTime), so which worker writes it, or how late, changes nothing; a tick written
        twice (say, around a rebalance) sweeps nothing the first did not."""
        if app.rebalancing:
            return
        owned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == system_topic)
        if owned:
            now_ms = time.time_ns() // 1_000_000
            if not ticker:
                ticker.append(OutputProducer(settings))
            await ticker[0].deliver([(INPUTS[SYSTEM], None, _clock_tick(p, now_ms), p) for p in owned])

    prices = app.topic(PRICES.name(settings), key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")
    fanner: list[OutputProducer] = []  # its own producer, as the ticker's

    @app.agent(prices)
    async def fan_out(stream: Any) -> None:
        """Each price and rate from the prices topic to every partition of system-inputs (streams.market);
        a record that is not one goes to the dead-letter topic with its bytes."""
        async for event in stream.events():
            m = event.message
            broker_ms = round(m.timestamp * 1000)
            try:
                out = [(INPUTS[SYSTEM], None, value, p) for p, value in copies(m.value, broker_ms, settings.partitions)]
            except Exception as exc:  # anything undecodable is dead-lettered, never a crash
                why = str(exc) if isinstance(exc, DecodeError) else f"UNDECODABLE: {type(exc).__name__}: {exc}"
                letter = dead_letter_to_avro(m.topic, m.partition, m.offset, broker_ms, m.key, m.value, why[:2000])
                out = [(DEAD_LETTER, m.key, CODEC.encode("DeadLetter", letter), -1)]
            if not fanner:
                fanner.append(OutputProducer(settings))
            await fanner[0].deliver(out)
            counters.fanned_out += 1

    def served(view: View, user_id: str) -> UserState | Response:
        """The user's stored state, answered only by the worker whose consumer holds the user's partition,
        recovered: right after a rebalance the route can still point at a worker that holds only a standby or
        an old copy (the crash test once read a state one step behind the changelog that way). The caller
        retries on NOT_SERVING."""
        partition = processor.owner(user_id)
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic in inputs.topics}
        if partition not in owned or app.rebalancing or not app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
            return view.json({"user_id": user_id, "error": "NOT_SERVING",
                              "detail": f"partition {partition} is not served here now; retry"}, status=503)
        raw: bytes | None = db(partition).get(user_id.encode())
        if raw is None:
            return view.json({"user_id": user_id, "error": "UNKNOWN_USER"}, status=404)
        return UserState.from_bytes(raw)

    @app.page("/users/{user_id}/balances")
    class Balances(View):
        @app.table_route(table=users, match_info="user_id")  # type: ignore[arg-type]
        async def get(self, request: Request, user_id: str) -> Response:
            state = served(self, user_id)
            return state if isinstance(state, Response) else self.json(balances_view(state, cfg))

    @app.page("/users/{user_id}/margin")
    class Margin(View):
        @app.table_route(table=users, match_info="user_id")  # type: ignore[arg-type]
        async def get(self, request: Request, user_id: str) -> Response:
            state = served(self, user_id)
            if isinstance(state, Response):
                return state
            raw: bytes | None = db(processor.owner(user_id)).get(market_key(processor.owner(user_id)))
            market = Market.from_doc(json.loads(raw)["now"]) if raw is not None else None
            now_ms = time.time_ns() // 1_000_000
            return self.json(margin_view(state, Context(now_ms, cfg, market=market), now_ms))

    @app.page("/stats/")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            owned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == inputs.topics[0])
            core = "compiled" if processors.COMPILED else f"Python: {processors.NOT_COMPILED_BECAUSE}"
            return self.json({**vars(counters), "partitions": owned, "core": core})

    return counters


def margin_view(state: UserState, ctx: Context, now_ms: int) -> dict[str, Any]:
    """The margin accounts of `state` at `now_ms` (processors.monitor.view), amounts as decimal text."""
    cfg = ctx.cfg
    quote = cfg.assets[cfg.valuation_asset].scale
    accounts = []
    for row in monitor.view(state, ctx):
        for key in ("assets", "liabilities"):
            if key in row:
                row[key] = format_amount(row[key], quote)
        for loan in row["loans"]:
            scale = cfg.assets[loan["asset"]].scale
            for key in ("principal", "interest_booked", "interest_since"):
                loan[key] = format_amount(loan[key], scale)
        accounts.append(row)
    return {"user_id": state.user_id, "status": state.status, "at_ms": now_ms,
            "valuation_asset": cfg.valuation_asset, "accounts": accounts}


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
