"""A price crash that liquidates many users at once, against the real broker and two workers, one of them killed
with SIGKILL while the liquidations run; the matching engine's stand-in fills the orders. Afterwards every user was
liquidated once (one LiquidationStarted, one order, one LiquidationCompleted), balances equal the model worked out
by hand (tests/unit/test_liquidation.py has the same account), and no ledger id has two contents.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from processors.ledger import INSURANCE_FUND
from processors.messages import Command
from schemas import CODEC
from streams.client import CommandClient, read_topic
from streams.market import MarketFeed
from streams.matching_standin import MatchingStandIn
from streams.topics import LIQUIDATION_ORDERS, MARGIN_EVENTS, create_all
from tests.integration.engine_run import (
    Answers,
    accepted,
    balances,
    ledger_by_id,
    open_account,
    send,
    settings_of,
    transfer,
    worker,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS = 40
USDT, SAT = 10**6, 10**8
BTC_HELD = 4_983_333  # 2,990 USDT at 60,000, down to the satoshi
FIRST_HOUR = 4_544  # 1,990 USDT for an hour at 2% a year (the pool 45% lent out), rounded up


def expected(hours: int) -> dict[tuple[str, str], tuple[int, int, int]]:
    """The margin account after its liquidation at 43,000, filled at the mark, with `hours` of interest booked
    (the run may cross a full hour between the loan and the liquidation): sized for the debt + 7%, rounded up to
    the satoshi; the proceeds pay the debt, then 2% (rounded up) to the fund, the rest stays."""
    debt = 1_990 * USDT + hours * FIRST_HOUR
    budget = -(-debt * 107 // 100)
    sell = -(-budget * SAT // (43_000 * USDT))
    proceeds = sell * 43_000 * USDT // SAT
    fee = -(-proceeds * 2 // 100)
    return {("margin", "USDT"): (proceeds - debt - fee, 0, 0), ("margin", "BTC"): (BTC_HELD - sell, 0, 0)}


def build(user: str) -> list[list[Command]]:
    """The user's inputs in the order they must apply: each list after the answers of the one before."""
    def c(kind: str, cmd_id: str, body: dict[str, object]) -> Command:
        return Command(f"{user}-{cmd_id}", 1, user, kind, body)

    return [
        [open_account(user)],
        [Command(f"ethereum:0x{user}-funds:0", 1, user, "DepositConfirmed",
                 {"chain": "ethereum", "tx_hash": f"0x{user}-funds", "log_index": 0, "address": "0x" + "ab" * 20,
                  "asset": "USDT", "amount": "1000", "block_number": 1, "account": "spot"})],
        [transfer(f"{user}-in", user, "1000")],
        [c("Borrow", "b", {"account": "margin", "asset": "USDT", "amount": "1990"})],
        [c("OrderHold", "buy", {"order_id": "buy", "account": "margin", "asset": "USDT", "amount": "2990"})],
        [c("FillSettle", "buy-f", {"fill_id": "f", "order_id": "buy", "account": "margin", "pay_asset": "USDT",
                                   "pay_amount": "2990", "receive_asset": "BTC", "receive_amount": "0.04983333",
                                   "fee_amount": "0"})],
    ]


def test_a_price_crash_liquidates_every_user_once_while_a_worker_is_killed(isolated_env: dict[str, str],
                                                                          tmp_path: Path) -> None:
    env = {**isolated_env, "POSFLOW_SESSION_TIMEOUT_S": "6", "POSFLOW_STALL_S": "12"}
    settings = settings_of(env)
    create_all(settings)
    workers = [worker({**env, "POSFLOW_HOME": str(tmp_path / f"w{i}")}, tmp_path / f"w{i}.log", port,
                      supervise=True) for i, port in enumerate((16451, 16452))]
    users = [f"liq{i}" for i in range(USERS)]
    stop = threading.Event()
    standin = MatchingStandIn(settings, Decimal(0))
    feed = MarketFeed(settings)

    def keep_pricing(btc: list[str]) -> None:
        """The feed publishes every half second, as a real one does (a price older than 30 s is none)."""
        while not stop.is_set():
            feed.price("BTC", btc[0])
            feed.rate("USDT", "450", "1000")
            feed.flush()
            stop.wait(0.5)

    def keep_filling() -> None:
        while not stop.is_set():
            standin.poll(0.2)

    btc = ["60000"]
    threads = [threading.Thread(target=keep_pricing, args=(btc,), daemon=True),
               threading.Thread(target=keep_filling, daemon=True)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.wait_until("/stats/", lambda s: True, timeout=120)
        for t in threads:
            t.start()
        client, answers = CommandClient(settings), Answers(settings)
        plans = [build(u) for u in users]
        for step in range(len(plans[0])):
            pending = [cmd for plan in plans for cmd in plan[step]]
            deadline = time.monotonic() + 60
            while pending:
                got = send(client, answers, pending)
                # a loan waits for the first price and rate to reach its partition (another topic: no order)
                early = {r.id for r in got if r.reason in ("PRICE_UNAVAILABLE", "NO_LENDING_POOL")}
                accepted([r for r in got if r.id not in early])
                pending = [cmd._replace(id=f"{cmd.id}+") for cmd in pending if cmd.id in early]
                assert time.monotonic() < deadline or not pending, got[:3]
                time.sleep(0.5 if pending else 0)

        # the crash: every account crosses 1.1 at once; a worker dies in the middle of it
        btc[0] = "43000"
        time.sleep(random.uniform(0.3, 2.0))
        victim = random.choice(workers)
        victim.kill()
        print(f"killed worker {victim.web_port}")

        def done() -> bool:
            try:
                views = [workers[0].get_json(f"/users/{u}/margin") for u in users]
            except Exception:
                return False
            return all(not v["accounts"] or all(a["status"] == "normal" and a["band"] == "healthy"
                                                 for a in v["accounts"]) for v in views)

        deadline = time.monotonic() + 180
        while not done():
            assert time.monotonic() < deadline, "liquidations did not complete within 180 s"
            time.sleep(1)
        stop.set()
        for t in threads:
            t.join(10)

        events: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for *_, value in read_topic(settings, MARGIN_EVENTS.name(settings)):
            _, ev = CODEC.decode(value)
            events[ev["user_id"]][ev["kind"]].add(ev["id"])
        orders: dict[str, set[str]] = defaultdict(set)
        for *_, value in read_topic(settings, LIQUIDATION_ORDERS.name(settings)):
            _, order = CODEC.decode(value)
            orders[order["user_id"]].add(order["id"])
        for u in users:
            assert len(events[u]["LiquidationStarted"]) == 1, (u, events[u])
            assert len(events[u]["LiquidationCompleted"]) == 1, (u, events[u])
            assert len(orders[u]) == 1, (u, orders[u])
            got_balances = {k: v for k, v in balances(workers[0], u).items() if k[0] == "margin"}
            assert got_balances in (expected(1), expected(2)), (u, got_balances)
        ledger = ledger_by_id(settings)  # raises if an id has two contents
        sums: dict[str, int] = defaultdict(int)
        for line in ledger.values():
            sums[line["asset"]] += int(Decimal(line["amount"]) * 10**(8 if line["asset"] == "BTC" else 6))
        assert all(v == 0 for v in sums.values()), sums
        fund = [ln for ln in ledger.values() if ln["account"] == INSURANCE_FUND]
        assert len(fund) == USERS and all(Decimal(ln["amount"]) > 0 for ln in fund), "fees in, no shortfall"
        answers.close()
    finally:
        stop.set()
        standin.close()
        for w in workers:
            w.stop()
