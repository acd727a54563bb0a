"""Clock ticks, without Kafka: the engine's memory is swept by engine time, and chain events that wait for
an account that never opens are given up on time, with nothing but ticks arriving.

The step runs over a store that behaves like the worker's RocksDB table: bytes keys in order, the step's
entries applied in the order the worker writes them (deletions, index entries, memory records, states).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from processors.batch import BatchProcessor, Source, Step
from processors.config import DAY_MS, EngineConfig, default_config
from processors.inputs import command
from processors.messages import ClockTick, Command, DepositConfirmed, OpenAccount, Transfer, WithdrawalConfirmed
from processors.state import UserState
from streams.topics import RESULTS
from tests.unit.test_batch import PARTITIONS, SOURCES, batched, encoded, user_on

CFG = default_config()
# Every accepted input's id goes to the engine's memory as it applies (with a window, when the window lets it go)
NO_WINDOW = dataclasses.replace(CFG, applied_window=0)
P = 2
USER = user_on(P)
SYSTEM = "t.system"
T0 = 1_750_000_000_000
AFTER_HORIZON = T0 + CFG.dedup_horizon_ms + CFG.sweep_grace_ms + CFG.sweep_period_ms


class Store:
    """The users table of one partition: ordered bytes keys, as RocksDB iterates them."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def load(self, user: str, partition: int) -> UserState | None:
        raw = self.data.get(user.encode())
        return UserState.from_bytes(raw) if raw is not None else None

    def recall(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get(key)

    def scan(self, partition: int, lo: bytes, hi: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        return [(k, self.data[k]) for k in sorted(self.data) if lo <= k < hi][:limit]

    def commit(self, step: Step) -> None:
        """What processors.agents.commit writes, in its order."""
        encoded_states = step.encoded_states()
        entries = step.memory_entries(lambda user: P, CFG.sweep_period_ms)
        entries += [(P, user.encode(), encoded_states[user]) for user in step.states]
        for _, key, value in entries:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def memory(self) -> dict[str, list[Any]]:
        return {k.decode(): json.loads(v) for k, v in self.data.items() if k.startswith(b"\x00m/")}

    def index(self) -> list[bytes]:
        return [k for k in self.data if k.startswith(b"\x00x/")]


class Partition:
    """Partition P's input topics, with broker timestamps."""

    def __init__(self, cfg: EngineConfig = CFG) -> None:
        self.store = Store()
        self.offsets: dict[str, int] = {}
        self.processor = BatchProcessor(cfg, PARTITIONS, {**SOURCES, SYSTEM: "system"})

    def step(self, *inputs: tuple[str, int, Command]) -> Step:
        sources = []
        for topic, ts_ms, cmd in inputs:
            offset = self.offsets[topic] = self.offsets.get(topic, -1) + 1
            sources.append((Source(topic, P, offset, None, ts_ms), encoded(cmd)))
        step = self.processor.run(sources, self.store.load, self.store.recall, self.store.scan)
        self.store.commit(step)
        return step


def tick(ts_ms: int, partition: int = P) -> tuple[str, int, Command]:
    return SYSTEM, ts_ms, command(ClockTick, f"tick/{partition}/{ts_ms}", "", partition=partition)._replace(ts_ms=ts_ms)


def user_input(ts_ms: int, cmd: Command) -> tuple[str, int, Command]:
    """`cmd` on the users' commands topic, whatever its kind's source."""
    return "t.commands", ts_ms, cmd._replace(ts_ms=ts_ms)


def open_account(ts_ms: int, cmd_id: str = "open", user: str = USER) -> tuple[str, int, Command]:
    return user_input(ts_ms, command(OpenAccount, cmd_id, user, kyc_tier=1, region="DE"))


def deposit(ts_ms: int, tx: str, user: str = USER) -> tuple[str, int, Command]:
    cmd = command(DepositConfirmed, f"ethereum:{tx}:0", user, chain="ethereum", tx_hash=tx, log_index=0,
                  address="0x" + "11" * 20, asset="USDT", amount="100", block_number=1, account="spot")
    return "t.chain-events", ts_ms, cmd._replace(ts_ms=ts_ms)


def transfer(ts_ms: int, cmd_id: str) -> tuple[str, int, Command]:
    return user_input(ts_ms, command(Transfer, cmd_id, USER, asset="USDT", amount="1", from_account="spot",
                                     to_account="margin"))


def results(step: Step) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for _, r in batched(step, RESULTS, "ResultBatch", "results")}


def test_a_tick_deletes_the_input_ids_that_expired_and_keeps_what_lasts() -> None:
    part = Partition(NO_WINDOW)
    part.step(open_account(T0), deposit(T0, "0x01"),
              *(transfer(T0 + i, f"t{i}") for i in range(5)))
    ids = {k for k in part.store.memory() if "\x00i/" in k}
    assert len(ids) == 6 and part.store.index(), "every accepted user input is remembered, and indexed"

    early = part.step(tick(T0 + CFG.dedup_horizon_ms - 1))  # before the horizon: nothing goes
    assert early.ticks == 1 and early.swept == 0 and len(part.store.memory()) == 7
    at_horizon = part.step(tick(T0 + CFG.dedup_horizon_ms + CFG.sweep_grace_ms - 1))  # within the grace
    assert at_horizon.swept == 0

    swept = part.step(tick(AFTER_HORIZON))
    assert swept.swept == 6
    assert set(part.store.memory()) == {f"\x00m/{USER}\x00d/ethereum:0x01:0"}, "a deposit's record never expires"
    assert part.store.index() == [], "the index entries go with their records"
    assert swept.records == [], "a tick sends nothing when nothing waited"

    again = part.step(tick(AFTER_HORIZON + 60_000))
    assert again.swept == 0 and again.deletions == []


def test_a_record_written_again_later_is_not_swept_with_its_first_expiry() -> None:
    part = Partition()
    part.step(deposit(T0, "0x01"))  # waits for the account: due at T0 + ttl
    part.step(open_account(T0 + DAY_MS))
    later = T0 + 2 * DAY_MS  # a confirmation of a withdrawal not requested yet waits: due later
    confirmed = command(WithdrawalConfirmed, "c1", USER, withdrawal_id="w1", tx_hash="0x" + "ab" * 32)
    part.step(("t.chain-events", later, confirmed._replace(ts_ms=later)))
    due = f"\x00m/{USER}\x00p"
    assert part.store.memory()[due][0] == later + CFG.parked_ttl_ms
    first = part.step(tick(T0 + CFG.parked_ttl_ms + CFG.sweep_grace_ms + CFG.sweep_period_ms))
    assert first.swept == 0 and due in part.store.memory(), "listed under its first hour, due later"
    given_up = part.step(tick(later + CFG.parked_ttl_ms + CFG.sweep_grace_ms + CFG.sweep_period_ms))
    assert results(given_up)["c1"]["reason"] == "PARKED_EXPIRED"
    assert due not in part.store.memory()


def test_a_tick_expires_parked_events_of_an_account_that_never_opens_and_drops_the_state() -> None:
    part = Partition()
    parked = part.step(deposit(T0, "0x02"))
    assert results(parked)["ethereum:0x02:0"]["reason"] == "PARKED"
    assert USER.encode() in part.store.data, "stored while a chain event waits for the account"

    part.step(tick(T0 + CFG.parked_ttl_ms - 1))
    assert USER.encode() in part.store.data

    given_up = part.step(tick(T0 + CFG.parked_ttl_ms + CFG.sweep_grace_ms + CFG.sweep_period_ms))
    assert results(given_up)["ethereum:0x02:0"]["reason"] == "PARKED_EXPIRED", "the operators' alert"
    assert USER.encode() not in part.store.data, "nothing waits: no state kept for a user who never opened"
    assert not any(k.startswith(f"\x00m/{USER}\x00p".encode()) for k in part.store.data)

    # given up is not lost: the watcher's resend after the account opens is credited
    later = T0 + CFG.parked_ttl_ms + 2 * DAY_MS
    credited = part.step(open_account(later), deposit(later, "0x02"))
    assert results(credited)["ethereum:0x02:0"]["status"] == "ACCEPTED"
    assert results(credited)["ethereum:0x02:0"]["ledger_lines"] > 0


def test_parked_events_left_after_a_tick_are_marked_for_the_next_one() -> None:
    part = Partition()
    part.step(deposit(T0, "0x03"))
    part.step(deposit(T0 + 3 * DAY_MS, "0x04"))
    first = part.step(tick(T0 + CFG.parked_ttl_ms + CFG.sweep_grace_ms + CFG.sweep_period_ms))
    assert set(results(first)) == {"ethereum:0x03:0"}
    assert USER.encode() in part.store.data, "one event still waits"
    second = part.step(tick(T0 + 3 * DAY_MS + CFG.parked_ttl_ms + CFG.sweep_grace_ms + CFG.sweep_period_ms))
    assert set(results(second)) == {"ethereum:0x04:0"}
    assert USER.encode() not in part.store.data


def test_a_tick_for_another_partition_is_dead_lettered_and_a_user_cannot_send_one() -> None:
    part = Partition()
    wrong = part.step(tick(T0, partition=P + 1))
    assert wrong.ticks == 0 and wrong.dead_letters == 1
    opened = part.step(open_account(T0), user_input(T0, command(ClockTick, "fake-tick", USER, partition=P)))
    assert results(opened)["fake-tick"]["reason"] == "WRONG_SOURCE"


def test_a_sweep_is_bounded_per_tick_and_goes_on_at_the_next() -> None:
    part = Partition(NO_WINDOW)
    users = [u for u in (f"user{i}" for i in range(5000)) if part.processor.owner(u) == P][:30]
    for n, user in enumerate(users):  # one index entry per step
        part.step(open_account(T0 + n, f"open-{user}", user))
    assert len(part.store.index()) == 30
    import processors.batch as batch

    saved = batch.INDEX_ENTRIES_MAX
    batch.INDEX_ENTRIES_MAX = 8
    try:
        assert part.step(tick(AFTER_HORIZON + 30)).swept == 8
        assert part.step(tick(AFTER_HORIZON + 31)).swept == 8
    finally:
        batch.INDEX_ENTRIES_MAX = saved
    assert part.step(tick(AFTER_HORIZON + 32)).swept == 14
    assert part.store.index() == []


def test_an_expiry_found_by_a_refused_input_is_stored_once() -> None:
    """A never-opened user's parked deposit expires when their next input arrives (refused UNKNOWN_USER):
    the PARKED_EXPIRED result goes out once, and the state left with nothing waiting is deleted, not kept
    to expire the same event again on every later input."""
    part = Partition()
    part.step(deposit(T0, "0xlost"))
    later = T0 + CFG.parked_ttl_ms + 1
    first = results(part.step(transfer(later, "t1")))
    assert first["ethereum:0xlost:0"]["reason"] == "PARKED_EXPIRED"
    assert first["t1"]["reason"] == "UNKNOWN_USER"
    assert part.store.load(USER, P) is None, "nothing waits: no state"
    second = results(part.step(transfer(later + 1, "t2")))
    assert list(second) == ["t2"], "the expiry is not sent again"
