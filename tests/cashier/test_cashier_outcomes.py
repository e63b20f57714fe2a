"""The feed: what became of each scan at this till, in the claim states' own names, newest first,
with the customer masked as in the logs and refused scans from every source of this till."""

from __future__ import annotations

from dataclasses import replace

import requests
from cashier_page import TILL, PageClient, page_url

from agent import metrics
from agent.cashier.outcomes import OUTCOME_OF_STATE, Refused, RefusedScans, feed
from agent.scanner.base import ScanEvent

ADDRESS = "bram.dekker@example.nl"
CODE = "BQ17K3M9QW4RT8ZP2C56"


def test_outcome_names_are_the_claim_states_of_status_and_claims():
    assert set(OUTCOME_OF_STATE.values()) == {"pending", *metrics._CLAIM_ENDS}
    assert OUTCOME_OF_STATE["matched"] == "delivered"  # the store's name before the rename


def test_the_feed_masks_customers_and_keeps_to_this_till(daemon):
    at = 1_800_000_000.0
    daemon.on_scan(ScanEvent(ADDRESS, "cashier", None, at))
    daemon.on_scan(ScanEvent(CODE, "serial:/dev/ttyACM0", TILL, at + 1))
    daemon.on_scan(ScanEvent("8710400011111", "hid:/dev/input/event3", TILL, at + 2))
    daemon.on_scan(ScanEvent("carla@example.nl", "serial:/dev/ttyACM1", TILL + 1, at + 3))
    daemon.on_scan(ScanEvent("nope", "serial:/dev/ttyACM1", TILL + 1, at + 4))

    answer = requests.get(f"{page_url(daemon)}api/outcomes", timeout=5)
    entries = answer.json()["entries"]
    assert [(e["outcome"], e["customer"], e["source"]) for e in entries] == [
        ("rejected", "", "gescand"),
        ("pending", "BQ1…2C56", "gescand"),
        ("pending", "b***@example.nl", "ingetypt"),
    ]
    assert entries[0]["detail"] == "Dit lijkt een streepjescode van een product, geen BONIQ-code."
    assert ADDRESS not in answer.text and CODE not in answer.text and "carla" not in answer.text


def test_a_poll_with_the_same_version_costs_a_304(daemon):
    url = f"{page_url(daemon)}api/outcomes"
    first = requests.get(url, timeout=5)
    again = requests.get(url, headers={"If-None-Match": first.headers["ETag"]}, timeout=5)
    assert again.status_code == 304
    page = PageClient(page_url(daemon))
    page.claim(ADDRESS, headers={"X-CSRF-Token": page.csrf()})
    changed = requests.get(url, headers={"If-None-Match": first.headers["ETag"]}, timeout=5)
    assert changed.status_code == 200 and changed.json()["entries"][0]["outcome"] == "pending"


class Claims:
    """Claims as the store returns them, newest first, in either generation of state names."""

    def __init__(self, rows):
        self.rows = rows

    def claims(self, state=None, limit=100):
        return self.rows[:limit]


def test_every_claim_state_reads_as_what_to_do(daemon):
    daemon.on_scan(ScanEvent(ADDRESS, "cashier", None, 1_800_000_000.0))
    [claim] = daemon.store.claims()
    rows = [
        replace(claim, id=n, state=state, scanned_at=claim.scanned_at + n)
        for n, state in enumerate(
            [
                "matched",
                "delivered",
                "expired",
                "replaced",
                "unsure",
                "cancelled",
                "assigned",
                "pending",
            ]
        )
    ]
    entries = feed(Claims(rows[::-1]), RefusedScans(), workplace=TILL, language="nl")
    assert [(e.outcome, e.title) for e in entries] == [
        ("pending", "Geaccepteerd"),
        ("assigned", "Toegewezen"),
        ("cancelled", "Vervallen"),
        ("unsure", "Onzeker"),
        ("cancelled", "Vervallen"),
        ("expired", "Verlopen"),
        ("delivered", "Afgeleverd"),
        ("delivered", "Afgeleverd"),
    ]
    unsure = entries[3]
    assert "papieren bon" in unsure.detail and unsure.customer == "b***@example.nl"


def test_refused_scans_are_few_and_hold_no_input():
    ring = RefusedScans(kept=3)
    for n in range(5):
        ring.add(Refused(float(n), TILL, "serial", "not a valid e-mail address"))
    assert [r.at for r in ring.at_till(TILL)] == [2.0, 3.0, 4.0]
    assert ring.at_till(TILL + 1) == []
