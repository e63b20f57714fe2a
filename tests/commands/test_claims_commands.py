"""`boniq-agent claims list / show / assign`: what support sees of an unsure claim and how it
hands the customer their receipt, against a real store and the MplusKASSA simulator."""

import json
import subprocess
import sys
import time

import pytest
from agent_harness import ROOT

from agent.config import MatchingSection
from agent.kassa.client import KassaClient
from agent.kassa.poller import Poller
from agent.queue.store import NewClaim, Store
from agent.sim.kassa import KassaSimulator

ANNA, BRAM = "BQ17K3M9QW4RT8ZP2C56", "BQ1M9S346Q3D25VT4F56"


@pytest.fixture
def shop(tmp_path):
    """Anna's code is read 1 s before a sale at till 2 books: her claim closes unsure; Bram's
    sale at till 3 reaches him."""
    with KassaSimulator("i", "s", seed=3) as kassa:
        config = tmp_path / "config.yaml"
        config.write_text(
            "store: {merchant_id: m, branch: 1, workplace: 2}\n"
            f"kassa: {{url: '{kassa.url}', ident: i, secret: s}}\n"
            "cloud: {url: 'http://127.0.0.1:9/', token: t}\n"
            f"data_dir: {tmp_path / 'data'}\n"
        )
        client = KassaClient(kassa.url, "i", "s", timeout=(1.0, 2.0))
        with Store.open(tmp_path / "data") as store:
            poller = Poller(client, store, merchant_id="m", branch=1, matching=MatchingSection())
            poller.poll_once()
            for customer, till in ((ANNA, 2), (BRAM, 3)):
                store.add_claim(
                    NewClaim(
                        f"c-{customer[:5]}",
                        "boniq_code",
                        customer,
                        till,
                        "test",
                        time.time(),
                        store.get_cursor(),
                    ),
                    dedupe_window=5,
                )
                poller.catch_up()
                kassa.book_sale(till, after=1 if customer == ANNA else 3)
                poller.catch_up()
        client.close()
        yield kassa, config, tmp_path / "data"


def cli(config, *args):
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "claims", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_claims_list_shows_unsure_claims_with_their_reason_and_masked_customer(shop):
    _, config, _ = shop
    result = cli(config, "list", "--state", "unsure", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["reason"] == "order-unclear" and row["customer"] == "BQ1…2C56"
    assert "too close to the scan" in row["explanation"]
    assert ANNA not in result.stdout
    plain = cli(config, "list")
    assert "unsure" in plain.stdout and "delivered" in plain.stdout


def test_claims_show_lists_the_candidate_sales_with_time_total_and_till(shop):
    kassa, config, _ = shop
    unsure = json.loads(cli(config, "list", "--state", "unsure", "--json").stdout)[0]
    shown = json.loads(cli(config, "show", str(unsure["id"])).stdout)
    sales = {r["receipt_id"]: r for r in kassa.receipts()}
    assert [c["receipt_id"] for c in shown["candidates"]] == [
        r for r, sale in sales.items() if sale["workplace"] == 2
    ]
    anna_sale = shown["candidates"][0]
    assert anna_sale["total"] == sales[anna_sale["receipt_id"]]["total_incl"]
    assert anna_sale["workplace"] == 2 and anna_sale["booked_at"]


def test_claims_assign_hands_the_receipt_over_once_with_manual_evidence(shop):
    _, config, data = shop
    unsure = json.loads(cli(config, "list", "--state", "unsure", "--json").stdout)[0]
    shown = json.loads(cli(config, "show", str(unsure["id"])).stdout)
    free = shown["candidates"][0]["receipt_id"]
    kassa = shop[0]
    taken = next(r["receipt_id"] for r in kassa.receipts() if r["workplace"] == 3)  # Bram's
    refused = cli(config, "assign", str(unsure["id"]), taken)
    assert refused.returncode == 1 and "already went to a customer" in refused.stderr
    done = cli(config, "assign", str(unsure["id"]), free)
    assert done.returncode == 0, done.stderr
    assert "claim assigned by hand" in done.stderr and f"receipt={free}" in done.stderr
    with Store.open(data, readonly=True) as store:
        item = next(i for i in store.outbox() if i.receipt_id == free)
        payload = json.loads(item.body)
        assert payload["customer"] == {"boniq_code": ANNA}
        assert payload["match"]["evidence"] == "manual" and payload["match"]["assigned_by"]
        assert store.claim(unsure["id"]).state == "assigned"
    again = cli(config, "assign", str(unsure["id"]), free)
    assert again.returncode == 1 and "only unsure or expired claims" in again.stderr
