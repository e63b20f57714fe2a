"""Disk full under the running daemon: its data_dir on a 2 MiB tmpfs that a filler file fills.

While full, every scan is refused with one clear line and "rejected" feedback (never "accepted"),
sales booked meanwhile wait in the POS, the daemon stays alive; once the filler is deleted every
claim stored before the disk filled is delivered, once, from the same database file.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from agent_harness import Agent, customer_code, report_figure, wait_until
from store_fault_support import FeedbackRecorder, count_lines, tracebacks

from agent.queue.store import DB_NAME

TILLS = (1, 2, 3, 4)


@pytest.fixture
def sim_seed() -> int:
    return 41


REFUSED_SCANS = 3


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(
            "needs a size-limited tmpfs (root: `mount -t tmpfs -o size=2m`); a file-size "
            "limit is no substitute because it also stops the daemon's own log: "
            + result.stderr.strip()
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> int:
    """Write `path` until the filesystem has not one byte left; its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    written, chunk = 0, 1 << 16
    try:
        while chunk:
            try:
                written += os.write(fd, b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    finally:
        os.close(fd)
    return written


def test_a_full_disk_refuses_scans_clearly_and_loses_nothing_claimed_before(
    tmp_path, small_disk, kassa, cloud
):
    feedback = FeedbackRecorder(tmp_path)
    agent = Agent(
        tmp_path,
        kassa.url,
        cloud.url,
        scanner_workplaces=TILLS,
        data_dir=small_disk / "data",
        extra=feedback.config(),
    )
    try:
        run_scenario(agent, kassa, cloud, feedback, small_disk)
    finally:
        agent.close()


def run_scenario(agent, kassa, cloud, feedback, disk: Path) -> None:
    cloud.faults.update(down=True)
    agent.start()
    agent.wait_ready()
    db = agent.data_dir / DB_NAME
    inode = db.stat().st_ino

    customers = {till: customer_code(7000 + till) for till in TILLS}
    for till in TILLS:
        agent.scan(customers[till], workplace=till)
    wait_until(
        lambda: all(agent.claim_fenced(c) for c in customers.values()),
        what="every claim stored and fenced",
    )
    receipts = {kassa.book_sale(till, after=4): customers[till] for till in TILLS[:2]}
    wait_until(lambda: agent.summary()["outbox_pending"] == 2, what="two receipts in the outbox")
    claims_before_full = len(customers)

    filler = disk / "filler"
    fill(filler)
    receipts.update({kassa.book_sale(till, after=4): customers[till] for till in TILLS[2:]})
    # an idle poll writes nothing; these sales make the poller write, and fail, on the full disk
    wait_until(lambda: "POS poll failed" in agent.log_text(), what="the poller on the full disk")
    cloud.faults.update(down=False)
    refused = [customer_code(7100 + n) for n in range(REFUSED_SCANS)]
    for n, code in enumerate(refused):
        agent.scan(code, workplace=TILLS[n])
    wait_until(
        lambda: count_lines(agent.log_text(), "scan NOT stored") == REFUSED_SCANS,
        what="one error line per refused scan",
    )
    wait_until(lambda: cloud.count() == 2, what="the cloud to get the two stored receipts")
    assert agent.process.poll() is None
    base = f"http://127.0.0.1:{agent.metrics_port}"
    assert requests.get(f"{base}/livez", timeout=2).status_code == 200
    assert feedback.counts()["rejected"] == REFUSED_SCANS
    assert not any(agent.has_claim(code) for code in refused)

    filler.unlink()
    late = customer_code(7200)
    agent.scan(late, workplace=1)
    wait_until(lambda: agent.has_claim(late), what="a scan after space was freed")
    wait_until(
        lambda: agent.summary()["outbox_delivered"] == len(receipts),
        timeout=30,
        what="every receipt claimed before the disk filled, delivered",
    )

    delivered = {p["pos"]["receipt_id"]: p["customer"]["boniq_code"] for p in cloud.receipts()}
    assert delivered == receipts
    assert set(cloud.stored_keys().values()) == {1}
    counts = feedback.counts()
    assert counts["accepted"] == claims_before_full + 1, counts
    assert counts["rejected"] == REFUSED_SCANS, counts
    log = agent.log_text()
    assert tracebacks(log) == 0, log[-4000:]
    assert count_lines(log, "POS poll failed") == 1, log[-4000:]
    assert agent.terminate() == 0
    assert db.stat().st_ino == inode
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    report_figure(
        "disk-full",
        claims_stored_before_full=claims_before_full,
        scans_refused_while_full=REFUSED_SCANS,
        delivered_after=len(delivered),
        lost=len(receipts) - len(delivered),
        tracebacks=tracebacks(log),
    )
