"""`scan` and `outbox retry` by hand leave a line in the journal (masked) naming what was done."""

import os
import socket
import subprocess
import sys

import pytest
from agent_harness import ROOT, customer_code, enqueue

from agent.queue.store import Store


@pytest.fixture
def journal(tmp_path):
    path = tmp_path / "journal.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    yield path, sock
    sock.close()


def cli(config, journal_path, *args):
    env = {**os.environ, "BONIQ_JOURNAL_SOCKET": str(journal_path), "SUDO_USER": "anna"}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env=env,
    )


def entry(sock) -> dict[str, str]:
    data = sock.recv(65536).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_a_scan_by_hand_is_journaled_with_the_code_masked(config, journal):
    path, sock = journal
    code = customer_code(77)
    result = cli(config, path, "scan", code)
    assert result.returncode == 0, result.stderr
    logged = entry(sock)
    assert logged["SYSLOG_IDENTIFIER"] == "boniq-agent"
    assert logged["MESSAGE"].startswith(
        "manual action: claim added by hand (scan) outcome=accepted"
    )
    assert "workplace=2" in logged["MESSAGE"] and 'by="anna (sudo)"' in logged["MESSAGE"]
    assert code not in logged["MESSAGE"] and code[-4:] in logged["MESSAGE"]


def test_an_outbox_retry_is_journaled_with_the_receipt(config, journal, tmp_path):
    path, sock = journal
    with Store.open(tmp_path / "data") as store:
        item = enqueue(store, "r-4711")
        store.mark_dead(item.id, reason="HTTP 422")
    result = cli(config, path, "outbox", "retry", str(item.id))
    assert result.returncode == 0, result.stderr
    message = entry(sock)["MESSAGE"]
    assert message.startswith(f"manual action: outbox item re-queued id={item.id} receipt=r-4711")
    assert "cid=c-r-4711" in message
