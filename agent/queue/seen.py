"""What polls saw: every receipt recorded once with its first syncMarker and booking time, so a
receipt changed later is not taken for a new sale, and the recent-sale and late-scan rules and
support's candidates can look back at a till's sales."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.queue.claims import Claim
from agent.queue.sessions import SessionStore


@dataclass(frozen=True)
class Sighting:
    """A receipt a poll saw. `kind` is `sale` for a sale this till's claims could take (right
    type and branch, paid or not yet), `credit`, or `other`; `done` is False for an unpaid sale,
    which is judged again when it comes back paid."""

    receipt_id: str
    workplace: int | None
    booked_at: float | None  # on this till's clock: the POS clock offset removed
    marker: int
    kind: str
    done: bool = True
    total: int | None = None  # incl. VAT, cents: for support's list of candidates
    late: bool = False  # first seen below a syncMarker seen before it: it reached the API late
    session: bool = False  # booked in a webhook session: no polling claim may take it


@dataclass(frozen=True)
class SeenBefore:
    first_marker: int | None
    done: bool
    late: bool
    kind: str | None = None


@dataclass(frozen=True)
class PastSale:
    """A sale an earlier poll saw at a till: what the recent-sale and late-scan rules look at."""

    receipt_id: str
    workplace: int
    booked_at: float
    first_marker: int
    taken_by: str | None = None  # the customer whose claim took it
    session: bool = False  # booked in a webhook session: never a late scan's to take

    @property
    def taken(self) -> bool:
        return self.taken_by is not None


class SeenStore(SessionStore):
    def seen_before(self, receipt_ids: Sequence[str]) -> dict[str, SeenBefore]:
        """What earlier polls saw of these receipts; a receipt in the outbox counts as done."""
        if not receipt_ids:
            return {}
        marks = ",".join("?" * len(receipt_ids))
        found = {
            r[0]: SeenBefore(r[1], bool(r[2]), bool(r[3]), r[4])
            for r in self._read(
                f"SELECT receipt_id, first_marker, done, late, kind FROM seen_receipts"
                f" WHERE receipt_id IN ({marks})",
                receipt_ids,
            )
        }
        for (receipt_id,) in self._read(
            f"SELECT receipt_id FROM outbox WHERE receipt_id IN ({marks})", receipt_ids
        ):
            earlier = found.get(receipt_id, SeenBefore(None, True, False))
            found[receipt_id] = SeenBefore(earlier.first_marker, True, earlier.late, earlier.kind)
        return found

    def past_sales(self, workplaces: Sequence[int], booked_since: float) -> list[PastSale]:
        """Sales seen at these tills booked since then (this till's clock), oldest first."""
        if not workplaces:
            return []
        marks = ",".join("?" * len(workplaces))
        rows = self._read(
            "SELECT s.receipt_id, s.workplace, s.booked_at, s.first_marker, o.customer, s.session"
            " FROM seen_receipts s LEFT JOIN outbox o ON o.receipt_id = s.receipt_id"
            " AND o.claim_id IS NOT NULL"
            f" WHERE s.kind = 'sale' AND s.workplace IN ({marks})"
            " AND s.booked_at >= ? ORDER BY s.booked_at",
            [*workplaces, booked_since],
        )
        return [PastSale(r[0], r[1], r[2], r[3] or 0, r[4], bool(r[5])) for r in rows]

    def candidates(self, claim: Claim, before: float, after: float) -> list[dict[str, Any]]:
        """Sales seen at the claim's till booked from `before` s before its scan to `after` s
        after it, with who has each: what support weighs before `claims assign`."""
        rows = self._read(
            "SELECT s.receipt_id, s.booked_at, s.total, s.done, o.customer, o.claim_id"
            " FROM seen_receipts s LEFT JOIN outbox o ON o.receipt_id = s.receipt_id"
            " WHERE s.kind = 'sale' AND s.workplace = ? AND s.booked_at BETWEEN ? AND ?"
            " ORDER BY s.booked_at",
            (claim.workplace, claim.scanned_at - before, claim.scanned_at + after),
        )
        return [
            {
                "receipt_id": r[0],
                "booked_at": r[1],
                "total": r[2],
                "paid": bool(r[3]),
                "workplace": claim.workplace,
                "taken": bool(r[4]),
                "claim_id": r[5],
            }
            for r in rows
        ]


def record_sightings(conn: sqlite3.Connection, sightings: Sequence[Sighting], now: float) -> None:
    """Inside the poll's transaction: what it saw (an unpaid sale seen paid later is done)."""
    conn.executemany(
        "INSERT INTO seen_receipts (receipt_id, first_seen_at, workplace, booked_at,"
        " first_marker, kind, done, total, late, session)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
        " done = max(done, excluded.done), total = excluded.total,"
        " session = max(session, excluded.session)",
        [
            (
                s.receipt_id,
                now,
                s.workplace,
                s.booked_at,
                s.marker,
                s.kind,
                int(s.done),
                s.total,
                int(s.late),
                int(s.session),
            )
            for s in sightings
        ],
    )
