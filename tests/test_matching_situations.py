"""The shop situations that once gave one customer's receipt to another, played against the real
daemon (`boniq-agent run` as a subprocess) with serial scanners on ptys and both simulators over
HTTP. Each asserts that no receipt reaches anyone but its owner and, where the evidence suffices,
that the owner gets theirs. Bookings are placed on the POS clock relative to now (`after=4`: the
payment completes 4 s after the code was read), so no test waits for the time it plays.
"""

import time

import pytest
import requests
from agent_harness import Agent, customer_code, wait_until

TILLS = (1, 2, 3, 4)


@pytest.fixture
def sim_seed() -> int:
    return 5


@pytest.fixture
def make_agent(tmp_path, kassa, cloud):
    agents = []

    def make(matching: str = "") -> Agent:
        agent = Agent(
            tmp_path,
            kassa.url,
            cloud.url,
            scanner_workplaces=TILLS,
            extra=f"matching: {{{matching}}}\n" if matching else "",
        )
        agents.append(agent)
        agent.start()
        agent.wait_ready()
        wait_until(lambda: agent.summary()["cursor"] is not None, what="the first POS poll")
        return agent

    yield make
    for agent in agents:
        agent.close()


def cloud_has(cloud):
    return {p["pos"]["receipt_id"]: next(iter(p["customer"].values())) for p in cloud.receipts()}


def seen(agent, kassa):
    """Wait until the agent has read everything the POS has given out so far."""
    marker = kassa.marker
    wait_until(lambda: (agent.summary()["cursor"] or 0) >= marker, what="the agent to catch up")


def state(agent, code):
    claims = agent.claims_of(code)
    return [(c.state, c.reason) for c in claims]


def scanned(agent, code, till):
    agent.scan(code, workplace=till)
    wait_until(lambda: agent.claim_fenced(code), what="the claim stored and fenced")


def settle(agent, kassa, polls=3):
    """A few of the agent's polls (0.2 s apart) after the last booking."""
    seen(agent, kassa)
    time.sleep(0.2 * polls)


def test_situations_at_four_tills_with_the_default_rules(make_agent, kassa, cloud):
    agent = make_agent()
    owners: dict[str, str] = {}  # receipt → the customer it belongs to (checked at the end)

    # 1. late scan at till 1: Anna pays, shows her code 2 s later; Carl (no app) pays later
    anna = customer_code(1)
    kassa.book_sale(1, after=-2)
    seen(agent, kassa)
    scanned(agent, anna, 1)
    carl = kassa.book_sale(1, after=8)
    # 2. queue overlap at till 2: Bram shows his code while Dirk (no app) still pays
    bram = customer_code(2)
    scanned(agent, bram, 2)
    dirk = kassa.book_sale(2, after=1)
    bram_own = kassa.book_sale(2, after=40)
    # 3. a code shown at a return at till 3: Eva bought with her code, returns it, shows it again
    eva = customer_code(3)
    scanned(agent, eva, 3)
    owners[eva_sale := kassa.book_sale(3, after=4)] = eva
    wait_until(lambda: eva_sale in cloud_has(cloud), what="Eva's sale delivered")
    time.sleep(11)  # she comes back later (past the re-read guard of her first claim)
    agent.scan(eva, workplace=3)
    wait_until(
        lambda: len(agent.claims_of(eva)) == 2 and agent.claim_fenced(eva),
        what="Eva's second claim",
    )
    owners[kassa.book_credit(eva_sale, after=4)] = eva
    stranger3 = kassa.book_sale(3, after=30)
    # 4. the same phone read again right after its sale matched, at till 4
    finn = customer_code(4)
    scanned(agent, finn, 4)
    owners[finn_sale := kassa.book_sale(4, after=4)] = finn
    wait_until(lambda: finn_sale in cloud_has(cloud), what="Finn's sale delivered")
    agent.scan(finn, workplace=4)
    stranger4 = kassa.book_sale(4, after=30)
    settle(agent, kassa)

    got = cloud_has(cloud)
    assert carl not in got and dirk not in got and bram_own not in got
    assert stranger3 not in got and stranger4 not in got
    assert got == owners, "a receipt reached someone else"
    assert ("unsure", "recent-sale") in state(agent, anna)
    assert state(agent, bram) == [("unsure", "order-unclear")]
    assert sorted(state(agent, eva)) == [("delivered", None), ("delivered", None)]
    assert len(agent.claims_of(finn)) == 1, "the re-read made a second claim"
    metrics = requests.get(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=5).text
    assert 'boniq_agent_claims_closed_total{reason="recent-sale",state="unsure"} 1.0' in metrics
    assert 'boniq_agent_claims{state="unsure"} 2.0' in metrics
    assert agent.terminate() == 0


def test_situations_with_odd_receipts_a_slow_pos_and_late_replication(make_agent, kassa, cloud):
    agent = make_agent()
    owners: dict[str, str] = {}
    # a cash inflow at till 1 between the scan and the sale; another branch's till 1 too
    gina = customer_code(11)
    scanned(agent, gina, 1)
    kassa.book_sale(1, after=2.5, receipt_type="RECEIPT-TYPE-CASH-INFLOW")
    kassa.book_sale(1, after=2.8, branch=9)
    owners[kassa.book_sale(1, after=4)] = gina
    # a partly paid sale at till 2: its claim waits for it
    ida = customer_code(12)
    scanned(agent, ida, 2)
    ida_sale = kassa.book_sale(2, after=4, state="RECEIPT-STATE-PARTLY-PAID")
    seen(agent, kassa)
    wait_until(lambda: agent.claims_of(ida)[0].receipt_id == ida_sale, what="Ida's reserved sale")
    # a sale booked before Jan's scan at till 3 reaches the API late, under its old marker
    jan = customer_code(14)
    late = kassa.book_sale(3, after=-6, delay=2.0)
    scanned(agent, jan, 3)
    owners[kassa.book_sale(3, after=4)] = jan
    settle(agent, kassa)
    time.sleep(2.2)
    kassa.settle(ida_sale)  # Ida's sale is paid in full
    owners[ida_sale] = ida
    # a slow POS (0.4 s an answer) at till 4
    kassa.faults.update({"latency": 0.4})
    kim = customer_code(15)
    scanned(agent, kim, 4)
    owners[kassa.book_sale(4, after=4)] = kim
    kassa.book_sale(4, after=40)
    settle(agent, kassa, polls=6)
    kassa.faults.reset()
    wait_until(lambda: len(cloud_has(cloud)) >= len(owners), what="every owner's receipt")
    settle(agent, kassa)
    assert cloud_has(cloud) == owners, "a receipt reached someone else, or an owner got nothing"
    assert late not in cloud_has(cloud)
    assert agent.terminate() == 0


@pytest.mark.parametrize("offset, timezone", [(-5.0, "offset"), (0.0, "zero"), (60.0, "negated")])
def test_a_pos_clock_off_or_in_another_zone_still_gives_each_owner_their_receipt(
    make_agent, kassa, cloud, offset, timezone
):
    kassa.clock_offset, kassa.timezone_field = offset, timezone
    agent = make_agent()
    owners = {}
    for n, till in enumerate(TILLS):
        code = customer_code(30 + n)
        scanned(agent, code, till)
        owners[kassa.book_sale(till, after=4)] = code
    wait_until(lambda: len(cloud_has(cloud)) == len(owners), what="four receipts")
    assert cloud_has(cloud) == owners
    assert agent.terminate() == 0


def test_a_pos_clock_60_s_ahead_and_an_outage_at_the_scan_give_no_strangers_sale(
    make_agent, kassa, cloud
):
    kassa.clock_offset = 60.0
    agent = make_agent()
    kassa.faults.update({"http_status": 503})
    lea = customer_code(40)
    agent.scan(lea, workplace=2)
    wait_until(lambda: agent.has_claim(lea), what="Lea's claim")
    stranger = kassa.book_sale(2, after=-20)  # booked before her scan, while the API is down
    own = kassa.book_sale(2, after=4)
    kassa.faults.reset()
    wait_until(lambda: cloud_has(cloud), what="a delivery after the outage")
    settle(agent, kassa)
    assert cloud_has(cloud) == {own: lea} and stranger not in cloud_has(cloud)
    assert agent.terminate() == 0


def test_late_scan_window_during_an_outage_does_not_override_the_order(make_agent, kassa, cloud):
    agent = make_agent("late_scan_window: 30")
    kassa.faults.update({"http_status": 503})
    max_ = customer_code(50)
    earlier = kassa.book_sale(2, after=-15)  # the previous customer's, 15 s before the scan
    agent.scan(max_, workplace=2)
    wait_until(lambda: agent.has_claim(max_), what="Max's claim")
    own = kassa.book_sale(2, after=4)
    kassa.faults.reset()
    wait_until(lambda: cloud_has(cloud), what="a delivery after the outage")
    settle(agent, kassa)
    assert cloud_has(cloud) == {own: max_} and earlier not in cloud_has(cloud)
    assert agent.terminate() == 0


def test_a_walk_away_claim_takes_no_sale_booked_after_claim_ttl(make_agent, kassa, cloud):
    agent = make_agent("claim_ttl: 20")
    nina = customer_code(60)
    scanned(agent, nina, 2)  # Nina shows her code, then leaves without buying
    stranger = kassa.book_sale(2, after=30)  # the next sale at the till comes after her ttl
    settle(agent, kassa)
    assert stranger not in cloud_has(cloud)
    assert state(agent, nina) == [("pending", None)]  # it expires 20 s after her scan
    assert agent.terminate() == 0
