"""The BONIQ cloud simulator: `docs/cloud-api.md` as a loopback HTTP server.

It validates every receipt against `receipt.schema.json`, keeps each idempotency key once in SQLite
and answers replays with 200 and key reuse with a different body with 409. Faults are injected
through `sim.faults` (in process) or `POST /_sim/faults` (from another process); stored receipts are
read back with `sim.receipts()` or `GET /_sim/receipts`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import signal
import socket
import sqlite3
import ssl
import struct
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import jsonschema

from agent.kassa.mapping import canonical_json as canonical
from agent.logs import get_logger

log = get_logger(__name__)

MAX_BODY = 1 << 20
_SCHEMA = json.loads(
    resources.files("agent").joinpath("contracts", "receipt.schema.json").read_text("utf-8")
)


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.upper())
    except ValueError:
        return False
    return True


def format_checker() -> jsonschema.FormatChecker:
    """`date-time` checked as RFC 3339 with an offset (jsonschema skips it without an extra)."""
    checker = jsonschema.FormatChecker()
    checker.checks("date-time")(_is_rfc3339)
    return checker


_VALIDATOR = jsonschema.Draft202012Validator(_SCHEMA, format_checker=format_checker())


@dataclass
class Faults:
    """What the simulator gets wrong on purpose; every field may change at any moment.

    Shares are probabilities per POST. `retry_after` is sent on 429 and forced 429/503 answers:
    a number means delay-seconds, a string is sent verbatim (an HTTP date, say). `reset_rate`
    drops the connection with a TCP reset instead of answering, half the time after the receipt
    was stored (the answer is lost, the retry must be a replay). `force_status` answers every
    POST with that status. `down` answers 503 to everything but `/_sim/`.
    """

    error_rate: float = 0.0
    latency: float = 0.0
    rate_limit: float = 0.0
    retry_after: float | str | None = 1
    reset_rate: float = 0.0
    token_valid: bool = True
    down: bool = False
    force_status: int | None = None

    def update(self, **changes: Any) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        for name, value in changes.items():
            setattr(self, name, value)


class _Answer(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class _Reset(Exception):
    pass


class _ReceiptDB:
    """Receipts by idempotency key; one connection behind a lock."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        if path:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS receipts (
                key TEXT PRIMARY KEY, id TEXT NOT NULL, fingerprint TEXT NOT NULL,
                payload TEXT NOT NULL, received_at REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS posts (
                key TEXT PRIMARY KEY, count INTEGER NOT NULL, stored INTEGER NOT NULL DEFAULT 0);
            """
        )

    def count_post(self, key: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO posts(key, count) VALUES (?, 1)"
                " ON CONFLICT(key) DO UPDATE SET count = count + 1",
                (key,),
            )

    def store(self, key: str, payload: dict[str, Any]) -> tuple[int, str | None]:
        """201 and the new id, 200 and the old id (same body), or 409 and None."""
        text = canonical(payload).decode()
        fingerprint = hashlib.sha256(text.encode()).hexdigest()
        with self._lock:
            row = self._db.execute(
                "SELECT id, fingerprint FROM receipts WHERE key = ?", (key,)
            ).fetchone()
            if row:
                return (200, row[0]) if row[1] == fingerprint else (409, None)
            cloud_id = f"rcpt_{secrets.token_hex(8)}"
            self._db.execute(
                "INSERT INTO receipts(key, id, fingerprint, payload, received_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, cloud_id, fingerprint, text, time.time()),
            )
            self._db.execute("UPDATE posts SET stored = stored + 1 WHERE key = ?", (key,))
            return 201, cloud_id

    def payloads(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT payload FROM receipts ORDER BY rowid").fetchall()
        return [json.loads(r[0]) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM receipts").fetchone()[0])

    def counter(self, sql: str) -> Counter[str]:
        with self._lock:
            return Counter(dict(self._db.execute(sql).fetchall()))


class CloudSimulator:
    """`with CloudSimulator("tok") as sim: url = sim.url` — a cloud on 127.0.0.1."""

    def __init__(
        self,
        token: str = "demo-token",
        *,
        merchant_id: str = "demo-merchant",
        db_path: Path | None = None,
        seed: int | None = None,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """`tls=(certfile, keyfile)` serves HTTPS, for tests of certificate checking."""
        self.token = token
        self.tls = tls
        self.merchant_id = merchant_id
        self.faults = Faults()
        self.url: str | None = None
        self.connections_accepted = 0
        self.last_headers: dict[str, str] = {}
        self._db = _ReceiptDB(Path(db_path) if db_path else None)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, port: int = 0) -> str:
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", port), _Handler, self)
        scheme = "http"
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="cloud-sim",
            daemon=True,
        )
        self._thread.start()
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}/"
        return self.url

    def stop(self) -> None:
        """Stop serving; the stored receipts stay readable."""
        self._stopping.set()
        if self._server:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._server = None
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def receipts(self) -> list[dict[str, Any]]:
        """The stored payloads, in the order they were first stored."""
        return self._db.payloads()

    def count(self) -> int:
        return self._db.count()

    def stored_keys(self) -> Counter[str]:
        """How many 201 answers each idempotency key got (the contract says: one)."""
        return self._db.counter("SELECT key, stored FROM posts WHERE stored > 0")

    def post_counts(self) -> Counter[str]:
        """How many POSTs carried each idempotency key, retries and failures included."""
        return self._db.counter("SELECT key, count FROM posts")

    def chance(self, share: float) -> bool:
        if share <= 0:
            return False
        with self._rng_lock:
            return self._rng.random() < share

    def choice(self, options: tuple[int, ...]) -> int:
        with self._rng_lock:
            return self._rng.choice(options)

    def pause(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def record_post(self, key: str) -> None:
        self._db.count_post(key)

    def store(self, key: str, payload: dict[str, Any]) -> tuple[int, str | None]:
        return self._db.store(key, payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, sim: CloudSimulator) -> None:
        self.sim = sim
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            if alive:
                self._conns.add(conn)
                self.sim.connections_accepted += 1
            else:
                self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("cloud simulator connection error", exc_info=True)  # noqa: LOG014


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "boniq-cloud-sim/1"
    timeout = 120
    wbufsize = -1
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("cloud simulator request", extra={"fields": {"line": format % args}})

    @property
    def sim(self) -> CloudSimulator:
        return self.server.sim

    def do_GET(self) -> None:
        self._dispatch(
            {
                "/v1/health": self._health,
                "/_sim/receipts": lambda body: (200, self.sim.receipts()),
                "/_sim/faults": lambda body: (200, asdict(self.sim.faults)),
            }
        )

    def do_POST(self) -> None:
        self._dispatch({"/v1/receipts": self._receipt, "/_sim/faults": self._set_faults})

    def _dispatch(self, routes: dict[str, Any]) -> None:
        path = self.path.split("?", 1)[0]
        try:
            body = self._read_body()
            route = routes.get(path)
            if route is None:
                raise _Answer(404, {"error": "not found"})
            if not path.startswith("/_sim/") and self.sim.faults.down:
                raise _Answer(503, {"error": "service unavailable"})
            status, answer = route(body)
            self._send(status, answer)
        except _Answer as a:
            self._send(a.status, a.body, a.headers)
        except _Reset:
            self._reset()

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            self.close_connection = True
            raise _Answer(400, {"error": "bad Content-Length"}) from None
        if size > MAX_BODY or size < 0:
            self.close_connection = True
            raise _Answer(400, {"error": "body too large"})
        return self.rfile.read(size)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _reset(self) -> None:
        """Drop the connection with a TCP RST, no answer."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()

    def _authorised(self) -> bool:
        expected = f"Bearer {self.sim.token}"
        given = self.headers.get("Authorization", "")
        return self.sim.faults.token_valid and secrets.compare_digest(
            given.encode(), expected.encode()
        )

    def _health(self, body: bytes) -> tuple[int, Any]:
        if not self._authorised():
            raise _Answer(401, {"error": "invalid or missing token"})
        return 200, {"status": "ok", "merchant_id": self.sim.merchant_id}

    def _set_faults(self, body: bytes) -> tuple[int, Any]:
        try:
            self.sim.faults.update(**json.loads(body or b"{}"))
        except (ValueError, TypeError) as exc:
            raise _Answer(400, {"error": str(exc)}) from None
        return 200, asdict(self.sim.faults)

    def _receipt(self, body: bytes) -> tuple[int, Any]:
        sim, faults = self.sim, self.sim.faults
        sim.last_headers = dict(self.headers.items())
        key = self.headers.get("Idempotency-Key")
        if key:
            sim.record_post(key[:128])
        sim.pause(faults.latency)
        self._inject_faults()
        if not self._authorised():
            raise _Answer(401, {"error": "invalid or missing token"})
        if not key:
            raise _Answer(400, {"error": "Idempotency-Key header is required"})
        payload = _parse(body)
        if payload.get("idempotency_key") != key:
            raise _Answer(400, {"error": "Idempotency-Key header differs from the body's key"})
        errors = _schema_errors(payload)
        if errors:
            raise _Answer(422, {"error": "receipt does not match the schema", "details": errors})
        reset = sim.chance(faults.reset_rate)
        if reset and sim.chance(0.5):
            raise _Reset
        status, cloud_id = sim.store(key, payload)
        if reset:
            raise _Reset
        if status == 409:
            raise _Answer(409, {"error": "idempotency key reused with a different body"})
        return status, {"id": cloud_id, "status": "stored" if status == 201 else "duplicate"}

    def _inject_faults(self) -> None:
        sim, faults = self.sim, self.sim.faults
        if faults.force_status is not None:
            status = int(faults.force_status)
            headers = _retry_after(status, faults)
            raise _Answer(status, {"error": "forced by the simulator"}, headers)
        if sim.chance(faults.error_rate):
            raise _Answer(sim.choice((500, 503)), {"error": "simulated server error"})
        if sim.chance(faults.rate_limit):
            raise _Answer(429, {"error": "rate limited"}, _retry_after(429, faults))


def _retry_after(status: int, faults: Faults) -> dict[str, str]:
    value = faults.retry_after
    if status not in (429, 503) or value is None:
        return {}
    return {"Retry-After": value if isinstance(value, str) else str(int(value))}


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise _Answer(400, {"error": "body is not valid JSON"}) from None
    if not isinstance(payload, dict):
        raise _Answer(400, {"error": "body is not a JSON object"})
    return payload


def _schema_errors(payload: dict[str, Any]) -> list[str]:
    errors = sorted(_VALIDATOR.iter_errors(payload), key=lambda e: list(e.absolute_path))
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"[:300]
        for e in errors[:20]
    ]


def retry_after_date(seconds: float) -> str:
    """An HTTP-date `seconds` from now, for `faults.retry_after`."""
    return formatdate(time.time() + seconds, usegmt=True)


def serve_forever_cli(port: int, token: str, db_path: str | None = None) -> None:
    """`boniq-agent sim cloud`: serve until SIGINT or SIGTERM."""
    done = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    sim = CloudSimulator(token, db_path=Path(db_path) if db_path else None)
    try:
        print(sim.start(port), flush=True)
        done.wait()
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def example_receipt(
    receipt_id: str, *, merchant_id: str = "demo-merchant", code: str = "BQ17K3M9QW4RT8ZP2C56"
) -> dict[str, Any]:
    """A small valid receipt (one line, 21 % VAT, paid by card) for tests, benches, smoke runs."""
    key = hashlib.sha256(f"boniq.receipt/1|{merchant_id}|{receipt_id}".encode()).hexdigest()
    return {
        "schema": "boniq.receipt/1",
        "idempotency_key": key,
        "merchant_id": merchant_id,
        "store": {"branch": 1, "workplace": 2, "name": "Demo store"},
        "customer": {"email": code} if "@" in code else {"boniq_code": code},
        "pos": {
            "system": "mpluskassa",
            "receipt_id": receipt_id,
            "transaction": f"T-{receipt_id[:8]}",
            "number": {"branch": 1, "workplace": 2, "year": 2026, "number": 1042},
        },
        "kind": "sale",
        "issued_at": "2026-10-03T14:41:12+02:00",
        "financial_date": "2026-10-03",
        "currency": "EUR",
        "lines": [
            {
                "article_number": "8710",
                "description": "Koffie",
                "quantity": "2",
                "unit_price": 250,
                "discount": 0,
                "total": 500,
                "vat_rate": "21",
            }
        ],
        "vat": [{"rate": "21", "excl": 413, "vat": 87}],
        "payments": [{"method": "PIN", "amount": 500}],
        "totals": {"incl": 500, "excl": 413, "vat": 87},
        "scanned_at": "2026-10-03T14:41:05+02:00",
        "agent": {"version": "0.1.0"},
    }
