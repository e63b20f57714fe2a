"""The outbox: receipts bound for a customer, each with its own retry schedule (the sink's side)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from agent.queue.database import Database

_COLUMNS = (
    "id, receipt_id, idempotency_key, body, correlation_id, state, attempts, next_attempt_at,"
    " last_error, created_at, delivered_at, cloud_id, kind, customer_kind, customer, claim_id"
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
class NewDelivery:
    """One receipt bound for one customer, as the matcher's stage hands it to the store."""

    receipt_id: str
    idempotency_key: str
    body: bytes
    correlation_id: str
    kind: str
    customer_kind: str
    customer: str
    claim_id: int | None = None


def insert(conn: sqlite3.Connection, d: NewDelivery, now: float) -> OutboxItem | None:
    """The new row, or None when the receipt is in the outbox already (seen again)."""
    cur = conn.execute(
        "INSERT INTO outbox (receipt_id, idempotency_key, body, correlation_id, kind,"
        " customer_kind, customer, claim_id, next_attempt_at, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            d.receipt_id,
            d.idempotency_key,
            d.body,
            d.correlation_id,
            d.kind,
            d.customer_kind,
            d.customer,
            d.claim_id,
            now,
            now,
        ),
    )
    if cur.rowcount == 0:
        return None
    assert cur.lastrowid is not None
    return OutboxItem(
        cur.lastrowid,
        d.receipt_id,
        d.idempotency_key,
        d.body,
        d.correlation_id,
        "pending",
        0,
        now,
        None,
        now,
        None,
        None,
        d.kind,
        d.customer_kind,
        d.customer,
        d.claim_id,
    )


class OutboxStore(Database):
    def enqueue(
        self,
        receipt_id: str,
        idempotency_key: str,
        body: bytes,
        correlation_id: str,
        now: float | None = None,
    ) -> OutboxItem:
        """Add one outbox row outside a poll (tests, tools); the existing row if the key exists."""
        now = time.time() if now is None else now
        delivery = NewDelivery(
            receipt_id, idempotency_key, body, correlation_id, "sale", "boniq_code", "", None
        )
        with self._tx() as conn:
            item = insert(conn, delivery, now)
        return item or self.by_receipt(receipt_id)

    def by_receipt(self, receipt_id: str) -> OutboxItem:
        rows = self._read(f"SELECT {_COLUMNS} FROM outbox WHERE receipt_id = ?", (receipt_id,))
        return _item(rows[0])

    def delivered_customer(self, receipt_id: str) -> tuple[str, str] | None:
        """The customer a receipt went (or is going) to, for credit receipts that follow it."""
        rows = self._read(
            "SELECT customer_kind, customer FROM outbox WHERE receipt_id = ? AND customer != ''",
            (receipt_id,),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT ?",
            (now, limit),
        )
        return [_item(r) for r in rows]

    def next_due_at(self) -> float | None:
        value = self._read("SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending'")[0][0]
        return None if value is None else float(value)

    def mark_delivered(self, item_id: int, *, cloud_id: str | None, now: float) -> None:
        self._write(
            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = ?,"
            " cloud_id = ?, last_error = NULL WHERE id = ?",
            (now, cloud_id, item_id),
        )

    def schedule_retry(self, item_id: int, *, next_attempt_at: float, error: str) -> None:
        self._write(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
            " WHERE id = ? AND state = 'pending'",
            (next_attempt_at, error[:1000], item_id),
        )

    def mark_dead(self, item_id: int, *, reason: str) -> None:
        self._write(
            "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?"
            " WHERE id = ?",
            (reason[:2000], item_id),
        )

    def requeue(self, item_id: int, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return (
            self._write(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ? "
                "WHERE id = ? AND state IN ('dead', 'pending')",
                (now, item_id),
            )
            > 0
        )

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
                (delivered_before,),
            ).rowcount
            conn.execute(
                "DELETE FROM claims WHERE state != 'pending' AND closed_at < ? AND id NOT IN "
                "(SELECT claim_id FROM outbox WHERE claim_id IS NOT NULL)",
                (delivered_before,),
            )
            conn.execute("DELETE FROM seen_receipts WHERE first_seen_at < ?", (delivered_before,))
            return purged

    def get(self, item_id: int) -> OutboxItem | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (item_id,))
        return _item(rows[0]) if rows else None

    def find_outbox(self, ref: str) -> list[OutboxItem]:
        """Items by outbox id, POS receipt id or correlation id (`cid=` of the log lines)."""
        number = int(ref) if ref.isdigit() and len(ref) < 19 else -1
        rows = self._read(
            f"SELECT {_COLUMNS} FROM outbox WHERE id = ? OR receipt_id = ?"
            " OR correlation_id = ? ORDER BY id",
            (number, ref, ref.removeprefix("cid=")),
        )
        return [_item(r) for r in rows]

    def outbox(self, state: str | None = None, limit: int = 100) -> list[OutboxItem]:
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        rows = self._read(
            f"SELECT {_COLUMNS} FROM outbox {where} ORDER BY id DESC LIMIT ?", [*args, limit]
        )
        return [_item(r) for r in rows]


def _item(row: tuple[Any, ...]) -> OutboxItem:
    return OutboxItem(row[0], row[1], row[2], bytes(row[3]), *row[4:])
