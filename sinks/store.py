"""The ClickHouse the sink writes to: chDB in-process (the default), or a server via clickhouse-connect.

Both run the same SQL and answer in the same shape: queries come back as JSONCompact and are parsed
here, once, so a Decimal is a `Decimal` and an integer an `int` whichever backend answered. Inserts
take bytes in a ClickHouse input format (the sink sends Avro and JSONEachRow) and a deduplication
token, so a retried insert of the same batch is dropped by ClickHouse itself.

Both also fail in the same shape: every error is classified here (`classify`), by ClickHouse's error
code, into StoreTransient (wait and retry) or StoreRejected (possibly the data); StoreUnavailable is a
ClickHouse that does not answer at all.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from streams.config import Settings

DEFAULT_DATABASE = "posflow"
_SPOOL = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # memory-backed where there is one
_INT = re.compile(r"^(Nullable\()?(LowCardinality\()?U?Int\d+")
_DEC = re.compile(r"^(Nullable\()?Decimal")


class StoreError(RuntimeError):
    """A statement failed. `code` is ClickHouse's error code when ClickHouse answered with one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class StoreUnavailable(StoreError):
    """ClickHouse cannot be reached or is not serving; retrying later is the right answer."""


class StoreRejected(StoreError):
    """ClickHouse refused the statement or the data. Possibly a one-off of unknown cause (see `classify`),
    so the sink believes it only when the same record is refused again on a new connection."""


class StoreTransient(StoreUnavailable, StoreRejected):
    """ClickHouse answered, but with a condition that passes (memory, parts, a read-only replica, a full
    disk, a timeout...). It is a StoreUnavailable, so whoever can wait (the sink) retries it like an
    outage; and a StoreRejected, so a one-shot caller (`posflow sql`, the HTTP interface) reports it as
    this statement's refusal, with its code. Code that retries catches StoreUnavailable first."""


# ClickHouse error codes (src/Common/ErrorCodes.cpp) that say nothing about the data inserted: the
# server, its disks, its replicas or its load. Retrying the same bytes later succeeds once the
# condition passes, and dead-lettering them would lose good records, so these are retried forever.
TRANSIENT_CODES: Final[dict[int, str]] = {
    # load and limits that reset
    159: "TIMEOUT_EXCEEDED", 160: "TOO_SLOW", 173: "CANNOT_ALLOCATE_MEMORY", 201: "QUOTA_EXCEEDED",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES", 203: "NO_FREE_CONNECTION", 236: "ABORTED", 241: "MEMORY_LIMIT_EXCEEDED",
    252: "TOO_MANY_PARTS", 364: "RECEIVED_ERROR_TOO_MANY_REQUESTS", 394: "QUERY_WAS_CANCELLED",
    439: "CANNOT_SCHEDULE_TASK", 473: "DEADLOCK_AVOIDED", 745: "SERVER_OVERLOADED",
    749: "TCP_CONNECTION_LIMIT_REACHED", 762: "HTTP_CONNECTION_LIMIT_REACHED", 776: "RESOURCE_LIMIT_EXCEEDED",
    777: "MEMORY_RESERVATION_KILLED", 778: "MEMORY_RESERVATION_FAILED", 1017: "ASYNC_INSERT_FLUSH_TIMEOUT",
    1019: "QUERY_SLOT_ACQUISITION_TIMEOUT", 1020: "MEMORY_RESERVATION_ACQUISITION_TIMEOUT",
    # the network between ClickHouse and us or its peers
    95: "CANNOT_READ_FROM_SOCKET", 96: "CANNOT_WRITE_TO_SOCKET", 209: "SOCKET_TIMEOUT", 210: "NETWORK_ERROR",
    279: "ALL_CONNECTION_TRIES_FAILED", 1000: "POCO_EXCEPTION",
    # disks and files: full, failing, or out of descriptors
    74: "CANNOT_READ_FROM_FILE_DESCRIPTOR", 75: "CANNOT_WRITE_TO_FILE_DESCRIPTOR", 76: "CANNOT_OPEN_FILE",
    172: "CANNOT_CREATE_DIRECTORY", 204: "CANNOT_FSYNC", 243: "NOT_ENOUGH_SPACE", 272: "CANNOT_IO_SUBMIT",
    273: "CANNOT_IO_GETEVENTS", 274: "AIO_READ_ERROR", 275: "AIO_WRITE_ERROR", 294: "CANNOT_WRITE_TO_FILE",
    425: "SYSTEM_ERROR", 499: "S3_ERROR", 625: "IO_SETUP_ERROR", 771: "CACHE_CANNOT_WRITE_TO_CACHE_DISK",
    # a table or server not taking writes right now: read-only, restarting, being replaced, in maintenance
    164: "READONLY", 218: "TABLE_IS_DROPPED", 242: "TABLE_IS_READ_ONLY", 384: "PART_IS_TEMPORARILY_LOCKED",
    733: "TABLE_IS_BEING_RESTARTED", 738: "PART_IS_LOCKED", 774: "TABLE_IS_PERMANENTLY_READ_ONLY",
    # replication and Keeper: a replica, the quorum or the coordinator away for a while
    225: "NO_ZOOKEEPER", 244: "UNEXPECTED_ZOOKEEPER_ERROR", 254: "NO_ACTIVE_REPLICAS", 285: "TOO_FEW_LIVE_REPLICAS",
    286: "UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE", 289: "REPLICA_IS_NOT_IN_QUORUM", 369: "ALL_REPLICAS_ARE_STALE",
    415: "ALL_REPLICAS_LOST", 416: "REPLICA_STATUS_CHANGED", 529: "NOT_A_LEADER", 999: "KEEPER_EXCEPTION",
    # the insert may or may not have been written: retrying with the same deduplication token is the answer
    319: "UNKNOWN_STATUS_OF_INSERT",
}
# An HTTP status without a ClickHouse error code comes from what stands in front of it (a proxy, a load
# balancer) or from a server not ready yet.
TRANSIENT_HTTP: Final = frozenset({408, 425, 429, 502, 503, 504})
_CODE_IN_TEXT = re.compile(r"\bCode:\s*(\d+)")
_HTTP_STATUS = re.compile(r"HTTP status (\d{3})")


def error_code(exc: BaseException) -> int | None:
    """ClickHouse's error code: clickhouse-connect's `code` (from the X-ClickHouse-Exception-Code header),
    else the `Code: N.` that both ClickHouse server and chDB put at the start of their messages."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    found = _CODE_IN_TEXT.search(str(exc))
    return int(found.group(1)) if found else None


def classify(exc: BaseException) -> StoreError:
    """The one decision of what a ClickHouse error means for the data sent (the sink acts on it).

    * A code in TRANSIENT_CODES, or a bare HTTP 408/425/429/502/503/504: the server, not the data, is the
      problem -> StoreTransient, retried forever with backoff; nothing is dead-lettered or committed.
    * Any other answer -> StoreRejected. That includes codes that do mean bad data (CANNOT_PARSE_*,
      TYPE_MISMATCH...) and codes nobody listed; neither is believed at once: the sink bisects the
      insert down to one record and dead-letters it only if ClickHouse refuses it again on a new
      connection, so an unknown passing condition costs a reconnect, not a record.
    """
    message = str(exc)
    code = error_code(exc)
    if code is not None:
        if code in TRANSIENT_CODES:
            return StoreTransient(message, code)
        return StoreRejected(message, code)
    status = _HTTP_STATUS.search(message)
    if status and int(status.group(1)) in TRANSIENT_HTTP:
        return StoreTransient(message)
    return StoreRejected(message)


@dataclass(frozen=True)
class Rows:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def scalar(self) -> Any:
        assert len(self.rows) == 1 and len(self.columns) == 1, f"not one value: {self.columns} x {len(self.rows)}"
        return self.rows[0][0]


def parse_json_compact(text: str | bytes) -> Rows:
    """JSONCompact from either backend -> typed rows. Decimals are read as `Decimal`, never float."""
    if not text:
        return Rows([], [], [])
    doc = json.loads(text, parse_float=Decimal)
    meta = doc["meta"]
    columns = [m["name"] for m in meta]
    types = [m["type"] for m in meta]
    convert = [_converter(t) for t in types]
    rows = [tuple(c(v) for c, v in zip(convert, row, strict=True)) for row in doc["data"]]
    return Rows(columns, types, rows)


def _converter(type_name: str) -> Any:
    if _DEC.match(type_name):
        return lambda v: None if v is None else Decimal(str(v))
    if _INT.match(type_name):  # 64-bit integers come quoted
        return lambda v: None if v is None else int(v)
    return lambda v: v


class Store(ABC):
    database: str
    where: str  # for messages: a path or a URL

    @abstractmethod
    def command(self, sql: str, params: dict[str, Any] | None = None) -> None: ...

    @abstractmethod
    def query(self, sql: str, params: dict[str, Any] | None = None) -> Rows: ...

    @abstractmethod
    def insert(self, table: str, fmt: str, data: bytes, token: str) -> None:
        """Insert `data` (in ClickHouse input format `fmt`); the same token twice inserts once."""

    @abstractmethod
    def reopen(self) -> None:
        """Drop the connection and open a new one, in place (an HTTP server serving this store keeps
        serving it). The sink does this before it believes a refusal; StoreUnavailable if it cannot."""

    def close(self) -> None:  # noqa: B027 - optional for backends holding nothing
        pass


# Settings every sink insert carries. A ClickHouse insert touching more than 100 partitions (months of
# `ts`) is refused with TOO_MANY_PARTS, the code that otherwise means "merges are behind, wait": a batch
# holding client timestamps far apart would be retried forever. The number of months is bounded anyway
# (timestamps are clamped to TS_MIN_MS..TS_MAX_MS, 4,800 months), so the limit is lifted.
INSERT_SETTINGS: Final[dict[str, str]] = {"max_partitions_per_insert_block": "0"}

# ClickHouse's DateTime64 range, as documented for every server version: 1900-01-01 00:00:00.000 to
# 2299-12-31 23:59:59.999 UTC, in ms. A client's ts_ms can be any Avro long (year 1, 9999, negative,
# 2**62); `ts` columns hold it clamped into this range (migration 0004 does the same in SQL) and the
# `ts_ms` column next to them keeps the value as sent.
TS_MIN_MS: Final = -2_208_988_800_000
TS_MAX_MS: Final = 10_413_791_999_999


def clamp_ms(ts_ms: int) -> int:
    return min(max(ts_ms, TS_MIN_MS), TS_MAX_MS)


class ChdbStore(Store):
    """ClickHouse in-process, persisted under a directory. One process at a time may open it."""

    def __init__(self, path: Path, database: str = DEFAULT_DATABASE) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.where = str(path)
        self.database = database
        self._path = path
        self._session: Any = self._open()
        self._lock = threading.Lock()  # one statement at a time per session
        self._run(f"CREATE DATABASE IF NOT EXISTS {database}")
        self._run(f"USE {database}")

    def _open(self) -> Any:
        import chdb.session

        session_cls: Any = chdb.session.Session  # chdb has no type hints
        try:
            return session_cls(str(self._path))
        except RuntimeError as exc:
            raise StoreUnavailable(
                f"cannot open the chDB store at {self._path}: another process has it open (a running `posflow "
                "sink`?). Stop that process, or query through its HTTP port with "
                "CLICKHOUSE_URL=http://127.0.0.1:<port>."
            ) from exc

    def _run(self, sql: str, fmt: str = "CSV", params: dict[str, Any] | None = None) -> Any:
        with self._lock:
            try:
                return self._session.query(sql, fmt, params=params)
            except RuntimeError as exc:  # chDB raises ChdbError(RuntimeError) with ClickHouse's "Code: N." text
                raise classify(exc) from exc

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._run(sql, params=params)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> Rows:
        return parse_json_compact(self._run(sql, "JSONCompact", params).bytes())

    def raw(self, sql: str, fmt: str, params: dict[str, Any] | None = None) -> bytes:
        """The engine's own output bytes in `fmt` (for the HTTP interface)."""
        return bytes(self._run(sql, fmt, params).bytes())

    def insert(self, table: str, fmt: str, data: bytes, token: str) -> None:
        settings = ", ".join(f"{k} = {sql_quote(v)}" for k, v in {"insert_deduplication_token": token,
                                                                  **INSERT_SETTINGS}.items())
        self.insert_sql(f"INSERT INTO {table} SETTINGS {settings}", fmt, data)

    def insert_sql(self, insert: str, fmt: str, data: bytes) -> None:
        """`insert` is an INSERT statement without FORMAT and data.

        The data goes through a spool file and `INSERT ... SELECT * FROM file()`, not chDB's streaming
        insert: that one reported success for an Avro insert whose materialized view failed (a bad
        amount) and wrote nothing, which would have committed lines that never landed. The file path
        raises the error, and the file's structure is taken from the table inserted into.
        """
        fd, path = tempfile.mkstemp(prefix="posflow-insert-", suffix=f".{fmt.lower()}", dir=_SPOOL)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self._run(f"{insert} SELECT * FROM file({sql_quote(path)}, {sql_quote(fmt)})")
        finally:
            os.unlink(path)

    def reopen(self) -> None:
        with self._lock:
            self._session.close()
            self._session = self._open()
            try:
                self._session.query(f"USE {self.database}", "CSV")
            except RuntimeError as exc:
                raise classify(exc) from exc

    def close(self) -> None:
        with self._lock:
            self._session.close()


class ServerStore(Store):
    """A ClickHouse server over HTTP(S), through clickhouse-connect."""

    def __init__(self, url: str, database: str = DEFAULT_DATABASE) -> None:
        self.where = url
        self.database = database
        self._client: Any = self._connect()

    def _connect(self) -> Any:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        try:
            admin = clickhouse_connect.get_client(dsn=self.where, connect_timeout=5)
            admin.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            admin.close()
            return clickhouse_connect.get_client(dsn=self.where, database=self.database, connect_timeout=5,
                                                 send_receive_timeout=120)
        except OperationalError as exc:
            raise StoreUnavailable(f"no ClickHouse answers at {self.where}: {exc}", error_code(exc)) from exc
        except DatabaseError as exc:  # answered, e.g. still starting, or out of memory
            raise classify(exc) from exc

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        try:
            return fn(*args, **kwargs)
        except OperationalError as exc:  # connection refused, timeouts, 5xx without a ClickHouse error
            raise StoreUnavailable(f"ClickHouse at {self.where}: {exc}", error_code(exc)) from exc
        except DatabaseError as exc:
            raise classify(exc) from exc

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._call(self._client.command, sql, parameters=params)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> Rows:
        return parse_json_compact(self._call(self._client.raw_query, sql, parameters=params, fmt="JSONCompact"))

    def insert(self, table: str, fmt: str, data: bytes, token: str) -> None:
        self._call(self._client.raw_insert, table, insert_block=data, fmt=fmt,
                   settings={"insert_deduplication_token": token, **INSERT_SETTINGS})

    def reopen(self) -> None:
        self._client.close()
        self._client = self._connect()

    def close(self) -> None:
        self._client.close()


def sql_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def connect_when_up(url: str, database: str = DEFAULT_DATABASE, timeout_s: float = 60.0) -> ServerStore:
    """A ServerStore for a server that may still be starting (a sink or `sinks.http` just launched)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ServerStore(url, database)
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def chdb_path(settings: Settings) -> Path:
    return settings.home / "clickhouse"


def open_store(settings: Settings) -> Store:
    """The configured backend: a server when CLICKHOUSE_URL is set, else chDB under POSFLOW_HOME."""
    if settings.clickhouse_url:
        return ServerStore(settings.clickhouse_url)
    return ChdbStore(chdb_path(settings))
