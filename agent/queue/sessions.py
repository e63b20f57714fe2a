"""Webhook sessions: the POS sessions the till told the agent about, their line ids and claims.

In webhook mode (docs/webhooks.md) a code is read inside a POS session, and the
receipt that session books carries the session's line ids (`webhookData.webhookLineId`). The
store keeps, per session, its till, its state (open, completed, cancelled), the claim of the code
scanned in it and every line id it ever had, so the poller can give a receipt to exactly the
claim of the session whose lines it carries, and to no one else.

Every event is stored under its key (instance, counter, event, session): a repeated event is
recognised and answered as it was the first time, and changes nothing.
"""

from __future__ import annotations

import enum
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from agent.errors import WebhookRefused
from agent.queue import claims
from agent.queue.claims import CLAIM_COLUMNS, Claim, ClaimState, Close, NewClaim, Reason
from agent.queue.outbox import OutboxStore

SESSION_KEEP = 2 * 86400.0  # line ids outlive any receipt that reaches the API late
EVENT_KEEP = 86400.0


class SessionScanOutcome(enum.StrEnum):
    LINKED = "linked"  # the session's code: a new claim, or the customer's pending one adopted
    SAME = "same"  # the session's code read again
    SECOND_CODE = "second-code"  # another code in a session that has one: not linked
    RECENT_SALE = "recent-sale"  # read just after a sale at the till: maybe that sale's, unsure
    PREVIOUS_SALE = "previous-sale"  # read again just after the customer's own sale: that one's


@dataclass(frozen=True)
class EventKey:
    """What makes an event the same event: the counter alone may reset (a restarted till)."""

    instance_id: str
    counter: int
    event: str
    session_id: str


@dataclass(frozen=True)
class SessionEvent:
    """One webhook event of a POS session, as the receiver hands it to the store."""

    event: str
    session_id: str
    branch: int
    workplace: int
    line_ids: tuple[str, ...] = ()
    key: EventKey | None = None
    at: float | None = None


@dataclass(frozen=True)
class SessionScan:
    outcome: SessionScanOutcome
    claim: Claim
    replayed: bool = False


@dataclass(frozen=True)
class SessionUpdate:
    closed: list[Close]
    replayed: bool = False


@dataclass(frozen=True)
class SessionLink:
    """The webhook session a receipt line belongs to, and that session's claim."""

    session_id: str
    claim_id: int | None
    state: str


class SessionStore(OutboxStore):
    def scan_in_session(
        self, event: SessionEvent, new: NewClaim, *, rescan_guard: float = 0.0
    ) -> SessionScan:
        """The claim for a code read in a session, committed before the till is answered.

        - The session's first code keeps the session: the same code again is the same claim, a
          different one is not linked (it may be the next customer's phone, handed over early).
        - Within `rescan_guard` seconds after the customer's own session at this till completed,
          the code is that session's again (the phone read once more after paying), and the
          new session is not linked.
        - Within `rescan_guard` seconds after another session at this till completed, the code
          may be a late scan for that sale: its claim closes unsure (`recent-sale`) and the
          session stays free, so a scan after the guard links it.
        - A pending claim of the same customer at the till (a webcam read it too) becomes the
          session's claim rather than a second claim that would wait for another sale."""
        now = _now(event)
        with self._tx() as conn:
            replay = _replayed(conn, event.key)
            if replay is not None and replay[1] is not None:
                held = claims.read(conn, replay[1])
                if held is not None:
                    return SessionScan(SessionScanOutcome(replay[0]), held, True)
            _touch(conn, event, now)
            outcome, claim = _scan_outcome(conn, event, new, now - rescan_guard)
            _remember(conn, event.key, outcome.value, claim.id, now, replace=replay is not None)
            return SessionScan(outcome, claim)

    def session_event(self, event: SessionEvent) -> SessionUpdate:
        """A session's lines, and its end: `cancelSession` closes its claim `cancelled`,
        `completeSession` marks it completed (its receipt is due), `mergeSession` closes it
        unsure (its lines join another sale, which someone else may pay), others record lines."""
        now = _now(event)
        with self._tx() as conn:
            if _replayed(conn, event.key) is not None:
                return SessionUpdate([], replayed=True)
            _touch(conn, event, now)
            closed: list[Close] = []
            if event.event == "cancelSession":
                closed = _cancel(conn, event.session_id, now)
            elif event.event == "mergeSession":
                closed = _merged(conn, event.session_id, now)
            elif event.event == "completeSession":
                conn.execute(
                    "UPDATE webhook_sessions SET state = 'completed', completed_at = ?"
                    " WHERE session_id = ? AND state = 'open'",
                    (now, event.session_id),
                )
            _remember(conn, event.key, event.event, None, now)
            return SessionUpdate(closed)

    def sessions_of_lines(self, line_ids: Sequence[str]) -> dict[str, SessionLink]:
        """The known session of each of these line ids (unknown ones are left out)."""
        found: dict[str, SessionLink] = {}
        for start in range(0, len(line_ids), 500):
            chunk = list(line_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for line_id, session_id, claim_id, state in self._read(
                "SELECT l.line_id, s.session_id, s.claim_id, s.state FROM webhook_lines l"
                " JOIN webhook_sessions s ON s.session_id = l.session_id"
                f" WHERE l.line_id IN ({marks})",
                chunk,
            ):
                found[line_id] = SessionLink(session_id, claim_id, state)
        return found

    def purge_sessions(self, now: float | None = None) -> int:
        """Sessions past `SESSION_KEEP` (their lines with them) and event keys past a day."""
        now = time.time() if now is None else now
        with self._tx() as conn:
            gone = conn.execute(
                "DELETE FROM webhook_sessions WHERE last_event_at < ?", (now - SESSION_KEEP,)
            ).rowcount
            conn.execute("DELETE FROM webhook_events WHERE at < ?", (now - EVENT_KEEP,))
            return gone


def _now(event: SessionEvent) -> float:
    return time.time() if event.at is None else event.at


def _replayed(conn: sqlite3.Connection, key: EventKey | None) -> tuple[str, int | None] | None:
    """The stored outcome of this event, if it came before; refused when its key came with
    another event name."""
    if key is None:
        return None
    row = conn.execute(
        "SELECT event, outcome, claim_id FROM webhook_events WHERE instance_id = ?"
        " AND counter = ? AND session_id = ?",
        (key.instance_id, key.counter, key.session_id),
    ).fetchone()
    if row is None:
        return None
    if row[0] != key.event:
        raise WebhookRefused(  # the path is not signed: one event's body under another's name
            "INVALID_DATA", f"event {key.counter} of this session came before as {row[0]}"
        )
    return row[1], row[2]


def _remember(
    conn: sqlite3.Connection,
    key: EventKey | None,
    outcome: str,
    claim_id: int | None,
    now: float,
    *,
    replace: bool = False,
) -> None:
    if key is not None:
        conn.execute(
            f"INSERT {'OR REPLACE ' if replace else ''}INTO webhook_events (instance_id,"
            " counter, event, session_id, outcome, claim_id, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key.instance_id, key.counter, key.event, key.session_id, outcome, claim_id, now),
        )


def _touch(conn: sqlite3.Connection, event: SessionEvent, now: float) -> None:
    conn.execute(
        "INSERT INTO webhook_sessions (session_id, branch, workplace, started_at, last_event_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET"
        " last_event_at = excluded.last_event_at",
        (event.session_id, event.branch, event.workplace, now, now),
    )
    conn.executemany(
        "INSERT INTO webhook_lines (line_id, session_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(line_id, event.session_id) for line_id in event.line_ids],
    )


def _scan_outcome(
    conn: sqlite3.Connection, event: SessionEvent, new: NewClaim, since: float
) -> tuple[SessionScanOutcome, Claim]:
    held = _session_claim(conn, event.session_id)
    if held is not None and held.customer != new.customer:
        return SessionScanOutcome.SECOND_CODE, held  # whatever became of the first code's claim
    if held is not None and held.state not in (ClaimState.EXPIRED, ClaimState.UNSURE):
        return SessionScanOutcome.SAME, held
    recent = conn.execute(
        "SELECT s.claim_id, c.customer FROM webhook_sessions s"
        " LEFT JOIN claims c ON c.id = s.claim_id"
        " WHERE s.workplace = ? AND s.state = 'completed' AND s.completed_at >= ?"
        " AND s.session_id != ? ORDER BY c.customer = ? DESC LIMIT 1",
        (event.workplace, since, event.session_id, new.customer),
    ).fetchone()
    if recent is not None and recent[1] == new.customer:
        return SessionScanOutcome.PREVIOUS_SALE, _read(conn, recent[0])
    if recent is not None:
        return SessionScanOutcome.RECENT_SALE, claims.insert(conn, new, unsure=Reason.RECENT_SALE)
    return SessionScanOutcome.LINKED, _link(conn, event, new)


def _session_claim(conn: sqlite3.Connection, session_id: str) -> Claim | None:
    row = conn.execute(
        f"SELECT {CLAIM_COLUMNS} FROM claims WHERE id ="
        " (SELECT claim_id FROM webhook_sessions WHERE session_id = ?)",
        (session_id,),
    ).fetchone()
    return Claim(*row) if row is not None else None


def _link(conn: sqlite3.Connection, event: SessionEvent, new: NewClaim) -> Claim:
    row = conn.execute(
        "SELECT id FROM claims WHERE customer = ? AND workplace = ? AND state = 'pending'"
        " AND session_id IS NULL ORDER BY scanned_at DESC LIMIT 1",
        (new.customer, new.workplace),
    ).fetchone()
    if row is not None:
        claim_id = int(row[0])
        conn.execute(
            "UPDATE claims SET session_id = ?, receipt_id = NULL WHERE id = ?",
            (event.session_id, claim_id),
        )
    else:
        claim_id = claims.insert(conn, replace(new, session_id=event.session_id)).id
    conn.execute(
        "UPDATE webhook_sessions SET claim_id = ? WHERE session_id = ?",
        (claim_id, event.session_id),
    )
    return _read(conn, claim_id)


def _read(conn: sqlite3.Connection, claim_id: int) -> Claim:
    found = claims.read(conn, claim_id)
    assert found is not None
    return found


def _merged(conn: sqlite3.Connection, session_id: str, now: float) -> list[Close]:
    claim = _session_claim(conn, session_id)
    if claim is None or not claim.is_pending:
        return []
    conn.execute(
        "UPDATE claims SET state = 'unsure', reason = ?, closed_at = ? WHERE id = ?",
        (Reason.MERGED.value, now, claim.id),
    )
    return [Close(claim, ClaimState.UNSURE, Reason.MERGED)]


def _cancel(conn: sqlite3.Connection, session_id: str, now: float) -> list[Close]:
    conn.execute(
        "UPDATE webhook_sessions SET state = 'cancelled', completed_at = ? WHERE session_id = ?",
        (now, session_id),
    )
    claim = _session_claim(conn, session_id)
    if claim is None or not claim.is_pending:
        return []
    conn.execute(
        "UPDATE claims SET state = 'cancelled', closed_at = ? WHERE id = ?", (now, claim.id)
    )
    return [Close(claim, ClaimState.CANCELLED)]
