"""Claim ↔ receipt matching (SPEC §5): the transform between the sources and the buffer.

A claim made at workplace W attaches to the first unclaimed, paid sale of W booked after the scan.
Handing one customer's receipt to another is the failure that matters most, so each receipt is
judged AFTER, BEFORE or UNSURE against each scan, by the POS's own syncMarkers wherever they can
tell, and by booking times only where they cannot:

- `pos_marker`: the cursor the agent had stored when the scan came in. A receipt at or below it
  was seen before the scan: BEFORE.
- `fence_marker`: the cursor after the first complete poll that *started* after the scan. A
  receipt above it was committed after the scan, whatever the clocks say: AFTER (unless its
  booking time is older than the scan by more than `clock_skew`: an old receipt re-synced).
- between the two, in the first poll after the scan: committed between the last poll and a
  moment just after the scan. The daemon wakes the poller on every scan, so when that poll
  started within `PROMPT_FENCE` of the scan that moment is milliseconds after it, and such a
  receipt is the previous customer's: BEFORE. The same holds for a poll already running when
  the scan came in. Not for a claim from before this process started (no poller was woken) or
  one typed with `boniq-agent scan` (it wakes no poller).
- otherwise (the POS was unreachable, so the fence came late) only the booking time can tell,
  and it is whole seconds (SoapMplusDateTime) on a clock that may differ from ours by
  `clock_skew`: AFTER when clearly after, BEFORE when clearly before, else UNSURE.

A receipt belongs to the newest claim at its till that it is AFTER and that was still within its
`claim_ttl` when the receipt was booked. It skips a claim it is BEFORE (it may be an earlier,
superseded claim's sale) and stops at one it is UNSURE of: an unsure receipt stays in the shop,
and its claim takes nothing more (the poller closes it as `unsure`), rather than going to a
customer it may not belong to. A sale that is not paid yet (outstanding, partly paid) is
judged the same way; its claim then waits for that receipt alone, to come back paid.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from agent.queue.store import Claim

POS_TIME_RESOLUTION = 1.0
PROMPT_FENCE = 1.0


class MatchableReceipt(Protocol):
    receipt_id: str
    sync_marker: int
    workplace: int
    is_credit: bool
    is_paid: bool
    credited_receipt_id: str | None
    booked_at: datetime


class Order(enum.Enum):
    AFTER = "after"
    BEFORE = "before"
    UNSURE = "unsure"


@dataclass(frozen=True)
class Match:
    receipt: MatchableReceipt
    claim: Claim


class Matcher:
    """Pairs pending claims with new receipts; remembers recent unclaimed sales for late scans."""

    def __init__(self, *, clock_skew: float = 2.0, late_scan_window: float = 0.0,
                 woken_since: float = 0.0, claim_ttl: float = float("inf")) -> None:
        """`woken_since`: from then on the poller is woken by every scan (this process's start);
        a claim from before it (a restart, a crash) gets no prompt fence poll."""
        self.clock_skew = clock_skew
        self.late_scan_window = late_scan_window
        self.woken_since = woken_since
        self.claim_ttl = claim_ttl
        self._polled_after: set[int] = set()  # claims a poll started after their scan has seen
        self.unsure: list[Match] = []  # of the last match(): sales left in the shop, undecided
        self.reserved: list[Match] = []  # of the last match(): unpaid sales that claims wait for
        self._recent: deque[MatchableReceipt] = deque(maxlen=1000)

    def match(
        self, receipts: Sequence[MatchableReceipt], claims: Iterable[Claim], *,
        poll_started: float, known: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> list[Match]:
        """Match one poll's receipts (in syncMarker order) to the pending claims; each claim
        takes at most one sale, and a sale whose owner already has one stays in the shop."""
        ordered = sorted(receipts, key=lambda r: r.sync_marker)
        fresh = [r for r in ordered if _is_sale(r) and r.receipt_id not in known]
        newest_first = sorted(claims, key=lambda c: (c.scanned_at, c.id), reverse=True)
        used: set[int] = set()
        matches = []
        self.unsure, self.reserved = [], []
        for receipt in [r for r in ordered if not r.is_credit and r.receipt_id not in known]:
            owner = self._owner(receipt, newest_first, poll_started)
            if owner is not None and owner.id not in used:
                used.add(owner.id)
                if receipt.is_paid:
                    matches.append(Match(receipt, owner))
                elif owner.receipt_id is None:
                    self.reserved.append(Match(receipt, owner))
            used.update(u.claim.id for u in self.unsure)  # an unsure claim takes nothing more
        matches += self._late_matches([c for c in newest_first if c.id not in used])
        self._polled_after.update(c.id for c in newest_first if c.scanned_at < poll_started)
        taken = {m.receipt.receipt_id for m in matches}
        self._remember([r for r in fresh if r.receipt_id not in taken], taken)
        return matches

    def _owner(self, receipt: MatchableReceipt, newest_first: list[Claim],
               poll_started: float) -> Claim | None:
        for claim in newest_first:
            if claim.workplace != receipt.workplace:
                continue
            if receipt.booked_at.timestamp() - POS_TIME_RESOLUTION > (
                    claim.scanned_at + self.claim_ttl + self.clock_skew):
                continue  # booked after this claim's claim_ttl (and an older claim's)
            order = self.order(receipt, claim, poll_started)
            if order is Order.AFTER:
                reserved_for_another = claim.receipt_id not in (None, receipt.receipt_id)
                return None if reserved_for_another else claim
            if order is Order.UNSURE:
                self.unsure.append(Match(receipt, claim))
                return None
        return None

    def order(self, receipt: MatchableReceipt, claim: Claim, poll_started: float) -> Order:
        """Was this receipt booked after this claim's scan?"""
        if self._late_ok(receipt, claim):
            return Order.AFTER
        if claim.pos_marker is not None and receipt.sync_marker <= claim.pos_marker:
            return Order.BEFORE
        booked = receipt.booked_at.timestamp()
        if claim.fence_marker is not None:
            recent = booked + POS_TIME_RESOLUTION >= claim.scanned_at - self.clock_skew
            return Order.AFTER if receipt.sync_marker > claim.fence_marker and recent else Order.BEFORE
        prompt = (abs(poll_started - claim.scanned_at) <= PROMPT_FENCE
                  and claim.id not in self._polled_after  # the first poll after the scan only
                  and claim.source != "manual")  # `boniq-agent scan` wakes no poller
        if prompt and claim.scanned_at >= self.woken_since:
            return Order.BEFORE
        if booked >= claim.scanned_at + self.clock_skew:
            return Order.AFTER
        if booked + POS_TIME_RESOLUTION <= claim.scanned_at - self.clock_skew:
            return Order.BEFORE
        return Order.UNSURE

    def _late_matches(self, claims: list[Claim]) -> list[Match]:
        """With `late_scan_window`, a claim left without a sale may take a recent unclaimed one."""
        matches = []
        for claim in claims if self.late_scan_window > 0 else []:
            for receipt in self._recent:
                if self._late_ok(receipt, claim) and all(
                        m.receipt.receipt_id != receipt.receipt_id for m in matches):
                    matches.append(Match(receipt, claim))
                    break
        return matches

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
