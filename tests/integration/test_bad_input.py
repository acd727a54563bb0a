"""Bad input against a real worker: each gets its rejection or dead-letter entry, the worker goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Producer

from processors.agents import EXIT_RESTART
from processors.inputs import command
from processors.messages import Command, OpenAccount, Transfer
from processors.wire import command_to_avro
from schemas import CODEC
from streams.client import CommandClient, ResultWatcher, read_topic
from streams.config import Settings
from streams.kafka import producer_config
from streams.topics import COMMANDS, DEAD_LETTER, create_all
from streams.workers import WorkerProcess

pytestmark = pytest.mark.integration


def transfer(cmd_id: str, user: str, amount: str) -> Command:
    return command(Transfer, cmd_id, user, asset="USDT", amount=amount, from_account="spot", to_account="margin")


def test_bad_input_is_refused_or_dead_lettered_and_the_worker_goes_on(
        isolated_env: dict[str, str], tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap=isolated_env["KAFKA_BOOTSTRAP"],
                        topic_prefix=isolated_env["POSFLOW_TOPIC_PREFIX"], app_id=isolated_env["POSFLOW_APP_ID"])
    create_all(settings)
    worker = WorkerProcess("streams.worker", 16501, isolated_env, tmp_path / "w.log", supervise=True).start()
    try:
        watcher = ResultWatcher(settings)
        client = CommandClient(settings)
        raw = Producer(producer_config(settings))
        truncated = CODEC.encode("Command", command_to_avro(transfer("c", "eve", "1")))[:-4]
        garbage = [b"", b"\x00\x01not avro", b"\xc3\x01" + b"\xff" * 8 + b"x", truncated]
        for value in garbage:
            raw.produce(COMMANDS.name(settings), value, b"eve")
        raw.flush(10)
        cmds = [
            transfer("unknown-user", "nobody", "1"),
            command(OpenAccount, "open", "eve", kyc_tier=1, region="DE"),
        ]
        client.send_batch(cmds)
        client.flush()
        watcher.wait_for([c.id for c in cmds], timeout=120)
        later = [
            transfer("wrong-scale", "eve", "0.0000001"),
            transfer("negative", "eve", "-3"),
            transfer("too-long", "eve", "1" * 40),
            transfer("no-funds", "eve", "5"),
            command(OpenAccount, "odd-user", "\x00root", kyc_tier=1, region="DE"),
        ]
        for c in later:
            client.send(c)
        client.flush()
        got = watcher.wait_for([c.id for c in cmds + later], timeout=120)
        assert {i: (r.status, r.reason) for i, r in got.items()} == {
            "unknown-user": ("REJECTED", "UNKNOWN_USER"),
            "open": ("ACCEPTED", None),
            "wrong-scale": ("REJECTED", "BAD_AMOUNT_SCALE"),
            "negative": ("REJECTED", "NON_POSITIVE_AMOUNT"),
            "too-long": ("REJECTED", "AMOUNT_TOO_LARGE"),
            "no-funds": ("REJECTED", "INSUFFICIENT_FUNDS"),
            "odd-user": ("REJECTED", "MALFORMED_COMMAND"),
        }
        dead = [CODEC.decode_as("DeadLetter", v) for *_, v in read_topic(settings, DEAD_LETTER.name(settings))]
        assert sorted(d["value"] or b"" for d in dead) == sorted(garbage)
        assert all(d["error"] and d["source_topic"] == COMMANDS.name(settings) for d in dead)
        # The only exits allowed are the watchdog's deliberate restarts (a Faust stall, not the input).
        assert [code for code in worker.exits if code != EXIT_RESTART] == [], "bad input crashed the worker"
    finally:
        worker.stop()
