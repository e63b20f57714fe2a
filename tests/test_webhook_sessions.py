"""Webhook mode end to end: the simulator's till plays POS sessions with signed webhooks to the
real daemon (`boniq-agent run` as a subprocess), whose poller reads the receipts over SOAP and
whose uploader delivers them to the cloud simulator.

Every test asserts the same two things a shop would notice: no receipt reaches anyone but its
owner, and every customer whose session completed gets exactly their receipt, carried by
`match.evidence: pos-session` with their session's id.
"""

from __future__ import annotations

import base64
import time

import pytest
from agent_harness import Agent, customer_code, free_port, wait_until

from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator
from agent.sim.till import NO_ANSWER, Till

TILLS = (1, 2, 3, 4)
KEY = base64.b64encode(b"webhook-key-of-shop-one-32bytes!").decode()
SUBSCRIPTION = "boniq-shop-1"


@pytest.fixture
def sim_seed() -> int:
    return 15


@pytest.fixture
def make_shop(tmp_path, kassa, cloud):
    """The agent with webhook mode on, and the till that posts to it. The tests serve customers
    seconds apart, which a real till cannot: by default `recent_sale_guard` is off (the late-scan
    test turns it on)."""
    made = []

    def make(guard: float = 0) -> tuple[Agent, Till]:
        port = free_port()
        agent = Agent(
            tmp_path,
            kassa.url,
            cloud.url,
            scanner_workplaces=TILLS,
            extra=f"matching: {{claim_ttl: 3, recent_sale_guard: {guard}}}\n",
            kassa_options=(
                f"webhooks: {{listen: '127.0.0.1:{port}',"
                f" subscription_id: {SUBSCRIPTION}, key: '{KEY}'}}"
            ),
        )
        agent.start()
        agent.wait_ready()
        till = Till(
            f"http://127.0.0.1:{port}/mplus",
            KEY,
            SUBSCRIPTION,
            sim=kassa,
            workplaces=TILLS,
            timeout=3.0,
        )
        made.append((agent, till))
        return agent, till

    yield make
    for agent, till in made:
        till.close()
        agent.close()


@pytest.fixture
def shop(make_shop):
    return make_shop()


def delivered(cloud: CloudSimulator) -> dict[str, tuple[str, str, str | None]]:
    """receipt id → (customer, evidence, session id) of what the cloud holds."""
    return {
        p["pos"]["receipt_id"]: (
            next(iter(p["customer"].values())),
            p["match"]["evidence"],
            p["match"].get("session_id"),
        )
        for p in cloud.receipts()
    }


def sale(till: Till, workplace: int, code: str | None, articles: int = 2):
    session = till.start_session(workplace)
    for article in (1001, 2040, 3120)[:articles]:
        session.add_line(article)
    if code is not None:
        assert session.scan(code).recognized
    return session


def settle(agent: Agent, kassa: KassaSimulator) -> None:
    """Wait until the agent has read every receipt the POS has given out."""
    marker = kassa.marker
    wait_until(lambda: (agent.summary()["cursor"] or 0) >= marker, what="the agent to catch up")


def test_a_queue_at_four_tills_each_customer_gets_exactly_their_receipt(shop, kassa, cloud):
    agent, till = shop
    expected = {}
    for round_ in range(3):
        open_sessions = [(w, customer_code(100 * round_ + w), sale(till, w, None)) for w in TILLS]
        for _, code, session in reversed(open_sessions):  # scans overlap across tills
            assert session.scan(code).recognized
        for _, code, session in open_sessions:
            session.start_payment()
            expected[session.complete()] = (code, "pos-session", session.session_id)
    wait_until(lambda: len(delivered(cloud)) == len(expected), what="every receipt delivered")
    assert delivered(cloud) == expected


def test_the_next_customers_code_in_the_first_customers_session_is_not_linked(shop, kassa, cloud):
    agent, till = shop
    anna, bram = customer_code(1), customer_code(2)
    first = sale(till, 2, anna)
    entry = first.scan(bram)  # Bram's phone, handed over while Anna pays
    assert entry.recognized and "al een BONIQ-code" in entry.cashier
    first.start_payment()
    annas = first.complete()
    second = sale(till, 2, bram)  # Bram's own sale, his code scanned again
    second.start_payment()
    brams = second.complete()
    wait_until(lambda: len(delivered(cloud)) == 2, what="both receipts")
    assert delivered(cloud) == {
        annas: (anna, "pos-session", first.session_id),
        brams: (bram, "pos-session", second.session_id),
    }


def test_a_late_scan_after_the_sale_takes_no_ones_receipt(make_shop, kassa, cloud):
    agent, till = make_shop(guard=10)
    anna, late = customer_code(3), customer_code(4)
    first = sale(till, 1, anna)
    first.start_payment()
    annas = first.complete()
    nxt = till.start_session(1)  # the late code starts the next session, as a till does
    entry = nxt.scan(late)
    assert entry.recognized and "net een verkoop afgerond" in entry.cashier
    nxt.add_line(2101)  # the next customer, without the app, buys in that session
    nxt.start_payment()
    strangers = nxt.complete()
    settle(agent, kassa)
    wait_until(lambda: annas in delivered(cloud), what="Anna's receipt")
    assert strangers not in delivered(cloud)
    assert delivered(cloud) == {annas: (anna, "pos-session", first.session_id)}
    assert [(c.state, c.reason) for c in agent.claims_of(late)] == [("unsure", "recent-sale")]


def test_a_walk_away_is_cancelled_and_the_next_sale_is_nobodys(shop, kassa, cloud):
    agent, till = shop
    gone = customer_code(5)
    session = sale(till, 3, gone)
    session.cancel()
    wait_until(
        lambda: [c.state for c in agent.claims_of(gone)] == ["cancelled"],
        what="the claim cancelled",
    )
    nxt = sale(till, 3, None)
    nxt.start_payment()
    strangers = nxt.complete()
    settle(agent, kassa)
    assert strangers not in delivered(cloud)


def test_a_session_that_never_completes_takes_no_other_sale(shop, kassa, cloud):
    """The customer went away and nobody cancelled the session. Its claim waits for the
    session's own receipt only (it expires half an hour after the session's last event, not
    after claim_ttl: a slow card terminal must not cost the receipt); no other sale is its."""
    agent, till = shop
    parked = customer_code(6)
    sale(till, 4, parked)
    for _ in range(2):
        nxt = sale(till, 4, None)
        nxt.start_payment()
        strangers = nxt.complete()
        settle(agent, kassa)
        time.sleep(3.5)  # past claim_ttl (3 s)
    settle(agent, kassa)
    assert strangers not in delivered(cloud)
    assert delivered(cloud) == {}
    assert [c.state for c in agent.claims_of(parked)] == ["pending"]


def test_a_pos_clock_a_minute_off_and_a_slow_pos_change_nothing(shop, kassa, cloud):
    agent, till = shop
    kassa.clock_offset = 60.0
    kassa.faults.update({"latency": 0.4})
    expected = {}
    for n, workplace in enumerate(TILLS):
        code = customer_code(40 + n)
        session = sale(till, workplace, code)
        session.start_payment()
        expected[session.complete()] = (code, "pos-session", session.session_id)
    wait_until(lambda: len(delivered(cloud)) == 4, what="every receipt delivered", timeout=40)
    assert delivered(cloud) == expected


def test_a_receipt_that_reaches_the_api_late_still_goes_to_its_session(shop, kassa, cloud):
    agent, till = shop
    anna = customer_code(7)
    first = sale(till, 2, anna)
    first.start_payment()
    annas = first.complete(receipt_delay=4.0)  # the till replicates late
    other = sale(till, 2, None)  # meanwhile a customer without the app pays
    other.start_payment()
    strangers = other.complete()
    wait_until(lambda: annas in delivered(cloud), what="the late receipt", timeout=30)
    settle(agent, kassa)
    assert delivered(cloud) == {annas: (anna, "pos-session", first.session_id)}
    assert strangers not in delivered(cloud)


def test_a_return_in_a_credit_session_follows_the_sale_to_its_customer(shop, kassa, cloud):
    agent, till = shop
    anna = customer_code(8)
    first = sale(till, 1, anna)
    first.start_payment()
    annas = first.complete()
    wait_until(lambda: annas in delivered(cloud), what="Anna's receipt")
    credit = first.credit()
    wait_until(lambda: credit in delivered(cloud), what="the credit receipt")
    assert delivered(cloud)[credit][:2] == (anna, "credit-link")


def test_sigkill_between_the_scan_reply_and_complete_session_still_delivers(shop, kassa, cloud):
    agent, till = shop
    anna = customer_code(9)
    session = sale(till, 2, anna)  # recognized: the claim was committed before the reply
    agent.kill()
    agent.drain_notify()
    agent.start()
    agent.wait_ready()
    session.start_payment()
    annas = session.complete()
    wait_until(lambda: annas in delivered(cloud), what="the receipt after the restart")
    assert delivered(cloud) == {annas: (anna, "pos-session", session.session_id)}


def test_with_the_agent_down_the_till_shows_its_own_error_and_links_nothing(shop, kassa, cloud):
    agent, till = shop
    agent.kill()
    session = till.start_session(2)
    session.add_line(1001)
    entry = session.scan(customer_code(10))
    assert entry.outcome == NO_ANSWER and not entry.recognized
    assert "webhook error" in entry.cashier
