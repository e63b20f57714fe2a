"""The POS stage: each cycle reads receipts (`sync`), lets the matcher decide, builds the
deliveries and commits all of it with the new cursor in one transaction.

Claims expire only after a poll that started past their deadline has caught up, so a POS outage
never expires a claim whose sale the agent simply could not see yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from agent import backoff
from agent.config import MatchingSection
from agent.errors import KassaError, KassaRejected, StoreError
from agent.kassa.deliveries import Customer, Deliveries
from agent.kassa.matcher import Decisions, Matcher, PollView, Seen
from agent.kassa.receipt import Receipt
from agent.kassa.reference import Reference, ReferenceData
from agent.kassa.sightings import session_links, sightings_of, unreadable_once
from agent.kassa.sync import Fetched, ReceiptSync
from agent.logs import Problem, correlation, fields, get_logger, mask_code
from agent.queue.claims import Claim, ClaimState, Close, explain
from agent.queue.outbox import NewDelivery, OutboxItem
from agent.queue.store import PollCommit, PollResult, Sighting, Store

log = get_logger(__name__)

REJECTED_RETRY = 60.0
MAX_BACKOFF = 30.0
RESERVED_TTL = 6 * 3600.0  # a claim waiting for its partly paid sale, or its session's receipt
# An open webhook session's claim, counted from the session's last event. Longer than claim_ttl,
# which bounds a polling walk-away: a session's receipt cannot be anyone else's, a walk-away's
# session is cancelled, and a slow card terminal or a till without line events must not cost
# the receipt.
OPEN_SESSION_TTL = 1800.0


class PollEvents(Protocol):
    """What the poller reports to the rest of the agent (metrics, the uploader, a screen)."""

    def stored(self, items: list[OutboxItem]) -> None: ...
    def closed(self, closes: list[Close]) -> None: ...
    def polled(self, ok: bool) -> None: ...
    def clock_offset(self, seconds: float) -> None: ...


class NoEvents:
    def stored(self, items: list[OutboxItem]) -> None:
        pass

    def closed(self, closes: list[Close]) -> None:
        pass

    def polled(self, ok: bool) -> None:
        pass

    def clock_offset(self, seconds: float) -> None:
        pass


class Poller:
    def __init__(
        self,
        client: Any,
        store: Store,
        *,
        merchant_id: str,
        branch: int,
        matching: MatchingSection | None = None,
        interval: float = 1.0,
        batch: int = 100,
        store_name: str | None = None,
        events: PollEvents | None = None,
        clock: Callable[[], float] = time.time,
        webhooks: bool = False,
    ) -> None:
        """`webhooks`: webhook mode is on, so a receipt whose lines carry webhook line ids was
        booked in a session, and is never a polling claim's."""
        self.client = client
        self.store = store
        self.branch = branch
        self.webhooks = webhooks
        self.interval = interval
        self.clock = clock
        self.events: PollEvents = events or NoEvents()
        self.set_matching(matching or MatchingSection())
        self.sync = ReceiptSync(client, store, branch=branch, batch=batch, clock=clock)
        self.reference = ReferenceData(
            client,
            clock_skew=self.matching.clock_skew,
            on_offset=self.events.clock_offset,
            clock=clock,
        )
        self.deliveries = Deliveries(merchant_id=merchant_id, store_name=store_name)
        self.last_success: float | None = None
        self.problem = Problem("POS poll failed; retrying", "POS poll works again")
        self.wake = threading.Event()

    def set_matching(self, matching: MatchingSection) -> None:
        """The matching rules, at start and on a reload."""
        self.matching = matching
        self.matcher = Matcher(matching)

    @property
    def last_error(self) -> str | None:
        return self.problem.last

    def run(self, stop: threading.Event) -> None:
        """Poll until stopped; every failure is logged once per change and backed off."""
        while not stop.is_set():
            try:
                delay = 0.0 if not self.poll_once() else self.interval
                self.problem.recovered(log)
                self.events.polled(True)
            except KassaRejected as exc:
                reloaded = getattr(self.client, "reload_secret", lambda: False)()
                delay = self._failed(exc, self.interval if reloaded else REJECTED_RETRY)
            except (KassaError, StoreError) as exc:
                delay = self._failed(exc, self._backoff())
            if self.wake.wait(delay):
                self.wake.clear()

    def poll_once(self) -> bool:
        """One cycle; True when the POS had nothing more to give (the cursor did not move)."""
        fetched = self.sync.fetch()
        reference = self.reference.refresh(fetched.started)  # after the fetch: see `started`
        view, sightings = self._view(fetched, reference)
        decisions = self.matcher.decide(view)
        deliveries = self._deliveries(decisions, view, reference)
        result = self.store.commit_poll(
            PollCommit(
                marker=fetched.marker,
                deliveries=deliveries,
                sightings=sightings,
                fences=sorted(view.fenced),
                closes=decisions.closes,
                reserves=[(c.id, s.receipt_id) for c, s in decisions.reserves],
                now=self.clock(),
            )
        )
        self.sync.committed(fetched)
        self._report(result)
        if fetched.caught_up:
            self._expire(fetched.started)
        self.last_success = self.clock()
        return fetched.caught_up

    def catch_up(self, max_polls: int = 100) -> int:
        """Poll until the POS has nothing more (as `run` does between its pauses); polls made."""
        for count in range(1, max_polls + 1):
            if self.poll_once():
                return count
        return max_polls

    # -- one poll ------------------------------------------------------------------------------

    def _view(self, fetched: Fetched, reference: Reference) -> tuple[PollView, list[Sighting]]:
        ids = [r.receipt_id for r in fetched.receipts]
        ids += [u.receipt_id for u in fetched.unreadable if u.receipt_id]
        before = self.store.seen_before(ids)
        fresh = [
            r
            for r in fetched.receipts
            if not (r.receipt_id in before and before[r.receipt_id].done)
        ]
        sessions = session_links(self.store, fresh, webhooks=self.webhooks)
        seen, sightings = sightings_of(
            fresh, before, sessions, fetched.cursor, reference, self._kind
        )
        unreadable, bad = unreadable_once(fetched.unreadable, before)
        self._log_unreadable(unreadable)
        # A polling claim is judged by polls that began after its scan; a session claim by any
        # poll, since its session's receipt may be read by a poll that began before the scan.
        claims = [
            c
            for c in self.store.pending_claims()
            if c.session_id is not None or c.scanned_at < fetched.started
        ]
        fenced = frozenset(c.id for c in claims if c.fence_marker is None)
        view = PollView(
            seen=seen,
            claims=claims,
            past=self._past(claims),
            fenced=fenced if fetched.caught_up else frozenset(),
            unreadable=[u.workplace for u in unreadable],
            credited_to=self._credited_to(seen),
            sessions=sessions,
        )
        return view, sightings + bad

    def _kind(self, receipt: Receipt) -> str:
        if receipt.branch != self.branch:
            return "other"
        return "sale" if receipt.is_sale else "credit" if receipt.is_credit else "other"

    def _past(self, claims: Sequence[Claim]) -> list[Any]:
        if not claims:
            return []
        rules = self.matching
        back = max(rules.recent_sale_guard, rules.late_scan_window) + rules.clock_skew + 1
        return self.store.past_sales(
            sorted({c.workplace for c in claims}), min(c.scanned_at for c in claims) - back
        )

    def _credited_to(self, seen: Sequence[Seen]) -> dict[str, str]:
        originals = {
            s.receipt.credited_receipt_id
            for s in seen
            if s.kind == "credit" and s.receipt.credited_receipt_id
        }
        found = {o: self.store.delivered_customer(o) for o in originals}
        return {o: c[1] for o, c in found.items() if c is not None}

    def _deliveries(
        self, decisions: Decisions, view: PollView, reference: Reference
    ) -> list[NewDelivery]:
        out = [
            self.deliveries.for_claim(t.seen.receipt, t.claim, t.evidence, reference)
            for t in decisions.takes
        ]
        for claim, receipt_id in decisions.late_takes:
            receipt = self._late_receipt(receipt_id)
            if receipt is not None:
                out.append(self.deliveries.for_claim(receipt, claim, "till-sequence", reference))
        return out + self._credits(view.seen, out, reference)

    def _late_receipt(self, receipt_id: str) -> Receipt | None:
        try:
            return self.client.get_receipt(receipt_id)  # type: ignore[no-any-return]
        except KassaError as exc:
            log.warning(
                "a late-scanned sale cannot be read again; its claim stays pending",
                extra=fields(receipt=receipt_id, reason=str(exc)),
            )
            return None

    def _credits(
        self, seen: Sequence[Seen], batch: list[NewDelivery], reference: Reference
    ) -> list[NewDelivery]:
        """Paid credit receipts of sales that went to a customer, in this poll or before."""
        customers = {d.receipt_id: Customer(d.customer_kind, d.customer) for d in batch}
        credits = []
        for s in seen:
            receipt = s.receipt
            if (
                not (s.kind == "credit" and receipt.is_paid and receipt.credited_receipt_id)
                or receipt.receipt_id in customers
            ):
                continue
            customer = customers.get(receipt.credited_receipt_id) or self._customer_of(
                receipt.credited_receipt_id
            )
            if customer is not None:
                credits.append(self.deliveries.for_credit(receipt, customer, reference))
                customers[receipt.receipt_id] = customer
        return credits

    def _customer_of(self, receipt_id: str) -> Customer | None:
        found = self.store.delivered_customer(receipt_id)
        return Customer(*found) if found else None

    # -- what a poll tells -----------------------------------------------------------------------

    def _report(self, result: PollResult) -> None:
        for item in result.stored:
            with correlation(item.correlation_id):
                log.info(
                    "receipt matched and stored for upload",
                    extra=fields(
                        receipt=item.receipt_id,
                        kind=item.kind,
                        customer=mask_code(item.customer or ""),
                    ),
                )
        for close in result.closed:
            log_close(close)
        if result.stored:
            self.events.stored(result.stored)
        if result.closed:
            self.events.closed(result.closed)

    def _log_unreadable(self, unreadable: Sequence[Any]) -> None:
        for bad in unreadable:
            log.error(
                "POS receipt cannot be read; it is skipped",
                extra=fields(
                    receipt=bad.receipt_id,
                    sync_marker=bad.sync_marker,
                    workplace=bad.workplace,
                    reason=bad.reason,
                ),
            )

    def _expire(self, poll_started: float) -> None:
        expired = self.store.expire_claims(
            scanned_before=poll_started - self.matching.claim_ttl,
            reserved_before=poll_started - max(RESERVED_TTL, self.matching.claim_ttl),
            idle_before=poll_started - max(OPEN_SESSION_TTL, self.matching.claim_ttl),
            now=self.clock(),
        )
        closes = [Close(claim, ClaimState.EXPIRED) for claim in expired]
        for close in closes:
            log_close(close)
        if closes:
            self.events.closed(closes)

    def _backoff(self) -> float:
        return backoff.delay(self.interval, self.problem.count, MAX_BACKOFF, low=0.5)

    def _failed(self, exc: Exception, delay: float) -> float:
        level = "error" if isinstance(exc, KassaRejected) else "warning"
        self.problem.failed(log, exc, level=level, retry_in=f"{delay:.1f}s")
        self.events.polled(False)
        return delay


def log_close(close: Close) -> None:
    """One line per claim that ended without its receipt going out in this poll."""
    claim = close.claim
    if close.state == ClaimState.DELIVERED:
        return
    ended = Claim(
        **{
            **claim.__dict__,
            "state": close.state.value,
            "reason": close.reason and close.reason.value,
        }
    )
    with correlation(claim.correlation_id):
        log.warning(
            f"claim closed {close.state.value}: {explain(ended)}",
            extra=fields(
                workplace=claim.workplace,
                reason=close.reason and close.reason.value,
                customer=mask_code(claim.customer),
            ),
        )
