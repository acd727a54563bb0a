"""The ClickHouse the sink writes to: chDB in-process (the default), or a server via clickhouse-connect.

Both run the same SQL and answer in the same shape: queries come back as JSONCompact and are parsed
here, once, so a Decimal is a `Decimal` and an integer an `int` whichever backend answered. Inserts
take bytes in a ClickHouse input format (the sink sends Avro and JSONEachRow) and a deduplication
token, so a retried insert of the same batch is dropped by ClickHouse itself.
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
from typing import Any

from streams.config import Settings

DEFAULT_DATABASE = "posflow"
_SPOOL = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # memory-backed where there is one
_INT = re.compile(r"^(Nullable\()?(LowCardinality\()?U?Int\d+")
_DEC = re.compile(r"^(Nullable\()?Decimal")


class StoreUnavailable(RuntimeError):
    """ClickHouse cannot be reached or is not serving; retrying later is the right answer."""


class StoreRejected(RuntimeError):
    """ClickHouse refused the statement or the data itself; retrying the same bytes will not help."""


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

    def close(self) -> None:  # noqa: B027 - optional for backends holding nothing
        pass


class ChdbStore(Store):
    """ClickHouse in-process, persisted under a directory. One process at a time may open it."""

    def __init__(self, path: Path, database: str = DEFAULT_DATABASE) -> None:
        import chdb.session

        path.mkdir(parents=True, exist_ok=True)
        self.where = str(path)
        self.database = database
        session_cls: Any = chdb.session.Session  # chdb has no type hints
        try:
            self._session: Any = session_cls(str(path))
        except RuntimeError as exc:
            raise StoreUnavailable(
                f"cannot open the chDB store at {path}: another process has it open (a running `posflow sink`?). "
                "Stop that process, or query through its HTTP port with CLICKHOUSE_URL=http://127.0.0.1:<port>."
            ) from exc
        self._lock = threading.Lock()  # one statement at a time per session
        self._run(f"CREATE DATABASE IF NOT EXISTS {database}")
        self._run(f"USE {database}")

    def _run(self, sql: str, fmt: str = "CSV", params: dict[str, Any] | None = None) -> Any:
        with self._lock:
            try:
                return self._session.query(sql, fmt, params=params)
            except RuntimeError as exc:
                raise StoreRejected(str(exc)) from exc

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._run(sql, params=params)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> Rows:
        return parse_json_compact(self._run(sql, "JSONCompact", params).bytes())

    def raw(self, sql: str, fmt: str, params: dict[str, Any] | None = None) -> bytes:
        """The engine's own output bytes in `fmt` (for the HTTP interface)."""
        return bytes(self._run(sql, fmt, params).bytes())

    def insert(self, table: str, fmt: str, data: bytes, token: str) -> None:
        self.insert_sql(f"INSERT INTO {table} SETTINGS insert_deduplication_token = {sql_quote(token)}", fmt, data)

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

    def close(self) -> None:
        with self._lock:
            self._session.close()


class ServerStore(Store):
    """A ClickHouse server over HTTP(S), through clickhouse-connect."""

    def __init__(self, url: str, database: str = DEFAULT_DATABASE) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import OperationalError

        self.where = url
        self.database = database
        try:
            admin = clickhouse_connect.get_client(dsn=url, connect_timeout=5)
            admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")
            admin.close()
            self._client = clickhouse_connect.get_client(dsn=url, database=database, connect_timeout=5,
                                                         send_receive_timeout=120)
        except OperationalError as exc:
            raise StoreUnavailable(f"no ClickHouse answers at {url}: {exc}") from exc

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        try:
            return fn(*args, **kwargs)
        except OperationalError as exc:  # connection refused, timeouts, 5xx without a ClickHouse error
            raise StoreUnavailable(f"ClickHouse at {self.where}: {exc}") from exc
        except DatabaseError as exc:
            raise StoreRejected(str(exc)) from exc

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._call(self._client.command, sql, parameters=params)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> Rows:
        return parse_json_compact(self._call(self._client.raw_query, sql, parameters=params, fmt="JSONCompact"))

    def insert(self, table: str, fmt: str, data: bytes, token: str) -> None:
        self._call(self._client.raw_insert, table, insert_block=data, fmt=fmt,
                   settings={"insert_deduplication_token": token})

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
