"""Claim ↔ receipt matching (SPEC §5): the transform between the sources and the buffer.

A claim made at workplace W attaches to the first unclaimed, paid sale of W booked after the scan.
Handing one customer's receipt to the next is the failure that matters most, so "after" is proven
by the POS's own syncMarkers wherever it can be, and timestamps only decide what markers cannot:

- `pos_marker`: the cursor the agent had stored when the scan came in. A receipt at or below it
  was seen before the scan: never taken (unless `late_scan_window` allows it).
- `fence_marker`: the cursor after the first complete poll that *started* after the scan. A
  receipt above it was booked after the scan, whatever the clocks say; it is taken if its booking
  time is not older than the scan by more than `clock_skew` (which keeps out an old receipt
  that was edited and re-synced).
- between the two: booked in the short gap between the last poll and the scan, or just after the
  scan. Here the booking time must not be before the scan at all; POS times are whole seconds
  (SoapMplusDateTime), so a receipt stamped in the scan's own second still counts. The one case
  left to chance is a previous sale booked in that same second and not yet polled.

The daemon wakes the poller on every scan, so that gap is one poll round trip.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from agent.queue.store import Claim

POS_TIME_RESOLUTION = 1.0


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
        """Each sale, in syncMarker order, belongs to the latest scan at its till before it.

        When that claim already has its sale, the next one stays in the shop: a superseded
        claim never takes a sale booked after the scan that superseded it."""
        fresh = [r for r in sorted(receipts, key=lambda r: r.sync_marker)
                 if _is_sale(r) and r.receipt_id not in known]
        newest_first = sorted(claims, key=lambda c: (c.scanned_at, c.id), reverse=True)
        used: set[int] = set()
        matches = []
        for receipt in [*fresh, *self._late_candidates()]:
            owner = self._owner(receipt, newest_first, late=receipt not in fresh)
            if owner is not None and owner.id not in used:
                used.add(owner.id)
                matches.append(Match(receipt, owner))
        taken = {m.receipt.receipt_id for m in matches}
        self._remember([r for r in fresh if r.receipt_id not in taken], taken)
        return matches

    def _late_candidates(self) -> list[MatchableReceipt]:
        return list(self._recent) if self.late_scan_window > 0 else []

    def _owner(self, receipt: MatchableReceipt, newest_first: list[Claim],
               late: bool) -> Claim | None:
        for claim in newest_first:
            if self._late_ok(receipt, claim) if late else self._after_scan(receipt, claim):
                return claim
        return None

    def _after_scan(self, receipt: MatchableReceipt, claim: Claim) -> bool:
        if receipt.workplace != claim.workplace:
            return False
        if self._late_ok(receipt, claim):
            return True
        latest = receipt.booked_at.timestamp() + POS_TIME_RESOLUTION  # POS times are whole seconds
        if claim.fence_marker is not None and receipt.sync_marker > claim.fence_marker:
            return latest >= claim.scanned_at - self.clock_skew
        if claim.pos_marker is None or receipt.sync_marker > claim.pos_marker:
            return latest > claim.scanned_at
        return False

    def _late_ok(self, receipt: MatchableReceipt, claim: Claim) -> bool:
        return (
            self.late_scan_window > 0
            and receipt.workplace == claim.workplace
            and receipt.booked_at.timestamp() >= claim.scanned_at - self.late_scan_window
        )

    def _remember(self, unclaimed: list[MatchableReceipt], taken: set[str]) -> None:
        if taken:
            self._recent = deque((r for r in self._recent if r.receipt_id not in taken),
                                 maxlen=self._recent.maxlen)
        if self.late_scan_window > 0:
            self._recent.extend(unclaimed)


def _is_sale(receipt: MatchableReceipt) -> bool:
    return receipt.is_paid and not receipt.is_credit
