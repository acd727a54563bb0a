"""ClickHouse's HTTP interface, served from the embedded chDB store.

chDB lives inside one process, so while the sink holds the store nobody else can open it. The sink
therefore serves the store over ClickHouse's own HTTP protocol on loopback; `posflow sql`, Grafana or
any ClickHouse client (clickhouse-connect here) query it with `CLICKHOUSE_URL`. The tests use the
same server to run the clickhouse-connect path against the real ClickHouse engine.

What is served is what clients use: `GET /ping`; queries by `query=` and/or the request body, with
`param_<name>` bound parameters, `database`, `default_format`; `INSERT ... FORMAT <fmt>` with the data
in the body (plain or lz4 / zstd / gzip encoded); errors as HTTP 500 with ClickHouse's message and
`X-ClickHouse-Exception-Code` (the sink classifies errors by that code). Server-side settings sent by
clients are accepted and ignored except `insert_deduplication_token` and the sink's own insert settings
(sinks.store.INSERT_SETTINGS).
"""

from __future__ import annotations

import contextlib
import gzip
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sinks.store import INSERT_SETTINGS, ChdbStore, StoreError, StoreRejected, sql_quote

_FORMAT_TAIL = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s", re.IGNORECASE)
_CODE = re.compile(r"Code: (\d+)\.")
# A query sent in the body with its data after it: `INSERT INTO t (a, b) FORMAT Native\n<data>`.
_BODY_INSERT = re.compile(rb"^\s*(INSERT\s+INTO\s.*?\sFORMAT\s+\w+)[ \t]*\r?\n?", re.IGNORECASE | re.DOTALL)


def _decode_body(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if not encoding or encoding == "identity":
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "lz4":
        import lz4.frame

        return bytes(lz4.frame.decompress(data))
    if encoding == "zstd":
        from backports import zstd

        return bytes(zstd.decompress(data))
    raise ValueError(f"unsupported Content-Encoding {encoding}")


class _Handler(BaseHTTPRequestHandler):
    server: ClickHouseHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a query log per request would drown the sink's own output

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/ping" or (url.path == "/" and "query=" not in url.query):  # health checks
            self._reply(200, b"Ok.\n", "text/plain")
            return
        self._handle(b"")

    def do_POST(self) -> None:
        body = self._read_body()
        try:
            body = _decode_body(body, self.headers.get("Content-Encoding", ""))
        except Exception as exc:
            self._error(400, f"Code: 1. DB::Exception: cannot read the request body: {exc}")
            return
        self._handle(body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():  # streamed inserts
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, body: bytes) -> None:
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        query = params.get("query", "")
        bound = {k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")}
        store = self.server.store
        try:
            head = None if query else _BODY_INSERT.match(body)
            if head:
                query, body = head.group(1).decode(), body[head.end():]
            if _INSERT.match(query) and body:
                self._insert(query, body, params)
                self._reply(200, b"", "text/plain")
                return
            if body:  # the query is the body, or its continuation
                query = f"{query}\n{body.decode()}" if query else body.decode()
            fmt = params.get("default_format", "TabSeparated")
            tail = _FORMAT_TAIL.search(query)
            if tail:
                fmt, query = tail.group(1), query[: tail.start()]
            data = store.raw(query, fmt, bound or None)
            self._reply(200, data, "application/octet-stream", {"X-ClickHouse-Format": fmt})
        except StoreError as exc:  # refused, or transient: the code goes back for the client to classify
            self._error(500, str(exc), exc.code)
        except Exception as exc:  # a reply, never a dropped connection
            self._error(500, f"Code: 1. DB::Exception: {type(exc).__name__}: {exc}")

    def _insert(self, query: str, body: bytes, params: dict[str, str]) -> None:
        tail = _FORMAT_TAIL.search(query)
        if tail is None:
            raise StoreRejected("Code: 62. DB::Exception: an INSERT with data in the body needs FORMAT <name>")
        statement = query[: tail.start()]
        settings = {k: params[k] for k in ("insert_deduplication_token", *INSERT_SETTINGS) if params.get(k)}
        if settings:
            statement += " SETTINGS " + ", ".join(f"{k} = {sql_quote(v)}" for k, v in settings.items())
        self.server.store.insert_sql(statement, tail.group(1), body)

    def _error(self, status: int, message: str, code: int | None = None) -> None:
        if code is None:
            found = _CODE.search(message)
            code = int(found.group(1)) if found else 1
        self._reply(status, message.encode() + b"\n", "text/plain", {"X-ClickHouse-Exception-Code": str(code)})

    def _reply(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-ClickHouse-Server-Display-Name", "posflow-chdb")
        self.send_header("X-ClickHouse-Timezone", "UTC")
        self.send_header("X-ClickHouse-Summary", "{}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class ClickHouseHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: ChdbStore, port: int, host: str = "127.0.0.1") -> None:
        super().__init__((host, port), _Handler)
        self.store = store
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ClickHouseHTTPServer:
        self._thread = threading.Thread(target=self.serve_forever, name="clickhouse-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def main(argv: list[str] | None = None) -> int:
    """`python -m sinks.http --path DIR --port N`: serve a chDB directory as a ClickHouse server."""
    import argparse
    import signal
    import sys
    from pathlib import Path

    from sinks.migrations import migrate
    from sinks.store import StoreUnavailable

    parser = argparse.ArgumentParser(prog="python -m sinks.http", description=main.__doc__)
    parser.add_argument("--path", required=True, type=Path, help="chDB data directory")
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args(argv)
    try:
        store = ChdbStore(args.path)
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    migrate(store)
    server = ClickHouseHTTPServer(store, args.port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"serving {args.path} at {server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
