"""The matcher's judgement of before/after/unsure, with the POS clock and markers in hand."""

from dataclasses import dataclass
from datetime import UTC, datetime

from agent.kassa.matcher import Matcher, Order
from agent.queue.store import Claim


@dataclass(frozen=True)
class R:
    receipt_id: str
    sync_marker: int
    booked: float
    workplace: int = 2
    is_credit: bool = False
    is_paid: bool = True
    credited_receipt_id: str | None = None

    @property
    def booked_at(self) -> datetime:
        return datetime.fromtimestamp(int(self.booked), tz=UTC)  # whole seconds, like the POS


def claim(id_, scanned_at, pos_marker, fence=None, workplace=2):
    return Claim(id_, f"c-{id_}", "boniq_code", f"BQ1-{id_}", workplace, "t", scanned_at,
                 pos_marker, "pending", None, None, fence)


def owners(matches):
    return {m.receipt.receipt_id: m.claim.id for m in matches}


def test_after_a_pos_outage_booking_times_decide_with_a_margin():
    m = Matcher(clock_skew=2.0)
    c = claim(1, 1000.5, pos_marker=10)
    late_poll = 1300.0
    assert m.order(R("early", 11, 990), c, late_poll) is Order.BEFORE
    assert m.order(R("same-second", 12, 1000), c, late_poll) is Order.UNSURE
    assert m.order(R("later", 13, 1010), c, late_poll) is Order.AFTER
    assert owners(m.match([R("early", 11, 990), R("later", 13, 1010)], [c],
                          poll_started=late_poll)) == {"later": 1}


def test_an_unsure_receipt_goes_to_nobody_not_to_an_older_claim():
    m = Matcher()
    older = claim(1, 900.0, pos_marker=5, fence=10)
    newer = claim(2, 1000.5, pos_marker=10)
    assert owners(m.match([R("r", 11, 1000)], [older, newer], poll_started=1300.0)) == {}


def test_the_prompt_fence_poll_gives_the_previous_sale_to_the_superseded_claim():
    m = Matcher()
    anna = claim(1, 900.0, pos_marker=5, fence=10)
    bram = claim(2, 1000.5, pos_marker=10)
    got = owners(m.match([R("anna-sale", 11, 1000)], [anna, bram], poll_started=1000.6))
    assert got == {"anna-sale": 1}


def test_a_sale_above_the_fence_is_after_even_if_the_pos_clock_lags():
    m = Matcher(clock_skew=2.0)
    c = claim(1, 1000.5, pos_marker=10, fence=11)
    assert m.order(R("r", 12, 999), c, 1005.0) is Order.AFTER


def test_an_old_receipt_resynced_above_the_fence_is_not_taken():
    m = Matcher()
    c = claim(1, 5000.0, pos_marker=10, fence=11)
    assert m.order(R("edited", 12, 1000), c, 5005.0) is Order.BEFORE


def test_one_claim_one_sale_and_other_tills_are_ignored():
    m = Matcher()
    c = claim(1, 1000.5, pos_marker=10, fence=10)
    got = owners(m.match([R("other-till", 11, 1001, workplace=3), R("first", 12, 1002),
                          R("second", 13, 1003)], [c], poll_started=1004.0))
    assert got == {"first": 1}


def test_unpaid_and_credit_receipts_are_never_taken_by_a_claim():
    m = Matcher()
    c = claim(1, 1000.5, pos_marker=10, fence=10)
    got = owners(m.match([R("open", 11, 1001, is_paid=False), R("credit", 12, 1002, is_credit=True)],
                         [c], poll_started=1004.0))
    assert got == {}


def test_an_unsure_sale_is_reported_for_the_log():
    m = Matcher()
    c = claim(1, 1000.5, pos_marker=10)
    assert owners(m.match([R("r", 11, 1000)], [c], poll_started=1300.0)) == {}
    assert [(u.receipt.receipt_id, u.claim.id) for u in m.unsure] == [("r", 1)]
