"""Claims meet sales over HTTP: the real simulator, the real client, the real store, the poller."""

import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from matching_support import (  # noqa: F401 - fixtures
    ANNA,
    BRAM,
    IDENT,
    SECRET,
    kassa_fixture,
    scan,
    store_fixture,
)

from agent.kassa.client import KassaClient
from agent.kassa.mapping import idempotency_key
from agent.kassa.poller import Poller

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def poller(kassa, store):
    client = KassaClient(kassa.url, IDENT, SECRET, timeout=(1.0, 2.0))
    p = Poller(client, store, merchant_id="shop-1", branch=1, claim_ttl=120, interval=0.05)
    p.poll_once()
    yield p
    client.close()


def payloads(store):
    return [json.loads(item.body) for item in reversed(store.outbox())]


def assert_reconciles(payload):
    total = payload["totals"]
    assert sum(line["total"] for line in payload["lines"]) == total["incl"]
    assert sum(group["vat"] for group in payload["vat"]) == total["vat"]
    assert sum(p["amount"] for p in payload["payments"]) == total["incl"]
    assert total["excl"] + total["vat"] == total["incl"]


def test_scan_then_sale_at_the_same_till_gives_one_valid_row(kassa, store, poller,
                                                             receipt_validator):
    claim = scan(store, ANNA)
    poller.catch_up()  # the daemon wakes the poller on every scan: this is its fence
    receipt_id = kassa.book_sale(2, payments=[("CASH", 100), "PIN"])
    poller.catch_up()
    (payload,) = payloads(store)
    receipt_validator.validate(payload)
    assert_reconciles(payload)
    assert payload["customer"] == {"boniq_code": ANNA}
    assert payload["pos"]["receipt_id"] == receipt_id
    assert payload["idempotency_key"] == idempotency_key("shop-1", receipt_id)
    assert [p["method"] for p in payload["payments"]] == ["CASH", "PIN"]
    assert store.claims("matched")[0].id == claim.id


def test_a_sale_at_another_till_is_not_taken(kassa, store, poller):
    scan(store, ANNA, workplace=2)
    kassa.book_sale(3)
    poller.catch_up()
    assert store.outbox() == []
    assert len(store.pending_claims()) == 1


def test_a_sale_already_seen_before_the_scan_is_not_taken(kassa, store, poller):
    kassa.book_sale(2)
    poller.catch_up()
    scan(store, ANNA)
    poller.catch_up()
    assert store.outbox() == []


def test_a_sale_stamped_in_the_scans_own_second_before_the_fence_stays_in_the_shop(
        kassa, store, poller):
    scan(store, ANNA, at=time.time() + 0.01)
    kassa.book_sale(2, at=datetime.now(UTC))  # same second, before the fence poll: ambiguous
    poller.catch_up()
    assert store.outbox() == []


def test_a_sale_booked_before_the_scan_but_not_yet_polled_is_not_taken(kassa, store, poller):
    kassa.book_sale(2, at=datetime.now(UTC) - timedelta(seconds=20))
    scan(store, ANNA)
    poller.catch_up()
    assert store.outbox() == []
    mine = kassa.book_sale(2)
    poller.catch_up()
    assert [p["pos"]["receipt_id"] for p in payloads(store)] == [mine]


def test_a_sale_after_the_fence_matches_even_with_a_lagging_pos_clock(kassa, store, poller):
    scan(store, ANNA)
    poller.catch_up()  # the fence: everything the POS had at this moment is before the scan
    mine = kassa.book_sale(2, at=datetime.now(UTC) - timedelta(seconds=1.5))
    poller.catch_up()
    assert [p["pos"]["receipt_id"] for p in payloads(store)] == [mine]


def test_late_scan_window_lets_a_scan_take_a_sale_booked_just_before(kassa, store, tmp_path):
    client = KassaClient(kassa.url, IDENT, SECRET, timeout=(1.0, 2.0))
    poller = Poller(client, store, merchant_id="m", branch=1, late_scan_window=30)
    poller.catch_up()
    earlier = kassa.book_sale(2)
    poller.catch_up()
    scan(store, ANNA)
    poller.catch_up()
    assert [p["pos"]["receipt_id"] for p in payloads(store)] == [earlier]


def test_two_tills_each_get_their_own_sale(kassa, store, poller):
    scan(store, ANNA, workplace=1)
    scan(store, BRAM, workplace=3)
    poller.catch_up()
    sale3 = kassa.book_sale(3)
    sale1 = kassa.book_sale(1)
    poller.catch_up()
    got = {p["pos"]["receipt_id"]: p["customer"]["boniq_code"] for p in payloads(store)}
    assert got == {sale1: ANNA, sale3: BRAM}


def test_one_claim_takes_one_sale_and_the_next_sale_stays_in_the_shop(kassa, store, poller):
    scan(store, ANNA)
    poller.catch_up()
    first = kassa.book_sale(2)
    kassa.book_sale(2)
    poller.catch_up()
    assert [p["pos"]["receipt_id"] for p in payloads(store)] == [first]


def test_credit_receipt_follows_the_original_to_the_same_customer(kassa, store, poller,
                                                                    receipt_validator):
    scan(store, "jan@example.nl", kind="email")
    poller.catch_up()
    sale = kassa.book_sale(2)
    poller.catch_up()
    credit = kassa.book_credit(sale)
    poller.catch_up()
    sale_payload, credit_payload = payloads(store)
    receipt_validator.validate(credit_payload)
    assert credit_payload["kind"] == "credit"
    assert credit_payload["credits_receipt_id"] == sale
    assert credit_payload["pos"]["receipt_id"] == credit
    assert credit_payload["customer"] == {"email": "jan@example.nl"}
    assert credit_payload["totals"]["incl"] == -sale_payload["totals"]["incl"]


def test_credit_of_an_unclaimed_sale_stays_in_the_shop(kassa, store, poller):
    sale = kassa.book_sale(2)
    poller.catch_up()
    kassa.book_credit(sale)
    poller.catch_up()
    assert store.outbox() == []


def test_expired_claim_stays_listed_by_status(kassa, store, poller, tmp_path):
    scan(store, ANNA, at=time.time() - 500)
    poller.catch_up()
    assert store.summary()["claims_expired"] == 1
    config = tmp_path / "config.yaml"
    config.write_text(
        "store: {merchant_id: m, branch: 1, workplace: 2}\n"
        f"kassa: {{url: '{kassa.url}', ident: i, secret: s}}\n"
        "cloud: {url: 'http://127.0.0.1:9/', token: t}\n"
        f"data_dir: {tmp_path / 'data'}\n")
    result = subprocess.run([sys.executable, "-m", "agent.cli", "status", "--json", "--config",
                             str(config)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    status = json.loads(result.stdout)
    assert status["claims_expired"] == 1
    assert status["expired_claims"][0]["customer"] == "BQ1…2C56"


def test_a_claim_does_not_expire_while_the_pos_is_unreachable(kassa, store, poller):
    scan(store, ANNA, at=time.time() - 500)
    kassa.faults.server_fault_rate = 1.0
    with pytest.raises(Exception):
        poller.catch_up()
    assert len(store.pending_claims()) == 1


@contextlib.contextmanager
def running(poller):
    """The poller's own loop in a thread, as the daemon runs it; stopped on leaving."""
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        poller.wake.set()
        thread.join(5)
    assert not thread.is_alive()


def until(predicate, timeout=10.0, poke=None):
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline:
        if poke:
            poke()
        time.sleep(0.02)


def run_poller(poller, seconds):
    with running(poller):
        time.sleep(seconds)


def test_wrong_credentials_give_one_clear_line_and_a_slow_retry(kassa, store, caplog):
    client = KassaClient(kassa.url, IDENT, "wrong-Secret-123", timeout=(1.0, 2.0))
    cycles = []
    poller = Poller(client, store, merchant_id="m", branch=1, interval=0.01,
                    on_cycle=cycles.append)
    with caplog.at_level(logging.INFO):
        run_poller(poller, 1.0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert cycles == [False]
    assert len(errors) == 1
    assert "wrong-Secret-123" not in caplog.text and IDENT not in caplog.text


def test_hostile_xml_does_not_stop_the_poller(kassa, store, poller):
    scan(store, ANNA)
    poller.catch_up()
    kassa.faults.entity_bomb = True
    cycles = []
    poller.on_cycle = cycles.append
    poller.interval = 0.01
    with running(poller):
        until(lambda: False in cycles)
        kassa.faults.reset()
        sale = kassa.book_sale(2)
        until(lambda: store.outbox(), poke=poller.wake.set)
    assert False in cycles
    assert [i.receipt_id for i in store.outbox()] == [sale]


def test_next_customer_scanning_before_the_poll_does_not_steal_the_previous_sale(kassa, store,
                                                                                 poller):
    scan(store, ANNA)
    poller.catch_up()
    anna_sale = kassa.book_sale(2, at=datetime.now(UTC) - timedelta(seconds=1.2))
    scan(store, BRAM)  # Bram steps up about a second later, before the agent polled Anna's sale
    poller.catch_up()
    bram_sale = kassa.book_sale(2)
    poller.catch_up()
    got = {p["pos"]["receipt_id"]: p["customer"]["boniq_code"] for p in payloads(store)}
    assert got == {anna_sale: ANNA, bram_sale: BRAM}
    assert store.pending_claims() == []


def test_a_superseded_claim_takes_no_sale_booked_after_the_new_scan(kassa, store, poller):
    scan(store, ANNA)
    poller.catch_up()
    scan(store, BRAM)  # Anna walked away without paying; Bram is next
    poller.catch_up()
    bram_sale = kassa.book_sale(2)
    kassa.book_sale(2)
    poller.catch_up()
    assert [(p["pos"]["receipt_id"], p["customer"]["boniq_code"]) for p in payloads(store)] == [
        (bram_sale, BRAM)]
    assert store.claims("replaced")[0].customer == ANNA


def test_a_credit_in_the_same_poll_as_its_sale_follows_it(kassa, store, poller):
    scan(store, ANNA)
    poller.catch_up()
    sale = kassa.book_sale(2)
    credit = kassa.book_credit(sale)  # an immediate void, or the agent was down meanwhile
    poller.catch_up()
    assert [(p["pos"]["receipt_id"], p["customer"]["boniq_code"]) for p in payloads(store)] == [
        (sale, ANNA), (credit, ANNA)]


def test_an_unreadable_receipt_closes_the_waiting_claim_at_its_till_and_polling_goes_on(
        kassa, store, poller):
    from agent.kassa.client import ReceiptBatch, Unreadable

    scan(store, ANNA, workplace=2)
    scan(store, BRAM, workplace=3)
    poller.catch_up()
    real_fetch = poller.client.fetch_receipts

    def with_a_broken_receipt(branch, marker, limit):
        batch = real_fetch(branch, marker, limit)
        bad = Unreadable("broken-1", None, 2, "no financialDate")
        return ReceiptBatch(batch.receipts, [bad])

    poller.client.fetch_receipts = with_a_broken_receipt
    poller.poll_once()
    poller.client.fetch_receipts = real_fetch
    assert store.claims("unsure")[0].customer == ANNA
    assert [c.customer for c in store.pending_claims()] == [BRAM]
    bram_sale = kassa.book_sale(3, at=datetime.now(UTC) + timedelta(seconds=60))
    poller.catch_up()
    assert [p["pos"]["receipt_id"] for p in payloads(store)] == [bram_sale]


def test_a_rotated_pos_secret_file_is_read_again_after_a_refusal(kassa, store, tmp_path):
    secret_file = tmp_path / "kassa-secret"
    secret_file.write_text("old-Secret-1")
    client = KassaClient(kassa.url, IDENT, lambda: secret_file.read_text().strip(),
                         timeout=(1.0, 2.0))
    cycles = []
    poller = Poller(client, store, merchant_id="m", branch=1, interval=0.05,
                    on_cycle=cycles.append)
    secret_file.write_text(SECRET)  # store IT rotated the secret after the agent started
    with running(poller):
        until(lambda: True in cycles)
    assert cycles[:1] == [False] and True in cycles
