"""Claims: a customer's code read at a till, waiting for the sale it belongs to.

A claim is `pending` until exactly one of these ends it (docs/matching.md):

- `delivered`: a receipt was stored for the customer, on evidence (`till-sequence`,
  `pos-session`, or `credit-link` when the code was shown at a return of the customer's own sale);
- `expired`: no receipt within `matching.claim_ttl`;
- `unsure`: the rules found another explanation for the next sale (the `Reason` says which), so no
  receipt was sent rather than maybe a stranger's;
- `cancelled`: the POS session the code was scanned in was cancelled (webhook mode);
- `assigned`: support gave an unsure or expired claim its receipt (`boniq-agent claims assign`).

The store keeps the states; this module owns their names, the reasons and which moves are allowed.
"""

from __future__ import annotations

import enum
import sqlite3
from dataclasses import dataclass

from agent.errors import ClaimStateError


class ClaimState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    EXPIRED = "expired"
    UNSURE = "unsure"
    CANCELLED = "cancelled"
    ASSIGNED = "assigned"


ENDS = (
    ClaimState.DELIVERED,
    ClaimState.EXPIRED,
    ClaimState.UNSURE,
    ClaimState.CANCELLED,
    ClaimState.ASSIGNED,
)
ASSIGNABLE = frozenset({ClaimState.UNSURE, ClaimState.EXPIRED})


class Reason(enum.StrEnum):
    """Why a claim closed `unsure`: each names the other explanation the rules found."""

    TWO_CODES = "two-codes"
    RECENT_SALE = "recent-sale"
    ORDER_UNCLEAR = "order-unclear"
    PROOFS_DISAGREE = "proofs-disagree"
    RETURN = "return"
    UNREADABLE = "unreadable-receipt"
    LATE_SCAN_AMBIGUOUS = "late-scan-ambiguous"
    SUPERSEDED = "superseded"
    MERGED = "merged-session"


EXPLANATION: dict[str, str] = {
    Reason.TWO_CODES: "two different codes were waiting at this till with no sale between them:"
    " nobody can tell whose the next sale was",
    Reason.RECENT_SALE: "the code was read just after a sale at this till: it may have been a late"
    " scan for that sale, so the next sale was not taken",
    Reason.ORDER_UNCLEAR: "a sale at this till was booked too close to the scan to tell whether it"
    " came before or after it",
    Reason.PROOFS_DISAGREE: "the POS's order of receipts and its booking time disagree about whether"
    " a sale came after the scan",
    Reason.RETURN: "the code was shown at a return whose sale no BONIQ customer has",
    Reason.UNREADABLE: "the POS sent a receipt at this till that the agent cannot read",
    Reason.LATE_SCAN_AMBIGUOUS: "more than one recent sale at this till could be the late-scanned one",
    Reason.MERGED: "its POS session was merged into another sale, which someone else may have paid",
    Reason.SUPERSEDED: "another code was read at this till before this claim's sale (before the"
    " evidence rules)",
}


CLAIM_COLUMNS = (  # the `claims` columns in `Claim`'s field order
    "id, correlation_id, customer_kind, customer, workplace, source, scanned_at, pos_marker,"
    " state, receipt_id, closed_at, fence_marker, reason, session_id"
)


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
    receipt_id: str | None  # the receipt it took, or the unpaid sale it waits for while pending
    closed_at: float | None
    fence_marker: int | None = None
    reason: str | None = None
    session_id: str | None = None

    @property
    def is_pending(self) -> bool:
        return self.state == ClaimState.PENDING


@dataclass(frozen=True)
class Close:
    """A decision to end a pending claim."""

    claim: Claim
    state: ClaimState
    reason: Reason | None = None
    receipt_id: str | None = None  # a claim closed `delivered` with another claim's receipt


def check_assignable(claim: Claim) -> None:
    """Support may hand a receipt only to a claim that ended without one."""
    if claim.state not in ASSIGNABLE:
        raise ClaimStateError(
            f"claim {claim.id} is {claim.state}; only unsure or expired claims can be assigned"
        )


def explain(claim: Claim) -> str:
    """One sentence for support on what the claim's state means."""
    if claim.state == ClaimState.UNSURE:
        return EXPLANATION.get(claim.reason or "", "closed unsure")
    return {
        ClaimState.PENDING: "waiting for its sale",
        ClaimState.DELIVERED: "its receipt was stored for upload",
        ClaimState.EXPIRED: "no sale at its till within matching.claim_ttl",
        ClaimState.CANCELLED: "its POS session was cancelled",
        ClaimState.ASSIGNED: "support assigned its receipt",
    }.get(ClaimState(claim.state), claim.state)


@dataclass(frozen=True)
class NewClaim:
    """A code read at a till, as the scan intake (or the webhook receiver) hands it over."""

    correlation_id: str
    customer_kind: str
    customer: str
    workplace: int
    source: str
    scanned_at: float
    pos_marker: int | None
    session_id: str | None = None


def insert(conn: sqlite3.Connection, new: NewClaim, unsure: Reason | None = None) -> Claim:
    """Inside a transaction: the new claim, pending, or closed `unsure` at once."""
    cur = conn.execute(
        "INSERT INTO claims (correlation_id, customer_kind, customer, workplace, source,"
        " scanned_at, pos_marker, session_id, state, reason, closed_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.correlation_id,
            new.customer_kind,
            new.customer,
            new.workplace,
            new.source,
            new.scanned_at,
            new.pos_marker,
            new.session_id,
            ClaimState.UNSURE.value if unsure else ClaimState.PENDING.value,
            unsure.value if unsure else None,
            new.scanned_at if unsure else None,
        ),
    )
    assert cur.lastrowid is not None
    found = read(conn, cur.lastrowid)
    assert found is not None
    return found


def read(conn: sqlite3.Connection, claim_id: int) -> Claim | None:
    row = conn.execute(f"SELECT {CLAIM_COLUMNS} FROM claims WHERE id = ?", (claim_id,)).fetchone()
    return Claim(*row) if row is not None else None
