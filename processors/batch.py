"""One step of a worker, without Kafka: input records of one poll -> encoded outputs + user states.

A record is either one Command or a CommandBatch for users of one partition (DESIGN §9: the per-
record cost of Faust is paid once per batch). Bytes that do not decode become a dead-letter record
holding the original bytes; nothing in here raises on bad input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from processors.config import EngineConfig
from processors.engine import apply
from processors.messages import Command, LedgerLine, Outcome, Result
from processors.reasons import Reason
from processors.state import UserState
from processors.wire import (
    command_from_avro,
    dead_letter_to_avro,
    ledger_batch_body,
    result_batch_body,
    to_sign_to_avro,
)
from schemas import CODEC, DecodeError
from streams.partitioner import partition_for
from streams.topics import DEAD_LETTER, LEDGER, RESULTS, TO_SIGN, TopicSpec


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
RESULTS_PER_RECORD = 1000
LINES_PER_RECORD = 2500  # ~200 bytes each: records stay well under Kafka's 1 MB default


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
    offsets: dict[int, tuple[str, int, int]] = field(default_factory=dict)  # partition -> (topic, first, last)
    commands: int = 0
    dead_letters: int = 0
    replayed: int = 0
    ts_ms: int = 0  # the latest input timestamp of the step: the batch records' time


Loader = Callable[[str, int], UserState | None]  # (user, partition) -> stored state


class BatchProcessor:
    def __init__(self, cfg: EngineConfig, partitions: int) -> None:
        self.cfg = cfg
        self.partitions = partitions
        self._partition_of: dict[str, int] = {}

    def run(self, inputs: Iterable[tuple[Source, bytes | None]], load: Loader) -> Step:
        step = Step()
        for source, value in inputs:
            topic, first, _ = step.offsets.get(source.partition, (source.topic, source.offset, 0))
            step.offsets[source.partition] = (topic, first, source.offset)
            try:
                name, record = CODEC.decode(value or b"")  # a tombstone (None) is not an input
                if name == "Command":
                    commands = [command_from_avro(record)]
                elif name == "CommandBatch":
                    commands = [command_from_avro(c) for c in record["commands"]]
                else:
                    raise DecodeError("WRONG_MESSAGE_TYPE", f"{name} is not an input")
            except DecodeError as exc:
                if not source.replay:
                    self._dead_letter(step, source, value, str(exc))
                continue
            for cmd in commands:
                if source.replay:
                    self._restore(step, source.partition, cmd.user_id, load)
                else:
                    self._apply(step, source.partition, cmd, load)
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
            topic, first, last = step.offsets[partition]
            for n, i in enumerate(range(0, len(items), size)):
                yield partition, f"{topic}/{partition}/{first}-{last}/{n}", items[i : i + size]

    def _restore(self, step: Step, partition: int, user: str, load: Loader) -> None:
        step.replayed += 1
        if user in step.states or not user or not user.isprintable() or self._owner(user) != partition:
            return
        state = load(user, partition)
        if state is not None:
            step.states[user] = (partition, state)

    def _apply(self, step: Step, partition: int, cmd: Command, load: Loader) -> None:
        step.commands += 1
        if cmd.ts_ms > step.ts_ms:
            step.ts_ms = cmd.ts_ms
        if not cmd.user_id or not cmd.user_id.isprintable():
            # printable only: keeps user keys apart from the worker's own (NUL-prefixed) table keys
            result = Result(cmd.id, cmd.ts_ms, cmd.user_id, cmd.kind, "REJECTED", Reason.MALFORMED_COMMAND.value,
                            "user_id must be non-empty printable text", 0)
            self._emit(step, partition, Outcome(result))
            return
        if self._owner(cmd.user_id) != partition:
            # Applying it here would put the user's state on a partition that does not own it.
            result = Result(cmd.id, cmd.ts_ms, cmd.user_id, cmd.kind, "REJECTED", Reason.WRONG_PARTITION.value,
                            f"user belongs to partition {self._owner(cmd.user_id)}, record was on {partition}", 0)
            self._emit(step, partition, Outcome(result))
            return
        held = step.states.get(cmd.user_id)
        state = held[1] if held is not None else load(cmd.user_id, partition)
        state, outcome = apply(state, cmd, self.cfg)
        step.states[cmd.user_id] = (partition, state)
        self._emit(step, partition, outcome)

    def _owner(self, user: str) -> int:
        owner = self._partition_of.get(user)
        if owner is None:
            owner = self._partition_of[user] = partition_for(user.encode(), self.partitions)
            if len(self._partition_of) > 1_000_000:  # a cache, not a registry
                self._partition_of.clear()
        return owner

    def _emit(self, step: Step, partition: int, outcome: Outcome) -> None:
        step.results.setdefault(partition, []).append(outcome.result)
        if outcome.lines:
            step.lines.setdefault(partition, []).extend(outcome.lines)
        for event in outcome.events:
            step.records.append((TO_SIGN, event.user_id.encode(),
                                 CODEC.encode("WithdrawalToSign", to_sign_to_avro(event, self.cfg)), -1))

    def _dead_letter(self, step: Step, source: Source, value: bytes | None, error: str) -> None:
        step.dead_letters += 1
        record = dead_letter_to_avro(source.topic, source.partition, source.offset, source.ts_ms, source.key, value,
                                     error)
        step.records.append((DEAD_LETTER, source.key, CODEC.encode("DeadLetter", record), -1))
