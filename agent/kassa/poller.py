"""The POS source: polls getReceipts by syncMarker and feeds the matcher and the outbox.

Each cycle reads receipts above the stored cursor, matches them to pending claims, maps the
matched ones (and credits of receipts already delivered to a customer) to the cloud payload and
stores them together with the new cursor in one transaction. Claims expire only after a poll that
started past their deadline has caught up, so a POS outage never expires a claim whose sale the
agent simply could not see yet.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from agent import __version__
from agent.errors import KassaError, KassaRejected, StoreError
from agent.kassa import mapping
from agent.kassa.matcher import Matcher
from agent.logs import correlation, fields, get_logger, mask_code, new_correlation_id
from agent.queue.store import Claim, NewDelivery, OutboxItem, Store

log = get_logger(__name__)

REFERENCE_REFRESH = 3600.0
REJECTED_RETRY = 60.0
MAX_BACKOFF = 30.0


class Poller:
    def __init__(
        self, client: Any, store: Store, *, merchant_id: str, branch: int,
        claim_ttl: float = 120.0, clock_skew: float = 2.0, late_scan_window: float = 0.0,
        interval: float = 1.0, batch: int = 100, store_name: str | None = None,
        on_stored: Callable[[list[OutboxItem]], None] | None = None,
        on_expired: Callable[[list[Claim]], None] | None = None,
        on_cycle: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.store = store
        self.merchant_id = merchant_id
        self.branch = branch
        self.claim_ttl = claim_ttl
        self.interval = interval
        self.batch = batch
        self.store_name = store_name
        self.matcher = Matcher(clock_skew=clock_skew, late_scan_window=late_scan_window,
                               woken_since=clock(), claim_ttl=claim_ttl)
        self.on_stored = on_stored or (lambda items: None)
        self.on_expired = on_expired or (lambda claims: None)
        self.on_cycle = on_cycle or (lambda ok: None)
        self.clock = clock
        self.host = socket.gethostname()
        self.last_success: float | None = None
        self.last_error: str | None = None
        self._payment_methods: dict[str, str] = {}
        self._vat_scale: int | None = None
        self._reference_at = 0.0
        self._failures = 0
        self.wake = threading.Event()

    def set_matching(self, section: Any) -> None:
        """New matching settings (SIGHUP): from the next poll on; claims keep their state."""
        self.claim_ttl = section.claim_ttl
        self.matcher.claim_ttl = section.claim_ttl
        self.matcher.clock_skew = section.clock_skew
        self.matcher.late_scan_window = section.late_scan_window

    def run(self, stop: threading.Event) -> None:
        """Poll until stopped; every failure is logged once per change and backed off."""
        while not stop.is_set():
            delay = self.interval
            try:
                caught_up = self.poll_once()
                delay = 0.0 if not caught_up else self.interval
                self._recovered()
                self.on_cycle(True)
            except KassaRejected as exc:
                reloaded = getattr(self.client, "reload_secret", lambda: False)()
                delay = self._failed(exc, self.interval if reloaded else REJECTED_RETRY)
                self.on_cycle(False)
            except (KassaError, StoreError) as exc:
                delay = self._failed(exc, self._backoff())
                self.on_cycle(False)
            if self.wake.wait(delay):
                self.wake.clear()

    def poll_once(self) -> bool:
        """One cycle; True when the POS had nothing more to give (the cursor did not move)."""
        cursor = self._cursor()
        started = self.clock()
        batch = self.client.fetch_receipts(self.branch, cursor + 1, self.batch)
        self._refresh_reference(started)  # after the fetch: `started` is what a fence means
        receipts = batch.receipts
        caught_up = max([cursor, *batch.markers]) == cursor  # nothing new, or only unreadable
        claims = self.store.pending_claims()
        known = self.store.known_receipts([r.receipt_id for r in receipts])
        matches = self.matcher.match(receipts, claims, known=known, poll_started=started)
        deliveries = [self._for_claim(m.receipt, m.claim) for m in matches]
        deliveries += self._credits(receipts, known, deliveries)
        unsure = {u.claim.id: u for u in self.matcher.unsure}
        unsure.update(self._unreadable(batch.unreadable, claims))
        result = self.store.commit_poll(
            marker=max([cursor, *batch.markers]), deliveries=deliveries, now=self.clock(),
            seen=[r.receipt_id for r in receipts  # an unpaid one comes back once paid
                  if r.is_paid or not (r.is_sale or r.is_credit)],
            fence_ids=[c.id for c in claims if c.scanned_at < started] if caught_up else (),
            unsure_ids=list(unsure),
            reserve=[(m.claim.id, m.receipt.receipt_id) for m in self.matcher.reserved])
        self._log_result(result)
        if caught_up:
            self._expire(started)
        self.last_success = self.clock()
        if result.stored:
            self.on_stored(result.stored)
        return caught_up

    def catch_up(self, max_polls: int = 100) -> int:
        """Poll until the POS has nothing more (as `run` does between its pauses); polls made."""
        for count in range(1, max_polls + 1):
            if self.poll_once():
                return count
        return max_polls

    def _cursor(self) -> int:
        cursor = self.store.get_cursor()
        if cursor is None:
            cursor = int(self.client.get_current_sync_markers().get("receipt", 0))
            if self.store.pending_claims():  # scans came before the cursor existed: look
                cursor = max(0, cursor - self.batch)  # back and let booking times judge
            self.store.commit_poll(marker=cursor, deliveries=[], now=self.clock())
            log.info("POS cursor initialised from getCurrentSyncMarkersV2",
                     extra=fields(sync_marker=cursor))
        return cursor

    def _refresh_reference(self, now: float) -> None:
        """Payment method names and the VAT scale, hourly; a failed refresh keeps the last ones
        rather than stop the receipts."""
        if self._vat_scale is not None and now - self._reference_at < REFERENCE_REFRESH:
            return
        try:
            self._payment_methods = self.client.get_payment_methods()
            self._vat_scale = mapping.detect_vat_scale(self.client.get_vat_groups())
        except KassaError as exc:
            if self._vat_scale is None:
                raise
            log.warning("POS reference data not refreshed; keeping the last", extra=fields(
                reason=str(exc)))
        self._reference_at = now

    def _credits(self, receipts: Sequence[Any], known: set[str],
                 batch: list[NewDelivery]) -> list[NewDelivery]:
        """Paid credit receipts of sales that went to a customer, in this batch or before."""
        customers = {d.receipt_id: (d.customer_kind, d.customer) for d in batch}
        credits = []
        for receipt in receipts:
            if not (receipt.is_credit and receipt.is_paid and receipt.credited_receipt_id
                    and receipt.receipt_id not in known):
                continue
            customer = customers.get(receipt.credited_receipt_id) or \
                self.store.delivered_customer(receipt.credited_receipt_id)
            if customer is not None:
                credits.append(self._delivery(receipt, *customer, new_correlation_id("r"), None,
                                              None))
                customers[receipt.receipt_id] = customer
        return credits

    def _unreadable(self, unreadable: Sequence[Any], claims: list[Claim]) -> dict[int, Any]:
        """A receipt the agent cannot read may be the sale a claim at its till waits for: such
        claims close as unsure rather than wait and catch the next customer's sale."""
        closing: dict[int, Any] = {}
        for bad in unreadable:
            log.error("POS receipt cannot be read; it is skipped", extra=fields(
                receipt=bad.receipt_id, sync_marker=bad.sync_marker, workplace=bad.workplace,
                reason=bad.reason))
            for claim in claims:
                if bad.workplace is None or claim.workplace == bad.workplace:
                    closing[claim.id] = bad
        return closing

    def _for_claim(self, receipt: Any, claim: Claim) -> NewDelivery:
        scanned = datetime.fromtimestamp(claim.scanned_at, tz=timezone.utc).astimezone()
        return self._delivery(receipt, claim.customer_kind, claim.customer, claim.correlation_id,
                              scanned, claim.id)

    def _delivery(
        self, receipt: Any, kind: str, customer: str, cid: str, scanned: datetime | None,
        claim_id: int | None,
    ) -> NewDelivery:
        payload = mapping.to_payload(
            receipt, merchant_id=self.merchant_id, customer={kind: customer}, scanned_at=scanned,
            payment_methods=self._payment_methods, vat_scale=self._vat_scale or 1,
            agent_version=__version__, host=self.host, store_name=self.store_name,
        )
        return NewDelivery(
            receipt_id=receipt.receipt_id, idempotency_key=payload["idempotency_key"],
            body=mapping.canonical_json(payload), correlation_id=cid,
            kind="credit" if receipt.is_credit else "sale", customer_kind=kind,
            customer=customer, claim_id=claim_id,
        )

    def _log_result(self, result: Any) -> None:
        for item in result.stored:
            with correlation(item.correlation_id):
                log.info("receipt matched and stored for upload",
                         extra=fields(receipt=item.receipt_id, kind=item.kind,
                                      customer=mask_code(item.customer or "")))
        for claim in result.replaced:
            with correlation(claim.correlation_id):
                log.warning("claim replaced: another code was scanned at its till before its sale",
                            extra=fields(workplace=claim.workplace,
                                         customer=mask_code(claim.customer)))
        for claim in result.unsure:
            with correlation(claim.correlation_id):
                log.warning("claim closed unsure: a sale at its till cannot be placed before or "
                            "after the scan, so no sale is sent rather than maybe the wrong one",
                            extra=fields(workplace=claim.workplace,
                                         customer=mask_code(claim.customer)))

    def _expire(self, poll_started: float) -> None:
        expired = self.store.expire_claims(scanned_before=poll_started - self.claim_ttl,
                                           now=self.clock())
        for claim in expired:
            with correlation(claim.correlation_id):
                log.warning("claim expired: no sale at its till within claim_ttl",
                            extra=fields(workplace=claim.workplace, ttl=self.claim_ttl,
                                         customer=mask_code(claim.customer)))
        if expired:
            self.on_expired(expired)

    def _backoff(self) -> float:
        return min(MAX_BACKOFF, self.interval * 2 ** min(self._failures, 10)) * random.uniform(0.5, 1)

    def _failed(self, exc: Exception, delay: float) -> float:
        self._failures += 1
        message = str(exc)
        if message != self.last_error:
            level = log.error if isinstance(exc, KassaRejected) else log.warning
            level("POS poll failed; retrying", extra=fields(
                error=type(exc).__name__, reason=message, retry_in=f"{delay:.1f}s"))
        self.last_error = message
        return delay

    def _recovered(self) -> None:
        if self._failures:
            log.info("POS poll works again", extra=fields(after_failures=self._failures))
        self._failures = 0
        self.last_error = None
