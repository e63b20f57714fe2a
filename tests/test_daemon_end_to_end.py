"""The whole agent as store IT runs it: `boniq-agent run` as a subprocess, a serial scanner on a
pty, the MplusKASSA and cloud simulators over HTTP on 127.0.0.1."""

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import requests
from agent_harness import BACK_TO_BACK, Agent, customer_code, wait_until


@pytest.fixture
def sim_seed() -> int:
    return 20


@pytest.fixture
def agent(tmp_path, kassa, cloud):
    running = Agent(tmp_path, kassa.url, cloud.url, extra=BACK_TO_BACK)
    yield running
    running.close()


def serve_customer(agent, kassa, code):
    """The code is read, the agent polls once (the cashier's moment), the payment completes 4 s
    after the scan on the POS clock."""
    agent.scan(code)
    wait_until(lambda: agent.claim_fenced(code), what="the claim to be stored and fenced")
    return kassa.book_sale(2, after=4)


@pytest.mark.slow
def test_twenty_customers_get_their_own_receipts_and_nothing_else_leaves(
    agent, kassa, cloud, receipt_validator
):
    agent.start()
    agent.wait_ready()
    expected = {}
    for n in range(20):
        code = customer_code(1000 + n)
        expected[serve_customer(agent, kassa, code)] = code
        if n % 5 == 0:
            kassa.book_sale(1)  # other tills sell too
        wait_until(
            lambda: (
                agent.summary()["outbox_pending"] + agent.summary()["outbox_delivered"]
                > len(expected) - 1
            ),
            what="the sale to be matched",
        )
        kassa.book_sale(2, after=-15)  # a customer without BONIQ: must stay in the shop
    wait_until(lambda: cloud.count() >= 20, what="20 receipts in the cloud")
    stored = cloud.receipts()
    for payload in stored:
        receipt_validator.validate(payload)
    assert {p["pos"]["receipt_id"]: p["customer"]["boniq_code"] for p in stored} == expected
    assert set(Counter(cloud.stored_keys()).values()) == {1}
    assert agent.terminate() == 0


def test_notify_socket_sees_ready_status_and_watchdog(agent):
    agent.start()
    seen = agent.wait_ready()
    wait_until(lambda: seen.extend(agent.messages()) or "WATCHDOG=1" in seen, what="WATCHDOG=1")
    assert any(line.startswith("STATUS=") for line in seen)
    assert agent.terminate() == 0


def test_metrics_and_health_endpoints_answer(agent):
    agent.start()
    agent.wait_ready()
    base = f"http://127.0.0.1:{agent.metrics_port}"
    wait_until(lambda: requests.get(f"{base}/readyz", timeout=2).status_code == 200, what="ready")
    agent.scan("8710400011111")  # a product barcode: rejected
    wait_until(
        lambda: (
            'boniq_agent_scans_total{outcome="rejected",source="serial"} 1.0'
            in requests.get(f"{base}/metrics", timeout=2).text
        ),
        what="the rejected scan metric",
    )
    assert requests.get(f"{base}/livez", timeout=2).status_code == 200
    assert agent.terminate() == 0


def test_sigterm_exits_zero_and_a_restart_delivers_what_was_pending(agent, kassa, cloud):
    cloud.faults.update(down=True)
    agent.start()
    agent.wait_ready()
    codes = [customer_code(2000 + n) for n in range(3)]
    for code in codes:
        serve_customer(agent, kassa, code)
        wait_until(
            lambda code=code: agent.summary()["outbox_pending"] >= codes.index(code) + 1,
            what="the sale in the outbox",
        )
    assert agent.terminate() == 0
    assert agent.summary()["outbox_pending"] == 3 and cloud.count() == 0
    cloud.faults.update(down=False)
    agent.start()
    wait_until(lambda: cloud.count() == 3, what="the pending receipts after the restart")
    assert sorted(p["customer"]["boniq_code"] for p in cloud.receipts()) == sorted(codes)
    assert agent.terminate() == 0


def test_sigkill_after_the_scan_loses_nothing(agent, kassa, cloud):
    agent.start()
    agent.wait_ready()
    code = customer_code(3000)
    agent.scan(code)
    wait_until(lambda: agent.has_claim(code), what="the claim")
    agent.kill()
    # the payment completes a few seconds after the scan; with no fence poll before the crash,
    # the POS booking time is what tells the restarted agent that this sale came after the scan
    receipt = kassa.book_sale(2, at=datetime.now(UTC) + timedelta(seconds=5))
    agent.start()
    wait_until(lambda: cloud.count() == 1, what="delivery after the restart")
    assert cloud.receipts()[0]["pos"]["receipt_id"] == receipt
    assert agent.terminate() == 0


def test_status_reads_the_store_while_the_agent_runs(agent, kassa):
    import subprocess
    import sys

    from agent_harness import ROOT

    agent.start()
    agent.wait_ready()
    agent.scan(customer_code(4000))
    wait_until(lambda: agent.has_claim(customer_code(4000)), what="the claim")
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", "--json", "--config", str(agent.config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert json.loads(result.stdout)["claims_pending"] == 1
    assert agent.terminate() == 0
