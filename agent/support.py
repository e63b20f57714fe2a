"""What support staff do with claims: list them, see one with its candidate sales, assign one.

`claims assign` is the only way a receipt reaches a customer without the matcher's evidence, so it
is narrow: only an unsure or expired claim, only a receipt no customer has, one log line naming
the claim, the receipt and who ran it, and the upload says `match.evidence: manual`.
"""

from __future__ import annotations

import getpass
import json
import os
from typing import Any

from agent.commands import iso
from agent.config import Config
from agent.errors import ClaimStateError, KassaError
from agent.kassa.client import KassaClient
from agent.kassa.deliveries import Deliveries
from agent.kassa.reference import ReferenceData
from agent.logs import correlation, fields, get_logger, mask_code
from agent.queue.claims import Claim, check_assignable, explain
from agent.queue.store import Store

log = get_logger(__name__)


def claim_row(claim: Claim) -> dict[str, Any]:
    return {
        "id": claim.id,
        "state": claim.state,
        "reason": claim.reason,
        "workplace": claim.workplace,
        "scanned_at": iso(claim.scanned_at),
        "customer": mask_code(claim.customer),
        "cid": claim.correlation_id,
        "receipt_id": claim.receipt_id,
        "session_id": claim.session_id,
        "explanation": explain(claim),
    }


def list_claims(store: Store, state: str | None, limit: int, as_json: bool) -> str:
    rows = [claim_row(c) for c in store.claims(state, limit=limit)]
    if as_json:
        return json.dumps(rows, indent=2)
    return (
        "\n".join(
            f"#{r['id']:<6} {r['state']:<9} {r['reason'] or '':<19} workplace {r['workplace']:<3}"
            f" {r['scanned_at']}  {r['customer']}  cid={r['cid']}"
            for r in rows
        )
        or "no claims"
    )


def show_claim(store: Store, config: Config, claim_id: int) -> str:
    claim = store.claim(claim_id)
    if claim is None:
        raise ClaimStateError(f"no claim {claim_id}")
    rules = config.matching
    window = rules.recent_sale_guard + rules.clock_skew + 60
    candidates = [
        {**c, "booked_at": iso(c["booked_at"])}
        for c in store.candidates(claim, before=window, after=rules.claim_ttl + window)
    ]
    return json.dumps({**claim_row(claim), "candidates": candidates}, indent=2)


def assign(
    store: Store, config: Config, claim_id: int, receipt_id: str, client: KassaClient | None = None
) -> str:
    """Hand an unsure or expired claim its receipt, read from the POS."""
    claim = store.claim(claim_id)
    if claim is None:
        raise ClaimStateError(f"no claim {claim_id}")
    check_assignable(claim)
    client = client or KassaClient(
        config.kassa.url,
        config.kassa.ident,
        config.kassa_secret(),
        verify=str(config.kassa.ca_bundle or "") or True,
    )
    receipt = client.get_receipt(receipt_id)
    if receipt is None or not receipt.is_paid:
        raise KassaError(f"the POS has no paid receipt {receipt_id}")
    if receipt.branch != config.store.branch:
        raise ClaimStateError(f"receipt {receipt_id} belongs to branch {receipt.branch}")
    reference = ReferenceData(client, clock_skew=config.matching.clock_skew).refresh(0.0)
    who = _operator()
    delivery = Deliveries(
        merchant_id=config.store.merchant_id, store_name=config.store.name
    ).for_claim(receipt, claim, "manual", reference, assigned_by=who)
    item = store.assign(claim.id, delivery)
    with correlation(claim.correlation_id):
        log.warning(
            "claim assigned by hand",
            extra=fields(
                claim=claim.id, receipt=receipt_id, by=who, customer=mask_code(claim.customer)
            ),
        )
    return f"claim #{claim.id} assigned receipt {receipt_id} (outbox item {item.id})"


def _operator() -> str:
    return os.environ.get("SUDO_USER") or getpass.getuser()
