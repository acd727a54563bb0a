"""Helpers for tests that drive a real engine worker through the real broker, as a client would: the
isolated environment's settings, a started worker, inputs built as clients send them, every answer
(resends included), and what the worker wrote, read back from Kafka."""

from __future__ import annotations

import socket
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from processors.config import default_config
from processors.messages import Command, Result
from processors.money import parse_signed
from processors.wire import result_from_avro
from schemas import CODEC
from streams.client import CommandClient, consumer_at_end, read_ledger, read_topic, results_in
from streams.config import Settings
from streams.kafka import consumed, consumer_config, watermarks
from streams.topics import INPUTS, RESULTS
from streams.workers import WorkerProcess

CFG = default_config()
ADDRESS = "0x" + "11" * 20  # a valid ethereum address
Balances = dict[tuple[str, str], tuple[int, int, int]]  # (account, asset) -> available, frozen, borrowed (minor)


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(kafka_bootstrap=env["KAFKA_BOOTSTRAP"], topic_prefix=env["POSFLOW_TOPIC_PREFIX"],
                    app_id=env["POSFLOW_APP_ID"], home=Path(env["POSFLOW_HOME"]))


def free_port() -> int:
    """Tests of other sessions may run at the same time: a fixed web port could be taken."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker(env: dict[str, str], log: Path, port: int, supervise: bool = False, **extra_env: str) -> WorkerProcess:
    """An engine worker, not started. The same env and port give the same state dir (a restart)."""
    return WorkerProcess("streams.worker", port, {**env, **extra_env}, log, supervise=supervise)


def start(w: WorkerProcess) -> WorkerProcess:
    """Start and wait until its web view answers (its partitions are assigned by then or soon after)."""
    w.start()
    w.wait_until("/stats/", lambda s: True, timeout=120)
    return w


# -- inputs, as clients send them ----------------------------------------------------------------------

def open_account(user: str, ts_ms: int = 1, cmd_id: str = "") -> Command:
    return Command(cmd_id or f"{user}-open", ts_ms, user, "OpenAccount", {"kyc_tier": 1, "region": "DE"})


def deposit(user: str, tx: str, amount: str, ts_ms: int = 1, account: str = "spot") -> Command:
    """A confirmed USDT deposit; its id is the chain's, `ethereum:<tx>:0`, as the engine requires."""
    return Command(f"ethereum:{tx}:0", ts_ms, user, "DepositConfirmed",
                   {"chain": "ethereum", "tx_hash": tx, "log_index": 0, "address": ADDRESS, "asset": "USDT",
                    "amount": amount, "block_number": 1, "account": account})


def transfer(cmd_id: str, user: str, amount: str, src: str = "spot", dst: str = "margin", ts_ms: int = 1,
             asset: str = "USDT") -> Command:
    return Command(cmd_id, ts_ms, user, "Transfer", {"asset": asset, "amount": amount, "from_account": src,
                                                     "to_account": dst})


def hold(cmd_id: str, user: str, order_id: str, amount: str, ts_ms: int = 1) -> Command:
    return Command(cmd_id, ts_ms, user, "OrderHold", {"order_id": order_id, "account": "spot", "asset": "USDT",
                                                      "amount": amount})


def fill(cmd_id: str, user: str, fill_id: str, order_id: str, pay: str, receive_btc: str, ts_ms: int = 1) -> Command:
    return Command(cmd_id, ts_ms, user, "FillSettle", {
        "fill_id": fill_id, "order_id": order_id, "account": "spot", "pay_asset": "USDT", "pay_amount": pay,
        "receive_asset": "BTC", "receive_amount": receive_btc, "fee_amount": "0"})


def minor(asset: str, text: str) -> int:
    return parse_signed(text, CFG.assets[asset].scale)


# -- answers ------------------------------------------------------------------------------------------

class Answers:
    """Every result on the results topic from creation on, in order, resends included (ResultWatcher keeps
    the first result per id only, and a resend's answer is what these tests look at)."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = consumer_at_end(settings, RESULTS.name(settings), f"posflow-answers-{uuid.uuid4().hex}")
        self.all: list[Result] = []

    def mark(self) -> int:
        """Where answers to what is sent next start (wait_for(since=...))."""
        self.poll(0.0)
        return len(self.all)

    def poll(self, timeout: float = 0.2) -> None:
        for msg in consumed(self._consumer, 10_000, timeout, "results"):
            self.all.extend(result_from_avro(r) for r in results_in(msg.value() or b""))

    def wait_for(self, cmds: Sequence[Command], since: int = 0, timeout: float = 120.0) -> list[Result]:
        """The first answer to each input at or after position `since`, in the order of `cmds`. An answer is
        matched by id and kind: an id is unique within its source only (a user may reuse a deposit's id)."""
        wanted = {(c.id, c.kind) for c in cmds}
        got: dict[tuple[str, str], Result] = {}
        seen = since
        deadline = time.monotonic() + timeout
        while True:
            for r in self.all[seen:]:
                key = (r.id, r.kind)
                if key in wanted and key not in got:
                    got[key] = r
            seen = len(self.all)
            if len(got) == len(wanted):
                return [got[(c.id, c.kind)] for c in cmds]
            if time.monotonic() > deadline:
                missing = sorted(wanted - set(got))
                raise TimeoutError(f"{len(missing)} answers missing after {timeout}s, e.g. {missing[:3]}")
            self.poll()

    def close(self) -> None:
        self._consumer.close()


def send(client: CommandClient, answers: Answers, cmds: Sequence[Command], batch: bool = True,
         timeout: float = 120.0) -> list[Result]:
    """Send and wait for their answers, in the order of `cmds` (sent as CommandBatch records, or one record
    per command)."""
    since = answers.mark()
    if batch:
        client.send_batch(cmds)
    else:
        for c in cmds:
            client.send(c)
    client.flush()
    return answers.wait_for(cmds, since, timeout)


def accepted(got: list[Result]) -> list[Result]:
    refused = [r for r in got if r.status != "ACCEPTED"]
    assert not refused, f"{len(refused)} refused, e.g. {refused[:3]}"
    return got


def open_funded(client: CommandClient, answers: Answers, user: str, usdt: str) -> None:
    """Open an account, then credit it: one after the other, as the two travel on two topics with no order
    between them (a hold sent with the deposit could be applied before it)."""
    accepted(send(client, answers, [open_account(user)]))
    [credited] = send(client, answers, [deposit(user, f"0x{user}-funds", usdt)])
    assert (credited.status, credited.reason, credited.ledger_lines) == ("ACCEPTED", None, 2), credited


def barrier(client: CommandClient, answers: Answers, user: str) -> None:
    """Once every answer sent for is in: wait until the steps that gave them have stored their states and
    their ledger records are acknowledged. A worker's steps run one after the other, each storing its
    states before the next starts, and this input (a transfer to the same account: refused, it changes no
    balance) is taken in a step after them."""
    [got] = send(client, answers, [transfer(f"barrier-{uuid.uuid4().hex[:8]}", user, "1", "spot", "spot")],
                 batch=False)
    assert got.status == "REJECTED", got


def balances(w: WorkerProcess, user: str) -> Balances:
    """A user's balances from the worker's web view (its stored state), in minor units."""
    view = w.get_json(f"/users/{user}/balances")
    return {(r["account"], r["asset"]): (minor(r["asset"], r["available"]), minor(r["asset"], r["frozen"]),
                                         minor(r["asset"], r["borrowed"])) for r in view["balances"]}


# -- what the worker wrote -----------------------------------------------------------------------------

class TwoContents(AssertionError):
    """A ledger line id written with two different contents: ClickHouse keeps one of them, the ledger lies."""


def ledger_by_id(settings: Settings) -> dict[str, dict[str, Any]]:
    """The whole ledger topic by line id; raises TwoContents if an id was written with two contents."""
    lines: dict[str, dict[str, Any]] = {}
    for line in read_ledger(settings):
        seen = lines.setdefault(line["id"], line)
        if seen != line:
            raise TwoContents(f"ledger id {line['id']} has two contents:\n{seen}\n{line}")
    return lines


def ledger_entry_lines(settings: Settings) -> Counter[str]:
    """Ledger lines written per entry id, every copy counted (a line sent twice counts twice)."""
    return Counter(line["entry_id"] for line in read_ledger(settings))


def results_on_topic(settings: Settings) -> list[Result]:
    return [result_from_avro(r) for *_, value in read_topic(settings, RESULTS.name(settings))
            for r in results_in(value)]


def input_times(settings: Settings) -> dict[str, list[tuple[int, int]]]:
    """input id -> (Kafka timestamp type, timestamp ms) of each input record that carried it, from every
    input topic. The engine applies an input at its record's timestamp."""
    out: dict[str, list[tuple[int, int]]] = {}
    consumer = Consumer(consumer_config(settings, f"posflow-times-{uuid.uuid4().hex}"))
    try:
        for spec in INPUTS.values():
            topic = spec.name(settings)
            for p in range(settings.partitions):
                high = watermarks(consumer, topic, p)[1]
                if high <= 0:
                    continue
                consumer.assign([TopicPartition(topic, p, 0)])
                read = 0
                deadline = time.monotonic() + 60
                while read < high:
                    assert time.monotonic() < deadline, f"reading {topic}/{p}: {read} of {high} records"
                    for msg in consumed(consumer, 10_000, 0.5, topic):
                        read = max(read, (msg.offset() or 0) + 1)
                        name, record = CODEC.decode(msg.value() or b"")
                        commands = record["commands"] if name == "CommandBatch" else [record]
                        for c in commands:
                            out.setdefault(c["id"], []).append(msg.timestamp())
                consumer.unassign()
        return out
    finally:
        consumer.close()


def stored_values(settings: Settings, key: bytes) -> list[bytes]:
    """Every value the workers stored under `key` in the users table, oldest first, from its changelog."""
    topic = f"{settings.app_id}-users-changelog"
    return [value for _p, _o, k, value in read_topic(settings, topic, timeout=120) if k == key]
