"""Margin against the real broker and worker: prices and pool rates published to the prices topic reach
every partition through the worker's fan-out, a loan is valued at the price in force, and a price older than
`price_max_age_ms` of engine time is no price."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from processors.messages import Command, Result
from streams.client import CommandClient, read_topic
from streams.market import MarketFeed
from streams.topics import SYSTEM, create_all
from tests.integration.engine_run import (
    Answers,
    accepted,
    free_port,
    open_funded,
    send,
    settings_of,
    start,
    transfer,
    worker,
)

pytestmark = pytest.mark.integration

MAX_AGE_MS = 4_000


def borrow(user: str, asset: str, amount: str) -> Command:
    return Command(f"borrow-{uuid.uuid4().hex[:8]}", 1, user, "Borrow",
                   {"account": "margin", "asset": asset, "amount": amount})


def until(client: CommandClient, answers: Answers, make: Callable[[], Command], want: str,
          timeout: float = 60.0) -> Result:
    """Send a fresh copy of the input until its answer's reason (or status) is `want`: the price travels on
    another topic than the command, with no order between them."""
    deadline = time.monotonic() + timeout
    while True:
        [got] = send(client, answers, [make()])
        if (got.reason or got.status) == want or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def test_prices_reach_every_partition_and_age_by_engine_time(isolated_env: dict[str, str], tmp_path: Path) -> None:
    settings = settings_of(isolated_env)
    create_all(settings)
    w = start(worker(isolated_env, tmp_path / "w.log", free_port(),
                     POSFLOW_ENGINE_OVERRIDES=json.dumps({"price_max_age_ms": MAX_AGE_MS})))
    try:
        client, answers, feed = CommandClient(settings), Answers(settings), MarketFeed(settings)
        open_funded(client, answers, "mu", "1000")
        accepted(send(client, answers, [transfer("to-margin", "mu", "1000")]))
        feed.rate("BTC", "10", "100")
        feed.flush()
        # a BTC loan values BTC: refused until a price is in force
        [early] = send(client, answers, [borrow("mu", "BTC", "0.001")])
        assert early.reason in ("PRICE_UNAVAILABLE", "NO_LENDING_POOL"), early
        feed.price("BTC", "60000")
        feed.flush()
        got = until(client, answers, lambda: borrow("mu", "BTC", "0.001"), "ACCEPTED")
        assert got.status == "ACCEPTED", got
        # the margin view, from the worker that owns the user, and as `posflow margin` prints it
        view = w.get_json("/users/mu/margin")
        [account] = view["accounts"]
        assert account["account"] == "margin" and account["tier"] == "cross-3x" and account["band"] == "healthy"
        assert [ln["asset"] for ln in account["loans"]] == ["BTC"] and account["loans"][0]["principal"] == "0.00100000"
        printed = subprocess.run([sys.executable, "-m", "streams.cli", "margin", "mu", "--worker", w.url],
                                 capture_output=True, text=True, env={**os.environ, **isolated_env}, check=True).stdout
        assert "cross-3x" in printed and "0.00100000" in printed, printed
        copies = [CodecView(v) for _, _, _, v in read_topic(settings, SYSTEM.name(settings))]
        prices = [c for c in copies if c.kind == "MarkPrice"]
        assert sorted(c.partition for c in prices) == list(range(settings.partitions)), "one copy per partition"
        # no newer price: past its age (engine time moves with the clock ticks and the inputs) it is none
        time.sleep(MAX_AGE_MS / 1000 + 1)
        stale = until(client, answers, lambda: borrow("mu", "BTC", "0.001"), "PRICE_UNAVAILABLE")
        assert stale.reason == "PRICE_UNAVAILABLE", stale
        stats = w.get_json("/stats/")
        assert stats["fanned_out"] >= 2 and stats["quarantined"] == 0
        answers.close()
    finally:
        w.stop()


class CodecView:
    """A system-inputs record as the fan-out wrote it."""

    def __init__(self, value: bytes) -> None:
        from processors.wire import command_from_avro
        from schemas import CODEC

        _, record = CODEC.decode(value)
        cmd = command_from_avro(record)
        self.kind = cmd.kind
        self.partition = int(cmd.body.get("partition", -1))
