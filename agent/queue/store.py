"""The durable buffer: one SQLite file holding claims, the outbox and the POS cursor.

The POS cursor only moves inside `commit_poll`, in the same transaction that stores the
deliveries and claim decisions it produced. The store knows no source and no sink.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import ClaimStateError
from agent.queue import claims, outbox
from agent.queue.claims import CLAIM_COLUMNS as _CLAIM_COLUMNS
from agent.queue.claims import Claim, ClaimState, Close, NewClaim, check_assignable
from agent.queue.database import DB_NAME, translate
from agent.queue.outbox import NewDelivery, OutboxItem
from agent.queue.seen import PastSale, SeenBefore, SeenStore, Sighting, record_sightings

__all__ = [
    "DB_NAME",
    "Claim",
    "ClaimResult",
    "NewClaim",
    "NewDelivery",
    "OutboxItem",
    "PastSale",
    "PollCommit",
    "PollResult",
    "SeenBefore",
    "Sighting",
    "Store",
    "translate",
]


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    duplicate: bool


@dataclass(frozen=True)
class PollCommit:
    """Everything one poll decided, stored with the new cursor all or nothing."""

    marker: int
    deliveries: Sequence[NewDelivery] = ()
    sightings: Sequence[Sighting] = ()
    fences: Sequence[int] = ()  # claims whose every earlier receipt is at or below `marker`
    closes: Sequence[Close] = ()
    reserves: Sequence[tuple[int, str]] = ()  # (claim id, receipt id) of unpaid sales awaited
    now: float | None = None


@dataclass(frozen=True)
class PollResult:
    stored: list[OutboxItem] = field(default_factory=list)
    closed: list[Close] = field(default_factory=list)  # claims still pending until this commit


class Store(SeenStore):
    # -- claims -------------------------------------------------------------------------------

    def add_claim(
        self, new: NewClaim, *, dedupe_window: float, rescan_guard: float = 0.0
    ) -> ClaimResult:
        """Store a claim durably. The same customer at the same till is the same claim while its
        claim is pending, when it was scanned within `dedupe_window` seconds (in any state), or
        took its sale within `rescan_guard` seconds (the phone read again after its sale)."""
        with self._tx() as conn:
            row = conn.execute(
                f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE customer = ? AND workplace = ? AND"
                " (state = 'pending' OR scanned_at >= ? OR (state = 'delivered' AND closed_at >= ?))"
                " ORDER BY scanned_at DESC LIMIT 1",
                (
                    new.customer,
                    new.workplace,
                    new.scanned_at - dedupe_window,
                    new.scanned_at - rescan_guard,
                ),
            ).fetchone()
            if row is not None:
                return ClaimResult(Claim(*row), duplicate=True)
            return ClaimResult(claims.insert(conn, new), duplicate=False)

    def claim(self, claim_id: int) -> Claim | None:
        rows = self._read(f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE id = ?", (claim_id,))
        return Claim(*rows[0]) if rows else None

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

    def expire_claims(
        self,
        *,
        scanned_before: float,
        reserved_before: float,
        now: float,
        idle_before: float | None = None,
    ) -> list[Claim]:
        """Pending claims past their time become `expired`: kept and countable. A claim that
        waits for an unpaid sale (`receipt_id` set) has the longer `reserved_before`. A claim of
        a webhook session counts from the session's last event while it is open (a long sale
        keeps it: `idle_before`, default `scanned_before`), and waits `reserved_before` for its
        receipt once the session completed."""
        where = (
            "state = 'pending' AND CASE WHEN session_id IS NULL THEN"
            " (receipt_id IS NULL AND scanned_at < ?1) OR scanned_at < ?2"
            " ELSE coalesce((SELECT CASE w.state WHEN 'open' THEN w.last_event_at < ?4"
            " ELSE coalesce(w.completed_at, w.last_event_at) < ?2 END FROM webhook_sessions w"
            " WHERE w.session_id = claims.session_id), scanned_at < ?4) END"
        )
        args = (scanned_before, reserved_before)
        with self._tx() as conn:
            idle = scanned_before if idle_before is None else idle_before
            rows = [
                Claim(*r)
                for r in conn.execute(
                    f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE {where}", (*args, now, idle)
                )
            ]
            conn.execute(
                f"UPDATE claims SET state = 'expired', closed_at = ?3 WHERE {where}",
                (*args, now, idle),
            )
        return rows

    def purge_delivered(self, *, delivered_before: float) -> int:
        self.purge_sessions()
        return super().purge_delivered(delivered_before=delivered_before)

    def close_claims(self, closes: Sequence[Close], now: float | None = None) -> list[Close]:
        """End pending claims outside a poll (a cancelled POS session); the ones that were
        still pending."""
        with self._tx() as conn:
            return self._close(conn, closes, time.time() if now is None else now)

    @staticmethod
    def _close(conn: sqlite3.Connection, closes: Sequence[Close], now: float) -> list[Close]:
        done = []
        for close in closes:
            cur = conn.execute(
                "UPDATE claims SET state = ?, reason = ?, closed_at = ?,"
                " receipt_id = coalesce(?, receipt_id) WHERE id = ? AND state = 'pending'"
                " AND session_id IS ?",  # not a claim a session adopted since it was judged
                (
                    close.state.value,
                    close.reason and close.reason.value,
                    now,
                    close.receipt_id,
                    close.claim.id,
                    close.claim.session_id,
                ),
            )
            if cur.rowcount:
                done.append(close)
        return done

    def assign(self, claim_id: int, delivery: NewDelivery, now: float | None = None) -> OutboxItem:
        """Support hands an unsure or expired claim its receipt; refused when the claim is not
        assignable or the receipt already went to a customer."""
        now = time.time() if now is None else now
        with self._tx() as conn:
            row = conn.execute(
                f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE id = ?", (claim_id,)
            ).fetchone()
            if row is None:
                raise ClaimStateError(f"no claim {claim_id}")
            check_assignable(Claim(*row))
            item = outbox.insert(conn, delivery, now)
            if item is None:
                raise ClaimStateError(
                    f"receipt {delivery.receipt_id} already went to a customer;"
                    " it cannot be assigned to another"
                )
            conn.execute(
                "UPDATE claims SET state = 'assigned', receipt_id = ?, closed_at = ? WHERE id = ?",
                (delivery.receipt_id, now, claim_id),
            )
            return item

    # -- cursor and the poll transaction --------------------------------------------------------

    def get_cursor(self, name: str = "receipts") -> int | None:
        rows = self._read("SELECT value FROM cursor WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else None

    def commit_poll(self, poll: PollCommit) -> PollResult:
        """Store what one poll produced and advance the cursor, all or nothing. A receipt
        already in the outbox (seen again under a new syncMarker) is not added twice."""
        now = time.time() if poll.now is None else poll.now
        with self._tx() as conn:
            stored = self._deliver(conn, poll.deliveries, now)
            record_sightings(conn, poll.sightings, now)
            conn.executemany(
                "UPDATE claims SET fence_marker = ? WHERE id = ? AND state = 'pending'"
                " AND fence_marker IS NULL",
                [(poll.marker, i) for i in poll.fences],
            )
            closed = self._close(conn, poll.closes, now)
            conn.executemany(
                "UPDATE claims SET receipt_id = ? WHERE id = ? AND state = 'pending'",
                [(receipt_id, claim_id) for claim_id, receipt_id in poll.reserves],
            )
            conn.execute(
                "INSERT INTO cursor (name, value, updated_at) VALUES ('receipts', ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at WHERE excluded.value > cursor.value",
                (poll.marker, now),
            )
        return PollResult(stored, closed)

    @staticmethod
    def _deliver(
        conn: sqlite3.Connection, deliveries: Sequence[NewDelivery], now: float
    ) -> list[OutboxItem]:
        added = []
        for d in deliveries:
            item = outbox.insert(conn, d, now)
            if item is None:
                continue
            added.append(item)
            if d.claim_id is not None:
                conn.execute(
                    "UPDATE claims SET state = 'delivered', receipt_id = ?, closed_at = ?"
                    " WHERE id = ? AND state = 'pending'",
                    (d.receipt_id, now, d.claim_id),
                )
        return added

    # -- support -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The figures `status` shows and metrics export."""
        claims = {state.value: 0 for state in ClaimState}
        claims.update(self._read("SELECT state, count(*) FROM claims GROUP BY state"))
        reasons = dict(
            self._read("SELECT reason, count(*) FROM claims WHERE state = 'unsure' GROUP BY reason")
        )
        outbox_states = dict(self._read("SELECT state, count(*) FROM outbox GROUP BY state"))
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
            "claims_pending": claims["pending"],
            "claims_expired": claims["expired"],
            "claims_delivered": claims["delivered"],
            "claims_unsure": claims["unsure"],
            "claims_unsure_reasons": {str(k): v for k, v in reasons.items()},
            "outbox_pending": outbox_states.get("pending", 0),
            "outbox_delivered": outbox_states.get("delivered", 0),
            "outbox_dead": outbox_states.get("dead", 0),
            "oldest_pending_at": oldest,
            "last_delivery_at": last_delivery,
            "last_error": last_error[0][0] if last_error else None,
            "cursor": self.get_cursor(),
        }
