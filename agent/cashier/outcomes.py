"""The feed of the cashier screen: the last outcomes at one till, newest first.

Claims come from the store (their state is their outcome); refused scans never become claims, so
the daemon remembers the last few in memory (`RefusedScans`), with the reason and never the input.
Outcome names are the claim states `status` and `claims` show, plus `rejected` as in the scan
metrics; `OUTCOME_OF_STATE` also reads the store's older state names.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from agent.cashier.texts import OUTCOMES, Language, reason_text, source_text
from agent.logs import mask_code

FEED_LENGTH = 8
REFUSED_KEPT = 32
STORE_FAILED = "the store refused the scan"

OUTCOME_OF_STATE: dict[str, str] = {
    "pending": "pending",
    "delivered": "delivered",
    "matched": "delivered",  # before the claim-state rename
    "expired": "expired",
    "unsure": "unsure",
    "cancelled": "cancelled",
    "replaced": "cancelled",  # before the rename: a later code at the till took over
    "assigned": "assigned",
}


def outcome_of(state: str) -> str:
    return OUTCOME_OF_STATE.get(state, state)


@dataclass(frozen=True)
class Refused:
    at: float
    workplace: int
    source: str
    reason: str  # codes.CodeRejected's text, or STORE_FAILED: never the scanned input


class RefusedScans:
    """A bounded, thread-safe ring of the last refused scans (any till)."""

    def __init__(self, kept: int = REFUSED_KEPT) -> None:
        self._items: deque[Refused] = deque(maxlen=kept)
        self._lock = threading.Lock()

    def add(self, item: Refused) -> None:
        with self._lock:
            self._items.append(item)

    def at_till(self, workplace: int) -> list[Refused]:
        with self._lock:
            return [r for r in self._items if r.workplace == workplace]


class ClaimSource(Protocol):
    def claims(self, state: str | None = None, limit: int = 100) -> list[Any]: ...


@dataclass(frozen=True)
class Entry:
    """One line of the feed, ready for the page (only the masked customer)."""

    key: str
    outcome: str
    at: float
    customer: str
    icon: str
    title: str
    detail: str
    time: str
    source: str

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "outcome": self.outcome,
            "at": self.at,
            "customer": self.customer,
            "icon": self.icon,
            "title": self.title,
            "detail": self.detail,
            "time": self.time,
            "source": self.source,
        }


def _clock_text(at: float) -> str:
    return datetime.fromtimestamp(at).astimezone().strftime("%H:%M:%S")  # the till's local time


def claim_entry(claim: Any, language: Language) -> Entry:
    outcome = outcome_of(claim.state)
    icon, title, detail = OUTCOMES[language].get(outcome, ("•", outcome, ""))
    return Entry(
        f"claim-{claim.id}-{claim.state}",
        outcome,
        claim.scanned_at,
        mask_code(claim.customer),
        icon,
        title,
        detail,
        _clock_text(claim.scanned_at),
        source_text(claim.source, language),
    )


def refused_entry(item: Refused, language: Language) -> Entry:
    icon, title, _ = OUTCOMES[language]["rejected"]
    return Entry(
        f"refused-{item.at:.6f}",
        "rejected",
        item.at,
        "",
        icon,
        title,
        reason_text(item.reason, language),
        _clock_text(item.at),
        source_text(item.source, language),
    )


def feed(
    store: ClaimSource,
    refused: RefusedScans,
    *,
    workplace: int,
    language: Language,
    length: int = FEED_LENGTH,
    scan_limit: int = 200,
) -> list[Entry]:
    """The newest `length` outcomes at `workplace`, newest scan first."""
    claims = [c for c in store.claims(limit=scan_limit) if c.workplace == workplace]
    entries = [claim_entry(c, language) for c in claims[:length]]
    entries += [refused_entry(r, language) for r in refused.at_till(workplace)]
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:length]
