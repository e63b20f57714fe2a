"""Running the real agent as store IT does: SIGHUP reloads in place, one agent per data_dir, and a
fault that is really configuration stops the agent with 78 instead of looping."""

import os
import signal
import subprocess
import sys

import pytest
from agent_harness import BACK_TO_BACK, ROOT, Agent, customer_code, wait_until

from agent.sim.cloud import CloudSimulator


@pytest.fixture
def sim_seed() -> int:
    return 12


@pytest.fixture
def agent(tmp_path, kassa, cloud):
    running = Agent(tmp_path, kassa.url, cloud.url, extra="log_level: warning\n")
    yield running
    running.close()


def cli(agent, *args):
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args, "--config", str(agent.config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def edit_config(agent, old, new):
    text = agent.config.read_text()
    assert old in text
    agent.config.write_text(text.replace(old, new))


def hangup(agent, expected):
    before = agent.log_text().count(expected)
    agent.process.send_signal(signal.SIGHUP)
    wait_until(lambda: agent.log_text().count(expected) > before, what=expected)


def deliver(agent, kassa, cloud, n):
    code = customer_code(n)
    agent.scan(code)
    wait_until(lambda: agent.claim_fenced(code), what="the claim to be fenced")
    receipt = kassa.book_sale(2, after=4)
    wait_until(
        lambda: receipt in {p["pos"]["receipt_id"] for p in cloud.receipts()},
        what="the receipt in the cloud",
    )


# -- SIGHUP --------------------------------------------------------------------------------------


def test_sighup_applies_a_new_log_level_and_keeps_delivering(agent, kassa, cloud):
    agent.start()
    agent.wait_ready()
    deliver(agent, kassa, cloud, 1)
    assert "scan accepted" not in agent.log_text()  # info lines are off at log_level warning
    edit_config(agent, "log_level: warning", "log_level: info")
    edit_config(agent, "poll_interval: 0.2", "poll_interval: 0.3")
    hangup(agent, "configuration reloaded")
    log = agent.log_text()
    assert "applied=log_level" in log and "needs_restart=kassa.poll_interval" in log
    deliver(agent, kassa, cloud, 2)
    assert "scan accepted" in agent.log_text()
    assert agent.process.poll() is None
    assert agent.terminate() == 0


def test_sighup_with_an_invalid_file_keeps_the_running_configuration(agent, kassa, cloud):
    agent.start()
    agent.wait_ready()
    edit_config(agent, "log_level: warning", "log_level: loud\nstore: {}")
    hangup(agent, "reload refused")
    assert "duplicate key" in agent.log_text()
    assert agent.process.poll() is None
    deliver(agent, kassa, cloud, 3)
    assert "scan accepted" not in agent.log_text()  # still warning
    assert agent.terminate() == 0


def test_sighup_applies_a_new_claim_ttl_to_the_poller(tmp_path, kassa, cloud):
    agent = Agent(tmp_path, kassa.url, cloud.url, extra="matching: {claim_ttl: 600}\n")
    try:
        agent.start()
        agent.wait_ready()
        edit_config(agent, "claim_ttl: 600", "claim_ttl: 0.5")
        hangup(agent, "configuration reloaded")
        assert "applied=matching.claim_ttl" in agent.log_text()
        code = customer_code(4)
        agent.scan(code)
        wait_until(
            lambda: [c.state for c in agent.claims_of(code)] == ["expired"],
            what="the claim to expire after the reloaded claim_ttl",
        )
        assert agent.terminate() == 0
    finally:
        agent.close()


# -- one agent per data_dir ------------------------------------------------------------------


def test_a_second_run_on_the_same_data_dir_exits_74_naming_the_running_pid(agent, kassa):
    agent.start()
    agent.wait_ready()
    second = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(agent.config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "NOTIFY_SOCKET": ""},
    )
    assert second.returncode == 74
    assert (
        f"another boniq-agent (PID {agent.process.pid}) runs on {agent.data_dir}" in second.stderr
    )
    live = cli(agent, "status")
    assert live.returncode in (0, 1) and f"running, PID {agent.process.pid}" in live.stdout
    assert cli(agent, "outbox", "list").returncode == 0
    assert agent.process.poll() is None
    agent.kill()  # SIGKILL: the kernel drops the lock, so the next start is not blocked
    agent.drain_notify()
    agent.start()
    agent.wait_ready()
    assert agent.terminate() == 0


# -- configuration faults at run time -------------------------------------------------------------


def self_signed(folder):
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_a_ca_bundle_gone_at_run_time_stops_the_agent_with_78_not_a_traceback_loop(tmp_path, kassa):
    cert, key = self_signed(tmp_path)
    with CloudSimulator("demo-token", tls=(str(cert), str(key))) as tls_cloud:
        agent = Agent(
            tmp_path,
            kassa.url,
            tls_cloud.url,
            extra=BACK_TO_BACK,
            cloud_options=f"ca_bundle: '{cert}', retry_base: 0.05, retry_max: 0.2",
        )
        try:
            agent.start()
            agent.wait_ready()
            code = customer_code(5)
            agent.scan(code)
            wait_until(lambda: agent.claim_fenced(code), what="the claim")
            kassa.book_sale(2, after=4)
            wait_until(lambda: tls_cloud.count() == 1, what="a delivery over TLS")
            cert.unlink()
            agent.scan(customer_code(6))
            wait_until(lambda: agent.claim_fenced(customer_code(6)), what="the second claim")
            kassa.book_sale(2, after=4)
            assert agent.process.wait(30) == 78
            log = agent.log_text()
            assert "the configuration stops the agent" in log and str(cert) in log
            assert log.count("Traceback") == 0
        finally:
            agent.close()


def test_the_start_line_names_version_config_hosts_sources_and_workplace(agent, kassa, cloud):
    from agent import __version__

    agent.config.write_text(
        agent.config.read_text().replace("log_level: warning", "log_level: info")
    )
    agent.start()
    agent.wait_ready()
    wait_until(lambda: "boniq-agent started" in agent.log_text(), what="the start line")
    [line] = [x for x in agent.log_text().splitlines() if "boniq-agent started" in x]
    assert f"version={__version__}" in line and f"config={agent.config}" in line
    assert f"pos={kassa.url.rstrip('/')}" in line and f"cloud={cloud.url.rstrip('/')}" in line
    assert f"sources=serial:{agent.device}" in line and "workplace=2" in line
    assert "demo-secret" not in line
    assert agent.terminate() == 0


def test_run_with_a_ca_bundle_that_is_not_there_exits_78_at_its_line(tmp_path, kassa, cloud):
    agent = Agent(tmp_path, kassa.url, cloud.url, cloud_options=f"ca_bundle: '{tmp_path}/gone.pem'")
    try:
        agent.start()
        assert agent.process.wait(30) == 78
        assert (
            f"{agent.config}:3: cloud.ca_bundle: {tmp_path}/gone.pem does not exist"
            in agent.log_text()
        )
        assert "Traceback" not in agent.log_text()
    finally:
        agent.close()


def test_a_reload_is_logged_even_at_log_level_warning(agent):
    agent.start()
    agent.wait_ready()
    edit_config(agent, "log_level: warning", "log_level: warning\nretention_days: 30")
    hangup(agent, "configuration reloaded")
    assert "needs_restart=retention_days" in agent.log_text()
    assert agent.terminate() == 0
