"""The poller in webhook mode over HTTP (the real simulator, client, store and poller): receipts
whose lines carry a webhook session's line ids, and the orders of events a till can produce.
"""

from __future__ import annotations

import uuid

import pytest
from matching_support import ANNA, BRAM, got, scan

from agent.queue.claims import NewClaim
from agent.queue.sessions import SessionEvent
from agent.sim.kassa import CATALOGUE

T = 2  # the till


def session_scan(store, session: str, code: str, lines: tuple[str, ...] = ()):
    import time

    now = time.time()
    return store.scan_in_session(
        SessionEvent("scanCode", session, 1, T, lines, None, now),
        NewClaim(f"c-{uuid.uuid4().hex[:6]}", "boniq_code", code, T, "webhook", now, None),
    ).claim


def complete(store, session: str, lines: tuple[str, ...]) -> None:
    store.session_event(SessionEvent("completeSession", session, 1, T, lines))


@pytest.fixture
def webhook_poller(make_poller):
    def make(**matching):
        poller = make_poller(**matching)
        poller.webhooks = True
        poller.poll_once()
        return poller

    return make


def test_a_session_receipt_goes_to_its_claim_with_pos_session(kassa, store, webhook_poller):
    poller = webhook_poller()
    lines = (str(uuid.uuid4()), str(uuid.uuid4()))
    claim = session_scan(store, "S1", ANNA, lines)
    receipt = kassa.book_sale(T, lines=list(CATALOGUE[: len(lines)]), webhook_line_ids=list(lines))
    complete(store, "S1", lines)
    poller.catch_up()
    assert got(store) == {receipt: ANNA}
    assert store.claim(claim.id).state == "delivered"


def test_a_receipt_read_before_complete_session_waits_for_its_session(kassa, store, webhook_poller):
    """The code came before any line and the till sends no line events: the receipt is in the
    API before completeSession is stored. A webcam claim of another customer at the till must
    not take it, and the session's claim gets it once completeSession is in."""
    poller = webhook_poller()
    claim = session_scan(store, "S1", ANNA)  # no lines known yet
    scan(store, BRAM, workplace=T)  # a webcam at the same till read Bram
    poller.catch_up()
    lines = (str(uuid.uuid4()),)
    receipt = kassa.book_sale(
        T, lines=list(CATALOGUE[: len(lines)]), webhook_line_ids=list(lines), after=4
    )
    poller.catch_up()
    assert got(store) == {}  # nobody: its session is not known yet
    complete(store, "S1", lines)
    poller.catch_up()  # the overlap reads it again
    assert got(store) == {receipt: ANNA}
    assert store.claim(claim.id).state == "delivered"


def test_a_session_receipt_with_no_claim_is_nobodys_even_for_a_late_scan(
    kassa, store, webhook_poller
):
    """A customer without the app pays in a webhook session; a webcam reads a code just after.
    `late_scan_window` must not hand that session's receipt to the webcam claim."""
    poller = webhook_poller(late_scan_window=30)
    lines = (str(uuid.uuid4()),)
    store.session_event(SessionEvent("addSessionLine", "S9", 1, T, lines))
    receipt = kassa.book_sale(T, lines=list(CATALOGUE[: len(lines)]), webhook_line_ids=list(lines))
    complete(store, "S9", lines)
    poller.catch_up()
    scan(store, BRAM, workplace=T)
    poller.catch_up()
    poller.catch_up()
    assert receipt not in got(store)


def test_a_receipt_with_lines_of_two_sessions_goes_to_neither(kassa, store, webhook_poller):
    """Two sales merged at the till: whose receipt it is cannot be told, so nobody gets it."""
    poller = webhook_poller()
    anna_line, bram_line = str(uuid.uuid4()), str(uuid.uuid4())
    session_scan(store, "S1", ANNA, (anna_line,))
    session_scan(store, "S2", BRAM, (bram_line,))
    receipt = kassa.book_sale(T, lines=list(CATALOGUE[:2]), webhook_line_ids=[anna_line, bram_line])
    complete(store, "S1", (anna_line,))
    poller.catch_up()
    assert receipt not in got(store)
