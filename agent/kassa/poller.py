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
        self.matcher = Matcher(clock_skew=clock_skew, late_scan_window=late_scan_window)
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
                delay = self._failed(exc, REJECTED_RETRY)
                self.on_cycle(False)
            except (KassaError, StoreError) as exc:
                delay = self._failed(exc, self._backoff())
                self.on_cycle(False)
            if self.wake.wait(delay):
                self.wake.clear()

    def poll_once(self) -> bool:
        """One cycle; True when the POS had nothing more to give (caught up)."""
        started = self.clock()
        self._refresh_reference(started)
        cursor = self._cursor()
        receipts = self.client.get_receipts(self.branch, cursor + 1, self.batch)
        caught_up = len(receipts) < self.batch
        marker = max([cursor, *(r.sync_marker for r in receipts)])
        deliveries = self._deliveries(receipts, started)
        result = self.store.commit_poll(marker=marker, deliveries=deliveries, now=self.clock(),
                                        fence_before=started if caught_up else None)
        stored = result.stored
        self._log_stored(stored)
        self._log_replaced(result.replaced)
        if caught_up:
            self._expire(started)
        self.last_success = self.clock()
        if stored:
            self.on_stored(stored)
        return caught_up

    def _cursor(self) -> int:
        cursor = self.store.get_cursor()
        if cursor is None:
            cursor = int(self.client.get_current_sync_markers().get("receipt", 0))
            self.store.commit_poll(marker=cursor, deliveries=[], now=self.clock())
            log.info("POS cursor initialised from getCurrentSyncMarkersV2",
                     extra=fields(sync_marker=cursor))
        return cursor

    def _refresh_reference(self, now: float) -> None:
        if self._vat_scale is not None and now - self._reference_at < REFERENCE_REFRESH:
            return
        self._payment_methods = self.client.get_payment_methods()
        self._vat_scale = mapping.detect_vat_scale(self.client.get_vat_groups())
        self._reference_at = now

    def _deliveries(self, receipts: Sequence[Any], started: float) -> list[NewDelivery]:
        known = self.store.known_receipts([r.receipt_id for r in receipts])
        matches = self.matcher.match(receipts, self.store.pending_claims(), known=known,
                                     poll_started=started)
        deliveries = [self._for_claim(m.receipt, m.claim) for m in matches]
        for receipt in receipts:
            if receipt.is_credit and receipt.credited_receipt_id and receipt.receipt_id not in known:
                delivery = self._for_credit(receipt)
                if delivery is not None:
                    deliveries.append(delivery)
        return deliveries

    def _for_claim(self, receipt: Any, claim: Claim) -> NewDelivery:
        scanned = datetime.fromtimestamp(claim.scanned_at, tz=timezone.utc).astimezone()
        return self._delivery(receipt, claim.customer_kind, claim.customer, claim.correlation_id,
                              scanned, claim.id)

    def _for_credit(self, receipt: Any) -> NewDelivery | None:
        customer = self.store.delivered_customer(receipt.credited_receipt_id)
        if customer is None:
            return None
        return self._delivery(receipt, customer[0], customer[1], new_correlation_id("r"), None, None)

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

    def _log_stored(self, stored: list[OutboxItem]) -> None:
        for item in stored:
            with correlation(item.correlation_id):
                log.info("receipt matched and stored for upload",
                         extra=fields(receipt=item.receipt_id, kind=item.kind,
                                      customer=mask_code(item.customer or "")))

    def _log_replaced(self, claims: list[Claim]) -> None:
        for claim in claims:
            with correlation(claim.correlation_id):
                log.warning("claim replaced: another code was scanned at its till before its sale",
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
        self.wake = threading.Event()
        self.last_error = None
