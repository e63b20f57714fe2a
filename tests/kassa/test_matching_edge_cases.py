"""Matching at the edges: outages, restarts, unpaid and unreadable receipts, manual scans.

Each case once handed a receipt to the wrong customer or lost it (found in review)."""
import time
from datetime import UTC, datetime, timedelta

import pytest
from matching_support import (  # noqa: F401 - fixtures
    ANNA,
    BRAM,
    IDENT,
    SECRET,
    got,
    in_state,
    kassa_fixture,
    scan,
    settle,
    store_fixture,
)

from agent.kassa.client import KassaClient, ReceiptBatch
from agent.kassa.poller import Poller


@pytest.fixture
def client(kassa):
    c = KassaClient(kassa.url, IDENT, SECRET, timeout=(1.0, 2.0))
    yield c
    c.close()


@pytest.fixture
def poller(client, store):
    p = Poller(client, store, merchant_id="shop-1", branch=1, claim_ttl=120, interval=0.05)
    p.poll_once()
    return p


# a claim the matcher is UNSURE about still takes a LATER receipt in the same poll
def test_unsure_claim_takes_no_later_sale_in_the_same_poll(kassa, client, store, poller):
    now = time.time()
    scan(store, BRAM, at=now)          # agent killed right after the scan (or POS unreachable)
    kassa.book_sale(2, at=datetime.fromtimestamp(now, UTC))                         # Bram's own sale? unsure
    carl = kassa.book_sale(2, at=datetime.fromtimestamp(now, UTC) + timedelta(seconds=20))  # next customer, no scan
    restarted = Poller(client, store, merchant_id="shop-1", branch=1, claim_ttl=120)
    restarted.catch_up()
    assert carl not in got(store), "Carl's sale went to Bram"


# a claim takes a sale booked long after claim_ttl (POS outage / agent down)
def test_a_sale_booked_after_claim_ttl_is_not_taken(kassa, client, store, poller):
    scan(store, ANNA, at=time.time() - 600)   # Anna scanned 10 min ago, left without paying; POS was down
    stranger = kassa.book_sale(2)             # POS/agent back: the next sale at the till, 10 min later
    Poller(client, store, merchant_id="shop-1", branch=1, claim_ttl=120).catch_up()
    assert stranger not in got(store), "a sale 10 min after the scan went to Anna (ttl 120 s)"


# a newer claim closed 'unsure' does not supersede the older claim at the till
def test_older_claim_is_not_revived_when_the_newer_claim_closes_unsure(kassa, client, store, poller):
    scan(store, ANNA, at=time.time() - 10)
    poller.catch_up()                               # Anna fenced; she walks away without paying
    now = time.time()
    scan(store, BRAM, at=now - 1.5)                 # Bram scans while the POS is unreachable
    kassa.book_sale(2, at=datetime.fromtimestamp(now, UTC))  # his (or Anna's?) sale: unsure
    poller.catch_up()                               # POS back (>1 s later): Bram closed unsure
    assert store.claims("unsure")[0].customer == BRAM
    carl = kassa.book_sale(2)                       # the next customer, no scan
    poller.catch_up()
    assert carl not in got(store), "Carl's sale went to Anna, who left two customers ago"


# the 'prompt fence' judges BEFORE every receipt of every poll that starts within 1 s of the
# scan -- also a second poll whose receipts were committed after the first post-scan poll.
def test_own_sale_in_second_post_scan_poll_is_not_judged_before(kassa, store, poller):
    scan(store, BRAM, workplace=2)
    kassa.book_sale(3)                  # busy branch: another till's sale
    assert poller.poll_once() is False  # first poll after the scan: not empty, so no fence
    bram = kassa.book_sale(2)           # Bram pays now -- after the scan AND after that poll
    poller.catch_up()                   # still within 1 s of the scan: "prompt" => BEFORE
    carl = kassa.book_sale(2)           # next customer, no scan
    poller.catch_up()
    assert got(store).get(carl) != BRAM, "Bram got Carl's sale"
    assert got(store).get(bram) in (BRAM, None)  # his own, or his claim closed unsure


# `started` is taken before the hourly reference refresh (2 SOAP calls)
def test_started_is_taken_before_the_reference_refresh(kassa, client, store, poller):
    scan(store, BRAM)
    real = client.get_vat_groups
    def slow_refresh():                 # the hourly refresh: RTTs pass before getReceipts
        kassa.book_sale(2)              # Bram's sale is booked meanwhile
        return real()
    client.get_vat_groups = slow_refresh
    poller._reference_at = 0            # due for refresh
    poller.catch_up()
    client.get_vat_groups = real
    carl = kassa.book_sale(2)
    poller.catch_up()
    assert got(store).get(carl) != BRAM, "Bram got Carl's sale"


# an unpaid receipt is recorded as seen; when it is paid (new syncMarker) it is 'known'
def test_a_receipt_first_seen_unpaid_is_matched_once_paid(kassa, client, store, poller):
    scan(store, ANNA)
    poller.catch_up()
    sale = kassa.book_sale(2)
    undo = in_state(client, sale, "RECEIPT-STATE-OUTSTANDING")
    poller.poll_once()                   # seen while OUTSTANDING
    undo()
    settle(kassa, sale)                  # paid: back under a new syncMarker
    poller.catch_up()
    assert got(store).get(sale) == ANNA


# pending claims when the cursor is first initialised: their sale is skipped, then the
# claim is fenced and takes the next customer's sale.
def test_claim_before_cursor_init_does_not_take_the_next_customers_sale(kassa, client, store):
    scan(store, ANNA)                   # first start, POS not yet reachable: pos_marker None
    kassa.book_sale(2)                  # Anna pays
    p = Poller(client, store, merchant_id="shop-1", branch=1, claim_ttl=120)
    p.catch_up()                        # cursor initialised past Anna's sale; Anna fenced
    carl = kassa.book_sale(2)
    p.catch_up()
    assert carl not in got(store), "Carl's sale went to Anna"


# an unreadable receipt whose syncMarker cannot be read, at the head of the POS's list:
# the cursor cannot pass it, no poll is ever "caught up" -> busy loop, no fence, no expiry.
def test_unreadable_head_receipt_without_marker_does_not_spin_or_stop_expiry(kassa, client,
                                                                             store, poller):
    import threading

    from agent.kassa.client import Unreadable
    scan(store, ANNA, workplace=3, at=time.time() - 500)   # should expire
    real, calls = client.fetch_receipts, []
    def head_is_broken(branch, marker, limit):
        calls.append(marker)
        b = real(branch, marker, limit)
        return ReceiptBatch(b.receipts, [Unreadable("broken", None, 2, "no syncMarker")])
    client.fetch_receipts = head_is_broken
    poller.interval = 1.0
    stop = threading.Event()
    t = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    t.start(); time.sleep(1.0); stop.set(); poller.wake.set(); t.join(5)
    assert len(calls) <= 3, f"{len(calls)} getReceipts calls in 1 s (busy loop)"
    assert store.claims("expired"), "a claim 500 s old never expires"


# `boniq-agent scan` (cli.cmd_scan) wakes no poller, yet gets the prompt-fence rule
def test_manual_scan_own_sale_before_the_next_regular_poll(kassa, store, poller):
    store.add_claim(correlation_id="c-man", customer_kind="boniq_code", customer=ANNA,
                    workplace=2, source="manual", scanned_at=time.time(),
                    pos_marker=store.get_cursor())
    anna = kassa.book_sale(2)                 # the cashier then takes the payment
    time.sleep(0.5)                           # the daemon's next regular poll (interval 1 s)
    poller.catch_up()
    time.sleep(1.1)
    poller.catch_up()
    carl = kassa.book_sale(2)                 # next customer, no scan
    poller.catch_up()
    assert carl not in got(store), "Carl's sale went to Anna (her own sale was judged BEFORE)"
    assert got(store).get(anna) in (ANNA, None)  # her own, or her claim closed unsure


# a superseded claim, with a real outage instead of a back-dated scan
def test_a_superseded_claim_stays_closed_after_a_real_pos_outage(kassa, client, store, poller):
    scan(store, ANNA, at=time.time() - 10)
    poller.catch_up()
    kassa.faults.server_fault_rate = 1.0
    scan(store, BRAM)
    kassa.book_sale(2)                        # Bram pays at once (cash)
    with pytest.raises(Exception):
        poller.poll_once()
    time.sleep(1.2)
    kassa.faults.reset()
    poller.catch_up()
    assert [c.customer for c in store.claims("unsure")] == [BRAM]
    carl = kassa.book_sale(2)
    poller.catch_up()
    assert carl not in got(store), "Carl's sale went to Anna"


def test_a_claim_waits_for_its_unpaid_sale_and_the_next_customers_sale_is_not_taken(
        kassa, client, store, poller):
    scan(store, ANNA)
    poller.catch_up()
    sale = kassa.book_sale(2)
    undo = in_state(client, sale, "RECEIPT-STATE-PARTLY-PAID")
    poller.catch_up()                    # Anna's sale, not paid in full yet
    carl = kassa.book_sale(2)            # the next customer pays at once, without BONIQ
    poller.catch_up()
    assert got(store) == {}
    undo()
    settle(kassa, sale)                  # Anna's sale is settled
    poller.catch_up()
    assert got(store) == {sale: ANNA} and carl not in got(store)
