"""A receipt bound for a customer, as the outbox row the uploader will send."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from agent import __version__
from agent.kassa import mapping
from agent.kassa.receipt import Receipt
from agent.kassa.reference import Reference
from agent.logs import new_correlation_id
from agent.queue.claims import Claim
from agent.queue.outbox import NewDelivery


@dataclass(frozen=True)
class Customer:
    kind: str  # boniq_code | email
    value: str


class Deliveries:
    def __init__(self, *, merchant_id: str, store_name: str | None) -> None:
        self.merchant_id = merchant_id
        self.store_name = store_name
        self.host = socket.gethostname()

    def for_claim(
        self,
        receipt: Receipt,
        claim: Claim,
        evidence: str,
        reference: Reference,
        assigned_by: str | None = None,
    ) -> NewDelivery:
        scanned = datetime.fromtimestamp(claim.scanned_at, tz=UTC).astimezone()
        match: dict[str, str] = {"evidence": evidence, "scanned_at": mapping.rfc3339(scanned)}
        if claim.session_id:
            match["session_id"] = claim.session_id
        if assigned_by:
            match["assigned_by"] = assigned_by[:64]
        return self._build(
            receipt,
            Customer(claim.customer_kind, claim.customer),
            claim.correlation_id,
            scanned,
            claim.id,
            match,
            reference,
        )

    def for_credit(self, receipt: Receipt, customer: Customer, reference: Reference) -> NewDelivery:
        """A return of a sale that went to `customer` follows it there, without a scan."""
        return self._build(
            receipt,
            customer,
            new_correlation_id("r"),
            None,
            None,
            {"evidence": "credit-link", "scanned_at": None},
            reference,
        )

    def _build(
        self,
        receipt: Receipt,
        customer: Customer,
        cid: str,
        scanned: datetime | None,
        claim_id: int | None,
        match: Mapping[str, str | None],
        reference: Reference,
    ) -> NewDelivery:
        payload = mapping.to_payload(
            receipt,
            merchant_id=self.merchant_id,
            customer={customer.kind: customer.value},
            scanned_at=scanned,
            payment_methods=reference.payment_methods,
            vat_scale=reference.vat_scale or 1,
            agent_version=__version__,
            host=self.host,
            store_name=self.store_name,
            match=match,
        )
        return NewDelivery(
            receipt_id=receipt.receipt_id,
            idempotency_key=payload["idempotency_key"],
            body=mapping.canonical_json(payload),
            correlation_id=cid,
            kind="credit" if receipt.is_credit else "sale",
            customer_kind=customer.kind,
            customer=customer.value,
            claim_id=claim_id,
        )
