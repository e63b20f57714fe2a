"""Webhook sessions in the store: which code a POS session keeps, and when its claim ends.

Each test plays a till situation against a real SQLite store and asserts whose claim the session
holds afterwards, which is what decides who gets the session's receipt.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from agent.errors import WebhookRefused
from agent.queue.claims import ClaimState, Close, Reason
from agent.queue.sessions import (
    EventKey,
    SessionEvent,
    SessionScanOutcome,
)
from agent.queue.store import NewClaim, Store

T0 = 1_900_000_000.0
GUARD = 10.0
_ids = itertools.count(1)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path) as store:
        yield store


def event(
    name: str,
    session: str,
    at: float,
    *,
    lines: tuple[str, ...] = (),
    workplace: int = 2,
    counter: int | None = None,
) -> SessionEvent:
    key = EventKey("till-1", counter, name, session) if counter is not None else None
    return SessionEvent(name, session, 1, workplace, lines, key, at)


def scan(store: Store, session: str, code: str, at: float, **kw: Any):
    scanned = event("scanCode", session, at, **kw)
    new = NewClaim(f"c-{next(_ids)}", "boniq_code", code, scanned.workplace, "webhook", at, None)
    return store.scan_in_session(scanned, new, rescan_guard=GUARD)


def test_the_first_code_keeps_the_session_and_a_second_is_not_linked(store):
    first = scan(store, "S1", "ANNA", T0)
    again = scan(store, "S1", "ANNA", T0 + 1)
    second = scan(store, "S1", "BRAM", T0 + 2)
    assert first.outcome is SessionScanOutcome.LINKED
    assert again.outcome is SessionScanOutcome.SAME and again.claim.id == first.claim.id
    assert second.outcome is SessionScanOutcome.SECOND_CODE and second.claim.customer == "ANNA"
    assert [c.customer for c in store.pending_claims()] == ["ANNA"]


def test_a_phone_read_again_after_its_sale_does_not_take_the_next_session(store):
    first = scan(store, "S1", "ANNA", T0)
    store.session_event(event("completeSession", "S1", T0 + 20))
    reread = scan(store, "S2", "ANNA", T0 + 22)  # the next customer's session, started by the read
    assert reread.outcome is SessionScanOutcome.PREVIOUS_SALE
    assert reread.claim.id == first.claim.id
    bram = scan(store, "S2", "BRAM", T0 + 40)  # the next customer's own code still links S2
    assert bram.outcome is SessionScanOutcome.LINKED and bram.claim.session_id == "S2"


def test_a_code_just_after_another_sale_closes_unsure_and_leaves_the_session_free(store):
    scan(store, "S1", "ANNA", T0)
    store.session_event(event("completeSession", "S1", T0 + 20))
    late = scan(store, "S2", "BRAM", T0 + 23)  # Bram's late scan, or the next customer's?
    assert late.outcome is SessionScanOutcome.RECENT_SALE
    assert (late.claim.state, late.claim.reason, late.claim.session_id) == (
        "unsure",
        "recent-sale",
        None,
    )
    after = scan(store, "S2", "CHRIS", T0 + 20 + GUARD + 1)
    assert after.outcome is SessionScanOutcome.LINKED and after.claim.session_id == "S2"


def test_a_voided_sale_is_no_recent_sale(store):
    scan(store, "S1", "ANNA", T0)
    store.session_event(event("cancelSession", "S1", T0 + 5))
    assert scan(store, "S2", "BRAM", T0 + 7).outcome is SessionScanOutcome.LINKED


def test_the_guard_is_per_till(store):
    scan(store, "S1", "ANNA", T0)
    store.session_event(event("completeSession", "S1", T0 + 20))
    other_till = scan(store, "S9", "BRAM", T0 + 21, workplace=3)
    assert other_till.outcome is SessionScanOutcome.LINKED


def test_a_customers_pending_webcam_claim_becomes_the_session_claim(store):
    webcam = store.add_claim(
        NewClaim("c-w", "boniq_code", "ANNA", 2, "webcam", T0, None), dedupe_window=5
    )
    linked = scan(store, "S1", "ANNA", T0 + 3)
    assert linked.claim.id == webcam.claim.id and linked.claim.session_id == "S1"
    assert len(store.pending_claims()) == 1


def test_cancel_session_closes_the_claim_cancelled_and_cancel_payment_keeps_it(store):
    kept, gone = scan(store, "S1", "ANNA", T0), scan(store, "S2", "BRAM", T0, workplace=3)
    store.session_event(event("cancelPayment", "S1", T0 + 5))
    update = store.session_event(event("cancelSession", "S2", T0 + 5, workplace=3))
    assert [c.claim.id for c in update.closed] == [gone.claim.id]
    states = {c.id: c.state for c in store.claims()}
    assert states == {kept.claim.id: "pending", gone.claim.id: "cancelled"}


def test_a_replayed_scan_is_answered_as_the_first_and_makes_no_claim(store):
    first = scan(store, "S1", "ANNA", T0, counter=7)
    replay = scan(store, "S1", "ANNA", T0 + 1, counter=7)
    assert replay.replayed and replay.outcome is first.outcome and replay.claim.id == first.claim.id
    assert len(store.claims()) == 1


def test_a_replayed_cancel_changes_nothing(store):
    scan(store, "S1", "ANNA", T0)
    assert store.session_event(event("cancelSession", "S1", T0 + 1, counter=3)).closed
    assert store.session_event(event("cancelSession", "S1", T0 + 2, counter=3)).replayed


def test_line_ids_lead_to_their_session_and_its_claim(store):
    claim = scan(store, "S1", "ANNA", T0, lines=("L1",)).claim
    store.session_event(event("addSessionLine", "S1", T0 + 1, lines=("L1", "L2")))
    store.session_event(event("addSessionLine", "S2", T0 + 1, lines=("L3",)))
    links = store.sessions_of_lines(["L1", "L2", "L3", "unknown"])
    assert {k: (v.session_id, v.claim_id) for k, v in links.items()} == {
        "L1": ("S1", claim.id),
        "L2": ("S1", claim.id),
        "L3": ("S2", None),
    }


def test_an_open_sessions_claim_lives_while_the_session_does(store):
    claim = scan(store, "S1", "ANNA", T0).claim
    store.session_event(event("addSessionLine", "S1", T0 + 100, lines=("L1",)))
    kept = store.expire_claims(
        scanned_before=T0 + 120 - 30, reserved_before=T0 - 3600, now=T0 + 120
    )
    assert kept == []  # scanned 120 s ago, but the sale went on until 20 s ago
    gone = store.expire_claims(
        scanned_before=T0 + 140 - 30 + 1, reserved_before=T0 - 3600, now=T0 + 141
    )
    assert [c.id for c in gone] == [claim.id]


def test_a_completed_sessions_claim_waits_for_a_late_receipt(store):
    claim = scan(store, "S1", "ANNA", T0).claim
    store.session_event(event("completeSession", "S1", T0 + 10))
    assert store.expire_claims(scanned_before=T0 + 600, reserved_before=T0, now=T0 + 630) == []
    gone = store.expire_claims(
        scanned_before=T0 + 7 * 3600, reserved_before=T0 + 11, now=T0 + 7 * 3600
    )
    assert [c.id for c in gone] == [claim.id]
    assert store.claim(claim.id).state == ClaimState.EXPIRED


def test_old_sessions_are_purged_with_their_lines(store):
    scan(store, "S1", "ANNA", T0, lines=("L1",))
    assert store.purge_sessions(now=T0 + 3 * 86400) == 1
    assert store.sessions_of_lines(["L1"]) == {}


def test_a_session_whose_claim_expired_still_refuses_another_customers_code(store):
    anna = scan(store, "S1", "ANNA", T0).claim
    store.expire_claims(
        scanned_before=T0 + 1, reserved_before=T0 - 1, now=T0 + 40, idle_before=T0 + 1
    )  # a slow card terminal: no event for a while
    assert store.claim(anna.id).state == ClaimState.EXPIRED
    bram = scan(store, "S1", "BRAM", T0 + 45)  # the next customer's phone, handed over early
    assert bram.outcome is SessionScanOutcome.SECOND_CODE
    assert [c.customer for c in store.claims() if c.session_id == "S1"] == ["ANNA"]
    again = scan(store, "S1", "ANNA", T0 + 50)  # Anna's own code may take her session back
    assert again.outcome is SessionScanOutcome.LINKED and again.claim.session_id == "S1"


def test_a_signed_body_posted_under_another_event_name_is_refused(store):
    scan(store, "S1", "ANNA", T0, counter=5)
    with pytest.raises(WebhookRefused):
        store.session_event(event("cancelSession", "S1", T0 + 1, counter=5))
    assert [c.state for c in store.claims()] == ["pending"]


def test_a_merged_session_closes_its_claim_unsure(store):
    anna = scan(store, "S1", "ANNA", T0).claim
    update = store.session_event(event("mergeSession", "S1", T0 + 5))
    assert [(c.claim.id, c.reason) for c in update.closed] == [(anna.id, Reason.MERGED)]
    assert store.claim(anna.id).reason == "merged-session"


def test_a_poll_does_not_close_a_claim_a_session_adopted_meanwhile(store):
    webcam = store.add_claim(
        NewClaim("c-w", "boniq_code", "ANNA", 2, "webcam", T0, None), dedupe_window=5
    ).claim
    scan(store, "S1", "ANNA", T0 + 1)  # adopted after the poll read it as a polling claim
    store.close_claims([Close(webcam, ClaimState.UNSURE, Reason.RECENT_SALE)], now=T0 + 2)
    assert store.claim(webcam.id).state == ClaimState.PENDING
