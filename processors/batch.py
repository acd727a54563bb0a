"""One step of a worker, without Kafka: input records of one poll -> encoded outputs + user states.

A record is either one Command or a CommandBatch for users of one partition (DESIGN §9: the per-
record cost of Faust is paid once per batch). Bytes that do not decode become a dead-letter record
holding the original bytes; nothing in here raises on bad input.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from processors import accrual, monitor
from processors.accrual import Accrual, Sums
from processors.config import EngineConfig
from processors.context import NEVER, Context, Memory
from processors.engine import PARKED_DUE, apply, tick
from processors.inputs import KINDS, SYSTEM
from processors.ledger import INTEREST_HOURLY, SYSTEM_PREFIX
from processors.margin import parse_price
from processors.market import NO_HOUR, Market
from processors.messages import Command, Event, LedgerLine, LiquidationOrder, MarginEvent, Outcome, Result
from processors.money import Rejected, parse_amount
from processors.rates import hour_of
from processors.reasons import Reason
from processors.state import UserState, to_json
from processors.wire import (
    command_from_avro,
    command_to_avro,
    dead_letter_to_avro,
    ledger_batch_body,
    liquidation_order_to_avro,
    margin_event_to_avro,
    result_batch_body,
    to_sign_to_avro,
)
from schemas import CODEC, DecodeError
from streams.partitioner import partition_for
from streams.topics import DEAD_LETTER, LEDGER, LIQUIDATION_ORDERS, MARGIN_EVENTS, RESULTS, TO_SIGN, TopicSpec
from streams.topics import SYSTEM as SYSTEM_INPUTS


@dataclass(frozen=True, slots=True)
class Source:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    ts_ms: int
    # Already applied (at or below the partition's progress): nothing is applied or emitted, but the
    # users it names are stored again. After a crash the local store can be ahead of the changelog;
    # the inputs of those unacknowledged writes are exactly the ones redelivered, so re-storing their
    # users' states brings the changelog level with what the outputs already said.
    replay: bool = False


OutRecord = tuple[TopicSpec, bytes | None, bytes, int]  # topic, key, value, partition (-1: by key)
Run = list[Any]  # [topic, first offset, last offset]: JSON as it is
RESULTS_PER_RECORD = 1000
LINES_PER_RECORD = 2500  # ~200 bytes each: records stay well under Kafka's 1 MB default
# The sweep of the engine's memory. Every memory record with an expiry is listed in an index entry of its
# partition, keyed by the end of the period it expires in (EngineConfig.sweep_period_ms), so a clock tick
# finds what expired by an ordered scan of the keys (RocksDB) instead of reading every record.
SWEEP_RECORDS_MAX = 20_000  # memory records deleted per tick, at most (a tick's step stays small)
INDEX_PAIRS_MAX = 2_000  # (user, key) pairs per index entry: ~80 KB, far under Kafka's 1 MB record
INDEX_ENTRIES_MAX = 64  # index entries read per tick
WATCHED_MAX = 1_000_000  # users with margin accounts a price move re-values on one partition, at most


@dataclass(slots=True)
class Step:
    """What one step produced: records to send, then states to store.

    Results and ledger lines go out as ResultBatch / LedgerBatch records per partition, sent to that
    partition (DESIGN §9: outputs produced in batches); withdrawals to sign and dead letters singly.
    """

    records: list[OutRecord] = field(default_factory=list)
    states: dict[str, tuple[int, UserState]] = field(default_factory=dict)  # user -> (partition, state)
    results: dict[int, list[Result]] = field(default_factory=dict)  # partition -> results, in order
    lines: dict[int, list[LedgerLine]] = field(default_factory=dict)  # partition -> ledger lines, in order
    # partition -> the records applied, in the order applied: runs of consecutive offsets of one topic.
    # The worker journals these before sending the outputs, so that a step interrupted after its outputs
    # were sent is re-applied in the very same order (two input topics have no order between them).
    runs: dict[int, list[Run]] = field(default_factory=dict)
    # user -> input positions of the state as loaded: inputs at or below them are already in it
    floors: dict[str, dict[str, int]] = field(default_factory=dict)
    # the engine's memory records written by the step (processors.context): stored before the states
    memory: Memory = field(default_factory=Memory)
    # user -> the inputs applied to that user in this step, in order (a system input of the partition that
    # touched the user: engine.tick): re-applied over the stored state when a later input of the user fails
    # inside the core (quarantine)
    applied: dict[str, list[tuple[Command, Context]]] = field(default_factory=dict)
    # users-table keys the step deletes (expired memory records, their index entries), stored before the
    # memory records the step writes
    deletions: list[tuple[int, bytes]] = field(default_factory=list)
    # users whose state is deleted if, at the end of the step, they never opened and nothing waits for them
    dropped: set[str] = field(default_factory=set)
    # partition -> its market (processors.market) as the step changes it, and as the step found it
    markets: dict[int, Market] = field(default_factory=dict)
    market_priors: dict[int, dict[str, Any]] = field(default_factory=dict)
    markets_changed: set[int] = field(default_factory=set)
    # partition -> its interest aggregates (processors.accrual) as the step found them, changed only by the
    # hourly entries of the step's full hours; the doc found; and the stored end when the step is re-applied
    accruals: dict[int, Accrual] = field(default_factory=dict)
    accrual_priors: dict[int, dict[str, Any]] = field(default_factory=dict)
    accrual_ends: dict[int, dict[str, Any]] = field(default_factory=dict)
    # user -> what the user's loans added to the partition's aggregates when the step first loaded the state
    loaded_sums: dict[str, Sums] = field(default_factory=dict)
    # users whose margin accounts are watched (processors.monitor): added to the partition's list at the end of
    # the step (before the states), and removed when a price move finds a stored state no longer watched
    watch: dict[str, bool] = field(default_factory=dict)
    # partition -> topic -> the first offset the step applies (a stored state holding one was stored by an
    # interrupted attempt of this very step)
    starts: dict[int, dict[str, int]] = field(default_factory=dict)
    commands: int = 0
    dead_letters: int = 0
    quarantined: int = 0  # inputs on which the core failed: dead-lettered, INTERNAL_ERROR, state untouched
    replayed: int = 0
    ticks: int = 0
    swept: int = 0  # expired memory records deleted
    skipped: int = 0  # commands already in the loaded state (an interrupted step stored it): not re-applied
    ts_ms: int = 0  # the latest engine time (input record timestamp) of the step: the batch records' time

    def memory_entries(self, owner: Callable[[str], int], period_ms: int) -> list[tuple[int, bytes, bytes | None]]:
        """(partition, users-table key, value; None deletes) of what the step deletes, then of the index
        entries of the memory records it wrote, then of the records, then of the markets it changed."""
        entries: list[tuple[int, bytes, bytes | None]] = [(p, key, None) for p, key in self.deletions]
        records: list[tuple[int, bytes, bytes | None]] = []
        expiring: dict[tuple[int, int], list[list[str]]] = {}  # (partition, period end) -> [user, key] pairs
        for user, written in self.memory.written.items():
            partition = owner(user)
            for key, record in written.items():
                records.append((partition, memory_key(user, key), to_json(record)))
                expires = record[0]
                if expires != NEVER:
                    end = (expires // period_ms + 1) * period_ms
                    expiring.setdefault((partition, end), []).append([user, key])
        for (partition, end), pairs in expiring.items():
            topic, first, _ = self.runs[partition][0]
            for i in range(0, len(pairs), INDEX_PAIRS_MAX):
                value = to_json(pairs[i : i + INDEX_PAIRS_MAX])
                # Named by content too: a re-applied step whose stored states skip some inputs writes a
                # shorter list, which must not replace the first one (its records would never be swept).
                tag = f"{topic}/{first}/{hashlib.blake2b(value, digest_size=8).hexdigest()}"
                entries.append((partition, index_key(partition, end, tag), value))
        for user, (partition, state) in self.states.items():
            if monitor.watched(state) and not self.watch.get(user):
                records.append((partition, watch_key(partition, user), b"1"))
        for user, keep in self.watch.items():
            if not keep:
                entries.append((owner(user), watch_key(owner(user), user), None))
        for partition in sorted(self.markets_changed):
            topic, first, _ = self.runs[partition][0]
            # With the market as the step found it: if the step is interrupted after this and re-applied, it
            # starts from there again (`BatchProcessor._market`), and each input sees the prices it saw.
            stored = {"step": [topic, first], "prior": self.market_priors[partition],
                      "now": self.markets[partition].to_doc(), "accrual_prior": self.accrual_priors[partition],
                      "accrual_now": self.accrual_ends[partition]}
            records.append((partition, market_key(partition), to_json(stored)))
        return entries + records

    def encoded_states(self) -> dict[str, bytes | None]:
        """user -> the state's stored bytes; None (a tombstone) for a user a tick left with no account and
        nothing waiting for one."""
        return {user: None if user in self.dropped and not state.opened and not state.parked else state.to_bytes()
                for user, (_, state) in self.states.items()}


Loader = Callable[[str, int], UserState | None]  # (user, partition) -> stored state
Recall = Callable[[int, bytes], bytes | None]  # (partition, memory-table key) -> stored record
# (partition, from key, to key (excluded), at most) -> the stored (key, value) pairs between, in key order
Scan = Callable[[int, bytes, bytes, int], list[tuple[bytes, bytes]]]


def memory_key(user: str, key: str) -> bytes:
    """A memory record's key in the users table: NUL-prefixed like the worker's other keys (user ids are
    printable, so never), then the user, so a user's records sit together; the NUL after the user separates
    unambiguously. In the users table, not a table of its own: within a partition its changelog then keeps
    the order in which a step writes its memory records and its states (the records first)."""
    return f"\x00m/{user}\x00{key}".encode()


def watch_prefix(partition: int) -> bytes:
    """The keys of a partition's watched users (processors.monitor): a price move re-values them."""
    return f"\x00w/{partition}/".encode()


def watch_key(partition: int, user: str) -> bytes:
    return watch_prefix(partition) + user.encode()


def market_key(partition: int) -> bytes:
    return f"\x00k/{partition}".encode()


def index_prefix(partition: int) -> str:
    return f"\x00x/{partition}/"


def index_key(partition: int, end_ms: int, tag: str) -> bytes:
    """An index entry of memory records of `partition` that all expire before engine time `end_ms`:
    zero-padded, so the keys sort by it (an absolute time: a change of the period keeps them in order)."""
    return f"{index_prefix(partition)}{end_ms:015d}/{tag}".encode()


def _no_recall(partition: int, key: bytes) -> bytes | None:
    return None


def _no_scan(partition: int, lo: bytes, hi: bytes, limit: int) -> list[tuple[bytes, bytes]]:
    return []


def _extend_runs(runs: list[Run], topic: str, offset: int) -> None:
    last = runs[-1] if runs else None
    if last is not None and last[0] == topic and last[2] + 1 == offset:
        last[2] = offset
    else:
        runs.append([topic, offset, offset])


def spans(runs: list[Run]) -> dict[str, tuple[int, int]]:
    """topic -> (first, last offset) of a partition's runs, topics in the order first applied (a topic's
    runs ascend: its records apply in offset order)."""
    out: dict[str, tuple[int, int]] = {}
    for topic, first, last in runs:
        out[topic] = (out[topic][0], last) if topic in out else (first, last)
    return out


class BatchProcessor:
    def __init__(self, cfg: EngineConfig, partitions: int, sources: dict[str, str], fail_on: str = "") -> None:
        self.cfg = cfg
        self.fail_on = fail_on  # fault injection (tests): applying this input id fails an assertion
        self.partitions = partitions
        # input topic -> the source (processors.inputs) whose records it carries: each source writes its
        # own topic, and Kafka ACLs say who may write which (DESIGN §7)
        self.sources = sources
        self._partition_of: dict[str, int] = {}

    def run(self, inputs: Iterable[tuple[Source, bytes | None]], load: Loader, recall: Recall = _no_recall,
            scan: Scan = _no_scan) -> Step:
        step = Step()
        owner = self.owner
        step.memory = Memory(lambda user, key: recall(owner(user), memory_key(user, key)), step.floors)
        inputs = list(inputs)
        for source, _ in inputs:  # where the step starts on each topic, known before its first input applies
            if not source.replay:
                step.starts.setdefault(source.partition, {}).setdefault(source.topic, source.offset)
        for source, value in inputs:
            if not source.replay:
                _extend_runs(step.runs.setdefault(source.partition, []), source.topic, source.offset)
            try:
                name, record = CODEC.decode(value or b"")  # a tombstone (None) is not an input
                if name == "Command":
                    commands = [command_from_avro(record, self.sources[source.topic])]
                elif name == "CommandBatch":
                    origin = self.sources[source.topic]
                    commands = [command_from_avro(c, origin) for c in record["commands"]]
                else:
                    raise DecodeError("WRONG_MESSAGE_TYPE", f"{name} is not an input")
            except Exception as exc:
                if not source.replay:
                    why = str(exc) if isinstance(exc, DecodeError) else f"UNDECODABLE: {type(exc).__name__}: {exc}"
                    self._dead_letter(step, source, value, why[:2000])
                continue
            if source.ts_ms > step.ts_ms:
                step.ts_ms = source.ts_ms
            for cmd in commands:
                if source.replay:
                    self._restore(step, source.partition, cmd.user_id, load)
                elif cmd.source == SYSTEM and cmd.kind in KINDS and KINDS[cmd.kind].per_partition:
                    self._system(step, source, value, cmd, load, recall, scan)
                else:
                    self._apply(step, source, value, cmd, load, recall)
        self._settle_accruals(step)
        header = CODEC.header("ResultBatch")
        for partition, n, results in self._chunks(step, step.results, RESULTS_PER_RECORD):
            step.records.append((RESULTS, None, header + result_batch_body(n, step.ts_ms, results), partition))
        header = CODEC.header("LedgerBatch")
        for partition, n, lines in self._chunks(step, step.lines, LINES_PER_RECORD):
            step.records.append((LEDGER, None, header + ledger_batch_body(n, step.ts_ms, lines, self.cfg), partition))
        return step

    @staticmethod
    def _chunks(step: Step, per_partition: dict[int, list[Any]], size: int) -> Iterable[tuple[int, str, list[Any]]]:
        """(partition, batch record id, items) per batch record: the id names the inputs of the step."""
        for partition, items in per_partition.items():
            inputs = "+".join(f"{topic}/{partition}/{first}-{last}"
                              for topic, (first, last) in spans(step.runs[partition]).items())
            for n, i in enumerate(range(0, len(items), size)):
                yield partition, f"{inputs}/{n}", items[i : i + size]

    def _restore(self, step: Step, partition: int, user: str, load: Loader) -> None:
        step.replayed += 1
        if user in step.states or not user or not user.isprintable() or self.owner(user) != partition:
            return
        state = self._load(step, user, partition, load)
        if state is not None:
            step.states[user] = (partition, state)

    def _apply(self, step: Step, source: Source, value: bytes | None, cmd: Command, load: Loader,
               recall: Recall) -> None:
        partition = source.partition
        step.commands += 1
        if (not cmd.user_id or len(cmd.user_id) > self.cfg.id_max or not cmd.user_id.isprintable()
                or cmd.user_id.startswith(SYSTEM_PREFIX)):
            # printable only: keeps user keys apart from the worker's own (NUL-prefixed) table keys; and not
            # sys:, the prefix of the ledger's own owners (processors.accrual)
            result = Result(cmd.id, cmd.ts_ms, cmd.user_id, cmd.kind, "REJECTED", Reason.MALFORMED_COMMAND.value,
                            f"user_id must be printable text of 1 to {self.cfg.id_max} characters, not starting "
                            f"with {SYSTEM_PREFIX}", 0)
            self._emit(step, partition, Outcome(result))
            return
        if self.owner(cmd.user_id) != partition:
            # Applying it here would put the user's state on a partition that does not own it.
            result = Result(cmd.id, cmd.ts_ms, cmd.user_id, cmd.kind, "REJECTED", Reason.WRONG_PARTITION.value,
                            f"user belongs to partition {self.owner(cmd.user_id)}, record was on {partition}", 0)
            self._emit(step, partition, Outcome(result))
            return
        held = step.states.get(cmd.user_id)
        state = held[1] if held is not None else self._load(step, cmd.user_id, partition, load)
        stored = state is not None
        floor = step.floors[cmd.user_id].get(source.topic)
        if floor is not None and source.offset <= floor:
            # Stored by an interrupted step, whose outputs were sent before any state was stored.
            assert state is not None
            step.skipped += 1
            step.states[cmd.user_id] = (partition, state)
            return
        ctx = Context(source.ts_ms, self.cfg, step.memory, source.topic, source.offset,
                      self._market(step, partition, recall))
        try:
            assert not self.fail_on or cmd.id != self.fail_on, f"fault injection: {cmd.id}"
            state, outcome = apply(state, cmd, ctx)
        except Exception as exc:
            self._quarantine(step, source, value, cmd, exc, load)
            return
        step.applied.setdefault(cmd.user_id, []).append((cmd, ctx))
        if state.opened or state.parked or cmd.user_id in step.states:
            # A user who never opened an account is stored only while chain events wait for the account.
            step.states[cmd.user_id] = (partition, state)
        elif stored:
            # ... and a stored state whose waiting events this input found expired is deleted: kept, it would
            # expire the same events again, with another PARKED_EXPIRED result, on every later input.
            step.states[cmd.user_id] = (partition, state)
            step.dropped.add(cmd.user_id)
        self._emit(step, partition, outcome)

    def _system(self, step: Step, source: Source, value: bytes | None, cmd: Command, load: Loader, recall: Recall,
                scan: Scan) -> None:
        """An input for the whole partition: a clock tick, a mark price, a pool's rate. Refused ones go to the
        dead-letter topic with their bytes (a system input has no user to answer)."""
        partition = source.partition
        if cmd.body.get("partition") != partition:
            self._dead_letter(step, source, value, f"WRONG_PARTITION: {cmd.kind} for partition "
                                                   f"{cmd.body.get('partition')!r} on partition {partition}")
            return
        if cmd.kind == "ClockTick":
            self._tick(step, source, cmd, load, recall, scan)
            market = self._market(step, partition, recall)
            if market.charged_hour != NO_HOUR and hour_of(source.ts_ms) > market.charged_hour:
                # a full hour struck: its interest is charged into the index, and debts grew with it
                market = market.copy()
                market.advance(source.ts_ms)
                self._strike(step, partition, source.ts_ms, market)
                step.markets[partition] = market
                step.markets_changed.add(partition)
                self._revalue(step, source, cmd, load, scan)
            return
        # A changed copy: the contexts of inputs applied before keep the market they saw (a quarantine
        # re-applies them with those contexts).
        market = self._market(step, partition, recall).copy()
        try:
            if cmd.kind == "MarkPrice":
                asset = self._priced(cmd.body["asset"])
                price = parse_price(cmd.body["price"])
                # its age counts from the prices topic's time, never from later than now
                market.set_price(asset, price, min(int(cmd.body["priced_ms"]), source.ts_ms), source.ts_ms)
            else:
                found = self.cfg.rate_models.get(cmd.body["asset"])
                if found is None:
                    raise Rejected(Reason.UNKNOWN_ASSET, f"{cmd.body['asset']!r} has no lending pool")
                scale = self.cfg.assets[cmd.body["asset"]].scale
                borrowed = parse_amount(cmd.body["borrowed"], scale, allow_zero=True)
                supplied = parse_amount(cmd.body["supplied"], scale, allow_zero=True)
                market.set_rate(cmd.body["asset"], found.hourly(borrowed, supplied), source.ts_ms)
        except Rejected as refused:
            self._dead_letter(step, source, value, f"{refused.reason.value}: {cmd.kind}: {refused.detail}")
            return
        if market.charged_hour > step.markets[partition].charged_hour != NO_HOUR:
            self._strike(step, partition, source.ts_ms, market)  # the price or rate came first in a new hour
        step.markets[partition] = market
        step.markets_changed.add(partition)
        self._revalue(step, source, cmd, load, scan)

    @staticmethod
    def _strike(step: Step, partition: int, now_ms: int, market: Market) -> None:
        """Full hours were charged into the index: the partition's interest of them recognized as income
        (processors.accrual), from its aggregates as the step found them (a re-applied step books the same)."""
        lines = step.accruals[partition].hour(partition, market.charged_hour, now_ms, market.index)
        if lines:
            step.lines.setdefault(partition, []).extend(lines)

    def _revalue(self, step: Step, source: Source, cmd: Command, load: Loader, scan: Scan) -> None:
        """A price or a rate moved: the partition's watched users whose band it changes get a system touch
        (processors.engine.tick), which re-values them and sends the events; the others are not stored."""
        partition = source.partition
        prefix = watch_prefix(partition)
        users = [key[len(prefix):].decode() for key, _ in scan(partition, prefix, prefix + b"\xff", WATCHED_MAX)]
        users += [u for u, (p, state) in step.states.items() if p == partition and monitor.watched(state)]
        market = step.markets[partition]
        for user in dict.fromkeys(users):  # in order, once
            held = step.states.get(user)
            state = held[1] if held is not None else self._load(step, user, partition, load)
            if state is None:
                continue
            if self._holds_this_step(step, user, partition):
                # stored by an interrupted attempt of this step, after all of its inputs: nothing to re-apply
                if held is None:
                    step.states[user] = (partition, state)
                continue
            if not monitor.watched(state):
                if held is None:
                    step.watch[user] = False  # its stored state no longer owes: off the list
                continue
            ctx = Context(source.ts_ms, self.cfg, step.memory, source.topic, source.offset, market)
            if not monitor.changes(state, ctx):
                continue
            state, touched = tick(state, ctx, cmd.id)
            step.states[user] = (partition, state)
            step.applied.setdefault(user, []).append((cmd, ctx))
            self._emit_more(step, partition, touched)

    @staticmethod
    def _holds_this_step(step: Step, user: str, partition: int) -> bool:
        """Whether the user's stored state holds any input of this step: then it was stored by an interrupted
        attempt of it, at its end, with its outputs sent."""
        floors = step.floors.get(user, {})
        return any(floors.get(topic, -1) >= first for topic, first in step.starts[partition].items())

    def _priced(self, asset: str) -> str:
        if asset not in self.cfg.assets or asset == self.cfg.valuation_asset:
            raise Rejected(Reason.UNKNOWN_ASSET, f"{asset!r}: not a listed asset priced in {self.cfg.valuation_asset}")
        return asset

    def _market(self, step: Step, partition: int, recall: Recall) -> Market:
        """The partition's market as the step's first input found it. A stored market written by this very step
        (interrupted after storing it, now re-applied from the journal) is taken as that step found it."""
        market = step.markets.get(partition)
        if market is not None:
            return market
        raw = recall(partition, market_key(partition))
        found = None
        if raw is None:
            market = Market()
        else:
            stored = json.loads(raw)
            topic, first, _ = step.runs[partition][0]
            again = stored["step"] == [topic, first]
            market = Market.from_doc(stored["prior"] if again else stored["now"])
            # records from before the accrual (state version 11) have none: the aggregates start empty
            found = stored.get("accrual_prior" if again else "accrual_now")
            if again and "accrual_now" in stored:
                step.accrual_ends[partition] = stored["accrual_now"]
        step.markets[partition] = market
        step.market_priors[partition] = market.to_doc()
        step.accruals[partition] = Accrual.from_doc(found)
        step.accrual_priors[partition] = step.accruals[partition].to_doc()
        return market

    def _settle_accruals(self, step: Step) -> None:
        """The end of the step: each partition's aggregates with the loans its users now have, and the interest
        they attributed; stored with the market when they changed. A re-applied step takes the end its first
        attempt stored: its inputs already in stored states are skipped, so their changes would be missed."""
        for partition, base in step.accruals.items():
            if partition in step.accrual_ends:
                end = step.accrual_ends[partition]
            else:
                final = base.copy()
                for user, (p, state) in step.states.items():
                    if p == partition:
                        gone = user in step.dropped and not state.opened and not state.parked
                        final.add(step.loaded_sums.get(user, {}), accrual.sums(None if gone else state))
                final.attributed([ln for ln in step.lines.get(partition, ()) if ln.entry_type != INTEREST_HOURLY])
                end = step.accrual_ends[partition] = final.to_doc()
            if end != step.accrual_priors[partition]:
                step.markets_changed.add(partition)

    def _tick(self, step: Step, source: Source, cmd: Command, load: Loader, recall: Recall, scan: Scan) -> None:
        """A clock tick: delete the partition's memory records that expired by engine time (less the grace),
        listed by index entries of the hours before; a user's PARKED_DUE record gets that user a tick."""
        partition = source.partition
        step.ticks += 1
        due = source.ts_ms - self.cfg.sweep_grace_ms
        lo = index_prefix(partition).encode()
        hi = lo + f"{due + 1:015d}".encode()  # every period that ended by `due`
        deleted = {key for p, key in step.deletions if p == partition}  # by an earlier tick of this step
        budget = SWEEP_RECORDS_MAX
        for key, raw in scan(partition, lo, hi, INDEX_ENTRIES_MAX):
            if key in deleted:
                continue
            pairs: list[list[str]] = json.loads(raw)
            if len(pairs) > budget:
                break  # the next tick goes on from here
            budget -= len(pairs)
            for user, name in pairs:
                self._sweep(step, source, cmd, user, name, due, load, recall)
            step.deletions.append((partition, key))

    def _sweep(self, step: Step, source: Source, cmd: Command, user: str, name: str, due: int, load: Loader,
               recall: Recall) -> None:
        if name in step.memory.written.get(user, {}):
            return  # written again in this step: live
        stored = recall(source.partition, memory_key(user, name))
        if stored is None:
            return
        expires = json.loads(stored)[0]
        if expires == NEVER or expires > due:
            return  # written again since, expiring later: listed again under its own period
        step.deletions.append((source.partition, memory_key(user, name)))
        step.swept += 1
        if name == PARKED_DUE:
            self._tick_user(step, source, cmd, user, load)

    def _tick_user(self, step: Step, source: Source, cmd: Command, user: str, load: Loader) -> None:
        partition = source.partition
        held = step.states.get(user)
        state = held[1] if held is not None else self._load(step, user, partition, load)
        if state is None:
            return
        step.states[user] = (partition, state)
        floor = step.floors[user].get(source.topic)
        if floor is not None and source.offset <= floor:
            step.skipped += 1
            return  # stored by an interrupted step
        ctx = Context(source.ts_ms, self.cfg, step.memory, source.topic, source.offset,
                      step.markets.get(partition))
        state, touched = tick(state, ctx, cmd.id)
        step.applied.setdefault(user, []).append((cmd, ctx))
        self._emit_more(step, partition, touched)
        if not state.opened and not state.parked:
            step.dropped.add(user)  # nothing waits for an account that never opened: no state to keep

    def _quarantine(self, step: Step, source: Source, value: bytes | None, cmd: Command, exc: Exception,
                    load: Loader) -> None:
        """The core failed on `cmd` (a bug, or input it did not foresee): the user's state may be half-changed,
        so it is rebuilt from the stored state and the user's earlier inputs of this step (their outputs are
        already in the step, unchanged); the input gets INTERNAL_ERROR and goes to the dead-letter topic."""
        step.quarantined += 1
        user, partition = cmd.user_id, source.partition
        step.memory.forget(user)
        step.states.pop(user, None)
        step.floors.pop(user, None)
        state = self._load(step, user, partition, load)
        for earlier, ctx in step.applied.get(user, []):
            if earlier.user_id == user:
                state, _ = apply(state, earlier, ctx)
            elif state is not None:  # a system input of the partition that touched the user
                state, _ = tick(state, ctx, earlier.id)
        if state is not None:
            step.states[user] = (partition, state)
        error = "".join(traceback.format_exception_only(exc)).strip()[:2000]
        result = Result(cmd.id, cmd.ts_ms, user, cmd.kind, "REJECTED", Reason.INTERNAL_ERROR.value,
                        "the engine failed on this input; it was quarantined to the dead-letter topic", 0)
        self._emit(step, partition, Outcome(result))
        self._dead_letter(step, source, value, f"input {cmd.id} of {user}: {error}")

    @staticmethod
    def _load(step: Step, user: str, partition: int, load: Loader) -> UserState | None:
        """A user's stored state, first touched in this step; notes the inputs it already holds."""
        assert user not in step.states
        state = load(user, partition)
        step.floors[user] = dict(state.through) if state is not None else {}
        step.loaded_sums[user] = accrual.sums(state)
        if state is not None and monitor.watched(state):
            step.watch.setdefault(user, True)  # stored watched: its key is on the partition's list
        return state

    def owner(self, user: str) -> int:
        owner = self._partition_of.get(user)
        if owner is None:
            owner = self._partition_of[user] = partition_for(user.encode(), self.partitions)
            if len(self._partition_of) > 1_000_000:  # a cache, not a registry
                self._partition_of.clear()
        return owner

    def _emit(self, step: Step, partition: int, outcome: Outcome) -> None:
        step.results.setdefault(partition, []).append(outcome.result)
        if outcome.more:
            step.results[partition].extend(outcome.more)
        if outcome.lines:
            step.lines.setdefault(partition, []).extend(outcome.lines)
        self._emit_events(step, outcome.events)

    def _emit_more(self, step: Step, partition: int, touched: Outcome) -> None:
        """What a system touch of a user gave: final results of other inputs, ledger lines, events (not the
        touch's own result)."""
        if touched.more:
            step.results.setdefault(partition, []).extend(touched.more)
        if touched.lines:
            step.lines.setdefault(partition, []).extend(touched.lines)
        self._emit_events(step, touched.events)

    def _emit_events(self, step: Step, events: tuple[Event, ...]) -> None:
        for event in events:
            if isinstance(event, MarginEvent):
                step.records.append((MARGIN_EVENTS, event.user_id.encode(),
                                     CODEC.encode("MarginEvent", margin_event_to_avro(event, self.cfg)), -1))
            elif isinstance(event, LiquidationOrder):
                step.records.append((LIQUIDATION_ORDERS, event.user_id.encode(),
                                     CODEC.encode("LiquidationOrder", liquidation_order_to_avro(event, self.cfg)), -1))
            elif isinstance(event, Command):
                # an input the core sends to the user's own partition (a liquidation): applied in a later step
                step.records.append((SYSTEM_INPUTS, event.user_id.encode(),
                                     CODEC.encode("Command", command_to_avro(event)), self.owner(event.user_id)))
            else:
                step.records.append((TO_SIGN, event.user_id.encode(),
                                     CODEC.encode("WithdrawalToSign", to_sign_to_avro(event, self.cfg)), -1))

    def _dead_letter(self, step: Step, source: Source, value: bytes | None, error: str) -> None:
        step.dead_letters += 1
        record = dead_letter_to_avro(source.topic, source.partition, source.offset, source.ts_ms, source.key, value,
                                     error)
        step.records.append((DEAD_LETTER, source.key, CODEC.encode("DeadLetter", record), -1))
