"""The worker step without Kafka: undecodable bytes become dead letters, the rest still applies."""

from __future__ import annotations

from typing import Any

from processors.batch import BatchProcessor, Source, Step
from processors.config import default_config
from processors.inputs import command
from processors.messages import Command, DepositConfirmed, OpenAccount, Transfer
from processors.state import UserState
from processors.wire import command_to_avro
from schemas import CODEC
from streams.partitioner import partition_for
from streams.topics import DEAD_LETTER, LEDGER, RESULTS, TopicSpec

PARTITIONS = 4
CHAIN = "t.chain-events"
SOURCES = {"t.commands": "user", CHAIN: "chain", "t.operator": "operator"}


def user_on(partition: int) -> str:
    return next(f"user{i}" for i in range(1000) if partition_for(f"user{i}".encode(), PARTITIONS) == partition)


def src(partition: int, offset: int) -> Source:
    return Source("t.commands", partition, offset, b"k", 0)


def encoded(cmd: Command) -> bytes:
    return CODEC.encode("Command", command_to_avro(cmd))


def batched(step: Step, spec: TopicSpec, message: str, items: str) -> list[tuple[int, dict[str, Any]]]:
    """(partition, record) for every item in the step's batch records on `spec`."""
    return [(p, item) for s, _, v, p in step.records if s is spec for item in CODEC.decode_as(message, v)[items]]


def test_bad_records_go_to_dead_letter_and_the_rest_applies() -> None:
    user = user_on(1)
    good = encoded(command(OpenAccount, "o", user, kyc_tier=1, region="DE"))
    truncated = good[:-3]
    to_sign = CODEC.encode("WithdrawalToSign", {"id": "w", "ts_ms": 0, "schema_version": 1, "user_id": user,
                                                "chain": "ethereum", "asset": "USDT", "amount": "1", "address": "x"})
    unknown_schema = b"\xc3\x01" + b"\x00" * 8 + b"\x02"
    inputs = [(src(1, 0), b"garbage"), (src(1, 1), truncated), (src(1, 2), to_sign), (src(1, 3), unknown_schema),
              (src(1, 4), None), (src(1, 5), good)]
    stored: dict[str, UserState] = {}
    step = BatchProcessor(default_config(), PARTITIONS, SOURCES).run(inputs, lambda u, p: stored.get(u))
    dead = [CODEC.decode_as("DeadLetter", v) for spec, _, v, _ in step.records if spec is DEAD_LETTER]
    assert [d["source_offset"] for d in dead] == [0, 1, 2, 3, 4]
    assert dead[0]["value"] == b"garbage" and dead[1]["value"] == truncated and dead[4]["value"] is None
    assert [d["error"].split(":")[0] for d in dead] == ["NOT_AVRO", "CORRUPT_BODY", "WRONG_MESSAGE_TYPE",
                                                       "UNKNOWN_SCHEMA", "NOT_AVRO"]
    results = batched(step, RESULTS, "ResultBatch", "results")
    assert [(p, r["id"], r["status"]) for p, r in results] == [(1, "o", "ACCEPTED")]
    assert step.states[user][1].opened and step.dead_letters == 5


def test_user_on_the_wrong_partition_is_refused_without_touching_state() -> None:
    user = user_on(2)
    batch = CODEC.encode("CommandBatch", {"id": "b", "ts_ms": 0, "schema_version": 1, "commands": [
        command_to_avro(command(OpenAccount, "o", user, kyc_tier=1, region="DE"))]})
    step = BatchProcessor(default_config(), PARTITIONS, SOURCES).run([(src(0, 0), batch)], lambda u, p: None)
    ((partition, result),) = batched(step, RESULTS, "ResultBatch", "results")
    assert result["reason"] == "WRONG_PARTITION" and partition == 0 and not step.states


def test_step_applies_both_topics_in_order_and_emits_ledger_keyed_by_user() -> None:
    user = user_on(3)
    opened = command(OpenAccount, "o", user, kyc_tier=1, region="DE")
    deposit = command(DepositConfirmed, "ethereum:0xaa:0", user, chain="ethereum", tx_hash="0xaa", log_index=0,
                      address="0x" + "1" * 40, asset="ETH", amount="1.5", block_number=9, account="spot")
    transfer = command(Transfer, "t", user, asset="ETH", amount="0.5", from_account="spot", to_account="staking")
    inputs = [(src(3, 7), encoded(opened)), (Source(CHAIN, 3, 4, b"k", 0), encoded(deposit)),
              (src(3, 8), encoded(transfer))]
    step = BatchProcessor(default_config(), PARTITIONS, SOURCES).run(inputs, lambda u, p: None)
    lines = batched(step, LEDGER, "LedgerBatch", "lines")
    assert {p for p, _ in lines} == {3}, "a user's lines go to the user's partition"
    assert [ln["amount"] for _, ln in lines] == ["1.500000000000000000", "-1.500000000000000000",
                                                 "-0.500000000000000000", "0.500000000000000000"]
    assert step.states[user][1].balance("staking", "ETH") == [5 * 10**17, 0, 0]
    assert step.states[user][1].through == {"t.commands": 8, CHAIN: 4}
    assert step.runs == {3: [["t.commands", 7, 7], [CHAIN, 4, 4], ["t.commands", 8, 8]]}
    ids = [CODEC.decode_as("LedgerBatch", v)["id"] for spec, _, v, _ in step.records if spec is LEDGER]
    assert ids == [f"t.commands/3/7-8+{CHAIN}/3/4-4/0"], "a batch names its step's inputs per topic"


def test_chain_events_are_taken_from_the_chain_topic_only() -> None:
    user = user_on(2)
    stored = {user: UserState(user, kyc_tier=1)}
    forged = command(DepositConfirmed, "ethereum:0xbb:0", user, chain="ethereum", tx_hash="0xbb", log_index=0,
                     address="0x" + "1" * 40, asset="USDT", amount="1000000", block_number=9,
                     account="spot")  # sent on the users' topic (src)
    step = BatchProcessor(default_config(), PARTITIONS, SOURCES).run([(src(2, 0), encoded(forged))],
                                                                  lambda u, p: stored.get(u))
    ((_, result),) = batched(step, RESULTS, "ResultBatch", "results")
    assert (result["status"], result["reason"]) == ("REJECTED", "WRONG_SOURCE")
    assert not batched(step, LEDGER, "LedgerBatch", "lines")
    assert all(st.balances == {} and st.applied == {} for _, st in step.states.values()), "nothing applied"
    assert stored[user].balances == {} and stored[user].applied == {}


def test_replayed_records_restore_states_without_applying_or_emitting() -> None:
    user = user_on(1)
    stored = {user: UserState(user, kyc_tier=1)}
    transfer = encoded(command(Transfer, "t", user, asset="USDT", amount="1", from_account="spot", to_account="margin"))
    replay = Source("t.commands", 1, 7, b"k", 0, replay=True)
    step = BatchProcessor(default_config(), PARTITIONS, SOURCES).run([(replay, transfer), (replay, b"garbage")],
                                                           lambda u, p: stored.get(u))
    assert step.records == [] and step.replayed == 1 and step.dead_letters == 0
    assert step.states == {user: (1, stored[user])} and stored[user].applied == {}
