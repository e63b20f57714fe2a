"""A busy Saturday: thousands of customers at four tills served by one agent, as fast as the
simulators go. Every till works at once; at each till the cashier books a customer's sale only
once the agent has polled the POS since the scan (the claim is fenced), as a real cashier does;
the payment completes 4 s after the scan on the POS clock, and the next customer's code is read
once the agent has seen that sale.
Each receipt must reach the cloud once, for the right customer, and the daemon's memory must not
grow with the number of customers served."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from agent_harness import BACK_TO_BACK, Agent, customer_code, report_figure, wait_until

from agent.kassa.matcher import Matcher
from agent.queue.store import DB_NAME, Claim
from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator

CUSTOMERS = int(os.environ.get("BONIQ_BUSY_CUSTOMERS", "2000"))
TILLS = (1, 2, 3, 4)
WARM_UP = 100
BUDGET = 300.0  # the bound of a failing run; a passing one takes ~60 s here (each next code waits for the previous sale to be seen)
RSS_TOLERANCE = 0.10


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


class FenceWatch:
    """Which of these customers' claims are fenced, in one read of the agent's store."""

    def __init__(self, data_dir: Path) -> None:
        wait_until(lambda: (data_dir / DB_NAME).exists(), what="the agent's database")
        self._db = sqlite3.connect(
            f"file:{data_dir / DB_NAME}?mode=ro", uri=True, isolation_level=None, timeout=5
        )

    def cursor(self) -> int:
        row = self._db.execute("SELECT value FROM cursor WHERE name = 'receipts'").fetchone()
        return int(row[0]) if row else 0

    def fenced(self, customers: list[str]) -> set[str]:
        marks = ",".join("?" * len(customers))
        rows = self._db.execute(
            f"SELECT customer FROM claims WHERE customer IN ({marks})"
            " AND (fence_marker IS NOT NULL OR state != 'pending')",
            customers,
        ).fetchall()
        return {row[0] for row in rows}

    def close(self) -> None:
        self._db.close()


class Tills:
    """The four tills interleaved: each scans its next customer, waits for the fence, books."""

    def __init__(self, agent: Agent, kassa: KassaSimulator, watch: FenceWatch) -> None:
        self.agent, self.kassa, self.watch = agent, kassa, watch
        self.waiting: dict[int, str] = {}
        self.booked: dict[str, str] = {}
        self.last_sale: dict[int, int] = {}  # till → syncMarker of its last booked sale
        self.scanned = 0

    def step(self, total: int) -> bool:
        """One round over the tills; False when no till could move on."""
        cursor = self.watch.cursor() if self.last_sale else 0
        for till in TILLS:
            if (
                till not in self.waiting
                and self.scanned < total
                and self.last_sale.get(till, 0) <= cursor
            ):
                self.waiting[till] = customer_code(100_000 + self.scanned)
                self.agent.scan(self.waiting[till], workplace=till)
                self.scanned += 1
        fenced = self.watch.fenced(list(self.waiting.values())) if self.waiting else set()
        for till, code in list(self.waiting.items()):
            if code in fenced:
                self.booked[self.kassa.book_sale(till, after=4)] = code
                self.last_sale[till] = self.kassa.marker
                del self.waiting[till]
        return bool(fenced)

    def serve(self, total: int, deadline: float) -> None:
        while len(self.booked) < total:
            assert time.monotonic() < deadline, (
                f"only {len(self.booked)} of {total} customers served in time"
            )
            assert self.agent.process.poll() is None, self.agent.log_text()[-4000:]
            if not self.step(total):
                time.sleep(0.002)


@pytest.fixture
def shop(tmp_path):
    with KassaSimulator(seed=77, workplaces=TILLS) as kassa, CloudSimulator("demo-token") as cloud:
        agent = Agent(
            tmp_path,
            kassa.url,
            cloud.url,
            scanner_workplaces=TILLS,
            poll_interval=0.05,
            extra=BACK_TO_BACK,
        )
        try:
            yield agent, kassa, cloud
        finally:
            agent.close()


@pytest.mark.slow
def test_two_thousand_customers_at_four_tills_each_get_their_own_receipt_once(shop):
    agent, kassa, cloud = shop
    agent.start()
    agent.wait_ready()
    watch = FenceWatch(agent.data_dir)
    tills = Tills(agent, kassa, watch)
    started = time.monotonic()
    deadline = started + BUDGET
    try:
        tills.serve(min(WARM_UP, CUSTOMERS), deadline)
        rss_warm = rss_kib(agent.process.pid)
        tills.serve(max(WARM_UP, CUSTOMERS // 2), deadline)
        rss_half = rss_kib(agent.process.pid)
        tills.serve(CUSTOMERS, deadline)
        served = time.monotonic() - started
        wait_until(
            lambda: cloud.count() >= CUSTOMERS,
            timeout=max(5.0, deadline - time.monotonic()),
            what=f"{CUSTOMERS} receipts in the cloud",
        )
        delivered = time.monotonic() - started
        rss_end = rss_kib(agent.process.pid)
    finally:
        watch.close()
    stored = cloud.receipts()
    growth = (rss_end - rss_warm) / rss_warm
    report_figure(
        "busy-period",
        customers=CUSTOMERS,
        tills=len(TILLS),
        served_s=f"{served:.1f}",
        customers_per_s=f"{CUSTOMERS / served:.1f}",
        delivered_s=f"{delivered:.1f}",
        receipts_per_s=f"{len(stored) / delivered:.1f}",
        rss_after_100_kib=rss_warm,
        rss_half_kib=rss_half,
        rss_end_kib=rss_end,
        rss_growth=f"{growth:+.1%}",
    )
    assert {p["pos"]["receipt_id"]: p["customer"]["boniq_code"] for p in stored} == tills.booked
    assert set(cloud.stored_keys().values()) == {1}
    assert agent.summary()["outbox_dead"] == 0
    assert abs(growth) <= RSS_TOLERANCE, (
        f"RSS {rss_warm} KiB after {WARM_UP}, {rss_end} KiB at the end"
    )
    assert agent.terminate() == 0


def test_a_scan_during_a_running_poll_leaves_the_previous_sale_to_the_previous_customer():
    """At a busy till the next customer scans while a poll is under way; that poll's answer
    holds the previous customer's sale, which must go to them, not stay in the shop."""
    from agent.config import MatchingSection
    from agent.kassa.matcher import PollView, Seen

    previous = Claim(
        1, "c-1", "boniq_code", customer_code(1), 2, "serial", 1000.0, 10, "pending", None, None, 11
    )
    sale = SimpleNamespace(
        receipt_id="sale-1",
        workplace=2,
        is_paid=True,
        is_sale=True,
        is_credit=False,
        credited_receipt_id=None,
    )
    view = PollView(seen=[Seen(sale, 12, 1004.0, "sale")], claims=[previous])
    decisions = Matcher(MatchingSection()).decide(view)
    assert [(t.seen.receipt_id, t.claim.id) for t in decisions.takes] == [("sale-1", 1)]
