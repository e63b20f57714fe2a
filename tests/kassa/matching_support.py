"""Helpers of the matching tests: a claim as a scan would make it, and what the outbox holds."""

import json
import time

from agent.queue.store import NewClaim

MATCH_IDENT, MATCH_SECRET = "match-ident", "match-Secret-881"  # the kassa fixture's credentials
ANNA, BRAM, CARL = "BQ17K3M9QW4RT8ZP2C56", "BQ1M9S346Q3D25VT4F56", "BQ1ABCDEFGHJKMNPQRSK"


def scan(
    store, customer, workplace=2, at=None, kind="boniq_code", dedupe_window=5.0, rescan_guard=10.0
):
    """A code read at `workplace` (now, or at the time `at`); the claim, or the one it repeats."""
    return store.add_claim(
        NewClaim(
            correlation_id=f"c-{customer[:6]}",
            customer_kind=kind,
            customer=customer,
            workplace=workplace,
            source="test",
            scanned_at=time.time() if at is None else at,
            pos_marker=store.get_cursor(),
        ),
        dedupe_window=dedupe_window,
        rescan_guard=rescan_guard,
    ).claim


def got(store):
    """receipt id → customer of every outbox row."""
    return {
        json.loads(i.body)["pos"]["receipt_id"]: next(iter(json.loads(i.body)["customer"].values()))
        for i in store.outbox()
    }


def payloads(store):
    return [json.loads(item.body) for item in reversed(store.outbox())]


def state_of(store, claim):
    found = store.claim(claim.id)
    return (found.state, found.reason)
