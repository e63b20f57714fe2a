"""Claim ↔ receipt matching: the transform between the sources and the buffer.

In webhook mode the link is exact (`pos-session`): a receipt whose lines carry the line ids of a
POS session goes to that session's claim, and never to any other claim. What follows is the
polling mode, for every other receipt and claim.

A stranger's receipt in a customer's app cannot be taken back; a receipt that does not arrive can
be assigned later. So a claim takes a receipt only on evidence (`till-sequence`, docs/matching.md):
the first matchable sale of its till after the scan, and only when nothing else explains it.
Where the rules find another explanation the claim closes `unsure` with the `Reason`.

"After the scan" needs two proofs to agree, each of them three-valued:

- the POS's own order (syncMarkers): at or below the cursor the agent had when the code was read
  is BEFORE; above the *fence* (the cursor after the first complete poll that began after the
  scan) is AFTER, unless the receipt reached the API after a higher marker (late); in between
  the markers cannot tell.
- the booking time on this till's clock (the measured POS clock offset removed), whole seconds,
  with `clock_skew` of margin: AFTER, BEFORE, or too close to tell.

Both AFTER is AFTER; markers AFTER but time BEFORE is a disagreement; where the markers cannot
tell (the agent or the POS was down at the scan) the time alone decides. The matcher is pure:
it reads a `PollView` and returns `Decisions`; the poller commits them in one transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.config import MatchingSection
from agent.kassa.receipt import Receipt
from agent.queue.claims import Claim, ClaimState, Close, Reason
from agent.queue.sessions import SessionLink
from agent.queue.store import PastSale

POS_TIME_RESOLUTION = 1.0


class Order(enum.Enum):
    AFTER = "after"
    BEFORE = "before"
    UNSURE = "unsure"
    DISAGREE = "disagree"


@dataclass(frozen=True)
class Seen:
    """A receipt of this poll as the matcher judges it."""

    receipt: Receipt
    first_marker: int  # its syncMarker when the agent first saw it: a later change moves no proof
    booked: float  # booking time on this till's clock
    kind: str  # sale (matchable type and branch, paid or not yet) | credit | other
    late: bool = False  # it reached the API after a higher syncMarker: its marker proves nothing
    timed: bool = True  # False until the POS clock was measured: its booking time proves nothing

    @property
    def receipt_id(self) -> str:
        return self.receipt.receipt_id


@dataclass(frozen=True)
class PollView:
    """What one poll gives the matcher: its receipts not judged before, in syncMarker order."""

    seen: Sequence[Seen]
    claims: Sequence[Claim]  # pending, scanned before the poll began
    past: Sequence[PastSale] = ()
    fenced: frozenset[int] = frozenset()  # claims this (complete) poll is the first fence of
    unreadable: Sequence[int | None] = ()  # workplaces of receipts that cannot be read
    credited_to: dict[str, str] = field(default_factory=dict)  # original receipt → customer
    sessions: Mapping[str, SessionLink] = field(default_factory=dict)  # receipt → its session


@dataclass(frozen=True)
class Take:
    seen: Seen
    claim: Claim
    evidence: str


@dataclass
class Decisions:
    takes: list[Take] = field(default_factory=list)
    late_takes: list[tuple[Claim, str]] = field(default_factory=list)  # receipt ids to fetch
    reserves: list[tuple[Claim, Seen]] = field(default_factory=list)
    closes: list[Close] = field(default_factory=list)

    def decided(self) -> set[int]:
        return (
            {t.claim.id for t in self.takes}
            | {c.id for c, _ in self.late_takes}
            | {c.claim.id for c in self.closes}
            | {c.id for c, _ in self.reserves}
        )


class Matcher:
    def __init__(self, rules: MatchingSection) -> None:
        self.rules = rules

    def decide(self, view: PollView) -> Decisions:
        decisions = Decisions()
        _session_takes(view, decisions)
        polling = [c for c in view.claims if c.session_id is None]
        for workplace in sorted({c.workplace for c in polling}):
            claims = sorted(
                (c for c in polling if c.workplace == workplace), key=lambda c: (c.scanned_at, c.id)
            )
            _Till(self, workplace, claims, view, decisions).decide()
        return decisions

    def order(self, seen: Seen, claim: Claim) -> Order:
        """Was this receipt booked after this claim's scan?"""
        if claim.pos_marker is not None and seen.first_marker <= claim.pos_marker:
            return Order.BEFORE
        by_time = self.time_order(seen.booked, claim.scanned_at) if seen.timed else Order.UNSURE
        if (
            claim.fence_marker is not None
            and seen.first_marker > claim.fence_marker
            and not seen.late
        ):
            return {Order.AFTER: Order.AFTER, Order.BEFORE: Order.DISAGREE}.get(
                by_time, Order.UNSURE
            )
        return by_time

    def time_order(self, booked: float, scanned_at: float) -> Order:
        margin = self.rules.clock_skew
        if booked >= scanned_at + margin:
            return Order.AFTER
        if booked + POS_TIME_RESOLUTION <= scanned_at - margin:
            return Order.BEFORE
        return Order.UNSURE

    def too_late(self, booked: float, claim: Claim) -> bool:
        return (
            booked - POS_TIME_RESOLUTION
            > claim.scanned_at + self.rules.claim_ttl + self.rules.clock_skew
        )


def _session_takes(view: PollView, decisions: Decisions) -> None:
    """`pos-session`: a sale whose lines carry a session's line ids goes to that session's
    claim (or waits for it while partly paid); no clock and no order is involved. A return
    booked in the session is the claim's only receipt too: by `credit-link` when the returned
    sale was the customer's, else the claim closes unsure."""
    by_id = {c.id: c for c in view.claims if c.session_id is not None}
    for seen in view.seen:
        link = view.sessions.get(seen.receipt_id)
        if link is None or link.claim_id is None:
            continue
        claim = by_id.get(link.claim_id)
        if claim is None or claim.session_id != link.session_id or claim.id in decisions.decided():
            continue
        if seen.kind == "credit":
            _session_return(view, decisions, claim, seen)
        elif seen.kind == "sale" and seen.receipt.is_paid:
            decisions.takes.append(Take(seen, claim, "pos-session"))
        elif seen.kind == "sale":
            decisions.reserves.append((claim, seen))


def _session_return(view: PollView, decisions: Decisions, claim: Claim, credit: Seen) -> None:
    original = credit.receipt.credited_receipt_id or ""
    if view.credited_to.get(original) == claim.customer and credit.receipt.is_paid:
        decisions.takes.append(Take(credit, claim, "credit-link"))
    elif credit.receipt.is_paid:
        decisions.closes.append(Close(claim, ClaimState.UNSURE, Reason.RETURN))


class _Till:
    """The claims and receipts of one workplace in one poll, oldest claim first."""

    def __init__(
        self,
        matcher: Matcher,
        workplace: int,
        claims: list[Claim],
        view: PollView,
        decisions: Decisions,
    ) -> None:
        self.m = matcher
        self.claims = claims
        self.view = view
        self.d = decisions
        self.events = [
            s
            for s in view.seen
            if s.receipt.workplace == workplace
            and s.kind in ("sale", "credit")
            and s.receipt_id not in view.sessions
        ]
        self.past = [p for p in view.past if p.workplace == workplace]
        self.owned = {c.receipt_id for c in claims if c.receipt_id}  # awaited unpaid sales
        self.unreadable = workplace in view.unreadable or None in view.unreadable

    def decide(self) -> None:
        if self.unreadable:
            self._close(self.claims, Reason.UNREADABLE)
            return
        for claim in self.claims:
            if claim.receipt_id:
                self._awaited(claim)
        for claim in self.claims:
            if claim.id not in self.d.decided() and not claim.receipt_id:
                self._judge(claim)

    def _open(self) -> list[Claim]:
        decided = self.d.decided()
        return [c for c in self.claims if c.id not in decided and not c.receipt_id]

    def _awaited(self, claim: Claim) -> None:
        """A claim waiting for an unpaid sale takes that receipt once paid, and nothing else."""
        seen = next((s for s in self.events if s.receipt_id == claim.receipt_id), None)
        if seen is not None and seen.receipt.is_paid:
            self.d.takes.append(Take(seen, claim, "till-sequence"))

    def _judge(self, claim: Claim) -> None:
        candidates = [
            s
            for s in self.events
            if s.receipt_id not in self.owned
            and self.m.order(s, claim) is not Order.BEFORE
            and not self.m.too_late(s.booked, claim)
        ]
        if not candidates:
            self._nothing_after(claim)
            return
        first = candidates[0]
        order = self.m.order(first, claim)
        if order is not Order.AFTER:
            reason = Reason.PROOFS_DISAGREE if order is Order.DISAGREE else Reason.ORDER_UNCLEAR
            self._close([claim], reason)
        elif first.kind == "credit":
            self._return(claim, first)
        else:
            self._sale(claim, first)

    def _sale(self, claim: Claim, first: Seen) -> None:
        could = [
            c
            for c in self._open()
            if c.id != claim.id
            and self.m.order(first, c) is not Order.BEFORE
            and not self.m.too_late(first.booked, c)
        ]
        rivals = [c for c in could if c.customer != claim.customer]
        if rivals:
            self._close([claim, *rivals], Reason.TWO_CODES)
        elif self._recent_sale(claim, first):
            self._close([claim], Reason.RECENT_SALE)
        elif not first.receipt.is_paid:
            self.d.reserves.append((claim, first))
            self.owned.add(first.receipt_id)
        else:
            self.d.takes.append(Take(first, claim, "till-sequence"))
            self.owned.add(first.receipt_id)
            self.d.closes.extend(
                Close(c, ClaimState.DELIVERED, receipt_id=first.receipt_id) for c in could
            )  # the same customer read again

    def _return(self, claim: Claim, credit: Seen) -> None:
        """A code shown at a return is consumed by it: the credit goes to the customer when its
        sale is theirs, else the claim closes unsure; it never waits for the next sale."""
        original = credit.receipt.credited_receipt_id or ""
        if self.view.credited_to.get(original) == claim.customer and credit.receipt.is_paid:
            self.d.takes.append(Take(credit, claim, "credit-link"))
            self.owned.add(credit.receipt_id)
        else:
            self._close([claim], Reason.RETURN)

    def _recent_sale(self, claim: Claim, candidate: Seen | None) -> bool:
        """A sale booked shortly before the scan: the code may be its late scan. Also when that
        sale went to another claim: if the code was its late scan, that claim was the wrong one,
        and taking the next sale would make a second mistake."""
        guard = self.m.rules.recent_sale_guard
        since = claim.scanned_at - guard - POS_TIME_RESOLUTION
        return guard > 0 and any(since <= booked for booked in self._sales_before(claim, candidate))

    def _sales_before(self, claim: Claim, candidate: Seen | None) -> Iterable[float]:
        mine = {t.seen.receipt_id for t in self.d.takes if t.claim.customer == claim.customer}
        latest = claim.scanned_at + self.m.rules.clock_skew
        for s in self.events:
            if (
                s is not candidate
                and s.kind == "sale"
                and s.receipt_id not in mine
                and self.m.order(s, claim) is Order.BEFORE
            ):
                booked = s.booked if s.timed else claim.scanned_at  # unknown: maybe just now
                if booked <= latest:
                    yield booked
        for p in self.past:
            if p.taken_by != claim.customer and p.receipt_id not in mine and p.booked_at <= latest:
                yield p.booked_at

    def _nothing_after(self, claim: Claim) -> None:
        """No sale after the scan yet. Once every sale before it is known (the claim is fenced),
        a recent sale with no owner makes it unsure at once rather than wait for the next sale
        (and keep the next customer's claim from being taken for a rival)."""
        fenced = claim.fence_marker is not None or claim.id in self.view.fenced
        if self.m.rules.late_scan_window > 0:
            self._late_scan(claim)
        elif fenced and self._recent_sale(claim, None):
            self._close([claim], Reason.RECENT_SALE)

    def _late_scan(self, claim: Claim) -> None:
        """`late_scan_window`, checked last and once, at the claim's first complete poll."""
        window = self.m.rules.late_scan_window
        if claim.id not in self.view.fenced:
            return
        since = claim.scanned_at - window
        taken = self.owned | {t.seen.receipt_id for t in self.d.takes}
        recent = [
            s.receipt_id
            for s in self.events
            if s.kind == "sale"
            and s.receipt.is_paid
            and s.receipt_id not in taken
            and s.timed
            and s.booked >= since
            and self.m.order(s, claim) is Order.BEFORE
        ]
        recent += [
            p.receipt_id
            for p in self.past
            if not p.taken
            and not p.session
            and p.booked_at >= since
            and p.receipt_id not in taken
            and p.receipt_id not in recent
            and p.booked_at <= claim.scanned_at + self.m.rules.clock_skew
        ]
        others = [c for c in self._open() if c.id != claim.id and c.scanned_at >= since]
        if len(recent) == 1 and not others:
            self.d.late_takes.append((claim, recent[0]))
            self.owned.add(recent[0])
        elif recent:
            self._close([claim], Reason.LATE_SCAN_AMBIGUOUS)

    def _close(self, claims: Iterable[Claim], reason: Reason) -> None:
        self.d.closes.extend(Close(c, ClaimState.UNSURE, reason) for c in claims)
