"""Issue 10's attacks, made as an adversarial client would make them: through CommandClient, against the
real broker and a real worker (no Kafka mocked). Each test says what it proves; each sends what a client
can send and checks the answers, the balances the worker serves, and what it wrote to Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Producer

from processors.wire import command_to_avro
from schemas import CODEC
from sinks.reconcile import wait_for_sink
from sinks.store import connect_when_up
from streams.client import CommandClient, read_topic
from streams.config import REPO_ROOT, Settings
from streams.kafka import producer_config
from streams.topics import COMMANDS, DEAD_LETTER, create_all
from streams.workers import sink_process
from tests.integration.engine_run import (
    Answers,
    accepted,
    balances,
    barrier,
    deposit,
    fill,
    free_port,
    hold,
    input_times,
    ledger_by_id,
    ledger_entry_lines,
    minor,
    open_account,
    open_funded,
    results_on_topic,
    send,
    settings_of,
    start,
    stored_values,
    transfer,
    worker,
)

pytestmark = pytest.mark.integration


def test_a_fill_resent_after_10000_inputs_and_a_restart_settles_once(isolated_env: dict[str, str],
                                                                     tmp_path: Path) -> None:
    """A matching engine replays a fill long after, and after the worker restarted: far outside the state's
    window of 64 recent ids. The resend gets the first answer and credits nothing; the same fill under a
    new input id is refused FILL_SETTLED; the ledger has the fill's lines once."""
    settings = settings_of(isolated_env)
    create_all(settings)
    port = free_port()  # the same port and env again: the restarted worker opens the same state dir
    first = worker(isolated_env, tmp_path / "first.log", port)
    second = worker(isolated_env, tmp_path / "second.log", port)
    user = "maker"
    try:
        start(first)
        client, answers = CommandClient(settings), Answers(settings)
        open_funded(client, answers, user, "1000000")
        accepted(send(client, answers, [hold("h1", user, "o1", "100")]))
        settle = fill("f1", user, "x1", "o1", "10", "0.001")
        [settled] = send(client, answers, [settle])
        assert (settled.status, settled.reason, settled.ledger_lines) == ("ACCEPTED", None, 4)
        # 10,000 of the user's inputs in between (net zero: half there, half back)
        others = [transfer(f"t{i}", user, "1", *(("spot", "margin") if i % 2 else ("margin", "spot")))
                  for i in range(1, 10_001)]
        accepted(send(client, answers, others, timeout=300))
        first.stop()
        assert not first.alive()

        start(second)
        replayed = settle._replace(id="f1-replayed")  # the same fill under another input id
        resent, other = send(client, answers, [settle, replayed], batch=False)
        assert resent == settled, "a resend gets the first answer"
        assert (other.status, other.reason) == ("REJECTED", "FILL_SETTLED")
        # An equal answer alone proves nothing (applying the fill again answers the same): the balances and
        # the ledger do.
        barrier(client, answers, user)

        assert balances(second, user) == {
            ("spot", "USDT"): (minor("USDT", "999900"), minor("USDT", "90"), 0),
            ("spot", "BTC"): (minor("BTC", "0.001"), 0, 0),  # credited once
        }
        lines = ledger_by_id(settings)
        per_entry = ledger_entry_lines(settings)
        assert per_entry[f"user/{settle.id}"] == settled.ledger_lines, "the fill's lines were written once"
        assert per_entry[f"user/{replayed.id}"] == 0
        assert len(lines) == sum(per_entry.values()), "no ledger line was sent twice"
        btc = sum(minor("BTC", line["amount"]) for line in lines.values()
                  if line["user_id"] == user and line["asset"] == "BTC")
        assert btc == minor("BTC", "0.001")
    finally:
        first.stop()
        second.stop()


def _squat(isolated_env: dict[str, str], tmp_path: Path) -> Settings:
    """A user takes the id of their coming deposit (`chain:tx:log_index`, visible in the mempool) for a
    command of their own; then the deposit comes. Ids are unique per source only: it is credited, and each
    source's input keeps its own answer. Returns the run's settings (its topics) for what the caller checks."""
    settings = settings_of(isolated_env)
    create_all(settings)
    w = worker(isolated_env, tmp_path / "w.log", free_port())
    user = "squatter"
    try:
        start(w)
        client, answers = CommandClient(settings), Answers(settings)
        open_funded(client, answers, user, "100")
        coming = deposit(user, "0xcoming", "500")
        squat = transfer(coming.id, user, "1")  # the user's own source, the deposit's id
        [squatted] = send(client, answers, [squat])
        assert (squatted.status, squatted.ledger_lines) == ("ACCEPTED", 2), "the user's command applies"
        [credited] = send(client, answers, [coming])
        assert (credited.kind, credited.status, credited.reason, credited.ledger_lines) == (
            "DepositConfirmed", "ACCEPTED", None, 2), "the deposit is credited, not answered with the squat's result"
        squat_again, coming_again = send(client, answers, [squat, coming], batch=False)
        assert squat_again == squatted, "the user's resend: its own first answer"
        assert (coming_again.status, coming_again.ledger_lines) == ("ACCEPTED", 0), "credited once"
        barrier(client, answers, user)
        assert balances(w, user) == {("spot", "USDT"): (minor("USDT", "599"), 0, 0),
                                     ("margin", "USDT"): (minor("USDT", "1"), 0, 0)}
        return settings
    finally:
        w.stop()


def test_a_user_command_squatting_a_deposit_id_does_not_stop_the_deposit(isolated_env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    _squat(isolated_env, tmp_path)


def test_a_squatted_deposit_id_gives_its_ledger_lines_ids_of_their_own(isolated_env: dict[str, str],
                                                                       tmp_path: Path) -> None:
    settings = _squat(isolated_env, tmp_path)
    lines = ledger_by_id(settings)  # fails on an id written with two contents
    assert len(lines) == sum(ledger_entry_lines(settings).values()) == 2 + 2 + 2


def test_a_deposit_sent_with_its_account_opening_is_credited_whichever_topic_is_read_first(
        isolated_env: dict[str, str], tmp_path: Path) -> None:
    """The opening travels on the commands topic, the deposit on the chain-events topic: no order between
    them. (a) The deposit is read first: it waits (PARKED) and is credited when the account opens. (b) The
    opening is read first: credited at once. (c) Both sent at once, for several users: credited either way,
    once."""
    settings = settings_of(isolated_env)
    create_all(settings)
    w = worker(isolated_env, tmp_path / "w.log", free_port())
    try:
        start(w)
        client, answers = CommandClient(settings), Answers(settings)
        early = deposit("early", "0xearly", "700")
        [parked] = send(client, answers, [early])
        assert (parked.status, parked.reason, parked.ledger_lines) == ("ACCEPTED", "PARKED", 0)
        [opened] = send(client, answers, [open_account("early")])
        assert (opened.status, opened.ledger_lines) == ("ACCEPTED", 2), "the waiting deposit applies on opening"
        [again] = send(client, answers, [early])
        assert (again.status, again.ledger_lines) == ("ACCEPTED", 0), "and only then"

        accepted(send(client, answers, [open_account("ordered")]))
        [credited] = send(client, answers, [deposit("ordered", "0xordered", "700")])
        assert (credited.status, credited.reason, credited.ledger_lines) == ("ACCEPTED", None, 2)

        # (c) in one send: the deposits' records are produced first (send_batch keeps the order of its
        # topic/partition groups), then the openings', so that neither topic is favoured by the sending
        together = [f"together-{i}" for i in range(16)]
        deposits_first = [deposit(u, f"0x{u}", "700") for u in together]
        openings = [open_account(u) for u in together]
        got = send(client, answers, deposits_first + openings)
        orders: Counter[str] = Counter()
        for dep, opening in zip(got[:16], got[16:], strict=True):
            if dep.reason == "PARKED":
                assert (dep.status, dep.ledger_lines, opening.status, opening.ledger_lines) == (
                    "ACCEPTED", 0, "ACCEPTED", 2), (opening, dep)
                orders["deposit read first"] += 1
            else:
                assert (dep.status, dep.reason, dep.ledger_lines, opening.status, opening.ledger_lines) == (
                    "ACCEPTED", None, 2, "ACCEPTED", 0), (opening, dep)
                orders["opening read first"] += 1
        print(f"\nboth at once: {dict(orders)}")

        barrier(client, answers, "ordered")
        for user in ["early", "ordered", *together]:
            assert balances(w, user) == {("spot", "USDT"): (minor("USDT", "700"), 0, 0)}, user
        per_entry = ledger_entry_lines(settings)
        deposits = [early.id, credited.id, *(c.id for c in deposits_first)]
        assert {i: per_entry[f"chain/{i}"] for i in deposits} == dict.fromkeys(deposits, 2), \
            "each deposit's lines once"
        assert len(ledger_by_id(settings)) == sum(per_entry.values()) == 2 * len(deposits)
    finally:
        w.stop()


def test_a_5000_digit_amount_and_a_failing_input_are_answered_and_the_user_goes_on(isolated_env: dict[str, str],
                                                                                   tmp_path: Path) -> None:
    """A 5,000-digit amount (Python's int parser would raise) is refused AMOUNT_TOO_LARGE, on either input
    topic. An input the core fails on (an assertion, injected) is answered INTERNAL_ERROR and goes to the
    dead-letter topic with its bytes; its user's inputs before and after it apply; the worker stays up."""
    settings = settings_of(isolated_env)
    create_all(settings)
    user = "poisoner"
    boom = transfer("q-boom", user, "1")
    w = worker(isolated_env, tmp_path / "w.log", free_port(), POSFLOW_FAULT_ASSERT_ON=boom.id)
    try:
        start(w)
        client, answers = CommandClient(settings), Answers(settings)
        open_funded(client, answers, user, "1000")
        huge = "9" * 5000
        inputs = [transfer("q-before", user, "2"), transfer("q-huge", user, huge), boom,
                  deposit(user, "0xhuge", huge), transfer("q-after", user, "5")]
        # One record each, sent in a row: mostly taken in one step, where the quarantine rebuilds the user's
        # state from the stored one and the inputs of the step before the failing one.
        got = send(client, answers, inputs, batch=False)
        assert [(r.status, r.reason, r.ledger_lines) for r in got] == [
            ("ACCEPTED", None, 2), ("REJECTED", "AMOUNT_TOO_LARGE", 0), ("REJECTED", "INTERNAL_ERROR", 0),
            ("REJECTED", "AMOUNT_TOO_LARGE", 0), ("ACCEPTED", None, 2)]
        [following] = send(client, answers, [transfer("q-next", user, "3")])  # a later step
        assert (following.status, following.ledger_lines) == ("ACCEPTED", 2)
        barrier(client, answers, user)
        assert balances(w, user) == {("spot", "USDT"): (minor("USDT", "990"), 0, 0),
                                     ("margin", "USDT"): (minor("USDT", "10"), 0, 0)}

        dead = [CODEC.decode_as("DeadLetter", v) for *_, v in read_topic(settings, DEAD_LETTER.name(settings))]
        assert len(dead) == 1, dead
        assert dead[0]["value"] == CODEC.encode("Command", command_to_avro(boom)), "the record's own bytes"
        assert dead[0]["source_topic"] == COMMANDS.name(settings) and boom.id in dead[0]["error"]
        assert w.get_json("/stats/")["quarantined"] == 1
        assert w.alive(), "the worker did not exit"
    finally:
        w.stop()


YEAR_1 = -62_135_596_800_000  # 0001-01-01T00:00:00Z
YEAR_10000 = 253_402_300_800_000  # 10000-01-01T00:00:00Z
INT64_MAX = 2**63 - 1


def test_far_past_and_far_future_client_times_change_nothing(isolated_env: dict[str, str], tmp_path: Path) -> None:
    """Client times of year 1, 1 ms after the epoch, year 10000 and int64's max, and a record whose Kafka
    timestamp the producer set to 1 ms: engine time is the broker's (LogAppendTime), so nothing expires or
    is remembered by the client's clock, every ledger line carries its input record's broker time, and the
    sink and `posflow reconcile` take it all."""
    env = {**isolated_env, "CLICKHOUSE_URL": ""}  # the sink's chDB under the test's POSFLOW_HOME
    settings = settings_of(env)
    create_all(settings)
    w = worker(env, tmp_path / "w.log", free_port())
    sink = sink_process(env, tmp_path / "sink.log", free_port(), True)
    user = "clock"
    try:
        start(w)
        sink.start()
        client, answers = CommandClient(settings), Answers(settings)
        # A deposit waits for its account; the opening's client time is int64's max. Parked events expire
        # after 7 days of engine time: by the client's clock this one would be given up.
        waiting = deposit("late", "0xlate", "700", ts_ms=1)
        [parked] = send(client, answers, [waiting])
        assert parked.reason == "PARKED"
        late_open = open_account("late", ts_ms=INT64_MAX)
        [opened] = send(client, answers, [late_open])
        assert (opened.status, opened.reason, opened.ledger_lines) == ("ACCEPTED", None, 2), "credited, not expired"
        assert not [r for r in answers.all if r.reason == "PARKED_EXPIRED"]

        accepted(send(client, answers, [open_account(user, ts_ms=YEAR_1)]))
        [funded] = send(client, answers, [deposit(user, "0xclock", "1000", ts_ms=INT64_MAX)])
        assert (funded.status, funded.ledger_lines) == ("ACCEPTED", 2)
        past = transfer("past", user, "1", ts_ms=1)
        timed = [past, transfer("year-1", user, "2", ts_ms=YEAR_1),
                 transfer("year-10000", user, "3", dst="futures", ts_ms=YEAR_10000),
                 hold("int64-max", user, "o1", "4", ts_ms=INT64_MAX)]
        firsts = accepted(send(client, answers, timed))
        assert [r.ts_ms for r in firsts] == [c.ts_ms for c in timed], "the client's time stays in its result"
        # the producer sets the record's Kafka timestamp to 1 ms; the input topics stamp the broker's time
        stamped = transfer("stamped", user, "5", ts_ms=1)
        raw = Producer(producer_config(settings))
        since = answers.mark()
        raw.produce(COMMANDS.name(settings), CODEC.encode("Command", command_to_avro(stamped)), user.encode(),
                    timestamp=1)
        assert raw.flush(30) == 0
        accepted(answers.wait_for([stamped], since))
        # The state's window of 64 forgets "past"; the engine's memory keeps its id for 8 days of engine
        # time. Resent with a client time of int64's max (the client's clock is not part of the input): by
        # the client's clock the id would have expired long ago, and the resend would apply.
        accepted(send(client, answers, [transfer(f"back{i}", user, "0.01", "margin", "spot") for i in range(64)]))
        [resent] = send(client, answers, [past._replace(ts_ms=INT64_MAX)])
        assert resent == firsts[0], "a resend long after: its first answer, nothing applied"
        barrier(client, answers, user)
        assert balances(w, user) == {("spot", "USDT"): (minor("USDT", "985.64"), minor("USDT", "4"), 0),
                                     ("margin", "USDT"): (minor("USDT", "7.36"), 0, 0),
                                     ("futures", "USDT"): (minor("USDT", "3"), 0, 0)}
        assert balances(w, "late") == {("spot", "USDT"): (minor("USDT", "700"), 0, 0)}

        # every ledger line is at the broker's time of the input record that made it
        times = input_times(settings)
        assert {kind for stamps in times.values() for kind, _ in stamps} == {TIMESTAMP_LOG_APPEND_TIME}
        lines = ledger_by_id(settings)
        assert lines and len(lines) == sum(ledger_entry_lines(settings).values())
        for line in lines.values():
            input_id = line["entry_id"].split("/", 1)[1]  # entry ids are <source>/<input id>
            made_by = late_open.id if input_id == waiting.id else input_id
            assert line["ts_ms"] == times[made_by][0][1], (line, times[made_by])

        # the sink lands it all, dead-letters nothing and does not crash; reconcile finds no drift
        assert wait_for_sink(settings, 120) == {}, "the sink did not land the ledger"
        store = connect_when_up(sink.url)
        wanted = {(c.id, c.ts_ms) for c in [waiting, late_open, *timed]}
        deadline = time.monotonic() + 60
        while True:
            landed = set(store.query("SELECT id, ts_ms FROM results FINAL").rows)
            if wanted <= landed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert wanted <= landed, wanted - landed
        assert store.query("SELECT count() FROM ledger_lines FINAL").scalar() == len(lines)
        store.close()
        sink.stop()
        assert sink.exits == [], f"the sink crashed: {sink.log_tail()}"
        assert read_topic(settings, DEAD_LETTER.name(settings)) == [], "nothing was dead-lettered"
        check = subprocess.run([sys.executable, "-m", "streams.cli", "reconcile"], env={**os.environ, **env},
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "reconciliation: no drift" in check.stdout
    finally:
        sink.stop()
        w.stop()


def test_dust_and_invented_sub_accounts_leave_the_state_small_and_every_output_once(
        isolated_env: dict[str, str], tmp_path: Path) -> None:
    """20,000 dust deposits (below the minimum: recorded, not credited) and 20,000 transfers into sub-accounts
    a user makes up (unlisted or malformed isolated pairs, unknown names; every fourth into a real one):
    every stored version of the user's state stays under the documented 64 KB, the worker goes on serving,
    every input has exactly one result on the results topic, and every ledger line was written once."""
    settings = settings_of(isolated_env)
    create_all(settings)
    w = worker(isolated_env, tmp_path / "w.log", free_port())
    user = "attacker"
    real = ["margin", "futures", "staking", "isolated:BTC-USDT", "isolated:ETH-USDT", "isolated:USDC-USDT"]

    def invented(i: int) -> str:
        return [real[(i // 4) % len(real)], f"isolated:X{i}-USDT", f"isolated:X{i}-Y", f"sub{i}"][i % 4]

    try:
        start(w)
        client, answers = CommandClient(settings), Answers(settings)
        open_funded(client, answers, user, "1000")
        dust = [deposit(user, f"0xdust{i}", "0.000001") for i in range(20_000)]
        moves = [transfer(f"move{i}", user, "0.000001", "spot", invented(i)) for i in range(20_000)]
        got = send(client, answers, dust + moves, timeout=600)
        assert Counter((r.status, r.reason, r.ledger_lines) for r in got[:20_000]) == {
            ("ACCEPTED", "BELOW_MINIMUM", 0): 20_000}
        assert Counter((r.status, r.reason) for r in got[20_000:]) == {
            ("ACCEPTED", None): 5_000, ("REJECTED", "UNKNOWN_ACCOUNT"): 15_000}
        after = transfer("after-attack", user, "1")
        [normal] = send(client, answers, [after])
        assert (normal.status, normal.ledger_lines) == ("ACCEPTED", 2), "the worker still serves the user"
        barrier(client, answers, user)
        assert w.alive()

        want: Counter[str] = Counter({"spot": minor("USDT", "999") - 5_000})
        want["margin"] += minor("USDT", "1")
        for i in range(0, 20_000, 4):
            want[invented(i)] += 1
        assert balances(w, user) == {(a, "USDT"): (n, 0, 0) for a, n in want.items()}

        sizes = [len(v) for v in stored_values(settings, user.encode())]
        print(f"\n{len(sizes)} stored versions of the state, largest {max(sizes)} bytes, last {sizes[-1]}")
        assert max(sizes) < 64_000, "the documented bound (README, Bounded state)"

        sent = [c.kind + "/" + c.id for c in [*dust, *moves, after]]
        on_topic = Counter(r.kind + "/" + r.id for r in results_on_topic(settings))
        twice = [k for k, n in on_topic.items() if n != 1]
        assert not twice, f"{len(twice)} inputs answered more than once, e.g. {twice[:3]}"
        assert set(sent) <= set(on_topic)
        lines = ledger_by_id(settings)
        assert len(lines) == sum(ledger_entry_lines(settings).values()), "a ledger line was sent twice"
    finally:
        w.stop()
