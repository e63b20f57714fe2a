"""`boniq-agent status` shows the running agent's live health, not only the store's counters, and
its exit status says whether the till needs a person: 0 healthy, 1 attention, 3 not running."""

import json
import re
import subprocess
import sys

import pytest
from agent_harness import ROOT, Agent, customer_code, wait_until

from agent import __version__


@pytest.fixture
def sim_seed() -> int:
    return 31


def status(agent, *options):
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", *options, "--config", str(agent.config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_a_healthy_running_agent_is_shown_live_with_exit_0(tmp_path, kassa, cloud):
    agent = Agent(tmp_path, kassa.url, cloud.url)
    try:
        agent.start()
        agent.wait_ready()
        wait_until(lambda: status(agent).returncode == 0, what="a healthy status")
        result = status(agent)
        assert f"running, PID {agent.process.pid}, version {__version__}" in result.stdout
        assert "reachable" in result.stdout and f"scanner serial:{agent.device}" in result.stdout
        assert result.stdout.rstrip().endswith("healthy")
        live = json.loads(status(agent, "--json").stdout)["agent"]
        assert live["pid"] == agent.process.pid and live["pos"]["last_success"]
        assert live["scanners"] == [{"name": f"serial:{agent.device}", "connected": True}]
        assert agent.terminate() == 0
        stopped = status(agent)
        assert stopped.returncode == 3 and "NOT RUNNING" in stopped.stdout
    finally:
        agent.close()


def test_a_missing_scanner_and_a_refused_token_need_attention_with_exit_1(tmp_path, kassa, cloud):
    agent = Agent(
        tmp_path,
        kassa.url,
        cloud.url,
        extra_scanners="  - {type: serial, device: /dev/serial/by-id/gone, workplace: 3}\n",
    )
    try:
        agent.start()
        agent.wait_ready()
        cloud.faults.update(token_valid=False)
        code = customer_code(31)
        agent.scan(code)
        wait_until(lambda: agent.claim_fenced(code), what="the claim")
        kassa.book_sale(2, after=4)
        wait_until(
            lambda: "TOKEN REFUSED" in status(agent).stdout, what="the refused token in status"
        )
        result = status(agent)
        assert result.returncode == 1
        assert re.search(
            r"^scanner serial:/dev/serial/by-id/gone +NOT CONNECTED$", result.stdout, re.MULTILINE
        )
        assert "  - the cloud refuses the store token" in result.stdout
        assert "  - scanner serial:/dev/serial/by-id/gone is not connected" in result.stdout
        assert agent.terminate() == 0
    finally:
        agent.close()
