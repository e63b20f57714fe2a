"""The durable buffer: one SQLite file holding claims, the outbox and the POS cursor.

WAL with synchronous=FULL: measured in reference/reliability.md §3, the only WAL setting that kept
every acknowledged row through simulated power loss, at ~3,500 commits/s. Every write is one
explicit `BEGIN IMMEDIATE … COMMIT`; the POS cursor only moves inside `commit_poll`, in the same
transaction that stores the deliveries it produced. The store knows no source and no sink.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import StoreCorrupt, StoreError, StoreFull, StoreLocked

DB_NAME = "boniq-agent.db"
BUSY_TIMEOUT_MS = 5000

_MIGRATIONS: list[str] = [
    """
    CREATE TABLE claims (
        id INTEGER PRIMARY KEY,
        correlation_id TEXT NOT NULL,
        customer_kind TEXT NOT NULL CHECK (customer_kind IN ('boniq_code', 'email')),
        customer TEXT NOT NULL,
        workplace INTEGER NOT NULL,
        source TEXT NOT NULL,
        scanned_at REAL NOT NULL,
        pos_marker INTEGER,
        fence_marker INTEGER,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'matched', 'expired', 'replaced', 'unsure')),
        receipt_id TEXT,
        closed_at REAL
    );
    CREATE INDEX claims_pending ON claims (state, workplace, scanned_at);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        receipt_id TEXT NOT NULL UNIQUE,
        idempotency_key TEXT NOT NULL,  -- derived from receipt_id, so unique with it
        body BLOB NOT NULL,
        correlation_id TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT 'sale',
        customer_kind TEXT,
        customer TEXT,
        claim_id INTEGER REFERENCES claims (id),
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        created_at REAL NOT NULL,
        delivered_at REAL,
        cloud_id TEXT
    );
    CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
    CREATE TABLE seen_receipts (
        receipt_id TEXT PRIMARY KEY,
        first_seen_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE cursor (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
]

_SUPERSEDED = """
    state = 'pending' AND EXISTS (
        SELECT 1 FROM claims AS newer
        WHERE newer.workplace = claims.workplace AND newer.scanned_at > claims.scanned_at
          AND (newer.fence_marker IS NOT NULL OR newer.state IN ('matched', 'unsure')))
"""

_OUTBOX_COLUMNS = (
    "id, receipt_id, idempotency_key, body, correlation_id, state, attempts, next_attempt_at,"
    " last_error, created_at, delivered_at, cloud_id, kind, customer_kind, customer, claim_id"
)
_CLAIM_COLUMNS = (
    "id, correlation_id, customer_kind, customer, workplace, source, scanned_at, pos_marker,"
    " state, receipt_id, closed_at, fence_marker"
)


@dataclass(frozen=True)
class OutboxItem:
    id: int
    receipt_id: str
    idempotency_key: str
    body: bytes
    correlation_id: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    delivered_at: float | None
    cloud_id: str | None
    kind: str = "sale"
    customer_kind: str | None = None
    customer: str | None = None
    claim_id: int | None = None


@dataclass(frozen=True)
class Claim:
    id: int
    correlation_id: str
    customer_kind: str
    customer: str
    workplace: int
    source: str
    scanned_at: float
    pos_marker: int | None
    state: str
    receipt_id: str | None
    closed_at: float | None
    fence_marker: int | None = None


@dataclass(frozen=True)
class NewDelivery:
    """What the matcher hands to `commit_poll`: one receipt bound for one customer."""

    receipt_id: str
    idempotency_key: str
    body: bytes
    correlation_id: str
    kind: str
    customer_kind: str
    customer: str
    claim_id: int | None = None


@dataclass(frozen=True)
class PollResult:
    stored: list[OutboxItem]  # new outbox rows
    replaced: list[Claim]     # superseded claims closed: their till moved on without their sale
    unsure: list[Claim]       # claims closed because their sale could not be told apart


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    duplicate: bool
    replaced: list[Claim]


def translate(exc: sqlite3.Error) -> StoreError:
    """An sqlite3 error as a StoreError that says what store IT can do about it."""
    text = str(exc).lower()
    if "full" in text or getattr(exc, "sqlite_errorcode", None) == 13:
        return StoreFull(f"the disk holding the database is full ({exc}); free space there;"
                         " everything already stored is kept")
    if "locked" in text or "busy" in text:
        return StoreLocked(f"another process holds the database lock ({exc})")
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return StoreCorrupt(f"the database file is damaged ({exc}); run `boniq-agent doctor`")
    return StoreError(f"database error: {exc}")


class Store:
    """Thread-safe: one connection guarded by a lock; every public write is one transaction."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        try:
            self._conn = self._connect()
            if not readonly:
                self._migrate()
            else:
                self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise translate(exc) from None

    @classmethod
    def open(cls, data_dir: Path | str, *, readonly: bool = False) -> Store:
        data_dir = Path(data_dir)
        path = data_dir / DB_NAME
        if readonly:
            if not path.exists():
                raise StoreError(f"no database at {path}: the agent has not run with this data_dir")
            return cls(path, readonly=True)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        return cls(path)

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000,
            )
        else:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not self.readonly:
            _refuse_damaged(conn)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot switch {self.path} to WAL (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(_MIGRATIONS):  # never run an older schema over a newer one
            raise StoreCorrupt(
                f"{self.path} has schema version {version}, written by a newer boniq-agent; this "
                f"build knows schema versions up to {len(_MIGRATIONS)}: install the newer "
                "boniq-agent again (the store is left as it is)")
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            with self._tx() as conn:
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise translate(exc) from None

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise translate(exc) from None

    # -- claims -------------------------------------------------------------------------------

    def add_claim(
        self, *, correlation_id: str, customer_kind: str, customer: str, workplace: int,
        source: str, scanned_at: float, pos_marker: int | None, dedupe_window: float = 5.0,
    ) -> ClaimResult:
        """Store a claim durably. The same customer at the same till within `dedupe_window`
        seconds is the same claim. Other pending claims at that till are superseded (returned
        as `replaced`): they may still take a sale booked before this scan, and are closed
        as `replaced` by the first poll that proves no such sale is left (`commit_poll`)."""
        with self._tx() as conn:
            pending = [Claim(*r) for r in conn.execute(
                f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE state = 'pending' AND workplace = ?",
                (workplace,),
            )]
            for claim in pending:
                if claim.customer == customer and scanned_at - claim.scanned_at <= dedupe_window:
                    return ClaimResult(claim, duplicate=True, replaced=[])
            cur = conn.execute(
                "INSERT INTO claims (correlation_id, customer_kind, customer, workplace, source,"
                " scanned_at, pos_marker) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (correlation_id, customer_kind, customer, workplace, source, scanned_at, pos_marker),
            )
            claim = Claim(cur.lastrowid, correlation_id, customer_kind, customer, workplace,
                          source, scanned_at, pos_marker, "pending", None, None, None)
            return ClaimResult(claim, duplicate=False, replaced=pending)

    def pending_claims(self) -> list[Claim]:
        rows = self._read(
            f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE state = 'pending' ORDER BY scanned_at, id"
        )
        return [Claim(*r) for r in rows]

    def claims(self, state: str | None = None, limit: int = 100) -> list[Claim]:
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        rows = self._read(
            f"SELECT {_CLAIM_COLUMNS} FROM claims {where} ORDER BY id DESC LIMIT ?", [*args, limit]
        )
        return [Claim(*r) for r in rows]

    def expire_claims(self, *, scanned_before: float, now: float) -> list[Claim]:
        """Pending claims scanned before the cut-off become `expired`: kept and countable."""
        with self._tx() as conn:
            rows = [Claim(*r) for r in conn.execute(
                f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE state = 'pending' AND scanned_at < ?",
                (scanned_before,),
            )]
            conn.execute(
                "UPDATE claims SET state = 'expired', closed_at = ? "
                "WHERE state = 'pending' AND scanned_at < ?", (now, scanned_before),
            )
        return rows

    # -- cursor and the poll transaction --------------------------------------------------------

    def get_cursor(self, name: str = "receipts") -> int | None:
        rows = self._read("SELECT value FROM cursor WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def commit_poll(
        self, *, marker: int, deliveries: Sequence[NewDelivery], name: str = "receipts",
        now: float | None = None, seen: Sequence[str] = (), fence_ids: Sequence[int] = (),
        unsure_ids: Sequence[int] = (), reserve: Sequence[tuple[int, str]] = (),
    ) -> PollResult:
        """Store what one poll produced and advance the cursor, all or nothing.

        A receipt already in the outbox (seen again under a new syncMarker) is not added twice.
        `seen`: every receipt id of the poll, so that one changed later (a new syncMarker) is
        not taken for a new sale. `fence_ids`: claims that were pending, scanned before this
        poll started, and matched against it, which caught up: every receipt booked before
        their scan is at or below `marker`. `unsure_ids`: claims closed as `unsure`.
        `reserve`: (claim id, receipt id) of unpaid sales a claim waits for."""
        now = time.time() if now is None else now
        added: list[OutboxItem] = []
        with self._tx() as conn:
            for d in deliveries:
                item = self._insert_outbox(conn, d, now)
                if item is not None:
                    added.append(item)
                    if d.claim_id is not None:
                        conn.execute(
                            "UPDATE claims SET state = 'matched', receipt_id = ?, closed_at = ? "
                            "WHERE id = ?", (d.receipt_id, now, d.claim_id),
                        )
            conn.executemany("INSERT OR IGNORE INTO seen_receipts VALUES (?, ?)",
                             [(receipt_id, now) for receipt_id in seen])
            conn.executemany("UPDATE claims SET fence_marker = ? WHERE id = ? AND state = 'pending'"
                             " AND fence_marker IS NULL", [(marker, i) for i in fence_ids])
            unsure = self._close(conn, unsure_ids, "unsure", now)
            conn.executemany("UPDATE claims SET receipt_id = ? WHERE id = ? AND state = 'pending'",
                             [(receipt_id, claim_id) for claim_id, receipt_id in reserve])
            replaced = [Claim(*r) for r in conn.execute(
                f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE {_SUPERSEDED}")]
            conn.execute(f"UPDATE claims SET state = 'replaced', closed_at = ? WHERE {_SUPERSEDED}",
                         (now,))
            conn.execute(
                "INSERT INTO cursor (name, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at WHERE excluded.value > cursor.value",
                (name, marker, now),
            )
        return PollResult(added, replaced, unsure)

    @staticmethod
    def _close(conn: sqlite3.Connection, ids: Sequence[int], state: str, now: float) -> list[Claim]:
        closed = []
        for claim_id in ids:
            row = conn.execute(f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE id = ? AND "
                               "state = 'pending'", (claim_id,)).fetchone()
            if row:
                conn.execute("UPDATE claims SET state = ?, closed_at = ? WHERE id = ?",
                             (state, now, claim_id))
                closed.append(Claim(*row))
        return closed

    @staticmethod
    def _insert_outbox(conn: sqlite3.Connection, d: NewDelivery, now: float) -> OutboxItem | None:
        cur = conn.execute(
            "INSERT INTO outbox (receipt_id, idempotency_key, body, correlation_id, kind,"
            " customer_kind, customer, claim_id, next_attempt_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (d.receipt_id, d.idempotency_key, d.body, d.correlation_id, d.kind,
             d.customer_kind, d.customer, d.claim_id, now, now),
        )
        if cur.rowcount == 0:
            return None
        return OutboxItem(cur.lastrowid, d.receipt_id, d.idempotency_key, d.body,
                          d.correlation_id, "pending", 0, now, None, now, None, None,
                          d.kind, d.customer_kind, d.customer, d.claim_id)

    def enqueue(
        self, receipt_id: str, idempotency_key: str, body: bytes, correlation_id: str,
        now: float | None = None,
    ) -> OutboxItem:
        """Add one outbox row outside a poll (tests, tools); the existing row if the key exists."""
        now = time.time() if now is None else now
        delivery = NewDelivery(receipt_id, idempotency_key, body, correlation_id, "sale",
                               "boniq_code", "", None)
        with self._tx() as conn:
            item = self._insert_outbox(conn, delivery, now)
        return item or self._by_receipt(receipt_id)

    def _by_receipt(self, receipt_id: str) -> OutboxItem:
        rows = self._read(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE receipt_id = ?",
                          (receipt_id,))
        return _item(rows[0])

    def known_receipts(self, receipt_ids: Sequence[str]) -> set[str]:
        """Which of these POS receipts an earlier poll saw already (in the outbox or not)."""
        if not receipt_ids:
            return set()
        marks = ",".join("?" * len(receipt_ids))
        rows = self._read(
            f"SELECT receipt_id FROM seen_receipts WHERE receipt_id IN ({marks}) UNION "
            f"SELECT receipt_id FROM outbox WHERE receipt_id IN ({marks})", [*receipt_ids] * 2)
        return {r[0] for r in rows}

    def delivered_customer(self, receipt_id: str) -> tuple[str, str] | None:
        """The customer a receipt went (or is going) to, for credit receipts that follow it."""
        rows = self._read(
            "SELECT customer_kind, customer FROM outbox WHERE receipt_id = ? AND customer != ''",
            (receipt_id,),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    # -- the sink's side -----------------------------------------------------------------------

    def due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        rows = self._read(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT ?", (now, limit),
        )
        return [_item(r) for r in rows]

    def next_due_at(self) -> float | None:
        return self._read("SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending'")[0][0]

    def mark_delivered(self, item_id: int, *, cloud_id: str | None, now: float) -> None:
        self._write(
            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = ?,"
            " cloud_id = ?, last_error = NULL WHERE id = ?", (now, cloud_id, item_id),
        )

    def schedule_retry(self, item_id: int, *, next_attempt_at: float, error: str) -> None:
        self._write(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
            " WHERE id = ? AND state = 'pending'", (next_attempt_at, error[:1000], item_id),
        )

    def mark_dead(self, item_id: int, *, reason: str) -> None:
        self._write(
            "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?"
            " WHERE id = ?", (reason[:2000], item_id),
        )

    def requeue(self, item_id: int, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self._write(
            "UPDATE outbox SET state = 'pending', next_attempt_at = ? "
            "WHERE id = ? AND state IN ('dead', 'pending')", (now, item_id),
        ) > 0

    def requeue_dead(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self._write(
            "UPDATE outbox SET state = 'pending', next_attempt_at = ? WHERE state = 'dead'", (now,)
        )

    def purge_delivered(self, *, delivered_before: float) -> int:
        """Retention: delivered rows, the claims they closed and receipts seen, past the cut-off.

        A credit receipt of a purged sale no longer finds its customer: retention is the promise
        to customers that their data leaves the till."""
        with self._tx() as conn:
            purged = conn.execute(
                "DELETE FROM outbox WHERE state = 'delivered' AND delivered_at < ?",
                (delivered_before,)).rowcount
            conn.execute(
                "DELETE FROM claims WHERE state != 'pending' AND closed_at < ? AND id NOT IN "
                "(SELECT claim_id FROM outbox WHERE claim_id IS NOT NULL)", (delivered_before,))
            conn.execute("DELETE FROM seen_receipts WHERE first_seen_at < ?", (delivered_before,))
            return purged

    def _write(self, sql: str, args: Sequence[Any]) -> int:
        with self._tx() as conn:
            return conn.execute(sql, args).rowcount

    def get(self, item_id: int) -> OutboxItem | None:
        rows = self._read(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (item_id,))
        return _item(rows[0]) if rows else None

    def outbox(self, state: str | None = None, limit: int = 100) -> list[OutboxItem]:
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        rows = self._read(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox {where} ORDER BY id DESC LIMIT ?", [*args, limit]
        )
        return [_item(r) for r in rows]

    # -- support -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The figures `status` shows and metrics export."""
        claims = dict(self._read("SELECT state, count(*) FROM claims GROUP BY state"))
        outbox = dict(self._read("SELECT state, count(*) FROM outbox GROUP BY state"))
        oldest, last_delivery = self._read(
            "SELECT (SELECT min(created_at) FROM outbox WHERE state = 'pending'),"
            " (SELECT max(delivered_at) FROM outbox WHERE state = 'delivered')"
        )[0]
        last_error = self._read(
            "SELECT last_error FROM outbox WHERE last_error IS NOT NULL AND state != 'delivered'"
            " ORDER BY id DESC LIMIT 1"
        )
        return {
            "claims_by_state": claims,
            "claims_pending": claims.get("pending", 0),
            "claims_expired": claims.get("expired", 0),
            "claims_matched": claims.get("matched", 0),
            "claims_unsure": claims.get("unsure", 0),
            "outbox_pending": outbox.get("pending", 0),
            "outbox_delivered": outbox.get("delivered", 0),
            "outbox_dead": outbox.get("dead", 0),
            "oldest_pending_at": oldest,
            "last_delivery_at": last_delivery,
            "last_error": last_error[0][0] if last_error else None,
            "cursor": self.get_cursor(),
        }

    def quick_check(self) -> str:
        return str(self._read("PRAGMA quick_check")[0][0])


def _refuse_damaged(conn: sqlite3.Connection) -> None:
    """Nothing is written to a damaged file: some damage only shows on reading the pages it hit,
    so a writer checks the whole file once before its first write (`doctor` explains recovery)."""
    result = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    if result != "ok":
        conn.close()
        raise StoreCorrupt(f"the database file is damaged ({' '.join(result.split())});"
                           " run `boniq-agent doctor`")


def _item(row: tuple) -> OutboxItem:
    return OutboxItem(row[0], row[1], row[2], bytes(row[3]), *row[4:])
