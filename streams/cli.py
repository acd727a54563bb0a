"""`posflow`: the operator's command line. Every answer is a table; every error says what to do."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from streams.config import Settings
from streams.table import print_table

if TYPE_CHECKING:
    from sinks.store import Store


def _get(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read() or b"{}"))


def _user_view(args: argparse.Namespace, what: str) -> dict[str, object] | int:
    """A user's view from a worker (`/users/<user>/<what>`), or the exit code after saying what went wrong."""
    url = f"{args.worker.rstrip('/')}/users/{args.user}/{what}"
    try:
        view = _get(url)
    except (urllib.error.URLError, ConnectionError) as exc:
        print(f"error: no posflow worker answers at {args.worker} ({exc}).\n"
              "Start one with `posflow worker` (or `make demo`), or point --worker / POSFLOW_WORKER_URL at one.",
              file=sys.stderr)
        return 2
    if view.get("error") == "NOT_SERVING":
        print(f"{args.user}: {view['detail']} (a rebalance or a recovery is under way; try again in a moment)",
              file=sys.stderr)
        return 1
    if "error" in view:
        print(f"{args.user}: {view['error']} (no account; it is created by an OpenAccount command)", file=sys.stderr)
        return 1
    return view


def cmd_balances(args: argparse.Namespace) -> int:
    view = _user_view(args, "balances")
    if isinstance(view, int):
        return view
    rows = view["balances"]
    assert isinstance(rows, list)
    print(f"user {view['user_id']}  status {view['status']}  kyc tier {view['kyc_tier']}  "
          f"open holds {view['open_holds']}  ledger seq {view['ledger_seq']}")
    print_table(["account", "asset", "available", "frozen", "borrowed"],
                [(r["account"], r["asset"], r["available"], r["frozen"], r["borrowed"]) for r in rows])
    return 0


def cmd_margin(args: argparse.Namespace) -> int:
    view = _user_view(args, "margin")
    if isinstance(view, int):
        return view
    accounts = view["accounts"]
    assert isinstance(accounts, list)
    print(f"user {view['user_id']}  status {view['status']}  valued in {view['valuation_asset']}")
    if not accounts:
        print("no margin account owes anything")
        return 0
    print_table(["account", "tier", "band", "level", "assets", "liabilities", "lines (transfer/borrow/call/liq.)"],
                [(a["account"], a["tier"], a["band"], a["level"] or f"none: {a.get('why', '')}", a.get("assets", ""),
                  a.get("liabilities", ""), " / ".join(a.get("lines", {}).values())) for a in accounts])
    print_table(["account", "asset", "principal", "interest booked", "interest since"],
                [(a["account"], ln["asset"], ln["principal"], ln["interest_booked"], ln["interest_since"])
                 for a in accounts for ln in a["loans"]])
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = Settings()
    argv = [sys.executable, "-m", "faust", "-A", "streams.worker", "worker", "-l", args.loglevel,
            "--web-port", str(settings.web_port), "--web-host", "127.0.0.1"]
    os.execv(sys.executable, argv)


def _open_store(settings: Settings) -> Store | None:
    """The configured ClickHouse with its migrations applied, or None after saying what to do."""
    from sinks.migrations import migrate
    from sinks.store import StoreUnavailable, open_store

    try:
        store = open_store(settings)
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    migrate(store)
    return store


def cmd_sink(args: argparse.Namespace) -> int:
    import logging
    import signal

    from sinks.http import ClickHouseHTTPServer
    from sinks.sink import Counters, Sink
    from sinks.store import ChdbStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings()
    store = _open_store(settings)
    if store is None:
        return 2
    if args.replay_dead_letters:
        from sinks.replay import replay_main

        try:
            return replay_main(settings, store, from_beginning=args.from_beginning)
        finally:
            store.close()
    server = None
    if isinstance(store, ChdbStore) and args.http_port:
        try:
            server = ClickHouseHTTPServer(store, args.http_port).start()
        except OSError as exc:
            print(f"error: cannot serve ClickHouse HTTP on 127.0.0.1:{args.http_port} ({exc}); "
                  "pick another port with --http-port or POSFLOW_CLICKHOUSE_HTTP_PORT (0 turns it off)",
                  file=sys.stderr)
            return 2
    sink = Sink(settings, store, max_records=args.max_records, linger_s=args.linger_ms / 1000)
    signal.signal(signal.SIGTERM, lambda *_: sink.stop())
    signal.signal(signal.SIGINT, lambda *_: sink.stop())
    where = f"{store.where}" + (f", served at {server.url} (CLICKHOUSE_URL for posflow sql)" if server else "")
    print(f"sink: {settings.kafka_bootstrap} -> ClickHouse {where}; Ctrl-C stops after landing what it holds",
          flush=True)

    def progress(c: Counters) -> None:
        tables = ", ".join(f"{t} {n}" for t, n in sorted(c.per_table.items()))
        print(f"sink: {c.records} records read, {c.inserts} inserts ({tables}), "
              f"{c.dead_letters} dead letters, {c.retries} retries, {c.reconnects} reconnects", flush=True)

    counters = sink.run(progress=progress)
    progress(counters)
    if server is not None:
        server.stop()
    store.close()
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from sinks.store import StoreRejected

    store = _open_store(Settings())
    if store is None:
        return 2
    try:
        rows = store.query(args.query)
    except StoreRejected as exc:
        print(f"error: ClickHouse refused the query: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print_table(rows.columns, rows.rows)
    print(f"({len(rows.rows)} rows)")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from sinks.reconcile import print_report, read_engine_state, reconcile, wait_for_sink

    settings = Settings()
    try:
        lag = wait_for_sink(settings, args.wait)
        engine = read_engine_state(settings)
    except (KafkaException, TimeoutError) as exc:
        print(f"error: cannot read the engine's state from Kafka at {settings.kafka_bootstrap} ({exc}); "
              "start the stack with `make up`", file=sys.stderr)
        return 2
    store = _open_store(settings)
    if store is None:
        return 2
    try:
        report = reconcile(store, engine, lag)
    finally:
        store.close()
    print_report(report)
    print("reconciliation:", "no drift" if report.ok else "DRIFT (see above)")
    return 0 if report.ok else 1


def cmd_price(args: argparse.Namespace) -> int:
    """Publish mark prices and pool rates to the prices topic (streams.market): one, or a file of them."""
    from pathlib import Path

    from processors.margin import parse_price
    from processors.money import Rejected
    from streams.market import MarketFeed, read_ticks

    settings = Settings()
    try:
        if args.command == "prices":
            ticks = read_ticks(Path(args.file))
        else:
            parse_price(args.price)  # refused here, with its reason, rather than dead-lettered by the fan-out
    except (OSError, ValueError) as exc:
        print(f"error: {exc}. A price file holds lines `after_ms,asset,price`.", file=sys.stderr)
        return 2
    except Rejected as refused:
        print(f"error: {refused.reason.value}: {refused.detail}", file=sys.stderr)
        return 2
    feed = MarketFeed(settings)
    if args.command == "prices":
        n = feed.play(ticks)
        rows = [(t.asset, t.price, t.after_ms) for t in ticks]
        print_table(["asset", "price", "after ms"], rows[-20:])
    else:
        feed.price(args.asset, args.price)
        n = 1
    try:
        feed.flush()
    except TimeoutError as exc:
        print(f"error: {exc} (`make up` starts the local broker)", file=sys.stderr)
        return 1
    print(f"{n} price(s) published to {settings.topic_prefix}prices; every worker copies them to its partitions")
    return 0


def cmd_rates(args: argparse.Namespace) -> int:
    from processors.config import default_config, with_overrides
    from streams import rates
    from streams.market import MarketFeed

    settings = Settings()
    store = _open_store(settings)
    if store is None:
        return 2
    try:
        cfg = with_overrides(default_config(), settings.engine_overrides)
        return rates.run(cfg, store, MarketFeed(settings), settings.pool_supply, args.every, args.rounds)
    except TimeoutError as exc:
        print(f"error: {exc} (`make up` starts the local broker)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        store.close()


def cmd_rate(args: argparse.Namespace) -> int:
    from streams.market import MarketFeed

    feed = MarketFeed(Settings())
    feed.rate(args.asset, args.borrowed, args.supplied)
    try:
        feed.flush()
    except TimeoutError as exc:
        print(f"error: {exc} (`make up` starts the local broker)", file=sys.stderr)
        return 1
    print_table(["asset", "borrowed", "supplied"], [(args.asset, args.borrowed, args.supplied)])
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.topics import main as topics_main

    return topics_main([args.action])


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="posflow", description="posflow position engine")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("balances", help="a user's balances per sub-account and asset")
    p.add_argument("user")
    p.add_argument("--worker", default=os.environ.get("POSFLOW_WORKER_URL", f"http://127.0.0.1:{settings.web_port}"),
                   help="any worker's web address; it forwards to the worker that owns the user")
    p.set_defaults(func=cmd_balances)
    p = sub.add_parser("margin", help="a user's margin accounts: level, band, lines, loans and interest")
    p.add_argument("user")
    p.add_argument("--worker", default=os.environ.get("POSFLOW_WORKER_URL", f"http://127.0.0.1:{settings.web_port}"),
                   help="any worker's web address; it forwards to the worker that owns the user")
    p.set_defaults(func=cmd_margin)
    p = sub.add_parser("worker", help="run an engine worker in the foreground")
    p.add_argument("-l", "--loglevel", default="info", choices=["crit", "error", "warn", "info", "debug"])
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("topics", help="list or create the topics")
    p.add_argument("action", choices=["list", "create"])
    p.set_defaults(func=cmd_topics)
    p = sub.add_parser("sink", help="land the ledger and events in ClickHouse (chDB unless CLICKHOUSE_URL is set)")
    p.add_argument("--http-port", type=int, default=settings.clickhouse_http_port,
                   help="serve the embedded chDB over ClickHouse's HTTP interface on 127.0.0.1 (0: off)")
    p.add_argument("--max-records", type=int, default=2000, help="Kafka records per insert at most")
    p.add_argument("--linger-ms", type=int, default=200, help="how long a record may wait for its batch")
    p.add_argument("--replay-dead-letters", action="store_true",
                   help="instead of sinking: land the dead letters of the sink's topics again (once their cause is "
                        "fixed), from where the last replay stopped, print what landed and what is still refused")
    p.add_argument("--from-beginning", action="store_true",
                   help="with --replay-dead-letters: read the whole dead-letter topic, not from the last replay")
    p.set_defaults(func=cmd_sink)
    p = sub.add_parser("sql", help="run a query on the configured ClickHouse and print a table")
    p.add_argument("query")
    p.set_defaults(func=cmd_sql)
    p = sub.add_parser("reconcile", help="check the ClickHouse ledger against itself and the engine; exit 1 on drift")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the sink to land the ledger topic")
    p.set_defaults(func=cmd_reconcile)
    p = sub.add_parser("price", help="publish one mark price (units of USDT per whole unit of the asset)")
    p.add_argument("asset")
    p.add_argument("price")
    p.set_defaults(func=cmd_price)
    p = sub.add_parser("prices", help="publish the mark prices of a CSV file (after_ms,asset,price), paced")
    p.add_argument("file")
    p.set_defaults(func=cmd_price)
    p = sub.add_parser("rate", help="publish a lending pool's state: lent out and supplied (its rate follows)")
    p.add_argument("asset")
    p.add_argument("borrowed")
    p.add_argument("supplied")
    p.set_defaults(func=cmd_rate)
    p = sub.add_parser("rates", help="publish every lending pool's exchange-wide utilization from the audit ledger "
                                     "(its rate follows), every --every seconds")
    p.add_argument("--every", type=float, default=60.0, help="seconds between rounds (default 60)")
    p.add_argument("--rounds", type=int, default=None, help="stop after this many rounds (default: run on)")
    p.set_defaults(func=cmd_rates)
    p = sub.add_parser("demo", help="run the scripted demo (as `make demo`)")
    p.set_defaults(func=lambda _a: __import__("streams.demo", fromlist=["main"]).main())
    args = parser.parse_args(argv)
    result = args.func(args)
    return int(result)


if __name__ == "__main__":
    sys.exit(main())
