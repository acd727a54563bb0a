"""A step interrupted after its outputs were sent, then re-applied from its journal (processors.agents,
`finish_interrupted`), without Kafka.

Commands arrive on one topic and chain events on another, so a new poll after a crash can interleave
them differently. Whatever subset of the step's states was stored before the crash, re-applying the
journaled records in the journaled order must give every output again with the same id and content,
and the run must end where an uninterrupted run ends. Records may be CommandBatches: their inputs share
one offset, which once let a re-applied input take an unstored attempt's memory record for its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.batch import BatchProcessor, Source, Step, market_key
from processors.config import default_config
from processors.inputs import command
from processors.messages import (
    Borrow,
    BorrowRate,
    Command,
    DepositConfirmed,
    DepositReverted,
    FillSettle,
    MarkPrice,
    OpenAccount,
    OrderHold,
    OrderRelease,
    Repay,
    Transfer,
)
from processors.state import UserState
from processors.wire import command_to_avro
from schemas import CODEC
from streams.partitioner import partition_for
from streams.topics import LEDGER, MARGIN_EVENTS, RESULTS
from tests.unit.test_batch import PARTITIONS, batched, encoded

# A window of 2 remembered inputs: without the stored positions (`UserState.through`), re-applying
# a step over a state that already holds it would apply its older inputs twice. One closed order and one fill
# id per open order kept in the state: orders let them go to the memory all the time.
CFG = dataclasses.replace(default_config(), applied_window=2, closed_orders_kept=1, fills_per_hold=1)
P = 1
USERS = [u for u in (f"user{i}" for i in range(1000)) if partition_for(u.encode(), PARTITIONS) == P][:3]
COMMANDS, CHAIN, SYSTEM = "t.commands", "t.chain", "t.system"
# Mark prices the system topic cycles through: a loan of 0.0001 BTC on margin USDT is allowed at some and
# refused at others, so an input re-applied with another price than it first saw gives another answer.
BTC_PRICES = ("20000", "60000", "150000", "400000")


def _input(topic: str, n: int, user: str, kind: int) -> Command:
    if topic == SYSTEM:
        if kind == 0:
            return command(BorrowRate, f"rate-{n}", "", partition=P, asset="BTC", borrowed="1", supplied="10")
        return command(MarkPrice, f"price-{n}", "", partition=P, asset="BTC", price=BTC_PRICES[n % 4], priced_ms=0)
    if topic == CHAIN:
        return command(DepositConfirmed, f"ethereum:0x{n:04x}:0", user, chain="ethereum", tx_hash=f"0x{n:04x}",
                       log_index=0, address="0x" + "1" * 40, asset="USDT", amount="20", block_number=n,
                       account="spot")
    if kind == 0:
        return command(OpenAccount, f"open-{user}", user, kyc_tier=1, region="DE")
    # two order ids and three fill ids: orders reopen, fills repeat, closed orders come back, and both are let
    # go to the memory (in 150 examples: ~50 closed orders, ~80 fill ids)
    order, fill_id = f"o{(n // 8) % 2}", f"x{(n // 2) % 3}"
    if n % 6 == 1:
        return command(OrderHold, f"h{n}", user, order_id=order, account="spot", asset="USDT", amount="3")
    if n % 6 == 2:
        return command(FillSettle, f"f{n}", user, fill_id=fill_id, order_id=order, account="spot", pay_asset="USDT",
                       pay_amount="1", receive_asset="BTC", receive_amount="0.0001", fee_amount="0")
    if n % 6 == 3:
        return command(OrderRelease, f"r{n}", user, order_id=order, amount=None)
    if n % 6 == 4:  # valued at the BTC price in force: refused at some prices
        return command(Borrow, f"b{n}", user, account="margin", asset="BTC", amount="0.0001")
    if n % 6 == 5:
        return command(Repay, f"p{n}", user, account="margin", asset="BTC", amount="0.00005")
    return command(Transfer, f"t{n}", user, asset="USDT", amount="7", from_account="spot", to_account="margin")


def record(topic: str, n: int, user: str, kind: int, size: int = 1) -> tuple[str, bytes]:
    """One input, or (size > 1) a CommandBatch of `size` inputs of the user: they share the record's offset."""
    if size == 1:
        return topic, encoded(_input(topic, n, user, kind))
    inputs = [command_to_avro(_input(topic, n * 10 + i, user, kind)) for i in range(size)]
    return topic, CODEC.encode("CommandBatch", {"id": f"b{n}", "ts_ms": 0, "schema_version": 1, "commands": inputs})


class Log:
    """Two input topics of one partition: what the broker holds."""

    def __init__(self) -> None:
        self.topics: dict[str, list[bytes]] = {COMMANDS: [], CHAIN: [], SYSTEM: []}

    def append(self, topic: str, value: bytes) -> tuple[Source, bytes]:
        self.topics[topic].append(value)
        return Source(topic, P, len(self.topics[topic]) - 1, b"k", 0), value

    def read(self, runs: list[list[Any]]) -> list[tuple[Source, bytes]]:
        return [(Source(t, P, o, b"k", 0), self.topics[t][o])
                for t, first, last in runs for o in range(first, last + 1)]


def outputs(step: Step) -> dict[str, Any]:
    """Every result and ledger line of a step by id (an id emitted twice in one step would be a bug)."""
    items = [r for _, r in batched(step, RESULTS, "ResultBatch", "results")]
    items += [ln for _, ln in batched(step, LEDGER, "LedgerBatch", "lines")]
    by_id = {("line:" if "entry_id" in i else "result:") + i["id"]: i for i in items}
    events = [CODEC.decode(value)[1] for topic, _, value, _ in step.records if topic is MARGIN_EVENTS]
    by_id.update({"event:" + e["id"]: e for e in events})
    assert len(by_id) == len(items) + len(events)
    return by_id


def run(inputs: list[tuple[Source, bytes]], stored: dict[str, bytes]) -> Step:
    """One step over states as the table stores them (bytes), so positions must survive storage."""
    def load(user: str, partition: int) -> UserState | None:
        raw = stored.get(user)
        return UserState.from_bytes(raw) if raw is not None else None

    def scan(partition: int, lo: bytes, hi: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        keys = sorted(k.encode() for k in stored if lo <= k.encode() < hi)[:limit]
        return [(k, stored[k.decode()]) for k in keys]

    return BatchProcessor(CFG, PARTITIONS, {COMMANDS: "user", CHAIN: "chain", SYSTEM: "system"}).run(
        inputs, load, lambda partition, key: stored.get(key.decode()), scan)


def store(step: Step, stored: dict[str, bytes], users: list[str] | None = None) -> None:
    # the step's memory records land first, whole (the worker writes them before the states)
    for _, key, value in step.memory_entries(lambda user: P, CFG.sweep_period_ms):
        if value is None:
            stored.pop(key.decode(), None)
        else:
            stored[key.decode()] = value
    for user, (_, state) in step.states.items():
        if users is None or user in users:
            stored[user] = state.to_bytes()


# (topic, user, inputs in the record)
arrivals = st.lists(st.tuples(st.sampled_from([COMMANDS, CHAIN, SYSTEM]), st.integers(0, len(USERS) - 1),
                              st.integers(1, 3)), min_size=2, max_size=40)


@settings(max_examples=150, deadline=None)
@given(first=arrivals, later=arrivals, kept=st.lists(st.booleans(), min_size=3, max_size=3))
def test_reapplying_the_journal_gives_the_same_outputs_over_any_stored_subset(
        first: list[tuple[str, int, int]], later: list[tuple[str, int, int]], kept: list[bool]) -> None:
    log = Log()
    opening = [log.append(*record(COMMANDS, n, u, 0)) for n, u in enumerate(USERS)]
    opening += [log.append(*record(SYSTEM, 0, "", 0))]  # the BTC pool's rate
    stored: dict[str, bytes] = {}
    store(run(opening, stored), stored)
    step1 = [log.append(*record(topic, 100 + n, USERS[u], 1, k)) for n, (topic, u, k) in enumerate(first)]

    # Uninterrupted: step 1 is stored whole, then the later records come.
    reference = dict(stored)
    sent1 = run(step1, reference)
    journal = sent1.runs[P]
    store(sent1, reference)
    later_inputs = [log.append(*record(topic, 200 + n, USERS[u], 1, k)) for n, (topic, u, k) in enumerate(later)]
    sent2 = run(later_inputs, reference)
    store(sent2, reference)
    expected = {**outputs(sent1), **outputs(sent2)}

    # Interrupted: the outputs of step 1 went out, then only some of its states were stored.
    crashed = dict(stored)
    store(sent1, crashed, [u for u, keep in zip(USERS, kept, strict=True) if keep])
    again = run(log.read(journal), crashed)
    assert again.runs == {P: journal}
    for key, item in outputs(again).items():
        assert item == expected[key], f"{key} re-sent with other content"
    unstored = {u for u, keep in zip(USERS, kept, strict=True) if not keep}
    assert {i["user_id"] for k, i in outputs(again).items() if k.startswith("result:")} <= unstored
    assert again.skipped == sum(k for (topic, u, k) in first if topic != SYSTEM and USERS[u] not in unstored)
    store(again, crashed)
    sent3 = run(later_inputs, crashed)
    store(sent3, crashed)
    assert outputs(sent3) == outputs(sent2)
    assert {u: UserState.from_bytes(b) for u, b in crashed.items() if not u.startswith("\x00")} == \
        {u: UserState.from_bytes(b) for u, b in reference.items() if not u.startswith("\x00")}
    assert crashed.get(market_key(P).decode()) == reference.get(market_key(P).decode())



def test_a_rewritten_record_the_stored_state_holds_survives_an_interrupted_rewrite() -> None:
    """A deposit is credited and stored; its reversal is applied, its outputs go out and its memory records
    are stored, but not its state. Re-applied, the reversal must see the credited deposit the stored state
    holds (the stored record now says "reverted", written by the unstored attempt) and answer as before."""
    user = USERS[0]
    log = Log()
    stored: dict[str, bytes] = {}
    store(run([log.append(*record(COMMANDS, 0, user, 0))], stored), stored)
    deposit_id = "ethereum:0x0001:0"
    store(run([log.append(*record(CHAIN, 1, user, 1))], stored), stored)
    revert = command(DepositReverted, "ethereum:0x0001:0/reverted", user, deposit_id=deposit_id, reason="reorg")
    step = [log.append(CHAIN, encoded(revert))]
    reference = dict(stored)
    first = run(step, reference)
    store(first, reference)
    assert outputs(first)[f"result:{revert.id}"]["status"] == "ACCEPTED"

    crashed = dict(stored)
    store(run(step, dict(stored)), crashed, users=[])  # memory records stored, the state not
    again = run(log.read(first.runs[P]), crashed)
    assert outputs(again) == outputs(first), "the re-applied reversal answers as the first time"
    store(again, crashed)
    assert UserState.from_bytes(crashed[user]) == UserState.from_bytes(reference[user])


def test_an_input_let_go_by_an_interrupted_step_is_still_known_to_its_resend() -> None:
    """The window (of 2 here) lets inputs go into the engine's memory. A step that let one go stored its memory
    records but not the state, then was re-applied from its journal: a resend of that input later gets its
    first answer and moves nothing, and the same id with another body is refused ID_REUSED."""
    user = USERS[0]
    log, stored = Log(), dict[str, bytes]()

    def transfer(n: int, amount: str = "1") -> tuple[Source, bytes]:
        return log.append(COMMANDS, encoded(command(Transfer, f"t{n}", user, asset="USDT", amount=amount,
                                                    from_account="spot", to_account="margin")))

    store(run([log.append(*record(COMMANDS, 0, user, 0))], stored), stored)
    store(run([log.append(*record(CHAIN, 1, user, 1))], stored), stored)
    first = run([transfer(1)], stored)
    store(first, stored)
    answer = outputs(first)["result:t1"]
    interrupted = run([transfer(2)], dict(stored))  # lets the opening go
    store(interrupted, stored, users=[])  # the crash: memory records stored, the state not
    assert any("\x00i/" in key for key in stored), "a record of an input let go was stored"
    store(run(log.read(interrupted.runs[P]), stored), stored)  # the journal, re-applied
    store(run([transfer(3)], stored), stored)  # lets t1 go
    state = UserState.from_bytes(stored[user])
    assert "user/t1" not in state.applied and state.memory_until > 0
    again = outputs(run([transfer(1)], stored))
    assert again == {"result:t1": answer}, "its first answer, and no ledger line"
    other = outputs(run([transfer(1, "2")], stored))
    assert list(other) == ["result:t1"] and other["result:t1"]["reason"] == "ID_REUSED"
