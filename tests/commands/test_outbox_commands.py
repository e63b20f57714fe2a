"""`outbox list/show/retry` as support uses them: the ids the log lines carry, a header, times,
--json, and a word when there is nothing."""

import json
import os
import subprocess
import sys

import pytest
from agent_harness import ROOT, enqueue

from agent.queue.store import Store


def outbox(config, *args):
    env = {**os.environ, "BONIQ_JOURNAL_SOCKET": str(config.parent / "no-journal")}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "outbox", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env=env,
    )


def test_an_empty_outbox_says_so(config):
    result = outbox(config, "list")
    assert result.returncode == 0 and result.stdout.strip() == "no outbox items"
    assert outbox(config, "list", "--state", "dead").stdout.strip() == "no dead outbox items"
    assert json.loads(outbox(config, "list", "--json").stdout) == []


def test_the_list_has_a_header_times_and_json(config, tmp_path):
    with Store.open(tmp_path / "data") as store:
        item = enqueue(store, "r-100")
    lines = outbox(config, "list").stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "STATE",
        "KIND",
        "TRIES",
        "CREATED",
        "NEXT/DELIVERED",
        "RECEIPT",
        "CID",
        "ERROR",
    ]
    assert (
        lines[1].split()[0] == str(item.id) and "r-100" in lines[1] and "T" in lines[1].split()[4]
    )
    [row] = json.loads(outbox(config, "list", "--json").stdout)
    assert row["receipt_id"] == "r-100" and row["correlation_id"] == "c-r-100" and row["created_at"]


@pytest.mark.parametrize("ref", ["id", "r-200", "c-r-200", "cid=c-r-200"])
def test_show_and_retry_take_the_id_the_receipt_id_or_the_cid(config, tmp_path, ref):
    with Store.open(tmp_path / "data") as store:
        enqueue(store, "r-199")
        item = enqueue(store, "r-200")
        store.mark_dead(item.id, reason="HTTP 422")
    ref = str(item.id) if ref == "id" else ref
    shown = outbox(config, "show", ref)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["receipt_id"] == "r-200"
    retried = outbox(config, "retry", ref)
    assert retried.returncode == 0 and f"re-queued outbox item {item.id}" in retried.stdout
    with Store.open(tmp_path / "data", readonly=True) as store:
        assert store.get(item.id).state == "pending"


def test_an_unknown_reference_is_exit_1_naming_what_is_accepted(config):
    result = outbox(config, "show", "r-nope")
    assert result.returncode == 1
    assert "give its ID, the POS receipt id or the cid" in result.stderr
