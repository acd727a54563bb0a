"""The demo's margin day (`make demo`, after the spot day): two users borrow USDT in cross margin (3x) and buy BTC;
the BTC mark price falls along a path; dave gets a margin call, then is liquidated (his debt repaid, the rest
returned); erin, less leveraged, survives until a gap down to 20,000 liquidates her below her debt, and the
insurance fund pays the shortfall. The matching engine's stand-in fills the liquidation orders at the mark.

dave: 1,000 USDT of his own, 1,990 borrowed, 0.04983333 BTC bought at 60,000: liquidation at or below 43,926.
erin: 1,000 USDT of her own, 1,000 borrowed, 0.03333333 BTC bought at 60,000: liquidation at or below 33,000.
mia, a market maker, is the other side of every trade (their buys, and the liquidations' sales), so clearing nets
to zero.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from processors.messages import Command, Result
from schemas import CODEC
from streams.client import CommandClient, ResultWatcher, read_topic
from streams.config import Settings
from streams.market import MarketFeed
from streams.matching_standin import MatchingStandIn
from streams.table import print_table
from streams.topics import LIQUIDATION_ORDERS, MARGIN_EVENTS
from streams.workers import WorkerProcess

PATH = ("60000", "55000", "51000", "47000", "43000", "40000", "36000", "20000")
USERS = {"dave": ("1990", "2990", "0.04983333"), "erin": ("1000", "2000", "0.03333333")}  # borrow, spend, BTC


MAKER = ("mia", "mia-bid", "USDT")  # the maker's bid the liquidations sell into


def _maker() -> list[list[Command]]:
    def c(kind: str, n: str, body: dict[str, Any]) -> Command:
        return Command(f"mia-m{n}-{kind}", int(time.time() * 1000), "mia", kind, body)

    fills = [c("FillSettle", f"5-{u}", {"fill_id": f"{u}-F1", "order_id": "mia-ask", "account": "spot",
                                         "pay_asset": "BTC", "pay_amount": btc, "receive_asset": "USDT",
                                         "receive_amount": spend, "fee_amount": "0"})
             for u, (_, spend, btc) in USERS.items()]
    return [
        [c("OpenAccount", "1", {"kyc_tier": 3, "region": "DE"})],
        [Command("bitcoin:mia-btc:0", 0, "mia", "DepositConfirmed",
                 {"chain": "bitcoin", "tx_hash": "mia-btc", "log_index": 0,
                  "address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", "asset": "BTC", "amount": "1",
                  "block_number": 300, "account": "spot"}),
         Command("ethereum:0xmia-usdt:0", 0, "mia", "DepositConfirmed",
                 {"chain": "ethereum", "tx_hash": "0xmia-usdt", "log_index": 0, "address": "0x" + "d1" * 20,
                  "asset": "USDT", "amount": "100000", "block_number": 300, "account": "spot"})],
        [c("OrderHold", "2", {"order_id": "mia-ask", "account": "spot", "asset": "BTC", "amount": "0.5"}),
         c("OrderHold", "3", {"order_id": "mia-bid", "account": "spot", "asset": "USDT", "amount": "50000"})],
        [], [], fills,
    ]


def _setup(user: str, borrow: str, spend: str, btc: str) -> list[list[Command]]:
    def c(kind: str, n: str, body: dict[str, Any]) -> Command:
        return Command(f"{user}-m{n}-{kind}", int(time.time() * 1000), user, kind, body)

    return [
        [c("OpenAccount", "1", {"kyc_tier": 2, "region": "DE"})],
        [Command(f"ethereum:0x{user}-margin-funds:0", 0, user, "DepositConfirmed",
                 {"chain": "ethereum", "tx_hash": f"0x{user}-margin-funds", "log_index": 0, "address": "0x" + "d0" * 20,
                  "asset": "USDT", "amount": "1000", "block_number": 200, "account": "spot"})],
        [c("Transfer", "2", {"asset": "USDT", "amount": "1000", "from_account": "spot", "to_account": "margin"})],
        [c("Borrow", "3", {"account": "margin", "asset": "USDT", "amount": borrow})],
        [c("OrderHold", "4", {"order_id": f"{user}-buy", "account": "margin", "asset": "USDT", "amount": spend})],
        [c("FillSettle", "5", {"fill_id": "F1", "order_id": f"{user}-buy", "account": "margin", "pay_asset": "USDT",
                               "pay_amount": spend, "receive_asset": "BTC", "receive_amount": btc,
                               "fee_amount": "0"})],
    ]


def _until_priced(client: CommandClient, watcher: ResultWatcher, cmds: list[Command]) -> list[Result]:
    """Send; a loan refused because the first price or rate has not reached its partition yet is sent again
    under a new id (the price travels on another topic, with no order between them)."""
    out: list[Result] = []
    for attempt in range(120):
        client.send_batch(cmds)
        client.flush()
        got = watcher.wait_for([c.id for c in cmds], timeout=60)
        early = [c for c in cmds if got[c.id].reason in ("PRICE_UNAVAILABLE", "NO_LENDING_POOL")]
        out += [got[c.id] for c in cmds if c not in early]
        if not early:
            return out
        cmds = [c._replace(id=f"{c.id}-{attempt + 1}") for c in early]
        time.sleep(0.5)
    raise TimeoutError("no mark price reached the workers in 60 s: is the worker's price fan-out running?")


def play(settings: Settings, workers: list[WorkerProcess], client: CommandClient, watcher: ResultWatcher,
         show: Callable[[Result], None]) -> tuple[list[Result], bool]:
    """The margin day; its results, and whether it ended as worked out (both liquidated once, dave without and
    erin with a shortfall)."""
    feed, standin = MarketFeed(settings), MatchingStandIn(settings, maker=MAKER)
    price = [PATH[0]]
    stop = threading.Event()

    def pricing() -> None:  # a feed publishes continually; a price older than 30 s is no price
        while not stop.is_set():
            feed.price("BTC", price[0])
            feed.rate("USDT", "450", "1000")
            feed.flush()
            stop.wait(0.5)

    def matching() -> None:
        while not stop.is_set():
            standin.poll(0.2)

    threads = [threading.Thread(target=pricing, daemon=True), threading.Thread(target=matching, daemon=True)]
    for t in threads:
        t.start()
    results: list[Result] = []
    try:
        plans = [_setup(u, *USERS[u]) for u in USERS] + [_maker()]
        for step in range(len(plans[0])):
            got = _until_priced(client, watcher, [cmd for plan in plans for cmd in plan[step]])
            for r in got:
                show(r)
            results += got
        print("\nthe BTC mark price falls; each user's margin level as the worker that owns them values it")
        rows = []
        for p in PATH:
            price[0] = p
            time.sleep(2.0)  # a few publications: every partition has it, and the liquidations run
            row: list[str] = [p]
            for user in USERS:
                view = workers[0].get_json(f"/users/{user}/margin")
                acct = next((a for a in view["accounts"] if a["account"] == "margin"), None)
                row.append("-" if acct is None else f"{acct.get('level') or '?'} {acct['band']} ({acct['status']})")
            rows.append(row)
        print_table(["BTC", *[f"{u}: level band (status)" for u in USERS]], rows)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(workers[0].get_json(f"/users/{u}/margin")["accounts"]
                                                  for u in USERS):
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        standin.close()
    return results, _report(settings, workers)


def _report(settings: Settings, workers: list[WorkerProcess]) -> bool:
    events = [CODEC.decode(v)[1] for *_, v in read_topic(settings, MARGIN_EVENTS.name(settings))]
    print("\nmargin events (topic margin-events)")
    print_table(["user", "kind", "band", "from", "level", "detail", "shortfall USDT"],
                [(e["user_id"], e["kind"], e["band"], e["previous_band"], e["level"], e["detail"], e["shortfall"])
                 for e in events])
    orders = [CODEC.decode(v)[1] for *_, v in read_topic(settings, LIQUIDATION_ORDERS.name(settings))]
    print("\nliquidation orders (topic liquidation-orders), filled by the matching engine's stand-in")
    print_table(["order", "user", "sells", "for", "mark price"],
                [(o["id"], o["user_id"], f"{o['sell_amount']} {o['sell_asset']}", o["buy_asset"], o["mark_price"])
                 for o in orders])
    for user in USERS:
        view = workers[0].get_json(f"/users/{user}/balances")
        print(f"\n{user} after the day")
        print_table(["account", "asset", "available", "frozen", "borrowed"],
                    [(r["account"], r["asset"], r["available"], r["frozen"], r["borrowed"])
                     for r in view["balances"]])
    done = {(e["user_id"], e["kind"]): e for e in events if e["kind"].startswith("Liquidation")}
    once = all(sum(1 for e in events if e["user_id"] == u and e["kind"] == k) == 1
               for u in USERS for k in ("LiquidationStarted", "LiquidationCompleted"))
    shortfall = {u: Decimal(done[(u, "LiquidationCompleted")]["shortfall"]) for u in USERS
                 if (u, "LiquidationCompleted") in done}
    ok = once and shortfall.get("dave") == 0 and shortfall.get("erin", 0) > 0
    print("\neach user liquidated once; dave's debt covered, erin's shortfall paid by the insurance fund:",
          "yes" if ok else "NO")
    return ok
