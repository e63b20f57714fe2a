"""Long outages: the cloud unreachable while 500 receipts pile up, the POS API down while
customers scan and pay, and both ends hanging. Nothing is lost, nothing reaches the wrong
customer, and the agent keeps accepting scans throughout."""

import time
from collections import Counter
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest
from agent_harness import BACK_TO_BACK, Agent, customer_code, report_figure, wait_until

from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import POS_ZONE

CLOCK_SKEW = 2.0  # matching.clock_skew default
BACKLOG = 500
FAST_RETRY = "retry_base: 0.2, retry_max: 1"


@pytest.fixture
def sim_seed() -> int:
    return 31


@pytest.fixture
def cloud_seed() -> int:
    return 31


@pytest.fixture
def make_agent(tmp_path, kassa, cloud):
    agents = []

    def make(tills: tuple[int, ...], extra: str = "") -> Agent:
        agent = Agent(
            tmp_path,
            kassa.url,
            cloud.url,
            scanner_workplaces=tills,
            cloud_options=FAST_RETRY,
            extra=extra,
        )
        agents.append(agent)
        agent.start()
        agent.wait_ready()
        wait_until(lambda: has_polled(agent), what="the first POS poll")
        return agent

    yield make
    for agent in agents:
        agent.close()


def has_polled(agent: Agent) -> bool:
    return (agent.data_dir / "boniq-agent.db").exists() and agent.summary()["cursor"] is not None


def matched_to(agent: Agent, code: str) -> str | None:
    """The sale this customer's claim took, if any."""
    return next((c.receipt_id for c in agent.claims_of(code) if c.state == "delivered"), None)


def delivered(cloud: CloudSimulator) -> dict[str, str]:
    """receipt_id -> the customer's code, as the cloud stored them; each key stored once."""
    stored = cloud.receipts()
    assert set(cloud.stored_keys().values()) <= {1}
    assert max(Counter(p["pos"]["receipt_id"] for p in stored).values(), default=1) == 1
    return {p["pos"]["receipt_id"]: p["customer"]["boniq_code"] for p in stored}


def wait_clearly_after(moment: float) -> None:
    """Until a sale booked now has a POS time (whole seconds) clearly after `moment`."""
    time.sleep(max(0.0, moment + CLOCK_SKEW + 1.2 - time.time()))


@pytest.mark.slow
def test_cloud_unreachable_while_500_receipts_pile_up_then_each_delivered_once(
    make_agent, kassa, cloud
):
    port = urlsplit(cloud.url).port
    cloud.stop()
    agent = make_agent((2, 3), BACK_TO_BACK)
    expected: dict[str, str] = {}
    previous: dict[int, str] = {}
    for n in range(BACKLOG):
        till = (2, 3)[n % 2]
        if till in previous:  # the customer before at this till has been matched
            wait_until(lambda t=till: matched_to(agent, previous[t]), what="the previous sale")
        code = previous[till] = customer_code(70_000 + n)
        agent.scan(code, workplace=till)
        wait_until(lambda c=code: agent.claim_fenced(c), what=f"customer {n}'s claim fenced")
        expected[kassa.book_sale(till, after=4)] = code
    wait_until(lambda: agent.summary()["outbox_pending"] == BACKLOG, what="every sale matched")
    assert cloud.count() == 0

    back = time.monotonic()
    cloud.start(port)
    wait_until(lambda: cloud.count() > 0, what="the first delivery (at the next retry)")
    first = time.monotonic() - back
    wait_until(lambda: cloud.count() == BACKLOG, timeout=60, what="the backlog delivered")
    seconds = time.monotonic() - back
    report_figure(
        "cloud-outage",
        receipts=BACKLOG,
        first_delivery_s=round(first, 2),
        drain_seconds=round(seconds, 2),
        drain_per_s=round(BACKLOG / seconds),
        drain_per_s_after_first=round(BACKLOG / max(seconds - first, 1e-3)),
    )

    assert delivered(cloud) == expected
    wait_until(lambda: agent.summary()["outbox_delivered"] == BACKLOG, what="the outbox updated")
    assert agent.terminate() == 0


@pytest.mark.slow
def test_pos_api_down_claims_wait_and_each_customer_gets_their_own_sale(make_agent, kassa, cloud):
    agent = make_agent((2, 3, 4))
    kassa.faults.update({"http_status": 503})
    paid_before = kassa.book_sale(2, at=datetime.now(POS_ZONE) - timedelta(seconds=20))
    a, b, c = (customer_code(80_000 + n) for n in range(3))
    for code, till in ((a, 2), (b, 3), (c, 4)):
        agent.scan(code, workplace=till)
    claims = [
        wait_until(lambda code=code: agent.claims_of(code), what="the claim")[0]
        for code in (a, b, c)
    ]
    unsure = kassa.book_sale(4)  # paid within the clock margin of c's scan
    wait_clearly_after(max(claim.scanned_at for claim in claims))
    sale_a, sale_b = kassa.book_sale(2), kassa.book_sale(3)
    paid_after_a = kassa.book_sale(2)  # a customer without BONIQ after a
    wait_until(lambda: "POS poll failed" in agent.log_text(), what="the outage noticed")
    assert all(claim.fence_marker is None for code in (a, b, c) for claim in agent.claims_of(code))

    kassa.faults.reset()
    wait_until(lambda: cloud.count() == 2, timeout=30, what="a's and b's receipts")
    assert delivered(cloud) == {sale_a: a, sale_b: b}
    summary = agent.summary()
    assert summary["claims_expired"] == 0 and summary["claims_pending"] == 0
    c_claim = agent.claims_of(c)[0]
    assert c_claim.state == "unsure"  # closed, visible: it must not catch the next sale

    later = kassa.book_sale(4)  # the next customer at till 4, without BONIQ
    time.sleep(1.0)
    agent.terminate()
    assert delivered(cloud) == {sale_a: a, sale_b: b}
    left_in_shop = {paid_before, paid_after_a, unsure, later}
    report_figure(
        "pos-outage",
        customers=3,
        expired=0,
        delivered=2,
        unsure_sale="stayed-in-shop",
        unsure_claim="closed-unsure",
        left_in_shop=len(left_in_shop),
    )
    assert agent.terminate() == 0


@pytest.mark.slow
def test_hanging_pos_and_cloud_time_out_scans_still_accepted_then_all_delivered(
    make_agent, kassa, cloud
):
    agent = make_agent((2, 3), BACK_TO_BACK)
    kassa.faults.update({"hang": True})
    cloud.faults.update(latency=4.0)  # the agent's cloud timeout is 2 s
    codes = {2: customer_code(90_000), 3: customer_code(90_001)}
    for till, code in codes.items():
        agent.scan(code, workplace=till)
    claims = [
        wait_until(lambda code=code: agent.claims_of(code), what="the claim")[0]
        for code in codes.values()
    ]
    wait_clearly_after(max(claim.scanned_at for claim in claims))
    expected = {kassa.book_sale(till): code for till, code in codes.items()}
    wait_until(lambda: "did not answer" in agent.log_text(), what="a POS timeout")
    assert cloud.count() == 0

    kassa.faults.update({"hang": False})
    wait_until(
        lambda: all(matched_to(agent, code) for code in codes.values()),
        what="both sales matched once the POS answers",
    )
    wait_until(
        lambda: "receipt upload failed" in agent.log_text() and "Timeout" in agent.log_text(),
        what="an upload timeout",
    )
    third = customer_code(90_002)  # scans are still accepted while uploads time out
    agent.scan(third, workplace=2)
    wait_until(lambda: agent.claim_fenced(third), what="the third claim")
    expected[kassa.book_sale(2, after=4)] = third

    cloud.faults.update(latency=0.0)
    wait_until(
        lambda: agent.summary()["outbox_delivered"] == 3, timeout=30, what="everything delivered"
    )
    assert delivered(cloud) == expected
    report_figure(
        "hangs",
        customers=3,
        delivered=3,
        posts_per_receipt=round(sum(cloud.post_counts().values()) / 3, 1),
    )
    assert agent.terminate() == 0
