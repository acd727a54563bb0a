"""`posflow`: the operator's command line. Every answer is a table; every error says what to do."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

from streams.config import Settings
from streams.table import print_table


def _get(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read() or b"{}"))


def cmd_balances(args: argparse.Namespace) -> int:
    url = f"{args.worker.rstrip('/')}/users/{args.user}/balances"
    try:
        view = _get(url)
    except (urllib.error.URLError, ConnectionError) as exc:
        print(f"error: no posflow worker answers at {args.worker} ({exc}).\n"
              "Start one with `posflow worker` (or `make demo`), or point --worker / POSFLOW_WORKER_URL at one.",
              file=sys.stderr)
        return 2
    if "error" in view:
        print(f"{args.user}: {view['error']} (no account; it is created by an OpenAccount command)", file=sys.stderr)
        return 1
    rows = view["balances"]
    assert isinstance(rows, list)
    print(f"user {view['user_id']}  status {view['status']}  kyc tier {view['kyc_tier']}  "
          f"open holds {view['open_holds']}  ledger seq {view['ledger_seq']}")
    print_table(["account", "asset", "available", "frozen", "borrowed"],
                [(r["account"], r["asset"], r["available"], r["frozen"], r["borrowed"]) for r in rows])
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = Settings()
    argv = [sys.executable, "-m", "faust", "-A", "streams.worker", "worker", "-l", args.loglevel,
            "--web-port", str(settings.web_port), "--web-host", "127.0.0.1"]
    os.execv(sys.executable, argv)


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
    p = sub.add_parser("worker", help="run an engine worker in the foreground")
    p.add_argument("-l", "--loglevel", default="info", choices=["crit", "error", "warn", "info", "debug"])
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("topics", help="list or create the topics")
    p.add_argument("action", choices=["list", "create"])
    p.set_defaults(func=cmd_topics)
    p = sub.add_parser("demo", help="run the scripted demo (as `make demo`)")
    p.set_defaults(func=lambda _a: __import__("streams.demo", fromlist=["main"]).main())
    args = parser.parse_args(argv)
    result = args.func(args)
    return int(result)


if __name__ == "__main__":
    sys.exit(main())
