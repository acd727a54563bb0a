"""What the sink does with each kind of ClickHouse error (sinks.store.classify, sinks.sink.Lander): a
condition that passes is retried until it passes and nothing is dead-lettered; a refusal is believed
only when ClickHouse repeats it on a new connection. Real ClickHouse engine (chDB), errors injected
by a Store wrapper where the condition cannot be made on demand."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from schemas import CODEC
from sinks.http import ClickHouseHTTPServer
from sinks.sink import Counters, Item, Lander
from sinks.store import (
    TRANSIENT_CODES,
    ChdbStore,
    Rows,
    ServerStore,
    Store,
    StoreRejected,
    StoreTransient,
    StoreUnavailable,
    classify,
)
from streams.config import Settings
from streams.topics import LEDGER
from tests.unit.test_sink_time import ledger_batch, line

SETTINGS = Settings(topic_prefix="t.")


# -- classification ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "transient"), [
    ("Code: 241. DB::Exception: Memory limit (total) exceeded: would use 9.31 GiB. (MEMORY_LIMIT_EXCEEDED)", True),
    ("Code: 252. DB::Exception: Too many parts (3001 with average size of 2.1 MiB) in table. (TOO_MANY_PARTS)", True),
    ("Code: 242. DB::Exception: Table is in readonly mode (replica path: /clickhouse/t). (TABLE_IS_READ_ONLY)", True),
    ("Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)", True),
    ("Code: 75. DB::Exception: Cannot write to file. (CANNOT_WRITE_TO_FILE_DESCRIPTOR)", True),
    ("Code: 159. DB::Exception: Timeout exceeded: elapsed 5 seconds. (TIMEOUT_EXCEEDED)", True),
    ("Code: 209. DB::NetException: Timeout exceeded while reading from socket. (SOCKET_TIMEOUT)", True),
    ("Code: 210. DB::NetException: Connection refused. (NETWORK_ERROR)", True),
    ("Code: 202. DB::Exception: Too many simultaneous queries. Maximum: 100. (TOO_MANY_SIMULTANEOUS_QUERIES)", True),
    ("Code: 999. Coordination::Exception: Connection loss. (KEEPER_EXCEPTION)", True),
    ("Code: 279. DB::NetException: All connection tries failed. (ALL_CONNECTION_TRIES_FAILED)", True),
    ("Code: 164. DB::Exception: Cannot execute query in readonly mode. (READONLY)", True),
    ("Code: 319. DB::Exception: Unknown status, client must retry. (UNKNOWN_STATUS_OF_INSERT)", True),
    ("HTTP driver received HTTP status 503, server response: Service Unavailable", True),
    ("Code: 27. DB::Exception: Cannot parse input: expected '\"' before: 'one bitcoin'. "
     "(CANNOT_PARSE_INPUT_ASSERTION_FAILED)", False),
    ("Code: 60. DB::Exception: Unknown table expression identifier 'ledger_lines'. (UNKNOWN_TABLE)", False),
    ("Code: 2999. DB::Exception: a code nobody has listed", False),
    ("something without any code", False),
])
def test_classify_by_clickhouse_code(text: str, transient: bool) -> None:
    err = classify(RuntimeError(text))  # chDB's shape: a RuntimeError with ClickHouse's text
    assert isinstance(err, StoreTransient) is transient
    assert isinstance(err, StoreRejected)  # a one-shot caller (posflow sql) reports either as a refusal
    assert isinstance(err, StoreUnavailable) is transient  # and the sink retries only the transient ones


def test_classify_reads_clickhouse_connects_code_attribute() -> None:
    """clickhouse-connect puts the X-ClickHouse-Exception-Code header in `code`, whatever its message says."""
    assert isinstance(classify(DatabaseError("Received ClickHouse exception", code=241)), StoreTransient)
    assert not isinstance(classify(DatabaseError("Received ClickHouse exception", code=62)), StoreTransient)
    assert classify(DatabaseError("x", code=242)).code == 242


def test_the_listed_codes_are_clickhouses_names(chdb_store: ChdbStore) -> None:
    """Every transient code means what its name says in the ClickHouse engine we run."""
    codes = ", ".join(str(c) for c in TRANSIENT_CODES)
    names = dict(chdb_store.query(f"SELECT number, errorCodeToName(number) FROM system.numbers "
                                  f"WHERE number IN ({codes}) LIMIT {len(TRANSIENT_CODES)}").rows)
    assert names == TRANSIENT_CODES


def test_real_engine_errors_come_back_classified(chdb_store: ChdbStore) -> None:
    """The engine's own memory limit and timeout: transient on the chDB path, and over HTTP through
    clickhouse-connect (the code travels in the X-ClickHouse-Exception-Code header)."""
    memory = "SELECT groupArray(number) FROM numbers(1000000) SETTINGS max_memory_usage = 1000"
    timeout = "SELECT count() FROM system.numbers SETTINGS max_execution_time = 0.05, timeout_overflow_mode = 'throw'"
    with pytest.raises(StoreTransient) as got:
        chdb_store.query(memory)
    assert got.value.code == 241
    with pytest.raises(StoreTransient) as got:
        chdb_store.query(timeout)
    assert got.value.code == 159
    server = ClickHouseHTTPServer(chdb_store, 0).start()
    try:
        http = ServerStore(server.url, database=chdb_store.database)
        with pytest.raises(StoreTransient) as got:
            http.query(memory)
        assert got.value.code == 241
        with pytest.raises(StoreRejected) as refused:
            http.query("SELECT no_such_column FROM ledger_lines")
        assert not isinstance(refused.value, StoreTransient) and refused.value.code == 47
        http.close()
    finally:
        server.stop()


# -- what the sink does with them ---------------------------------------------------------------------
class FlakyStore(Store):
    """A real store whose inserts fail as told: `script` is consumed one error per insert attempt (None:
    let it through). ClickHouse is external to us, so this is where its failures are made."""

    def __init__(self, inner: ChdbStore, script: Sequence[BaseException | None] = ()) -> None:
        self.inner, self.database, self.where = inner, inner.database, inner.where
        self.script = list(script)
        self.attempts = 0
        self.reopened = 0
        self.refuse_after_reopen: set[str] = set()  # tables whose inserts keep failing (a broken table)

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.inner.command(sql, params)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> Rows:
        return self.inner.query(sql, params)

    def insert(self, table: str, fmt: str, data: bytes, token: str) -> None:
        self.attempts += 1
        if self.script:
            err = self.script.pop(0)
            if err is not None:
                raise classify(err)
        self.inner.insert(table, fmt, data, token)

    def reopen(self) -> None:
        self.reopened += 1
        self.inner.reopen()


@pytest.fixture
def items() -> Iterator[list[Item]]:
    topic = LEDGER.name(SETTINGS)
    yield [Item(topic, 0, n, b"u1", ledger_batch(f"b{n}", [line(f"e{n}", 0, 1_700_000_000_000 + n)]), b"")
           for n in range(8)]


def _lander(store: Store, stop: threading.Event | None = None) -> Lander:
    return Lander(SETTINGS, store, Counters(), stop or threading.Event(), backoff_max_s=0.05)


@pytest.mark.parametrize("code", [241, 252, 242, 243, 75, 159, 209, 210, 202, 999, 279, 164])
def test_a_transient_error_is_retried_and_nothing_is_refused(chdb_store: ChdbStore, items: list[Item],
                                                            code: int) -> None:
    error = RuntimeError(f"Code: {code}. DB::Exception: injected ({TRANSIENT_CODES[code]})")
    store = FlakyStore(chdb_store, [error, error, error])
    lander = _lander(store)
    for it in items:
        it.payload = lander.prepare(it)
    assert lander.land(items) == []
    assert lander.counters.retries == 3 and store.reopened == 0
    assert chdb_store.query("SELECT count() FROM ledger_lines FINAL").scalar() == len(items)


def test_a_refusal_is_believed_only_when_repeated_on_a_new_connection(chdb_store: ChdbStore,
                                                                      items: list[Item]) -> None:
    """An unknown code on the whole batch: bisected down to one record, which lands on a new connection."""
    unknown = RuntimeError("Code: 2999. DB::Exception: a passing condition nobody listed")
    # the batch, its first half, its first quarter, its first record: each refused once
    store = FlakyStore(chdb_store, [unknown, unknown, unknown, unknown])
    lander = _lander(store)
    for it in items:
        it.payload = lander.prepare(it)
    assert lander.land(items) == []
    assert store.reopened == 1 and lander.counters.reconnects == 1
    assert chdb_store.query("SELECT count() FROM ledger_lines FINAL").scalar() == len(items)


def test_a_record_refused_twice_is_the_only_one_refused(chdb_store: ChdbStore, items: list[Item]) -> None:
    bad = Item(items[0].topic, 0, 99, b"u1", ledger_batch("bad", [line("bad", 0, 1, amount="one bitcoin")]), b"")
    store = FlakyStore(chdb_store)
    lander = _lander(store)
    batch = [*items[:3], bad, *items[3:]]
    for it in batch:
        it.payload = lander.prepare(it)
    refused = lander.land(batch)
    assert [(it.offset, why.split(":")[0]) for it, why in refused] == [(99, "REFUSED_BY_CLICKHOUSE")]
    assert "Cannot parse" in refused[0][1]
    assert store.reopened == 1  # asked once more, on a new connection, before believing it
    assert chdb_store.query("SELECT count() FROM ledger_lines FINAL").scalar() == len(items)


def test_stopping_during_a_transient_error_abandons_without_refusing(chdb_store: ChdbStore,
                                                                    items: list[Item]) -> None:
    from sinks.sink import Abandoned

    stop = threading.Event()
    busy = RuntimeError("Code: 241. DB::Exception: injected (MEMORY_LIMIT_EXCEEDED)")
    store = FlakyStore(chdb_store, [busy] * 1000)
    lander = _lander(store, stop)
    for it in items:
        it.payload = lander.prepare(it)
    threading.Timer(0.5, stop.set).start()
    with pytest.raises(Abandoned):
        lander.land(items)
    assert store.reopened == 0 and chdb_store.query("SELECT count() FROM ledger_lines").scalar() == 0


def test_a_dead_letter_carries_the_original_bytes_it_came_with() -> None:
    """The replay lands a dead letter's value as the sink would have: what the sink writes must be it."""
    from processors.wire import dead_letter_to_avro

    value = ledger_batch("x", [line("x", 0, 5)])
    record = dead_letter_to_avro("t.ledger", 1, 2, 3, b"k", value, "why")
    assert CODEC.decode_as("DeadLetter", CODEC.encode("DeadLetter", record))["value"] == value
