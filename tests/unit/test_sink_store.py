"""The ClickHouse side without Kafka: Avro files, migrations, finance views, the HTTP interface with
clickhouse-connect, and reconciliation finding planted drift. All against the real ClickHouse engine (chDB)."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from fastavro import reader
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.workload import commands
from processors.config import default_config
from processors.engine import apply
from processors.inputs import command
from processors.ledger import CUSTODY_PREFIX, FEE_REVENUE, FILL, WITHDRAWAL
from processors.messages import Command, DepositConfirmed, FillSettle, LedgerLine, OpenAccount, OrderHold
from processors.state import UserState
from processors.wire import line_to_avro
from schemas import CODEC
from schemas.codec import HEADER_LEN
from sinks.avro_file import container
from sinks.http import ClickHouseHTTPServer
from sinks.migrations import MigrationChanged, available, migrate
from sinks.reconcile import Report, engine_state, reconcile
from sinks.sink import CHAIN_FIELDS
from sinks.store import ChdbStore, ServerStore, StoreRejected
from tests.unit.core import ctx

CFG = default_config()
BTC_ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"


def _matched(cmds: list[Command]) -> list[Command]:
    """The workload's fills are one side of a trade; a market maker takes the other side of each, so
    that sys:clearing nets to zero as it does on a real day (DESIGN §2.5)."""
    out = [command(OpenAccount, "mm-open", "mm", kyc_tier=1, region="DE")._replace(ts_ms=1),
           command(DepositConfirmed, "bitcoin:0xmm:0", "mm", chain="bitcoin", tx_hash="0xmm", log_index=0,
                   address=BTC_ADDRESS, asset="BTC", amount="100", block_number=1, account="spot")._replace(ts_ms=1)]
    for c in cmds:
        out.append(c)
        if c.kind == "FillSettle":
            b, o = c.body, f"mm-{c.id}"
            out.append(command(OrderHold, f"{o}-hold", "mm", order_id=o, account="spot", asset=b["receive_asset"],
                               amount=b["receive_amount"])._replace(ts_ms=c.ts_ms))
            out.append(command(FillSettle, f"{o}-fill", "mm", fill_id=f"{o}-f", order_id=o, account="spot",
                               pay_asset=b["receive_asset"], pay_amount=b["receive_amount"],
                               receive_asset=b["pay_asset"], receive_amount=b["pay_amount"],
                               fee_amount="0.01")._replace(ts_ms=c.ts_ms))
    return out


def _day(users: int = 12, rounds: int = 8) -> tuple[list[LedgerLine], dict[str, UserState]]:
    """A trading day through the real core: its ledger lines and the users' final states."""
    states: dict[str, UserState] = {}
    lines: list[LedgerLine] = []
    for cmd in _matched(commands(users, rounds)):
        state, outcome = apply(states.get(cmd.user_id), cmd, ctx(CFG, now_ms=cmd.ts_ms))  # engine time as stamped
        states[cmd.user_id] = state
        assert outcome.result.status == "ACCEPTED", outcome.result
        lines.extend(outcome.lines)
    return lines, states


def _batches(lines: list[LedgerLine], per: int = 37) -> list[bytes]:
    avro = [line_to_avro(ln, CFG) for ln in lines]
    return [CODEC.encode("LedgerBatch", {"id": f"b{i}", "ts_ms": 1, "schema_version": 1, "lines": avro[i : i + per]})
            for i in range(0, len(avro), per)]


def _land(store: ChdbStore | ServerStore, lines: list[LedgerLine], token: str = "t") -> None:
    bodies = [m[HEADER_LEN:] for m in _batches(lines)]
    store.insert("ledger_batches_in", "Avro", container("LedgerBatch", bodies), token)


@pytest.fixture(scope="module")
def day() -> tuple[list[LedgerLine], dict[str, UserState]]:
    return _day()


# -- Avro files ------------------------------------------------------------------------------------
text = st.text(st.characters(codec="utf-8"), max_size=12)
line_records = st.fixed_dictionaries({
    "id": text, "ts_ms": st.integers(0, 2**41), "schema_version": st.just(1), "entry_id": text, "entry_type": text,
    "line_no": st.integers(0, 2**31 - 1), "user_id": text, "account": text, "bucket": text, "asset": text,
    "amount": st.decimals(-(10**20), 10**20, places=18).map(str), "balance_before": st.none() | text,
    "balance_after": st.none() | text, "seq": st.integers(0, 2**62),
})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(line_records, max_size=4), min_size=1, max_size=6))
def test_container_reads_back_as_the_records(batches: list[list[dict[str, object]]]) -> None:
    records = [{"id": f"b{i}", "ts_ms": i, "schema_version": 1, "lines": lines} for i, lines in enumerate(batches)]
    data = container("LedgerBatch", [CODEC.encode("LedgerBatch", r)[HEADER_LEN:] for r in records])
    assert list(reader(io.BytesIO(data))) == records


def test_clickhouse_reads_the_lines_exactly(chdb_store: ChdbStore, day: tuple[list[LedgerLine], object]) -> None:
    lines, _ = day
    _land(chdb_store, lines)
    want: dict[str, Decimal] = defaultdict(Decimal)
    for ln in lines:
        want[ln.asset] += Decimal(ln.amount).scaleb(-CFG.assets[ln.asset].scale)
    got = chdb_store.query("SELECT asset, sum(abs(amount)), count(), countIf(balance_after IS NULL) FROM ledger_lines "
                           "GROUP BY asset ORDER BY asset").rows
    abs_want: dict[str, Decimal] = defaultdict(Decimal)
    for ln in lines:
        abs_want[ln.asset] += abs(Decimal(ln.amount).scaleb(-CFG.assets[ln.asset].scale))
    assert [(a, s, n) for a, s, n, _ in got] == [
        (a, abs_want[a], sum(1 for ln in lines if ln.asset == a)) for a in sorted(abs_want)]
    assert sum(r[3] for r in got) == sum(1 for ln in lines if ln.user_id == "")
    one = lines[5]
    row = chdb_store.query("SELECT entry, amount, seq FROM ledger_lines WHERE id = {id:String}", {"id": one.id}).rows
    assert row == [(f"{one.owner}/{one.entry_id}", Decimal(one.amount).scaleb(-CFG.assets[one.asset].scale), one.seq)]


def test_a_retried_insert_is_dropped_by_its_token(chdb_store: ChdbStore, day: tuple[list[LedgerLine], object]) -> None:
    lines, _ = day
    _land(chdb_store, lines[:100], token="same")
    _land(chdb_store, lines[:100], token="same")
    assert chdb_store.query("SELECT count() FROM ledger_lines").scalar() == 100
    _land(chdb_store, lines[:100], token="another")  # a different batching of the same lines
    assert chdb_store.query("SELECT count() FROM ledger_lines FINAL").scalar() == 100


def test_an_insert_clickhouse_refuses_raises_and_writes_nothing(chdb_store: ChdbStore,
                                                                 day: tuple[list[LedgerLine], object]) -> None:
    """The sink bisects on StoreRejected to find the bad record; a refusal reported as success would
    commit lines that never landed (chDB's streaming insert did exactly that)."""
    lines, _ = day
    good = _batches(lines[:50])
    bad = line_to_avro(lines[0], CFG) | {"id": "x/y/0", "amount": "one bitcoin"}
    bodies = [m[HEADER_LEN:] for m in good]
    bodies.insert(1, CODEC.encode("LedgerBatch", {"id": "bad", "ts_ms": 1, "schema_version": 1, "lines": [bad]})
                  [HEADER_LEN:])
    with pytest.raises(StoreRejected, match="Cannot parse"):
        chdb_store.insert("ledger_batches_in", "Avro", container("LedgerBatch", bodies), "with-bad")
    assert chdb_store.query("SELECT count() FROM ledger_lines").scalar() == 0


# -- migrations ------------------------------------------------------------------------------------
def test_migrations_apply_once_and_refuse_edits(chdb_store: ChdbStore, tmp_path: Path) -> None:
    assert {status for *_, status in migrate(chdb_store)} == {"present"}  # the fixture applied them
    versions = chdb_store.query("SELECT version FROM schema_migrations FINAL ORDER BY version").rows
    assert [v for (v,) in versions] == [m.version for m in available()]
    for m in available():
        (tmp_path / f"{m.version:04d}_{m.name}.sql").write_text(m.sql)
    last = available()[-1]
    (tmp_path / f"{last.version:04d}_{last.name}.sql").write_text(last.sql + "\n-- edited\nSELECT 1;\n")
    with pytest.raises(MigrationChanged, match="put the change in a new migration"):
        migrate(chdb_store, tmp_path)


# -- finance views ---------------------------------------------------------------------------------
def test_chain_events_has_a_column_for_each_landed_field(chdb_store: ChdbStore) -> None:
    """The registry says what the sink lands of a chain event (sinks.sink.CHAIN_FIELDS): the table must hold
    each field, Nullable where a kind without it leaves NULL. A chain kind with a new field fails here
    until a migration adds its column."""
    columns = dict(chdb_store.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                                    "AND table = 'chain_events'").rows)
    envelope = {"id", "ts", "ts_ms", "user_id", "kind", "source", "landed_at"}
    assert set(columns) == envelope | set(CHAIN_FIELDS)
    for name, empty in CHAIN_FIELDS.items():
        assert columns[name].startswith("Nullable(") == (empty is None), (name, columns[name])


def test_finance_views_match_the_engine(chdb_store: ChdbStore,
                                        day: tuple[list[LedgerLine], dict[str, UserState]]) -> None:
    lines, states = day
    _land(chdb_store, lines)
    scale = {a: CFG.assets[a].scale for a in ("USDT", "BTC")}
    owed: dict[str, Decimal] = defaultdict(Decimal)
    for st_ in states.values():
        for (_acct, asset), (av, fr, bo) in st_.balances.items():
            owed[asset] += Decimal(av + fr - bo).scaleb(-scale[asset])
    got = {a: n for a, n in chdb_store.query("SELECT asset, net_owed_to_users FROM liabilities").rows}
    assert got == dict(owed)
    assert all(b == 0 for _, b, _ in chdb_store.query("SELECT * FROM clearing").rows)
    fees = sum(Decimal(ln.amount).scaleb(-scale[ln.asset]) for ln in lines if ln.account == FEE_REVENUE
               and ln.asset == "BTC")
    flows = chdb_store.query("SELECT asset, sum(deposits), sum(withdrawals), sum(fees) FROM daily_flows "
                             "GROUP BY asset ORDER BY asset").rows
    n_users = len(states) - 1  # and the market maker
    withdrawals = sum(1 for ln in lines if ln.entry_type == WITHDRAWAL and ln.account.startswith(CUSTODY_PREFIX))
    usdt_fees = sum(Decimal(ln.amount).scaleb(-scale["USDT"]) for ln in lines if ln.account == FEE_REVENUE
                    and ln.asset == "USDT")
    assert usdt_fees == Decimal(withdrawals) + Decimal("0.01") * sum(1 for ln in lines if ln.owner == "mm"
                                                                      and ln.account == FEE_REVENUE)
    assert flows == [("BTC", Decimal(100), 0, fees),
                     ("USDT", Decimal(100_000 * n_users), Decimal(20 * withdrawals), usdt_fees)]
    # balance at a time: the workload deposits at ts 1 ms and trades from ts 2 ms on
    at_1 = chdb_store.query("SELECT sum(balance) FROM balances_at(at = '1970-01-01 00:00:00.001') "
                            "WHERE user_id != '' AND asset = 'USDT'").scalar()
    assert at_1 == Decimal(100_000 * n_users)


# -- one SQL, two backends -------------------------------------------------------------------------
@pytest.fixture
def http_store(chdb_store: ChdbStore) -> Iterator[ServerStore]:
    server = ClickHouseHTTPServer(chdb_store, 0).start()
    try:
        yield ServerStore(server.url, database=chdb_store.database)
    finally:
        server.stop()


def test_clickhouse_connect_path_gives_the_same_answers(
        chdb_store: ChdbStore, http_store: ServerStore, day: tuple[list[LedgerLine], object]) -> None:
    lines, _ = day
    _land(http_store, lines, token="via-http")  # Avro insert through clickhouse-connect's raw_insert
    _land(http_store, lines, token="via-http")  # its retry: dropped by the same token
    assert chdb_store.query("SELECT count() FROM ledger_lines").scalar() == len(lines)
    for view in ("liabilities", "clearing", "daily_flows", "system_accounts", "balances"):
        sql = f"SELECT * FROM {view} ORDER BY ALL"
        assert http_store.query(sql) == chdb_store.query(sql), view
    import clickhouse_connect  # and clickhouse-connect's own Native decoding of the same query

    client = clickhouse_connect.get_client(dsn=http_store.where, database=chdb_store.database)
    native = client.query("SELECT asset, net_owed_to_users FROM liabilities ORDER BY asset").result_rows
    assert [tuple(r) for r in native] == chdb_store.query(
        "SELECT asset, net_owed_to_users FROM liabilities ORDER BY asset").rows
    with pytest.raises(StoreRejected, match=r"UNKNOWN_IDENTIFIER|Unknown expression"):
        http_store.query("SELECT no_such_column FROM ledger_lines")


# -- reconciliation --------------------------------------------------------------------------------
def _plant(store: ChdbStore, drift: str, victim: LedgerLine) -> None:
    store.command("SET mutations_sync = 2")
    where = {"id": victim.id}
    if drift == "missing line":
        store.command("DELETE FROM ledger_lines WHERE id = {id:String}", where)
    elif drift == "doubled line":
        # (filtered on entry and line_no: inside this SELECT, `id` is already the replaced one)
        store.command("INSERT INTO ledger_lines SELECT * REPLACE (concat(id, '-again') AS id) FROM ledger_lines "
                      "WHERE entry = {entry:String} AND line_no = {n:UInt16}",
                      {"entry": f"{victim.owner}/{victim.entry_id}", "n": victim.line_no})
    else:
        store.command("ALTER TABLE ledger_lines UPDATE amount = amount + 1 WHERE id = {id:String}", where)


@pytest.mark.parametrize("drift", ["missing line", "doubled line", "edited amount"])
def test_reconcile_names_planted_drift(chdb_store: ChdbStore, drift: str,
                                       day: tuple[list[LedgerLine], dict[str, UserState]]) -> None:
    lines, states = day
    _land(chdb_store, lines)
    engine = engine_state(states.values(), CFG)
    clean = reconcile(chdb_store, engine, lag={})
    assert clean.ok, clean.differences  # without the plant there is nothing to find
    victim = next(ln for ln in lines if ln.entry_type == FILL and ln.user_id)
    _plant(chdb_store, drift, victim)
    report: Report = reconcile(chdb_store, engine, lag={})
    failed = {name for name, ok, _ in report.checks if not ok}
    entry = f"{victim.owner}/{victim.entry_id}"
    assert "entries balanced" in failed
    assert "balances equal the engine's" in failed
    named = [d for d in report.differences if entry in d[1] or d[2] == victim.owner]
    assert any(d[0] == "entries balanced" and entry in d[1] and d[4] == victim.asset for d in named), report.differences
    assert any(d[0] == "balances equal the engine's" and d[2] == victim.owner and d[3] == victim.account
               and d[4] == victim.asset for d in named), report.differences
    if drift != "edited amount":
        assert "entry lines complete" in failed or "user sequences complete" in failed


def test_reconcile_reports_sink_lag(chdb_store: ChdbStore) -> None:
    report = reconcile(chdb_store, engine_state([], CFG), lag={2: 7})
    assert not report.ok
    assert ("sink caught up", "ledger partition 2", "", "", "", "7 records behind", "0") in report.differences


def test_posflow_sql_prints_a_table(tmp_path: Path) -> None:
    """The CLI on a fresh home: migrations applied, the query's answer as a table (own process: chDB
    opens one directory per process)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "POSFLOW_HOME": str(tmp_path), "CLICKHOUSE_URL": ""}
    sql = ("SELECT name, engine FROM system.tables WHERE database = currentDatabase() AND name LIKE 'ledger%' "
           "ORDER BY name")
    out = subprocess.run([sys.executable, "-m", "streams.cli", "sql", sql], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split() == ["name", "engine"]
    assert "ledger_lines       ReplacingMergeTree" in out.stdout and "(3 rows)" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "streams.cli", "sql", "SELECT nope"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and "ClickHouse refused the query" in bad.stderr


def test_reconcile_covers_margin_loans_and_their_interest(chdb_store: ChdbStore) -> None:
    """A borrow, hours of interest and a partial repayment, landed: the ledger's borrowed and interest buckets
    equal the engine's loans; an edited interest line is named."""
    from tests.unit.test_loans import T0, at, borrow, market, repay, to

    states: dict[str, UserState] = {}
    lines: list[LedgerLine] = []
    later = T0 + 5 * 3_600_000
    inputs = [
        (command(OpenAccount, "open", "u", kyc_tier=1, region="DE"), T0),
        (command(DepositConfirmed, "ethereum:0xfund:0", "u", chain="ethereum", tx_hash="0xfund", log_index=0,
                 address="0x" + "11" * 20, asset="USDT", amount="1000", block_number=1, account="spot"), T0),
        (to("margin", "1000"), T0), (borrow("b", "1500"), T0), (repay("r", "0.001"), later),
    ]
    m = market()
    m.set_price("BTC", 60_000, later, later)
    for cmd, now in inputs:
        state, out = apply(states.get("u"), cmd, at(now, m))
        assert out.result.status == "ACCEPTED", out.result
        states["u"] = state
        lines.extend(out.lines)
    loan = states["u"].loans[("margin", "USDT")]
    # 1,500 x RATE an hour is 0.003425 up: 0.001 pays part of the first hour's; the rest and 5 hours are owed
    assert loan.interest > 0 and states["u"].balances[("margin", "USDT")][2] == 1_500 * 10**6, "interest first"
    _land(chdb_store, lines)
    engine = engine_state(states.values(), CFG)
    clean = reconcile(chdb_store, engine, lag={})
    assert clean.ok, clean.differences
    victim = next(ln for ln in lines if ln.bucket == "interest")
    _plant(chdb_store, "edited amount", victim)
    report = reconcile(chdb_store, engine, lag={})
    named = [d for d in report.differences if d[0] == "balances equal the engine's" and d[3] == "margin"]
    assert named, report.differences


def test_margin_views_and_events_land(chdb_store: ChdbStore) -> None:
    """The loans view sums margin principal and unpaid interest from the ledger; interest income per day is
    what was booked; margin events land once however often their batch is inserted."""
    from processors.accrual import Accrual, sums
    from processors.ledger import INTEREST_ACCRUED, INTEREST_INCOME
    from processors.messages import MarginEvent
    from processors.rates import hour_of
    from processors.wire import margin_event_to_avro
    from tests.unit.test_loans import T0, at, borrow, market, to

    states: dict[str, UserState] = {}
    lines: list[LedgerLine] = []
    inputs = [
        command(OpenAccount, "open", "u", kyc_tier=1, region="DE"),
        command(DepositConfirmed, "ethereum:0xfund:0", "u", chain="ethereum", tx_hash="0xfund", log_index=0,
                address="0x" + "11" * 20, asset="USDT", amount="1000", block_number=1, account="spot"),
        to("margin", "1000"), borrow("b", "1500"),
    ]
    for cmd in inputs:
        state, out = apply(states.get("u"), cmd, at(T0, market()))
        assert out.result.status == "ACCEPTED", out.result
        states["u"] = state
        lines.extend(out.lines)
    first_hour = states["u"].loans[("margin", "USDT")].interest  # 1,500 x the hourly rate, up: 0.003425
    assert first_hour == 3_425
    # The partition recognizes income at the next full hour (processors.accrual): the first hour, attributed
    # as the loan was made, and the hour the tick charges into the index, not attributed yet: 2 x 0.003425.
    accrual = Accrual()
    accrual.add({}, sums(states["u"]))
    accrual.attributed(lines)
    rate = market().rates["USDT"]
    hourly = accrual.hour(0, hour_of(T0) + 1, T0 + 40 * 60_000, {"USDT": rate})
    assert [(ln.account, ln.amount) for ln in hourly] == [(INTEREST_ACCRUED, -6_850), (INTEREST_INCOME, 6_850)]
    _land(chdb_store, lines + hourly)
    assert chdb_store.query("SELECT asset, principal, interest_booked_unpaid, borrowers FROM loans").rows == [
        ("USDT", Decimal(1500), Decimal("0.003425"), 1)]
    assert chdb_store.query("SELECT asset, interest, bookings FROM interest_income_daily").rows == [
        ("USDT", Decimal("0.00685"), 1)]
    event = MarginEvent("u/margin/user/b/MarginLevel/no-transfer-out", T0, "u", "margin", "MarginLevel",
                        "no-transfer-out", "healthy", "1.6666", "cross-3x")
    body = CODEC.encode("MarginEvent", margin_event_to_avro(event, default_config()))[HEADER_LEN:]
    for _ in range(2):  # a retried insert of the same batch
        chdb_store.insert("margin_events_in", "Avro", container("MarginEvent", [body]), "margin-1")
    assert chdb_store.query("SELECT id, kind, band, previous_band, level FROM margin_events FINAL").rows == [
        (event.id, "MarginLevel", "no-transfer-out", "healthy", "1.6666")]
