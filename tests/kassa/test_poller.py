"""The POS stage over HTTP: the real simulator, the real client, the real store, the poller.

Each test plays a shop situation and asserts who gets which receipt. `after=4` books a sale on the
POS clock 3 s from now: the customer's payment completing a moment after the code was read.
"""

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from matching_support import ANNA, BRAM, MATCH_IDENT, MATCH_SECRET, got, payloads, scan, state_of

from agent.errors import KassaError
from agent.kassa.client import KassaClient, ReceiptBatch, Unreadable
from agent.kassa.mapping import idempotency_key

ROOT = Path(__file__).resolve().parents[2]


def assert_reconciles(payload):
    total = payload["totals"]
    assert sum(line["total"] for line in payload["lines"]) == total["incl"]
    assert sum(group["vat"] for group in payload["vat"]) == total["vat"]
    assert sum(p["amount"] for p in payload["payments"]) == total["incl"]
    assert total["excl"] + total["vat"] == total["incl"]


def test_scan_then_sale_at_the_same_till_gives_one_valid_row(
    kassa, store, poller, receipt_validator
):
    claim = scan(store, ANNA)
    poller.catch_up()  # the daemon wakes the poller on every scan: this is its fence
    receipt_id = kassa.book_sale(2, payments=[("CASH", 100), "PIN"], after=4)
    poller.catch_up()
    (payload,) = payloads(store)
    receipt_validator.validate(payload)
    assert_reconciles(payload)
    assert payload["customer"] == {"boniq_code": ANNA}
    assert payload["pos"]["receipt_id"] == receipt_id
    assert payload["idempotency_key"] == idempotency_key("shop-1", receipt_id)
    assert payload["match"]["evidence"] == "till-sequence"
    assert payload["match"]["scanned_at"] == payload["scanned_at"]
    assert [p["method"] for p in payload["payments"]] == ["CASH", "PIN"]
    assert state_of(store, claim) == ("delivered", None)


def test_a_sale_at_another_till_is_not_taken(kassa, store, poller):
    scan(store, ANNA, workplace=2)
    kassa.book_sale(3, after=4)
    poller.catch_up()
    assert store.outbox() == []
    assert len(store.pending_claims()) == 1


def test_a_sale_of_another_branch_with_the_same_till_number_is_not_taken(kassa, store, poller):
    scan(store, ANNA)
    poller.catch_up()
    kassa.book_sale(2, after=4, branch=7)
    mine = kassa.book_sale(2, after=4)
    real = poller.client.fetch_receipts

    def unfiltered(branch, marker, limit):  # an API that ignores the branch filter
        both = real(branch, marker, limit).receipts + real(7, marker, limit).receipts
        return ReceiptBatch(sorted(both, key=lambda r: r.sync_marker), [])

    poller.client.fetch_receipts = unfiltered
    poller.catch_up()
    assert got(store) == {mine: ANNA}


def test_a_sale_already_seen_before_the_scan_is_not_taken(kassa, store, poller):
    kassa.book_sale(2)
    poller.catch_up()
    scan(store, ANNA, at=time.time() + 30)  # long after it: the recent-sale guard is not involved
    poller.catch_up()
    assert store.outbox() == []


def test_a_sale_booked_in_the_scans_own_second_stays_in_the_shop(kassa, store, poller):
    claim = scan(store, ANNA)
    kassa.book_sale(2)  # the same second, before the fence poll: before or after? nobody knows
    poller.catch_up()
    assert store.outbox() == []
    assert state_of(store, claim) == ("unsure", "order-unclear")


def test_a_sale_booked_before_the_scan_but_not_yet_polled_is_not_taken(kassa, store, poller):
    kassa.book_sale(2, after=-40)
    claim = scan(store, ANNA)
    poller.catch_up()
    assert store.outbox() == []
    mine = kassa.book_sale(2, after=4)
    poller.catch_up()
    assert got(store) == {mine: ANNA}
    assert state_of(store, claim) == ("delivered", None)


def test_two_tills_each_get_their_own_sale(kassa, store, poller):
    scan(store, ANNA, workplace=1)
    scan(store, BRAM, workplace=3)
    poller.catch_up()
    sale3 = kassa.book_sale(3, after=4)
    sale1 = kassa.book_sale(1, after=4)
    poller.catch_up()
    assert got(store) == {sale1: ANNA, sale3: BRAM}


def test_one_claim_takes_one_sale_and_the_next_sale_stays_in_the_shop(kassa, store, poller):
    scan(store, ANNA)
    poller.catch_up()
    first = kassa.book_sale(2, after=4)
    kassa.book_sale(2, after=40)
    poller.catch_up()
    assert got(store) == {first: ANNA}


def test_credit_receipt_follows_the_original_to_the_same_customer(
    kassa, store, poller, receipt_validator
):
    scan(store, "jan@example.nl", kind="email")
    poller.catch_up()
    sale = kassa.book_sale(2, after=4)
    poller.catch_up()
    credit = kassa.book_credit(sale)
    poller.catch_up()
    sale_payload, credit_payload = payloads(store)
    receipt_validator.validate(credit_payload)
    assert credit_payload["kind"] == "credit"
    assert credit_payload["credits_receipt_id"] == sale
    assert credit_payload["pos"]["receipt_id"] == credit
    assert credit_payload["customer"] == {"email": "jan@example.nl"}
    assert credit_payload["match"] == {"evidence": "credit-link", "scanned_at": None}
    assert credit_payload["totals"]["incl"] == -sale_payload["totals"]["incl"]


def test_credit_of_an_unclaimed_sale_stays_in_the_shop(kassa, store, poller):
    sale = kassa.book_sale(2)
    poller.catch_up()
    kassa.book_credit(sale)
    poller.catch_up()
    assert store.outbox() == []


def test_a_credit_in_the_same_poll_as_its_sale_follows_it(kassa, store, poller):
    scan(store, ANNA)
    poller.catch_up()
    sale = kassa.book_sale(2, after=4)
    credit = kassa.book_credit(sale, after=4)  # an immediate void, or the agent was down
    poller.catch_up()
    assert got(store) == {sale: ANNA, credit: ANNA}


def test_expired_claim_stays_listed_by_status(kassa, store, poller, tmp_path):
    scan(store, ANNA, at=time.time() - 500)
    poller.catch_up()
    assert store.summary()["claims_expired"] == 1
    config = tmp_path / "config.yaml"
    config.write_text(
        "store: {merchant_id: m, branch: 1, workplace: 2}\n"
        f"kassa: {{url: '{kassa.url}', ident: i, secret: s}}\n"
        "cloud: {url: 'http://127.0.0.1:9/', token: t}\n"
        f"data_dir: {tmp_path / 'data'}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    status = json.loads(result.stdout)
    assert status["claims_expired"] == 1
    assert status["expired_claims"][0]["customer"] == "BQ1…2C56"


def test_a_claim_does_not_expire_while_the_pos_is_unreachable(kassa, store, poller):
    scan(store, ANNA, at=time.time() - 500)
    kassa.faults.server_fault_rate = 1.0
    with pytest.raises(KassaError):
        poller.catch_up()
    assert len(store.pending_claims()) == 1


# -- the situations of the evidence rules (docs/matching.md) ----------------------------------------


def test_late_scan_the_next_strangers_sale_is_not_taken(kassa, store, poller):
    anna = kassa.book_sale(2, after=-2)  # Anna pays ...
    poller.catch_up()
    claim = scan(store, ANNA)  # ... and shows her code 2 s later
    poller.catch_up()
    carl = kassa.book_sale(2, after=8)  # Carl, no app, pays 8 s after that
    poller.catch_up()
    assert carl not in got(store) and anna not in got(store)
    assert state_of(store, claim) == ("unsure", "recent-sale")


def test_queue_overlap_the_previous_customers_sale_is_not_taken(kassa, store, poller):
    bram = scan(store, BRAM)  # Bram shows his code while Anna (no app) is still paying
    poller.catch_up()
    anna_sale = kassa.book_sale(2, after=1)  # Anna's PIN completes a second later
    poller.catch_up()
    assert anna_sale not in got(store)
    assert state_of(store, bram) == ("unsure", "order-unclear")


def test_two_codes_with_no_sale_between_them_both_close_unsure(kassa, store, poller):
    anna = scan(store, ANNA, at=time.time() - 1)
    poller.catch_up()
    bram = scan(store, BRAM)  # Bram shows his code while Anna still pays
    poller.catch_up()
    sale = kassa.book_sale(2, after=5)
    poller.catch_up()
    assert sale not in got(store)
    assert state_of(store, anna) == ("unsure", "two-codes")
    assert state_of(store, bram) == ("unsure", "two-codes")


def test_the_first_claim_takes_a_sale_booked_before_the_second_code(kassa, store, poller):
    scan(store, ANNA, at=time.time() - 20)
    poller.catch_up()
    anna_sale = kassa.book_sale(2, after=-12)
    poller.catch_up()
    scan(store, BRAM)
    poller.catch_up()
    bram_sale = kassa.book_sale(2, after=4)
    poller.catch_up()
    assert got(store) == {anna_sale: ANNA, bram_sale: BRAM}


def test_a_code_shown_at_a_return_takes_no_later_sale(kassa, store, poller):
    scan(store, ANNA, at=time.time() - 100)
    poller.catch_up()
    original = kassa.book_sale(2, after=-95)
    poller.catch_up()
    claim = scan(store, ANNA)  # Anna comes back to return it and shows her code again
    poller.catch_up()
    credit = kassa.book_credit(original, after=4)
    stranger = kassa.book_sale(2, after=30)
    poller.catch_up()
    assert got(store) == {original: ANNA, credit: ANNA}
    assert stranger not in got(store)
    assert state_of(store, claim) == ("delivered", None)


def test_a_code_shown_at_the_return_of_an_unclaimed_sale_closes_unsure(kassa, store, poller):
    original = kassa.book_sale(2, after=-300)
    poller.catch_up()
    claim = scan(store, ANNA)
    poller.catch_up()
    kassa.book_credit(original, after=4)
    stranger = kassa.book_sale(2, after=30)
    poller.catch_up()
    assert store.outbox() == []
    assert state_of(store, claim) == ("unsure", "return")
    assert stranger not in got(store)


def test_the_same_phone_read_again_after_its_sale_matched_takes_nothing_more(kassa, store, poller):
    first = scan(store, ANNA, at=time.time() - 5)
    poller.catch_up()
    sale = kassa.book_sale(2, after=-2)
    poller.catch_up()
    again = scan(store, ANNA)  # the phone is read again 2 s after the match
    assert again.id == first.id
    stranger = kassa.book_sale(2, after=20)
    poller.catch_up()
    assert got(store) == {sale: ANNA}
    assert stranger not in got(store)


def test_a_cash_inflow_between_scan_and_sale_is_passed_over(kassa, store, poller):
    scan(store, ANNA)
    poller.catch_up()
    kassa.book_sale(2, after=4, receipt_type="RECEIPT-TYPE-CASH-INFLOW")
    mine = kassa.book_sale(2, after=6)
    poller.catch_up()
    assert got(store) == {mine: ANNA}


def test_a_partly_paid_sale_waits_for_its_claim_and_no_newer_claim_takes_it(kassa, store, poller):
    anna = scan(store, ANNA, at=time.time() - 30)
    poller.catch_up()
    sale = kassa.book_sale(2, after=-25, state="RECEIPT-STATE-PARTLY-PAID")
    poller.catch_up()
    assert store.claim(anna.id).receipt_id == sale  # Anna's claim waits for it alone
    bram = scan(store, BRAM)
    poller.catch_up()
    kassa.settle(sale)
    bram_sale = kassa.book_sale(2, after=4)
    poller.catch_up()
    assert got(store) == {sale: ANNA, bram_sale: BRAM}
    assert state_of(store, bram) == ("delivered", None)


def test_a_claim_waiting_for_its_partly_paid_sale_outlives_claim_ttl(kassa, store, make_poller):
    poller = make_poller(claim_ttl=30)
    poller.catch_up()
    anna = scan(store, ANNA, at=time.time() - 60)
    sale = kassa.book_sale(2, after=-55, state="RECEIPT-STATE-PARTLY-PAID")
    poller.catch_up()
    assert state_of(store, anna) == ("pending", None)
    kassa.settle(sale)
    poller.catch_up()
    assert got(store) == {sale: ANNA}


def test_a_late_visible_sale_with_a_lower_marker_is_seen_once_and_not_taken(kassa, store, poller):
    stranger = kassa.book_sale(2, after=-5, delay=1.0)  # booked before the scan, shown late
    claim = scan(store, ANNA)
    poller.catch_up()
    mine = kassa.book_sale(2, after=4)
    poller.catch_up()
    time.sleep(1.1)
    poller.catch_up()
    assert got(store) == {mine: ANNA}
    assert stranger in {s["receipt_id"] for s in kassa.receipts()}
    assert store.seen_before([stranger])[stranger].late, "the late receipt was never seen"
    assert state_of(store, claim) == ("delivered", None)


def test_a_pos_clock_5_s_behind_is_measured_and_the_customer_gets_the_sale(
    kassa, store, make_poller, events
):
    kassa.clock_offset = -5.0
    poller = make_poller()
    poller.catch_up()
    assert events.offsets and abs(events.offsets[-1] + 5.0) < 1.0
    scan(store, ANNA)
    poller.catch_up()
    mine = kassa.book_sale(2, after=4)  # booked 4 s later on a POS clock 5 s behind
    poller.catch_up()
    assert got(store) == {mine: ANNA}


def test_a_timezone_field_of_zero_is_absorbed_by_the_measured_offset(kassa, store, make_poller):
    kassa.timezone_field = "zero"  # the official PHP client's way: local time, timezone 0
    poller = make_poller()
    poller.catch_up()
    scan(store, ANNA)
    poller.catch_up()
    mine = kassa.book_sale(2, after=4)
    poller.catch_up()
    assert got(store) == {mine: ANNA}


def test_a_pos_clock_60_s_ahead_during_an_outage_gives_no_strangers_sale(kassa, store, make_poller):
    kassa.clock_offset = 60.0
    poller = make_poller()
    poller.catch_up()
    kassa.faults.server_fault_rate = 1.0  # the POS is unreachable when Anna scans
    claim = scan(store, ANNA)
    stranger = kassa.book_sale(2, after=-20)  # booked before her scan
    mine = kassa.book_sale(2, after=4)
    kassa.faults.server_fault_rate = 0.0
    poller.catch_up()
    assert got(store) == {mine: ANNA}
    assert stranger not in got(store)
    assert state_of(store, claim) == ("delivered", None)


def test_late_scan_window_lets_a_scan_take_a_sale_booked_just_before(kassa, store, make_poller):
    poller = make_poller(late_scan_window=30)
    poller.catch_up()
    earlier = kassa.book_sale(2, after=-3)
    poller.catch_up()
    scan(store, ANNA)
    poller.catch_up()
    assert got(store) == {earlier: ANNA}


def test_late_scan_window_does_not_override_two_codes(kassa, store, make_poller):
    poller = make_poller(late_scan_window=30)
    poller.catch_up()
    anna = scan(store, ANNA, at=time.time() - 10)
    bram = scan(store, BRAM, at=time.time() - 9)
    stranger = kassa.book_sale(2, after=-2)
    poller.catch_up()
    assert stranger not in got(store)
    assert state_of(store, anna)[0] == state_of(store, bram)[0] == "unsure"


def test_an_unreadable_receipt_closes_the_waiting_claim_at_its_till_and_polling_goes_on(
    kassa, store, poller
):
    anna = scan(store, ANNA, workplace=2)
    scan(store, BRAM, workplace=3)
    poller.catch_up()
    real_fetch = poller.client.fetch_receipts

    def with_a_broken_receipt(branch, marker, limit):
        batch = real_fetch(branch, marker, limit)
        return ReceiptBatch(batch.receipts, [Unreadable("broken-1", None, 2, "no financialDate")])

    poller.client.fetch_receipts = with_a_broken_receipt
    poller.poll_once()
    poller.client.fetch_receipts = real_fetch
    assert state_of(store, anna) == ("unsure", "unreadable-receipt")
    assert [c.customer for c in store.pending_claims()] == [BRAM]
    bram_sale = kassa.book_sale(3, after=5)
    poller.catch_up()
    assert got(store) == {bram_sale: BRAM}


def test_a_claim_before_the_cursor_existed_takes_no_sale_booked_before_it(
    kassa, store, make_poller
):
    kassa.book_sale(2, after=-30)  # the previous customer's, before the agent ever polled
    claim = scan(store, ANNA)
    poller = make_poller()
    poller.catch_up()
    mine = kassa.book_sale(2, after=4)
    poller.catch_up()
    assert got(store) == {mine: ANNA}
    assert state_of(store, claim) == ("delivered", None)


# -- the loop --------------------------------------------------------------------------------------


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


def test_wrong_credentials_give_one_clear_line_and_a_slow_retry(kassa, make_poller, events, caplog):
    import logging

    client = KassaClient(kassa.url, MATCH_IDENT, "wrong-Secret-123", timeout=(1.0, 2.0))
    poller = make_poller(client)
    poller.interval = 0.01
    with caplog.at_level(logging.INFO), running(poller):
        time.sleep(1.0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert events.cycles == [False]
    assert len(errors) == 1
    assert "wrong-Secret-123" not in caplog.text and MATCH_IDENT not in caplog.text


def test_hostile_xml_does_not_stop_the_poller(kassa, store, poller, events):
    scan(store, ANNA)
    poller.catch_up()
    kassa.faults.entity_bomb = True
    poller.interval = 0.01
    with running(poller):
        until(lambda: False in events.cycles)
        kassa.faults.reset()
        sale = kassa.book_sale(2, after=4)
        until(lambda: store.outbox(), poke=poller.wake.set)
    assert False in events.cycles
    assert [i.receipt_id for i in store.outbox()] == [sale]


def test_a_rotated_pos_secret_file_is_read_again_after_a_refusal(
    kassa, make_poller, events, tmp_path
):
    secret_file = tmp_path / "kassa-secret"
    secret_file.write_text("old-Secret-1")
    client = KassaClient(
        kassa.url, MATCH_IDENT, lambda: secret_file.read_text().strip(), timeout=(1.0, 2.0)
    )
    poller = make_poller(client)
    secret_file.write_text(MATCH_SECRET)  # store IT rotated the secret after the agent started
    with running(poller):
        until(lambda: True in events.cycles)
    assert events.cycles[:1] == [False] and True in events.cycles


def test_an_idle_till_reads_no_overlap(kassa, store, poller):
    """The late-receipt overlap costs nothing when nothing changed in its window."""
    kassa.book_sale(2)
    poller.catch_up()
    calls = []
    real = poller.client.fetch_receipts
    poller.client.fetch_receipts = lambda b, m, n: calls.append((m, n)) or real(b, m, n)
    time.sleep(0.01)
    poller.sync._history = type(poller.sync._history)([(time.time() - 200, store.get_cursor())])
    poller.poll_once()
    assert calls == [(store.get_cursor() + 1, 100)]


# -- at the edges: restarts, outages, unreadable receipts, manual scans ----------------------------


def test_an_unsure_claim_takes_no_later_sale_in_the_same_poll(kassa, store, make_poller):
    scan(store, BRAM)  # the agent was down from just after the scan
    kassa.book_sale(2)  # Bram's own sale? the same second: nobody can tell
    carl = kassa.book_sale(2, after=20)  # the next customer, no app
    make_poller().catch_up()
    assert carl not in got(store), "Carl's sale went to Bram"


def test_a_sale_booked_after_claim_ttl_is_not_taken(kassa, store, make_poller):
    scan(store, ANNA, at=time.time() - 600)  # Anna left without paying; the POS was down
    stranger = kassa.book_sale(2)  # the next sale at the till, 10 min later
    make_poller(claim_ttl=120).catch_up()
    assert stranger not in got(store), "a sale 10 min after the scan went to Anna (ttl 120 s)"


def test_an_unreadable_head_receipt_without_marker_does_not_spin_or_stop_expiry(
    kassa, store, poller
):
    scan(store, ANNA, workplace=3, at=time.time() - 500)  # should expire
    real, calls = poller.client.fetch_receipts, []

    def head_is_broken(branch, marker, limit):
        calls.append(marker)
        batch = real(branch, marker, limit)
        return ReceiptBatch(batch.receipts, [Unreadable("broken", None, 2, "no syncMarker")])

    poller.client.fetch_receipts = head_is_broken
    poller.interval = 1.0
    with running(poller):
        time.sleep(1.0)
    assert len(calls) <= 3, f"{len(calls)} getReceipts calls in 1 s (busy loop)"
    assert store.claims("expired"), "a claim 500 s old never expires"


def test_a_manual_scan_gets_its_own_sale_and_not_the_next_one(kassa, store, poller):
    claim = scan(store, ANNA)  # `boniq-agent scan` wakes no poller
    time.sleep(0.5)  # the daemon's next regular poll
    poller.catch_up()
    anna = kassa.book_sale(2, after=4)
    poller.catch_up()
    carl = kassa.book_sale(2, after=40)
    poller.catch_up()
    assert got(store) == {anna: ANNA} and carl not in got(store)
    assert state_of(store, claim) == ("delivered", None)


def test_a_sale_during_a_pos_outage_is_placed_by_booking_time(kassa, store, poller):
    anna = scan(store, ANNA, at=time.time() - 10)
    poller.catch_up()
    kassa.faults.server_fault_rate = 1.0
    anna_sale = kassa.book_sale(2, after=-4)  # Anna pays while the POS API is down
    with pytest.raises(KassaError):
        poller.poll_once()
    kassa.faults.reset()
    poller.catch_up()
    carl = kassa.book_sale(2, after=30)
    poller.catch_up()
    assert got(store) == {anna_sale: ANNA} and carl not in got(store)
    assert state_of(store, anna) == ("delivered", None)


class _ClockFailsOnce:
    """The real client, except that its first getApiVersion (the POS clock) fails: a POS hiccup
    right after the agent started."""

    def __init__(self, client):
        self.client, self.failed = client, False

    def __getattr__(self, name):
        return getattr(self.client, name)

    def get_server_time(self):
        if not self.failed:
            self.failed = True
            raise KassaError("getApiVersion: connection reset")
        return self.client.get_server_time()


def test_a_poll_waits_for_the_pos_clock_rather_than_close_claims_unsure(
    kassa, store, make_poller, pos_client
):
    claim = scan(store, ANNA)
    receipt_id = kassa.book_sale(2, after=4)
    poller = make_poller(client=_ClockFailsOnce(pos_client))
    with pytest.raises(KassaError):
        poller.poll_once()  # judged nothing without the clock offset
    assert state_of(store, claim) == ("pending", None)
    poller.catch_up()
    assert got(store) == {receipt_id: ANNA}
