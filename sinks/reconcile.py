"""Reconciliation: does the audit ledger in ClickHouse agree with itself and with the engine?

(a) The ledger is balanced: per asset over everything, per entry and asset, every entry's line
    numbers are 0..n-1 and every user's sequence numbers are 1..n (a missing or extra line shows
    even when it happens to balance).
(b) The balances derived from ClickHouse equal the engine's state for every user, sub-account,
    bucket and asset, and each user's last ledger sequence number equals the engine's.
(c) The sink has landed everything on the ledger topic, without which (b) would compare a moving
    target; and the clearing accounts net to zero.

The engine's state is read from its table's changelog topic: the state the workers hold and would
recover, stored after the step's outputs were acknowledged. Run it while the engine is idle (as
`make demo` does): during a step the ledger may be ahead of the stored state by that step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from processors import accrual
from processors.batch import market_key
from processors.config import EngineConfig, default_config
from processors.ledger import CLEARING
from processors.state import UserState
from sinks.migrations import render
from sinks.sink import GROUP
from sinks.store import Store
from streams.config import Settings
from streams.topics import LEDGER

BalanceKey = tuple[str, str, str, str]  # user, account, bucket, asset


@dataclass(frozen=True)
class EngineState:
    balances: dict[BalanceKey, Decimal]
    seqs: dict[str, int]  # user -> ledger lines written so far


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # name, ok, detail
    differences: list[tuple[str, str, str, str, str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def check(self, name: str, problems: list[Any], detail_ok: str, detail_bad: str) -> None:
        self.checks.append((name, not problems, detail_ok if not problems else detail_bad))

    def drift(self, check: str, what: str, user: str, account: str, asset: str, clickhouse: Any, engine: Any) -> None:
        self.differences.append((check, what, user, account, asset, _text(clickhouse), _text(engine)))


def _text(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, Decimal):
        return format(v.normalize(), "f") if v else "0"
    return str(v)


def engine_state(states: Iterable[UserState], cfg: EngineConfig) -> EngineState:
    balances: dict[BalanceKey, Decimal] = {}
    seqs: dict[str, int] = {}
    for st in states:
        seqs[st.user_id] = st.seq
        for (account, asset), (available, frozen, borrowed) in st.balances.items():
            scale = cfg.assets[asset].scale
            for bucket, minor in (("available", available), ("frozen", frozen), ("borrowed", -borrowed)):
                if minor:
                    balances[(st.user_id, account, bucket, asset)] = Decimal(minor).scaleb(-scale)
        for (account, asset), loan in st.loans.items():  # interest booked on a margin loan and not paid
            if loan.interest:
                key = (st.user_id, account, "interest", asset)
                balances[key] = Decimal(-loan.interest).scaleb(-cfg.assets[asset].scale)
    return EngineState(balances, seqs)


MARKET_PREFIX = market_key(0)[:-1]  # b"\x00k/": a partition's market record, the partition's number after it


def read_engine_state(settings: Settings, cfg: EngineConfig | None = None) -> EngineState:
    """The latest stored state of every user, from the users table's changelog topic."""
    from streams.client import read_topic

    topic = f"{settings.app_id}-users-changelog"
    latest: dict[bytes, bytes | None] = {}
    markets: dict[bytes, bytes | None] = {}
    for _p, _o, key, value in read_topic(settings, topic):
        if key is None:
            continue
        if key.startswith(MARKET_PREFIX):  # a partition's market, with its interest aggregates
            markets[key] = value or None
        elif not key.startswith(b"\x00"):  # NUL-prefixed keys are the worker's own
            latest[key] = value or None
    states = [UserState.from_bytes(v) for v in latest.values() if v is not None]
    engine = engine_state(states, cfg or default_config())
    engine.seqs.update(accrual_seqs(markets))
    return engine


def accrual_seqs(markets: dict[bytes, bytes | None]) -> dict[str, int]:
    """owner -> lines written, of each partition's hourly interest entries (processors.accrual: a ledger owner
    of their own), from the partitions' stored market records (key -> value, None: deleted)."""
    seqs = {}
    for market, record in markets.items():
        stored = json.loads(record) if record is not None else {}
        if stored.get("accrual_now"):
            seqs[accrual.owner(int(market[len(MARKET_PREFIX):]))] = int(stored["accrual_now"]["seq"])
    return seqs


def sink_lag(settings: Settings) -> dict[int, int]:
    """Ledger records per partition that the sink has not committed yet."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.kafka import consumer_config, watermarks

    topic = LEDGER.name(settings)
    consumer = Consumer(consumer_config(settings, GROUP))
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(settings.partitions)], timeout=30)
        lag = {}
        for tp in committed:
            low, high = watermarks(consumer, topic, tp.partition)
            done = tp.offset if tp.offset >= 0 else low
            if high - done > 0:
                lag[tp.partition] = high - done
        return lag
    finally:
        consumer.close()


def wait_for_sink(settings: Settings, timeout_s: float = 120.0) -> dict[int, int]:
    deadline = time.monotonic() + timeout_s
    lag = sink_lag(settings)
    while lag and time.monotonic() < deadline:
        time.sleep(0.5)
        lag = sink_lag(settings)
    return lag


def check_ledger(store: Store, report: Report, limit: int = 50) -> None:
    """(a): balanced per asset and per entry; line numbers and sequence numbers without holes."""
    totals = store.query("SELECT asset, net, lines FROM asset_totals WHERE net != 0 ORDER BY asset").rows
    for asset, net, _lines in totals:
        report.drift("ledger balanced per asset", "sum of all lines", "", "", asset, net, 0)
    n_lines = store.query("SELECT count() FROM ledger_lines FINAL").scalar()
    report.check("ledger balanced per asset", totals, f"{n_lines} lines, every asset sums to 0",
                 f"{len(totals)} assets do not sum to 0")
    bad = store.query(f"SELECT entry, asset, net, lines FROM unbalanced_entries ORDER BY entry, asset LIMIT {limit}")
    count = store.query("SELECT count() FROM unbalanced_entries").scalar()
    for entry, asset, net, lines in bad.rows:
        report.drift("entries balanced", f"entry {entry} ({lines} lines)", "", "", asset, net, 0)
    report.check("entries balanced", bad.rows, "every entry sums to 0 per asset", f"{count} entries do not")
    gaps = store.query(f"SELECT entry, lines, expected FROM entry_gaps ORDER BY entry LIMIT {limit}")
    for entry, lines, expected in gaps.rows:
        report.drift("entry lines complete", f"entry {entry}: line count", "", "", "", lines, expected)
    report.check("entry lines complete", gaps.rows, "every entry has lines 0..n-1", f"{len(gaps.rows)}+ entries do not")
    seq = store.query(f"SELECT owner, lines, max_seq FROM sequence_gaps ORDER BY owner LIMIT {limit}")
    for owner, lines, max_seq in seq.rows:
        report.drift("user sequences complete", "line count vs last seq", owner, "", "", lines, max_seq)
    report.check("user sequences complete", seq.rows, "every user's lines are seq 1..n",
                 f"{len(seq.rows)}+ users have holes or repeats")
    clearing = store.query("SELECT asset, balance FROM clearing WHERE balance != 0 ORDER BY asset").rows
    for asset, balance in clearing:
        report.drift("clearing nets to zero", f"{CLEARING} balance", "", CLEARING, asset, balance, 0)
    report.check("clearing nets to zero", clearing, f"{CLEARING} is 0 in every asset",
                 f"{len(clearing)} assets left in clearing")


def check_against_engine(store: Store, engine: EngineState, report: Report) -> None:
    """(b): every user balance and every user's last sequence number, ClickHouse against the engine."""
    rows = store.query(render("SELECT user_id, account, bucket, asset, balance FROM balances "
                              "WHERE user_id != {{ledger.SYSTEM_USER}}")).rows
    derived: dict[BalanceKey, Decimal] = {(u, a, b, s): v for u, a, b, s, v in rows if v}
    keys = sorted(set(derived) | set(engine.balances))
    diffs = [k for k in keys if derived.get(k, Decimal(0)) != engine.balances.get(k, Decimal(0))]
    for user, account, bucket, asset in diffs:
        report.drift("balances equal the engine's", bucket, user, account, asset,
                     derived.get((user, account, bucket, asset)), engine.balances.get((user, account, bucket, asset)))
    report.check("balances equal the engine's", diffs,
                 f"{len(keys)} balances of {len(engine.seqs)} users agree", f"{len(diffs)} balances differ")
    last = {u: s for u, s in store.query(
        "SELECT substring(entry, 1, length(entry) - length(entry_id) - 1) AS owner, max(seq) "
        "FROM ledger_lines FINAL GROUP BY owner").rows}
    users = sorted(set(last) | {u for u, s in engine.seqs.items() if s})
    seq_diffs = [u for u in users if last.get(u, 0) != engine.seqs.get(u, 0)]
    for user in seq_diffs:
        report.drift("last ledger seq equals the engine's", "seq", user, "", "", last.get(user), engine.seqs.get(user))
    report.check("last ledger seq equals the engine's", seq_diffs, f"{len(users)} users agree",
                 f"{len(seq_diffs)} users differ")


def reconcile(store: Store, engine: EngineState, lag: dict[int, int] | None = None) -> Report:
    report = Report()
    if lag is not None:
        behind = sorted(lag.items())
        for p, n in behind:
            report.drift("sink caught up", f"ledger partition {p}", "", "", "", f"{n} records behind", "0")
        report.check("sink caught up", behind, "every ledger record landed",
                     f"{sum(lag.values())} ledger records not landed yet (run `posflow sink`)")
    check_ledger(store, report)
    check_against_engine(store, engine, report)
    return report


def print_report(report: Report) -> None:
    from streams.table import print_table

    print_table(["check", "result", "detail"], [(n, "ok" if ok else "DRIFT", d) for n, ok, d in report.checks])
    if report.differences:
        print()
        print_table(["check", "what", "user", "account", "asset", "clickhouse", "engine / expected"],
                    report.differences)
