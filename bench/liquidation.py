"""Price to liquidation, end to end (issue 11): a price record produced -> `Liquidate` applied in the user's partition,
with the engine at half its saturated command rate.

One fresh phase (bench.stack.fresh): the real broker, one engine worker process (as bench.e2e starts it, default
engine config: prices older than 30 s are none).

Setup, untimed. `USERS` users with a cross margin account each: 1,000 USDT deposited and moved to margin, 1,990 USDT
borrowed, the 2,990 USDT spent on BTC at a price chosen per user, so that user i is liquidated between two
consecutive prices of a walk down: BTC goes 60,000 -> 59,640 -> ... (`MOVES` moves of `STEP` USDT), and slice k of
the users (every (MOVES + 1)-th user) has its liquidation price strictly inside move k's step, 15% of a step from
either end; the last slice's price is below the last move (never liquidated: the control). The price source
publishes 60,000 every few seconds during the setup (a price older than 30 s is none), so every account reaches the
margin-call band before the first move. Background users (bench.workload) open and deposit.

Saturation: bench.e2e's measurement on the same worker, `SATURATION` commands of the workload as fast as the client
sends them (watched margin accounts in place, prices flowing): `saturated_rate`, commands/s.

The moves, timed: the workload's next rounds paced at half that rate (`background_rate`) from a few seconds before
the first move to the last liquidation. Each move publishes one price record and waits until its slice's
`LiquidationStarted` events are all in (at most `MOVE_TIMEOUT_S`), and at least `MOVE_GAP_S` between moves.

The figure, per liquidated user: from the move's price record appended to the prices topic (the broker's
LogAppendTime, which the producer's delivery report carries back: the topic stamps LogAppendTime) to its
`LiquidationStarted` margin event's record timestamp. That event is written only by the step that applied the
account's `Liquidate` with an ACCEPTED result, once per liquidation (a second copy of the input is refused, and a
refusal sends no event), in the same produce call as that step's results; the margin-events topic stamps
CreateTime, which librdkafka sets to the worker's clock at that produce call: after the apply and the step's
journal, before the broker's acknowledgement. (The `Liquidate`'s result carries the same time but shares the
results topic with every background result, refused copies included.) Broker and worker share this machine's clock.
Hops, from the same records: the price's copy appended to the user's system-inputs partition by the fan-out (the
crossing `MarginLevel` event's engine time), the `Liquidate` appended there by the step that valued the account
(the `LiquidationStarted` event's engine time), then applied. Liquidation orders are left unfilled (no matcher):
the figure ends at the start.

    python -m bench.liquidation          # the figures, printed only
    python -m bench.run liquidation      # the figures, merged into bench/results/margin.json
    python -m bench.run margin           # the margin screen's figures and these, saved to margin.json
"""

from __future__ import annotations

import itertools
import math
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Consumer, Producer, TopicPartition

from bench import e2e, workload
from bench.stack import fresh, kafka
from processors.config import default_config
from processors.inputs import command
from processors.margin import LIQUIDATION, MARGIN_CALL, band, parse_price, value_down
from processors.messages import (
    Borrow,
    Command,
    DepositConfirmed,
    FillSettle,
    OpenAccount,
    OrderHold,
    Transfer,
)
from processors.wire import command_to_avro
from schemas import CODEC
from streams import market
from streams.client import CommandClient, ResultWatcher, read_topic, results_in
from streams.config import Settings
from streams.kafka import consumed, consumer_config, producer_config
from streams.partitioner import partition_for
from streams.topics import MARGIN_EVENTS, PRICES, RESULTS
from streams.workers import WorkerProcess

USERS = 1050  # liquidation users: MOVES slices of 50 liquidated, one slice never (the control)
MOVES = 20
START = 60_000  # USDT per BTC before the first move
STEP = 360  # USDT per move (0.6% of START)
DEPOSIT, LOAN = 1_000, 1_990  # USDT per liquidation user; the loan keeps the level at the borrow line's 1.5
BACKGROUND_USERS = 30_000
SATURATION = 150_000  # commands of the saturation measurement (the workload's first round)
BACKGROUND_SHARE = 0.5
WARMUP_S = 3.0  # background load before the first move
MOVE_GAP_S = 2.5  # at least this between two moves
MOVE_TIMEOUT_S = 20.0  # a move's liquidations must land within this (well under the 30 s a price lives)
HEARTBEAT_S = 4.0  # the setup republishes the price this often
EARLY = ("PRICE_UNAVAILABLE", "NO_LENDING_POOL")  # a first price or rate not yet in the user's partition
USDT, SAT = 10**6, 10**8
STAMPS = {TIMESTAMP_CREATE_TIME: "CreateTime", TIMESTAMP_LOG_APPEND_TIME: "LogAppendTime"}
CFG = default_config()


def user_name(i: int) -> str:
    return f"liq{i:05d}"


def slice_of(i: int) -> int:
    """The move (1..MOVES) that liquidates user i; MOVES + 1: none (its price is below the last move's)."""
    return i % (MOVES + 1) + 1


def move_price(k: int) -> int:
    return START - k * STEP


def liquidation_price(i: int) -> int:
    """User i's liquidation price in minor USDT per BTC: inside its move's step, 15% of a step from either end,
    spread over the slice."""
    k, rank, per_slice = slice_of(i), i // (MOVES + 1), -(-USERS // (MOVES + 1))
    return move_price(k) * USDT + STEP * USDT * (1500 + 7000 * (2 * rank + 1) // (2 * per_slice)) // 10_000


def btc_bought(i: int) -> int:
    """Satoshis that put the account (LOAN owed) at its liquidation line 1.1 at its liquidation price."""
    return -(-11 * LOAN * USDT * SAT // (10 * liquidation_price(i)))


def _check_design() -> None:
    """Each account is liquidated by its move and not the one before, at any interest the run can book (up to 1 USDT
    on top of the loan), by the engine's own arithmetic; at the start it sits in the margin-call band."""
    tier, scale, quote = CFG.cross_tier, CFG.assets["BTC"].scale, CFG.assets["USDT"].scale
    for i in range(USERS):
        k, held = slice_of(i), btc_bought(i)

        def at(price: int, owed: int, held: int = held) -> int:
            return band(value_down(held, scale, parse_price(str(price)), quote), owed, tier)

        low, high = LOAN * USDT, (LOAN + 1) * USDT
        assert at(START, high) == MARGIN_CALL and at(START, low) == MARGIN_CALL, (i, "margin-call band at the start")
        assert at(move_price(k - 1), high) != LIQUIDATION, (i, k, "liquidated a move early")
        if k <= MOVES:
            assert at(move_price(k), low) == LIQUIDATION, (i, k, "not liquidated by its move")
        else:
            assert at(move_price(MOVES), low) != LIQUIDATION, (i, "the control slice is liquidated")


def setup_steps(i: int) -> list[list[Command]]:
    """User i's inputs, each list sent after the answers to the one before (two input topics: no order between)."""
    u = user_name(i)
    tx = f"0x{10**12 + i:064x}"
    return [
        [command(OpenAccount, f"{u}-open", u, kyc_tier=1, region="DE")],
        [command(DepositConfirmed, f"ethereum:{tx}:0", u, chain="ethereum", tx_hash=tx, log_index=0,
                 address=workload.ADDR, asset="USDT", amount=str(DEPOSIT), block_number=1, account="spot")],
        [command(Transfer, f"{u}-in", u, asset="USDT", amount=str(DEPOSIT), from_account="spot", to_account="margin")],
        [command(Borrow, f"{u}-loan", u, account="margin", asset="USDT", amount=str(LOAN))],
        [command(OrderHold, f"{u}-buy", u, order_id="buy", account="margin", asset="USDT",
                 amount=str(DEPOSIT + LOAN)),
         command(FillSettle, f"{u}-buy-f", u, fill_id="f", order_id="buy", account="margin", pay_asset="USDT",
                 pay_amount=str(DEPOSIT + LOAN), receive_asset="BTC",
                 receive_amount=f"{btc_bought(i) // SAT}.{btc_bought(i) % SAT:08d}", fee_amount="0")],
    ]


class PriceSource:
    """Publishes BTC prices (and the USDT pool's rate) to the prices topic; keeps each price record's broker time
    (LogAppendTime, from the delivery report) and the wall clock just before its produce call."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer = Producer(producer_config(settings, **{"linger.ms": 0}))
        self._seq = time.time_ns()
        self._lock = threading.Lock()
        self.appended: dict[str, int] = {}  # price id -> broker time (ms)
        self.called: dict[str, int] = {}  # price id -> wall clock before produce (ms)
        self.current = START
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _publish(self, cmd: Command, key: str) -> None:
        def delivered(err: Any, msg: Any) -> None:
            assert err is None, f"price record not delivered: {err}"
            kind, ts = msg.timestamp()
            assert kind == TIMESTAMP_LOG_APPEND_TIME, f"the prices topic must stamp LogAppendTime, got type {kind}"
            self.appended[cmd.id] = ts

        with self._lock:
            self.called[cmd.id] = time.time_ns() // 1_000_000
            self._producer.produce(PRICES.name(self.settings), CODEC.encode("Command", command_to_avro(cmd)),
                                   key.encode(), on_delivery=delivered)
            left = self._producer.flush(10)
        assert not left and cmd.id in self.appended, "price record not acknowledged in 10 s"

    def price(self, usdt: int) -> str:
        """Publish BTC at `usdt`; returns the record's id (its copies on system-inputs are `<id>/p<partition>`)."""
        self.current = usdt
        with self._lock:
            self._seq += 1
            cmd = market.price("BTC", str(usdt), self._seq)
        self._publish(cmd, "price:BTC")
        return cmd.id

    def rate(self) -> None:
        with self._lock:
            self._seq += 1
            cmd = market.rate("USDT", "450", "1000", self._seq)
        self._publish(cmd, "rate:USDT")

    def heartbeat(self, on: bool) -> None:
        """Republish the current price every HEARTBEAT_S while on, as a feed does (a price older than 30 s is none)."""
        if on:
            self._stop.clear()
            self._beat = threading.Thread(target=self._beating, daemon=True)
            self._beat.start()
        elif self._beat is not None:
            self._stop.set()
            self._beat.join(10)
            self._beat = None

    def _beating(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.price(self.current)


class MarginEvents:
    """Reads the margin-events topic from its start in a thread: each event with its record's timestamp."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = Consumer(consumer_config(settings, f"bench-liquidation-{uuid.uuid4().hex[:8]}"))
        topic = MARGIN_EVENTS.name(settings)
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
        self.lock = threading.Lock()
        self.started: dict[str, list[tuple[dict[str, Any], int]]] = defaultdict(list)  # user -> (event, record ms)
        self.crossed: dict[str, list[dict[str, Any]]] = defaultdict(list)  # user -> MarginLevel into liquidation
        self.band: dict[str, str] = {}  # user -> the band of the user's latest MarginLevel
        self.timestamp_types: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for msg in consumed(self._consumer, 10_000, 0.1, "margin events"):
                _, ev = CODEC.decode(msg.value() or b"")
                kind, ts = msg.timestamp()
                with self.lock:
                    self.timestamp_types[kind] += 1
                    if ev["kind"] == "LiquidationStarted":
                        self.started[ev["user_id"]].append((ev, ts))
                    elif ev["kind"] == "MarginLevel":
                        self.band[ev["user_id"]] = ev["band"]
                        if ev["band"] == "liquidation":
                            self.crossed[ev["user_id"]].append(ev)

    def count_started(self, users: list[str]) -> int:
        with self.lock:
            return sum(1 for u in users if self.started.get(u))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


class Background:
    """The workload's next commands, paced at `rate` per second from a thread, in bench.e2e's chunks."""

    def __init__(self, settings: Settings, commands: Iterator[Command], rate: float) -> None:
        self.client = CommandClient(settings)
        self.commands = commands
        self.rate = rate
        self.sent = 0
        self.ran_out = False
        self.started = self.stopped = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self.started + self.sent / self.rate
            while (now := time.monotonic()) < due and not self._stop.is_set():
                time.sleep(min(due - now, 0.01))
            chunk = list(itertools.islice(self.commands, e2e.CHUNK))
            if not chunk:
                self.ran_out = True
                break
            self.client.send_batch(chunk)
            self.sent += len(chunk)
        self.stopped = time.monotonic()
        self.client.flush()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    @property
    def offered_per_s(self) -> float:
        return self.sent / (self.stopped - self.started)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _setup_users(settings: Settings, watcher: ResultWatcher) -> None:
    client = CommandClient(settings)
    plans = [setup_steps(i) for i in range(USERS)]
    for step in range(len(plans[0])):
        pending = [c for plan in plans for c in plan[step]]
        deadline = time.monotonic() + 60
        while pending:
            client.send_batch(pending)
            client.flush()
            got = watcher.wait_for([c.id for c in pending], timeout=120)
            early = {i for i, r in got.items() if r.reason in EARLY}
            refused = [r for i, r in got.items() if i not in early and r.status != "ACCEPTED"]
            assert not refused, f"{len(refused)} setup inputs refused, e.g. {refused[:3]}"
            # a loan waits for the first rate (and a valuation for the first price) to reach its partition
            pending = [c._replace(id=f"{c.id}+") for c in pending if c.id in early]
            assert not pending or time.monotonic() < deadline, f"still {len(pending)} refused early: {pending[:2]}"
            if pending:
                time.sleep(0.5)


def _drain(settings: Settings) -> float:
    """Seconds until the worker has applied everything sent before: a probe per partition on the commands topic
    (a transfer of a user who has no account, refused), answered after every earlier record of its partition."""
    probes: dict[int, str] = {}
    for n in itertools.count():
        probes.setdefault(partition_for(f"probe{n}".encode(), settings.partitions), f"probe{n}")
        if len(probes) == settings.partitions:
            break
    watcher = ResultWatcher(settings)
    client = CommandClient(settings)
    t0 = time.monotonic()
    cmds = [command(Transfer, f"{user}-drain", user, asset="USDT", amount="1", from_account="spot",
                    to_account="margin") for user in probes.values()]
    client.send_batch(cmds)
    client.flush()
    watcher.wait_for([c.id for c in cmds], timeout=300)
    watcher.close()
    return time.monotonic() - t0


def _results(settings: Settings) -> tuple[int, Counter[tuple[str, str]], Counter[str]]:
    """From the results topic: the workload users' results, those refused by (kind, reason), and the `Liquidate`
    inputs' answers by status or reason (a valuation that finds an account in the liquidation band asks again
    until one applies: the copies are answered too)."""
    n, refused, liquidate = 0, Counter[tuple[str, str]](), Counter[str]()
    for *_, value in read_topic(settings, RESULTS.name(settings), timeout=120):
        for r in results_in(value):
            if r["kind"] == "Liquidate":
                liquidate[r["reason"] or r["status"]] += 1
            elif r["user_id"].startswith("user"):
                n += 1
                if r["status"] != "ACCEPTED":
                    refused[(r["kind"], r["reason"] or "")] += 1
    return n, refused, liquidate


def run(users: int = USERS) -> dict[str, Any]:
    assert users == USERS, "the design (slices, prices) is checked for USERS"
    _check_design()
    t_phase = time.monotonic()
    with kafka() as base:
        settings, env = fresh(base, "liquidation")
        worker = e2e._worker("streams.worker", env, _free_port(), settings)
        events = MarginEvents(settings)
        prices = PriceSource(settings)
        try:
            figures = _run(settings, worker, events, prices, t_phase)
        finally:
            prices.heartbeat(False)
            events.close()
            worker.stop()
    figures["liquidation_phase_s"] = round(time.monotonic() - t_phase, 1)
    return figures


def _run(settings: Settings, worker: WorkerProcess, events: MarginEvents, prices: PriceSource,
         t_phase: float) -> dict[str, Any]:
    def say(text: str) -> None:
        print(f"  [{time.monotonic() - t_phase:5.1f}s] {text}", flush=True)

    prices.rate()
    prices.price(START)
    prices.heartbeat(True)
    say(f"liquidation: {USERS} margin accounts, {MOVES} moves of {STEP} USDT down from {START} ...")
    watcher = ResultWatcher(settings)
    _setup_users(settings, watcher)
    watcher.close()
    names = [user_name(i) for i in range(USERS)]
    deadline = time.monotonic() + 30
    while True:
        with events.lock:
            not_yet = [u for u in names if events.band.get(u) != "margin-call"]
        if not not_yet:
            break
        assert time.monotonic() < deadline, f"{len(not_yet)} accounts not in the margin-call band: {not_yet[:3]}"
        time.sleep(0.2)
    say(f"  every account in the margin-call band; per partition: "
        f"{dict(sorted(Counter(partition_for(u.encode(), settings.partitions) for u in names).items()))}")

    say(f"saturation: {BACKGROUND_USERS} workload users, {SATURATION} commands as fast as they go ...")
    commands = workload.cycles(BACKGROUND_USERS, 12)
    sat = e2e._engine_phase(settings, [list(workload.accounts(BACKGROUND_USERS)),
                                       list(workload.deposits(BACKGROUND_USERS))],
                            list(itertools.islice(commands, SATURATION)), None)
    saturated = sat["per_s"]
    say(f"  saturated: {saturated} commands/s ({sat})")

    background = Background(settings, commands, BACKGROUND_SHARE * saturated)
    before = worker.get_json("/stats/")
    background.start()
    time.sleep(WARMUP_S)
    prices.heartbeat(False)  # from here every price record is a move (each one a few seconds after the last)
    say(f"moves, background at {background.rate:.0f} commands/s ...")
    moves: list[tuple[int, str]] = []  # (move, price id)
    for k in range(1, MOVES + 1):
        due = [user_name(i) for i in range(USERS) if slice_of(i) == k]
        t_move = time.monotonic()
        moves.append((k, prices.price(move_price(k))))
        while events.count_started(due) < len(due) and time.monotonic() - t_move < MOVE_TIMEOUT_S:
            time.sleep(0.02)
        landed = time.monotonic() - t_move
        say(f"  move {k:2}/{MOVES}: BTC {move_price(k)}, {events.count_started(due)}/{len(due)} liquidations "
            f"started within {landed:.2f}s; background sent {background.sent}")
        time.sleep(max(0.0, MOVE_GAP_S - landed))
    time.sleep(1.0)  # liquidations that should not happen (the control slice, a move early) have time to show
    background.stop()
    after = worker.get_json("/stats/")
    drain = _drain(settings)
    say(f"  background stopped; the worker's backlog drained in {drain:.2f}s")
    assert not background.ran_out, "the workload ran out of commands: generate more rounds"

    # every expected liquidation started once, crossed by its own move; nothing else liquidated
    with events.lock:
        started = {u: list(v) for u, v in events.started.items()}
        crossed = {u: list(v) for u, v in events.crossed.items()}
        stamp_types = dict(events.timestamp_types)
    move_ids = dict(moves)
    latencies, fanout, valuation, apply = [], [], [], []
    slowest: dict[str, Any] = {}
    per_move: dict[int, list[float]] = defaultdict(list)
    problems: list[str] = []
    for i in range(USERS):
        u, k = user_name(i), slice_of(i)
        got = started.get(u, [])
        if k > MOVES:
            if got or crossed.get(u):
                problems.append(f"{u} (control) liquidated: {got or crossed.get(u)}")
            continue
        ids = {ev["id"] for ev, _ in got}
        if len(ids) != 1:
            problems.append(f"{u}: {len(ids)} liquidations started, 1 expected")
            continue
        crossings = crossed.get(u, [])
        if len(crossings) != 1 or f"/system/{move_ids[k]}/p" not in crossings[0]["id"]:
            problems.append(f"{u}: crossed by {[c['id'] for c in crossings]}, expected move {k} ({move_ids[k]})")
            continue
        ev, applied_ms = min(got, key=lambda pair: pair[1])
        t0 = prices.appended[move_ids[k]]
        latencies.append(applied_ms - t0)
        per_move[k].append(applied_ms - t0)
        fanout.append(crossings[0]["ts_ms"] - t0)
        valuation.append(ev["ts_ms"] - crossings[0]["ts_ms"])
        apply.append(applied_ms - ev["ts_ms"])
        if applied_ms - t0 > slowest.get("ms", -1):
            slowest = {"ms": applied_ms - t0, "move": k, "partition": partition_for(u.encode(), settings.partitions),
                       "fanout_ms": fanout[-1], "valuation_ms": valuation[-1], "apply_ms": apply[-1]}
    others = sorted(set(started) - set(names))
    if others:
        problems.append(f"liquidated users outside the design: {others[:5]}")
    assert not problems, f"{len(problems)} liquidation problems: {problems[:5]}"
    t_read = time.monotonic()
    results, refused, answers = _results(settings)
    assert not refused, f"{sum(refused.values())} workload commands refused: {refused.most_common(5)}"
    say(f"  {results} workload results read back, none refused; Liquidate answers {dict(answers)} "
        f"({time.monotonic() - t_read:.1f}s)")
    assert answers["ACCEPTED"] == len(latencies), answers

    window = background.stopped - background.started
    busy = e2e._worker_time(before, after)
    produce_to_append = [prices.appended[pid] - prices.called[pid] for _, pid in moves]
    return {
        "price_to_liquidation_p50_ms": round(_pct(latencies, 0.5), 1),
        "price_to_liquidation_p99_ms": round(_pct(latencies, 0.99), 1),
        "price_to_liquidation_max_ms": round(max(latencies), 1),
        "liquidations": len(latencies),
        "liquidation_moves": MOVES,
        "liquidation_users": USERS,
        "liquidation_control_users": USERS - len(latencies),
        "liquidation_slowest": slowest,
        "liquidation_move_p99_ms": [round(_pct(per_move[k], 0.99), 1) for k in sorted(per_move)],
        "liquidation_fanout_p50_ms": round(_pct(fanout, 0.5), 1),
        "liquidation_fanout_p99_ms": round(_pct(fanout, 0.99), 1),
        "liquidation_valuation_p50_ms": round(_pct(valuation, 0.5), 1),
        "liquidation_valuation_p99_ms": round(_pct(valuation, 0.99), 1),
        "liquidation_apply_p50_ms": round(_pct(apply, 0.5), 1),
        "liquidation_apply_p99_ms": round(_pct(apply, 0.99), 1),
        "price_produce_to_append_max_ms": max(produce_to_append),
        "liquidate_answers": dict(sorted(answers.items())),
        "liquidation_started_records": sum(len(v) for v in started.values()),
        "liquidation_applied_stamp": "+".join(sorted(STAMPS.get(kind, str(kind)) for kind in stamp_types)),
        "saturated_rate": saturated,
        "background_rate": round(background.offered_per_s),
        "background_applied_per_s": round((after["commands"] - before["commands"]) / window),
        "background_commands": background.sent,
        "background_seconds": round(window, 1),
        "background_drain_s": round(drain, 2),
        **{f"liquidation_worker_{k}_s": v for k, v in busy.items()},
    }


if __name__ == "__main__":
    for key, value in run().items():
        print(f"  {key:<36} {value}")
