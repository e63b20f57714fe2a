"""A damaged database file, and another process holding the database's write lock.

Damaged: `boniq-agent run` refuses to start (exit 65, one clear line; systemd does not restart it), the file is left exactly as
it was, and `doctor` prints a FAIL line for the database with the recovery steps.

Locked for less than busy_timeout (5 s): scans made meanwhile wait and are all stored and
delivered. Locked for longer, what a cashier sees: the scanner's own beep when it reads the code,
then, once the agent gives up waiting for the lock (5-10 s later: the POS poller may be waiting for
the same lock first), the "rejected" signal instead of "accepted". The code is not stored; scanning
it again once the lock is gone works. The daemon keeps running throughout.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from agent_harness import ROOT, Agent, customer_code, report_figure, wait_until
from store_fault_support import FeedbackRecorder, count_lines, tracebacks

from agent.instance import LOCK_NAME
from agent.queue.store import DB_NAME, NewClaim, Store

TILLS = (1, 2, 3, 4)


@pytest.fixture
def sim_seed() -> int:
    return 41


SHORT_LOCK = 2.0
_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


def garbage_db(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(16384))


def real_db(path: Path) -> None:
    with Store.open(path.parent) as store:
        for n in range(200):
            store.add_claim(
                NewClaim(
                    correlation_id=f"c-{n}",
                    customer_kind="boniq_code",
                    customer=customer_code(n),
                    workplace=n,
                    source="test",
                    scanned_at=time.time(),
                    pos_marker=None,
                ),
                dedupe_window=5.0,
            )


def truncated_db(path: Path) -> None:
    real_db(path)
    os.truncate(path, path.stat().st_size // 2)


def damaged_page_db(path: Path) -> None:
    """A data page overwritten: SQLite opens such a file and only fails on reading that page."""
    real_db(path)
    with path.open("r+b") as f:
        f.seek(5 * 4096)
        f.write(random.Random(5).randbytes(4096))


def agent_command(agent: Agent, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args, "--config", str(agent.config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.fixture
def feedback(tmp_path):
    return FeedbackRecorder(tmp_path)


@pytest.fixture
def agent(tmp_path, kassa, cloud, feedback):
    running = Agent(
        tmp_path, kassa.url, cloud.url, scanner_workplaces=TILLS, extra=feedback.config()
    )
    yield running
    running.close()


@pytest.mark.parametrize(
    "damage",
    [garbage_db, truncated_db, damaged_page_db],
    ids=["garbage", "truncated", "damaged-page"],
)
def test_a_damaged_database_stops_run_and_doctor_explains_the_recovery(agent, damage):
    agent.data_dir.mkdir(mode=0o700)
    db = agent.data_dir / DB_NAME
    damage(db)
    before = db.read_bytes(), db.stat().st_ino, db.stat().st_mtime_ns

    agent.start()
    assert agent.process.wait(30) == 65
    log = agent.log_text()
    assert "database file is damaged" in log and "boniq-agent doctor" in log, log
    assert len(log.strip().splitlines()) == 1 and tracebacks(log) == 0, log
    assert "READY=1" not in agent.messages(0.2)

    doctor = agent_command(agent, "doctor")
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    lines = doctor.stdout.splitlines()
    database = next(n for n, line in enumerate(lines) if line.split()[1:2] == ["database"])
    assert lines[database].startswith("FAIL"), doctor.stdout
    fix = lines[database + 1]
    assert "fix:" in fix and ".recover" in fix and "never deletes" in fix, doctor.stdout

    assert (db.read_bytes(), db.stat().st_ino, db.stat().st_mtime_ns) == before
    assert set(os.listdir(agent.data_dir)) <= {
        DB_NAME,
        f"{DB_NAME}-wal",
        f"{DB_NAME}-shm",
        LOCK_NAME,
    }  # the one-agent lock (empty-ish)
    wal = agent.data_dir / f"{DB_NAME}-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # opened for reading, nothing written
    report_figure(f"corrupt-store-{damage.__name__}", run_exit=65, doctor_exit=1, file_changed=0)


class WriteLock:
    """Another process in the middle of a write transaction on the agent's database."""

    def __init__(self, db: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, str(db)],
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout.readline().strip() == "locked"
        self.taken = time.monotonic()

    def release(self) -> float:
        """Commit and end the other process; how long it held the lock."""
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "released"
        held = time.monotonic() - self.taken
        self.process.wait(10)
        return held

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def serve(agent: Agent, kassa, codes: dict[int, str]) -> dict[str, str]:
    wait_until(
        lambda: all(agent.claim_fenced(code) for code in codes.values()),
        what="every claim stored and fenced",
    )
    return {kassa.book_sale(till, after=4): code for till, code in codes.items()}


def delivered(cloud) -> dict[str, str]:
    return {p["pos"]["receipt_id"]: p["customer"]["boniq_code"] for p in cloud.receipts()}


def test_scans_during_a_short_lock_wait_and_are_all_delivered(agent, kassa, cloud, feedback):
    agent.start()
    agent.wait_ready()
    codes = {till: customer_code(8000 + till) for till in TILLS}
    lock = WriteLock(agent.data_dir / DB_NAME)
    try:
        for till, code in codes.items():
            agent.scan(code, workplace=till)
        time.sleep(SHORT_LOCK)
        assert not any(agent.has_claim(code) for code in codes.values())
        held = lock.release()
    finally:
        lock.close()
    receipts = serve(agent, kassa, codes)
    wait_until(lambda: cloud.count() == len(receipts), what="every receipt delivered")
    assert delivered(cloud) == receipts
    wait_until(lambda: feedback.counts()["accepted"] == len(codes), what="accepted feedback")
    log = agent.log_text()
    assert feedback.counts()["rejected"] == 0
    assert count_lines(log, "scan NOT stored") == 0 and tracebacks(log) == 0, log
    assert agent.terminate() == 0
    report_figure(
        "short-lock",
        lock_held_s=f"{held:.1f}",
        scans_during_lock=len(codes),
        delivered=len(delivered(cloud)),
        lost=len(receipts) - len(delivered(cloud)),
    )


@pytest.mark.slow
def test_a_lock_past_busy_timeout_refuses_the_scan_clearly_and_the_daemon_keeps_running(
    agent, kassa, cloud, feedback
):
    agent.start()
    agent.wait_ready()
    code = customer_code(8100)
    lock = WriteLock(agent.data_dir / DB_NAME)
    try:
        agent.scan(code, workplace=1)
        scanned = time.monotonic()
        wait_until(
            lambda: feedback.counts()["rejected"] == 1,
            timeout=25,
            what="the rejected signal for the scan that could not be stored",
        )
        to_rejection = time.monotonic() - scanned
        assert count_lines(agent.log_text(), "scan NOT stored") == 1
        assert agent.process.poll() is None
        livez = requests.get(f"http://127.0.0.1:{agent.metrics_port}/livez", timeout=2)
        assert livez.status_code == 200
        held = lock.release()
    finally:
        lock.close()
    assert not agent.has_claim(code)
    assert feedback.counts()["accepted"] == 0

    agent.scan(code, workplace=1)  # the cashier scans again
    receipts = serve(agent, kassa, {1: code})
    wait_until(lambda: cloud.count() == 1, what="the re-scanned customer's receipt delivered")
    assert delivered(cloud) == receipts
    log = agent.log_text()
    refusal = next(line for line in log.splitlines() if "scan NOT stored" in line)
    assert "lock" in refusal, refusal
    assert count_lines(log, "POS poll failed") <= 1 and tracebacks(log) == 0, log
    assert agent.terminate() == 0
    report_figure(
        "long-lock",
        lock_held_s=f"{held:.1f}",
        scan_to_rejected_signal_s=f"{to_rejection:.1f}",
        accepted_while_locked=0,
        delivered_after_rescan=len(delivered(cloud)),
    )
