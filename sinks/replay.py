"""`posflow sink --replay-dead-letters`: land dead letters again once the cause of their refusal is fixed.

The sink dead-letters a record ClickHouse refused twice (sinks.sink); when the cause was the store's
(a table dropped, a column type, a setting) and not the record's, the record can land once it is
fixed. This reads the dead-letter topic, takes the records whose source topic is one the sink lands
(ledger, results, withdrawals-to-sign, chain-events) and lands their original bytes through the sink's
own `Lander`: the same rows, the same deterministic ids, and a token naming the source positions.

* Where it starts: its own consumer group's committed position (`posflow-sink-replay`), so a second
  run does not repeat the first one's work; the very first run, and `--from-beginning`, start at the
  beginning. Where it ends: the end of the topic when it started.
* Idempotent: ids are the rows' own (ReplacingMergeTree, read with FINAL), and the dead letters are
  landed in chunks of fixed dead-letter offset ranges, so the same dead letters replayed again carry
  the same tokens and ClickHouse drops them before writing. A replay run twice lands each row once.
* Records still refused stay where they are (no new dead letter) and are reported with ClickHouse's
  answer; their positions are committed like the rest, so after fixing their cause, replay again with
  `--from-beginning`.
* ClickHouse unavailable or busy: retried forever, as the sink does; a chunk's positions are committed
  only after it landed, so an interrupted replay resumes where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message, TopicPartition

from schemas import CODEC, DecodeError
from sinks.sink import LANDED_TOPICS, Abandoned, Counters, Item, Lander, Unstorable
from sinks.store import Store
from streams.config import Settings
from streams.kafka import consumed, consumer_config, watermarks
from streams.topics import DEAD_LETTER

log = logging.getLogger("posflow.sink.replay")

REPLAY_GROUP = "posflow-sink-replay"
CHUNK = 500  # dead-letter offsets per insert: offset // CHUNK names the chunk, whatever run reads it


@dataclass
class TopicCounts:
    dead_letters: int = 0
    landed: int = 0
    still_refused: int = 0


@dataclass
class ReplayReport:
    total: int = 0  # dead letters between the start positions and the end when the replay started
    read: int = 0
    skipped: int = 0  # of topics the sink does not land (commands: the engine's dead letters)
    per_topic: dict[str, TopicCounts] = field(default_factory=dict)
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # dead letter, source position, why
    interrupted: bool = False

    @property
    def landed(self) -> int:
        return sum(c.landed for c in self.per_topic.values())

    @property
    def still_refused(self) -> int:
        return len(self.refused)

    def counts(self, topic: str) -> TopicCounts:
        return self.per_topic.setdefault(topic, TopicCounts())


@dataclass
class _Letter:
    offset: int  # on the dead-letter topic
    item: Item | None  # None: skipped or unreadable (already counted)


class Replay:
    def __init__(self, settings: Settings, store: Store, *, group: str = REPLAY_GROUP, chunk: int = CHUNK,
                 backoff_max_s: float = 10.0) -> None:
        self.settings = settings
        self.topic = DEAD_LETTER.name(settings)
        self.chunk = chunk
        self.counters = Counters()
        self._stop = threading.Event()
        self.lander = Lander(settings, store, self.counters, self._stop, backoff_max_s)
        self._landed_topics = {t.name(settings) for t in LANDED_TOPICS}
        self._consumer = Consumer(consumer_config(settings, group))
        self.report = ReplayReport()

    def stop(self) -> None:
        self._stop.set()

    def run(self, from_beginning: bool = False, progress: Callable[[ReplayReport], None] | None = None,
            progress_every_s: float = 5.0) -> ReplayReport:
        try:
            ends = self._assign(from_beginning)
            pending: dict[int, list[_Letter]] = {}
            last_progress = time.monotonic()
            while ends and not self._stop.is_set():
                for msg in consumed(self._consumer, 1000, 0.5, self.topic):
                    p, off = msg.partition(), msg.offset()
                    assert p is not None and off is not None, "a consumed record has a position"
                    if off >= ends.get(p, -1):
                        continue  # written after the replay started: the next run's
                    letters = pending.setdefault(p, [])
                    if letters and letters[0].offset // self.chunk != off // self.chunk:
                        self._land(p, letters)
                        letters.clear()
                    letters.append(_Letter(off, self._take(msg)))
                    if off + 1 >= ends[p]:
                        self._land(p, letters)
                        letters.clear()
                        del ends[p]
                for p in list(ends):  # read up to its end without a record at end - 1 (a gap in the log)
                    if self._consumer.position([TopicPartition(self.topic, p)])[0].offset >= ends[p]:
                        if pending.get(p):
                            self._land(p, pending[p])
                            pending[p].clear()
                        del ends[p]
                if progress and time.monotonic() - last_progress >= progress_every_s:
                    progress(self.report)
                    last_progress = time.monotonic()
            self.report.interrupted = bool(ends)
        except Abandoned as exc:
            log.warning("%s; the chunk being landed is not committed and is read again by the next replay", exc)
            self.report.interrupted = True
        finally:
            self._consumer.close()
        return self.report

    def _assign(self, from_beginning: bool) -> dict[int, int]:
        """Assign every partition from its start; returns partition -> end offset (exclusive) still to read."""
        meta = self._consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return {}  # no dead-letter topic: nothing was ever dead-lettered
        partitions = sorted(meta.partitions)
        committed = {tp.partition: tp.offset for tp in self._consumer.committed(
            [TopicPartition(self.topic, p) for p in partitions], timeout=30)}
        assign, ends = [], {}
        for p in partitions:
            low, high = watermarks(self._consumer, self.topic, p)
            start = low if from_beginning or committed[p] < 0 else max(committed[p], low)
            if start < high:
                assign.append(TopicPartition(self.topic, p, start))
                ends[p] = high
                self.report.total += high - start
        if assign:
            self._consumer.assign(assign)
        return ends

    def _take(self, msg: Message) -> Item | None:
        """The dead letter's original record as the sink read it, or None if there is nothing to land."""
        self.report.read += 1
        where = f"{self.topic}/{msg.partition()}/{msg.offset()}"
        try:
            d = CODEC.decode_as("DeadLetter", msg.value() or b"")
        except DecodeError as exc:
            self.report.refused.append((where, "?", f"NOT_A_DEAD_LETTER: {exc}"))
            return None
        topic = d["source_topic"]
        if topic not in self._landed_topics:
            self.report.skipped += 1
            return None
        self.report.counts(topic).dead_letters += 1
        item = Item(topic, d["source_partition"], d["source_offset"], d["key"], d["value"], b"")
        try:
            item.payload = self.lander.prepare(item)
        except (DecodeError, Unstorable) as exc:
            self._refused(where, item, str(exc))
            return None
        return item

    def _refused(self, where: str, item: Item, why: str) -> None:
        self.report.counts(item.topic).still_refused += 1
        self.report.refused.append((where, f"{item.topic}/{item.partition}/{item.offset}", why))

    def _land(self, partition: int, letters: list[_Letter]) -> None:
        """Land one chunk, then commit past it: the positions move on only once ClickHouse has the rows."""
        items = [lt.item for lt in letters if lt.item is not None]
        by_item = {id(lt.item): lt.offset for lt in letters if lt.item is not None}
        refused = self.lander.land(items) if items else []
        refused_ids = {id(it) for it, _ in refused}
        for it, why in refused:
            self._refused(f"{self.topic}/{partition}/{by_item[id(it)]}", it, why)
        for it in items:
            if id(it) not in refused_ids:
                self.report.counts(it.topic).landed += 1
        self._consumer.commit(offsets=[TopicPartition(self.topic, partition, letters[-1].offset + 1)],
                              asynchronous=False)


def print_report(report: ReplayReport) -> None:
    from streams.table import print_table

    rows: list[tuple[str, int, int | str, int | str]] = [
        (t, c.dead_letters, c.landed, c.still_refused) for t, c in sorted(report.per_topic.items())]
    rows.append(("(other topics: not the sink's)", report.skipped, "-", "-"))
    print_table(["source topic", "dead letters", "landed", "still refused"], rows)
    if report.refused:
        print()
        print_table(["dead letter", "source record", "still refused because"],
                    [(w, s, why.replace("\n", " ")[:160]) for w, s, why in report.refused])
    print()
    state = "interrupted; run it again to go on" if report.interrupted else "done"
    print(f"replay {state}: {report.read} dead letters read, {report.landed} landed, "
          f"{report.still_refused} still refused, {report.skipped} of other topics skipped", flush=True)
    if report.refused:
        print("the refused records stay on the dead-letter topic; once their cause is fixed, run "
              "`posflow sink --replay-dead-letters --from-beginning`", flush=True)


def replay_main(settings: Settings, store: Store, from_beginning: bool = False) -> int:
    """The CLI's replay: progress while it runs, the report at the end. 0: every dead letter of the sink's
    topics landed; 1: some still refused, or stopped early (Ctrl-C)."""
    import signal

    replay = Replay(settings, store)
    signal.signal(signal.SIGTERM, lambda *_: replay.stop())
    signal.signal(signal.SIGINT, lambda *_: replay.stop())
    start = "the beginning" if from_beginning else f"the last replay's position (consumer group {REPLAY_GROUP})"
    print(f"replay: {replay.topic} from {start} -> ClickHouse {store.where}; Ctrl-C stops after the chunk "
          "being landed", flush=True)

    def progress(r: ReplayReport) -> None:
        print(f"replay: {r.read:,} of {r.total:,} dead letters read, {r.landed:,} landed, "
              f"{r.still_refused:,} still refused, {replay.counters.retries} retries", flush=True)

    report = replay.run(from_beginning, progress)
    print_report(report)
    return 1 if report.refused or report.interrupted else 0
