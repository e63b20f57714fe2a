"""The matcher alone: a `PollView` in, `Decisions` out, no I/O (docs/matching.md)."""

from datetime import UTC, date, datetime

import pytest

from agent.config import MatchingSection
from agent.kassa.matcher import Matcher, Order, PollView, Seen
from agent.kassa.receipt import Receipt
from agent.queue.claims import Claim
from agent.queue.store import PastSale

T = 1_800_000_000.0  # the scan time of the claims below


def receipt(
    rid,
    marker,
    booked,
    *,
    workplace=2,
    type_="RECEIPT-TYPE-RECEIPT",
    state="RECEIPT-STATE-PAID",
    credited=None,
):
    return Receipt(
        rid,
        marker,
        type_,
        state,
        1,
        workplace,
        2027,
        1,
        "t",
        None,
        credited,
        None,
        datetime.fromtimestamp(int(booked), tz=UTC),
        date(2027, 1, 1),
        100,
        80,
        100,
        None,
        1,
        (),
        (),
        (),
    )


def seen(rid, marker, booked, kind="sale", **kw):
    r = receipt(rid, marker, booked, **kw)
    return Seen(r, marker, float(int(booked)), kind)


def claim(id_, at=T, pos_marker=10, fence=None, workplace=2, customer=None, reserved=None):
    return Claim(
        id_,
        f"c-{id_}",
        "boniq_code",
        customer or f"BQ1-{id_}",
        workplace,
        "t",
        at,
        pos_marker,
        "pending",
        reserved,
        None,
        fence,
    )


def decide(seen_, claims, **kw):
    rules = kw.pop("rules", MatchingSection())
    return Matcher(rules).decide(PollView(seen=seen_, claims=claims, **kw))


def taken(decisions):
    return {t.seen.receipt_id: t.claim.id for t in decisions.takes}


def closed(decisions):
    return {c.claim.id: (c.state.value, c.reason and c.reason.value) for c in decisions.closes}


@pytest.mark.parametrize(
    "marker, booked, expected",
    [
        (9, T + 30, Order.BEFORE),  # at or below the cursor at the scan: seen before it
        (25, T + 5, Order.AFTER),  # above the fence, booked after: both proofs agree
        (25, T + 1, Order.UNSURE),  # above the fence, but booked within the clock margin
        (25, T - 30, Order.DISAGREE),  # above the fence, booked half a minute before
        (15, T + 5, Order.AFTER),  # between cursor and fence: the booking time decides
        (15, T - 5, Order.BEFORE),
        (15, T - 1.5, Order.UNSURE),
    ],
)
def test_the_two_proofs_of_after_the_scan(marker, booked, expected):
    m = Matcher(MatchingSection(clock_skew=2))
    assert m.order(seen("r", marker, booked), claim(1, pos_marker=10, fence=20)) is expected


def test_a_claim_takes_the_first_sale_after_its_scan():
    d = decide([seen("a", 21, T + 4), seen("b", 22, T + 40)], [claim(1, fence=20)])
    assert taken(d) == {"a": 1}


def test_a_sale_of_another_till_or_a_cash_inflow_is_passed_over():
    d = decide(
        [
            seen("x", 21, T + 4, workplace=3),
            seen("i", 22, T + 5, kind="other"),
            seen("a", 23, T + 6),
        ],
        [claim(1, fence=20)],
    )
    assert taken(d) == {"a": 1}


def test_two_different_codes_pending_close_both_unsure():
    d = decide([seen("a", 21, T + 10)], [claim(1, fence=20), claim(2, at=T + 3, fence=20)])
    assert taken(d) == {}
    assert closed(d) == {1: ("unsure", "two-codes"), 2: ("unsure", "two-codes")}


def test_the_same_customer_twice_is_not_a_rival_and_both_claims_end():
    d = decide(
        [seen("a", 21, T + 10)],
        [claim(1, fence=20, customer="BQ1-X"), claim(2, at=T + 8, fence=20, customer="BQ1-X")],
    )
    assert taken(d) == {"a": 1}
    assert closed(d) == {2: ("delivered", None)}


def test_a_sale_just_before_the_scan_makes_the_next_sale_unsure():
    d = decide([seen("prev", 15, T - 3), seen("next", 21, T + 20)], [claim(1, fence=20)])
    assert taken(d) == {}
    assert closed(d) == {1: ("unsure", "recent-sale")}


def test_a_recent_sale_that_went_to_another_claim_is_still_a_reason_for_doubt():
    past = [PastSale("prev", 2, T - 3, 9, taken_by="BQ1-OTHER")]
    d = decide([seen("next", 21, T + 20)], [claim(1, fence=20)], past=past)
    assert closed(d) == {1: ("unsure", "recent-sale")}
    mine = [PastSale("prev", 2, T - 3, 9, taken_by="BQ1-1")]  # the same phone, read again
    assert taken(decide([seen("next", 21, T + 20)], [claim(1, fence=20)], past=mine)) == {"next": 1}


def test_a_recent_ownerless_sale_from_an_earlier_poll_counts_too():
    past = [PastSale("prev", 2, T - 8, 9)]
    d = decide([seen("next", 21, T + 20)], [claim(1, fence=20)], past=past)
    assert closed(d) == {1: ("unsure", "recent-sale")}
    rules = MatchingSection(recent_sale_guard=5)
    assert taken(
        decide([seen("next", 21, T + 20)], [claim(1, fence=20)], past=past, rules=rules)
    ) == {"next": 1}


def test_a_credit_first_consumes_the_claim():
    credit = seen(
        "k", 21, T + 5, kind="credit", type_="RECEIPT-TYPE-CREDIT-RECEIPT", credited="orig"
    )
    later = seen("s", 22, T + 30)
    c = claim(1, fence=20, customer="BQ1-X")
    assert taken(decide([credit, later], [c], credited_to={"orig": "BQ1-X"})) == {"k": 1}
    d = decide([credit, later], [c], credited_to={"orig": "BQ1-OTHER"})
    assert taken(d) == {} and closed(d) == {1: ("unsure", "return")}


def test_an_unpaid_sale_is_reserved_and_taken_once_paid():
    unpaid = seen("u", 21, T + 5, state="RECEIPT-STATE-PARTLY-PAID")
    d = decide([unpaid], [claim(1, fence=20)])
    assert [(c.id, s.receipt_id) for c, s in d.reserves] == [(1, "u")]
    paid = seen("u", 21, T + 5)
    newer = claim(2, at=T + 10, fence=20)
    d = decide([paid, seen("v", 30, T + 40)], [claim(1, fence=20, reserved="u"), newer])
    assert taken(d) == {"u": 1, "v": 2}


def test_a_sale_after_claim_ttl_is_not_taken():
    rules = MatchingSection(claim_ttl=60)
    d = decide([seen("late", 21, T + 300)], [claim(1, fence=20)], rules=rules)
    assert taken(d) == {} and closed(d) == {}


def test_an_unreadable_receipt_at_the_till_closes_its_claims():
    d = decide([], [claim(1), claim(2, workplace=3)], unreadable=[2])
    assert closed(d) == {1: ("unsure", "unreadable-receipt")}


def test_late_scan_window_takes_the_one_recent_sale_at_the_first_fence_only():
    rules = MatchingSection(late_scan_window=30)
    past = [PastSale("prev", 2, T - 10, 9)]
    d = decide([], [claim(1)], past=past, fenced=frozenset({1}), rules=rules)
    assert [(c.id, r) for c, r in d.late_takes] == [(1, "prev")]
    assert decide([], [claim(1)], past=past, rules=rules).late_takes == []
    two = past + [PastSale("prev2", 2, T - 5, 9)]
    d = decide([], [claim(1)], past=two, fenced=frozenset({1}), rules=rules)
    assert closed(d) == {1: ("unsure", "late-scan-ambiguous")}


def test_late_scan_window_is_off_by_default():
    past = [PastSale("prev", 2, T - 10, 9)]
    assert decide([], [claim(1)], past=past, fenced=frozenset({1})).late_takes == []
