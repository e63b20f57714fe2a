"""Shared by the matching tests: a simulator, a store, a claim helper, and POS-side changes."""

import dataclasses
import json
import time

import pytest

from agent.kassa.client import ReceiptBatch
from agent.queue.store import Store
from agent.sim.kassa import KassaSimulator

IDENT, SECRET = "match-ident", "match-Secret-881"
ANNA, BRAM = "BQ17K3M9QW4RT8ZP2C56", "BQ1M9S346Q3D25VT4F56"


@pytest.fixture(name="kassa")
def kassa_fixture():
    with KassaSimulator(IDENT, SECRET, workplaces=(1, 2, 3), seed=99) as sim:
        yield sim


@pytest.fixture(name="store")
def store_fixture(tmp_path):
    with Store.open(tmp_path / "data") as opened:
        yield opened


def scan(store, customer, workplace=2, at=None, kind="boniq_code"):
    return store.add_claim(correlation_id=f"c-{customer[:6]}", customer_kind=kind,
                           customer=customer, workplace=workplace, source="test",
                           scanned_at=time.time() if at is None else at,
                           pos_marker=store.get_cursor()).claim


def got(store):
    """receipt id → customer of every outbox row."""
    return {json.loads(i.body)["pos"]["receipt_id"]: next(iter(json.loads(i.body)["customer"].values()))
            for i in store.outbox()}


def in_state(client, receipt_id, state):
    """Make `client` report this receipt in another POS state; returns the undo."""
    real = client.fetch_receipts

    def changed(branch, marker, limit):
        batch = real(branch, marker, limit)
        return ReceiptBatch([dataclasses.replace(r, state=state) if r.receipt_id == receipt_id
                             else r for r in batch.receipts], batch.unreadable)

    client.fetch_receipts = changed
    return lambda: setattr(client, "fetch_receipts", real)


def settle(kassa, receipt_id):
    """The POS changes a receipt: it comes back under a new syncMarker."""
    with kassa._lock:
        kassa._marker += 1
        kassa._receipts[receipt_id] = dataclasses.replace(kassa._receipts[receipt_id],
                                                          sync_marker=kassa._marker)
