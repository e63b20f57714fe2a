"""No silent schema downgrade: a store written by a newer agent is refused, and left as it was."""

import hashlib
import sqlite3
import subprocess
import sys

import pytest

from agent.errors import StoreCorrupt
from agent.queue import database as store_module
from agent.queue.store import DB_NAME, Store


def written_by_a_newer_agent(data_dir) -> int:
    """A store whose user_version is one past what this build knows, with a row of its own."""
    Store.open(data_dir).close()
    newer = len(store_module.MIGRATIONS) + 1
    conn = sqlite3.connect(data_dir / DB_NAME)
    conn.execute("CREATE TABLE from_the_future (x)")
    conn.execute("INSERT INTO from_the_future VALUES (1)")
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.commit()
    conn.close()
    return newer


def test_a_store_with_a_newer_schema_is_refused_naming_both_versions(tmp_path):
    newer = written_by_a_newer_agent(tmp_path)
    before = hashlib.sha256((tmp_path / DB_NAME).read_bytes()).hexdigest()
    with pytest.raises(StoreCorrupt) as refused:
        Store.open(tmp_path)
    message = str(refused.value)
    assert f"schema version {newer}" in message
    assert f"up to {len(store_module.MIGRATIONS)}" in message
    assert "newer boniq-agent" in message
    assert hashlib.sha256((tmp_path / DB_NAME).read_bytes()).hexdigest() == before
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == newer
    assert conn.execute("SELECT count(*) FROM from_the_future").fetchone()[0] == 1


def test_the_agent_refusing_a_newer_store_exits_65_so_systemd_does_not_restart_it(tmp_path):
    newer = written_by_a_newer_agent(tmp_path / "data")
    config = tmp_path / "config.yaml"
    config.write_text(
        "store: {merchant_id: m, branch: 1, workplace: 2}\n"
        "kassa: {url: 'http://127.0.0.1:9/', ident: i, secret: s}\n"
        "cloud: {url: 'http://127.0.0.1:9/', token: t}\n"
        "scanners: [{type: stdin}]\n"
        f"data_dir: {tmp_path / 'data'}\n"
        "metrics: {listen: ''}\n"
    )
    config.chmod(0o600)
    run = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 65, run.stderr
    assert f"schema version {newer}" in run.stderr
