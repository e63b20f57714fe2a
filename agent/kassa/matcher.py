"""Claim ↔ receipt matching (SPEC §5): the transform between the sources and the buffer.

A claim made at workplace W attaches to the first unclaimed, paid sale of W booked after the scan.
"After" is judged twice: the receipt's syncMarker must be above the high-water mark the agent had
stored when the scan came in (the POS itself says it is newer), and its booking time must not be
before the scan by more than the clock skew allowed. A receipt booked earlier than that is only
taken when `late_scan_window` allows it — off by default, because in a queue it would hand one
customer's receipt to the next.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from agent.queue.store import Claim


class MatchableReceipt(Protocol):
    receipt_id: str
    sync_marker: int
    workplace: int
    is_credit: bool
    is_paid: bool
    credited_receipt_id: str | None
    booked_at: datetime


@dataclass(frozen=True)
class Match:
    receipt: MatchableReceipt
    claim: Claim


class Matcher:
    """Pairs pending claims with new receipts; remembers recent unclaimed sales for late scans."""

    def __init__(self, *, clock_skew: float = 2.0, late_scan_window: float = 0.0) -> None:
        self.clock_skew = clock_skew
        self.late_scan_window = late_scan_window
        self._recent: deque[MatchableReceipt] = deque(maxlen=1000)

    def match(
        self, receipts: Sequence[MatchableReceipt], claims: Iterable[Claim], *,
        known: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> list[Match]:
        """Each claim takes the first eligible sale in syncMarker order; each sale one claim."""
        fresh = [r for r in sorted(receipts, key=lambda r: r.sync_marker)
                 if _is_sale(r) and r.receipt_id not in known]
        taken: set[str] = set()
        matches = []
        for claim in sorted(claims, key=lambda c: (c.scanned_at, c.id)):
            receipt = self._first_for(claim, fresh, taken)
            if receipt is not None:
                taken.add(receipt.receipt_id)
                matches.append(Match(receipt, claim))
        self._remember([r for r in fresh if r.receipt_id not in taken], taken)
        return matches

    def _first_for(
        self, claim: Claim, fresh: list[MatchableReceipt], taken: set[str]
    ) -> MatchableReceipt | None:
        for receipt in fresh:
            if receipt.receipt_id not in taken and self._after_scan(receipt, claim):
                return receipt
        if self.late_scan_window > 0:
            for receipt in self._recent:
                if receipt.receipt_id not in taken and self._late_ok(receipt, claim):
                    return receipt
        return None

    def _after_scan(self, receipt: MatchableReceipt, claim: Claim) -> bool:
        if receipt.workplace != claim.workplace:
            return False
        if claim.pos_marker is not None and receipt.sync_marker <= claim.pos_marker:
            return self._late_ok(receipt, claim)
        earliest = claim.scanned_at - max(self.clock_skew, self.late_scan_window)
        return receipt.booked_at.timestamp() >= earliest

    def _late_ok(self, receipt: MatchableReceipt, claim: Claim) -> bool:
        return (
            self.late_scan_window > 0
            and receipt.workplace == claim.workplace
            and claim.scanned_at - self.late_scan_window <= receipt.booked_at.timestamp()
        )

    def _remember(self, unclaimed: list[MatchableReceipt], taken: set[str]) -> None:
        if taken:
            self._recent = deque((r for r in self._recent if r.receipt_id not in taken),
                                 maxlen=self._recent.maxlen)
        if self.late_scan_window > 0:
            self._recent.extend(unclaimed)


def _is_sale(receipt: MatchableReceipt) -> bool:
    return receipt.is_paid and not receipt.is_credit
