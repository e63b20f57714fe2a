"""`boniq-agent doctor`: one OK/FAIL line per check, the fix under each FAIL, exit 1 on any FAIL."""

import subprocess
import sys

import pytest
from agent_harness import ROOT, Agent

from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator


@pytest.fixture
def sims():
    with KassaSimulator(workplaces=(1, 2)) as kassa, CloudSimulator("demo-token") as cloud:
        yield kassa, cloud


def doctor(config):
    return subprocess.run([sys.executable, "-m", "agent.cli", "doctor", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def lines(result):
    return {line.split()[1]: line for line in result.stdout.splitlines()
            if line.startswith(("OK", "FAIL"))}


def test_a_healthy_till_is_all_ok(tmp_path, sims):
    kassa, cloud = sims
    agent = Agent(tmp_path, kassa.url, cloud.url)
    try:
        result = doctor(agent.config)
    finally:
        agent.close()
    assert result.returncode == 0, result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert result.stdout.rstrip().endswith(" OK, 0 FAIL")
    assert {"config", "database", "disk", "scanner", "POS", "cloud"} <= set(lines(result))


def test_each_problem_is_named_with_its_fix(tmp_path, sims):
    kassa, cloud = sims
    agent = Agent(tmp_path, kassa.url, cloud.url, secret="wrong-Secret-77", token="wrong-token",
                  workplace=9)
    agent.close()  # the scanner's pty is gone: an unplugged scanner
    result = doctor(agent.config)
    found = lines(result)
    assert result.returncode == 1
    assert found["POS"].startswith("FAIL") and "credentials refused" in found["POS"]
    assert found["cloud"].startswith("FAIL") and "token refused" in found["cloud"]
    assert found["scanner"].startswith("FAIL") and "is not there" in found["scanner"]
    assert result.stdout.count("fix:") >= 3
    assert "wrong-Secret-77" not in result.stdout + result.stderr


def test_a_workplace_the_pos_does_not_know_is_reported(tmp_path, sims):
    kassa, cloud = sims
    agent = Agent(tmp_path, kassa.url, cloud.url, workplace=9)
    try:
        result = doctor(agent.config)
    finally:
        agent.close()
    branch = [line for line in result.stdout.splitlines() if "POS branch" in line]
    assert branch and branch[0].startswith("FAIL") and "workplace 9" in branch[0]
