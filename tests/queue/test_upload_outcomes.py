"""Every row of the cloud contract's status table, as the outbox records it."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from email.utils import formatdate

import pytest
import requests
from agent_harness import UPLOAD_TOKEN as TOKEN
from agent_harness import enqueue

from agent.queue.store import Store
from agent.queue.uploader import Uploader
from agent.sim.cloud import CloudSimulator, canonical, example_receipt

NOW = 1000.0


def uploader(store: Store, url: str, **options) -> Uploader:
    options.setdefault("base_delay", 0.5)
    return Uploader(store, url, options.pop("token", TOKEN), **options)


def post_directly(cloud, payload: dict, key: str | None = None) -> requests.Response:
    return requests.post(
        cloud.url + "v1/receipts",
        data=canonical(payload),
        timeout=5,
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Idempotency-Key": key or payload["idempotency_key"],
        },
    )


def test_201_marks_the_row_delivered_with_the_cloud_id_and_the_exact_body(cloud, store):
    payload = example_receipt("r-201")
    item = enqueue(store, "r-201", payload=payload)
    seen = []
    with uploader(store, cloud.url.rstrip("/"), on_delivered=seen.append) as up:
        stats = up.run_once(now=NOW)
    row = store.get(item.id)
    assert stats.delivered == 1
    assert row.state == "delivered" and row.delivered_at == NOW
    assert row.cloud_id and row.cloud_id.startswith("rcpt_")
    assert cloud.receipts() == [payload]
    assert [i.id for i in seen] == [item.id]
    sent = cloud.last_headers
    assert sent["Idempotency-Key"] == item.idempotency_key
    assert sent["Content-Type"] == "application/json"
    assert sent["User-Agent"].startswith("boniq-agent/")


def test_each_worker_keeps_one_connection_alive(cloud, store):
    for n in range(30):
        enqueue(store, f"r-ka-{n}")
    with uploader(store, cloud.url, workers=2) as up:
        up.run_once(now=NOW)
    assert cloud.count() == 30
    assert cloud.connections_accepted <= 2


def test_200_replay_is_delivered_and_stored_once(cloud, store):
    payload = example_receipt("r-200")
    first = post_directly(cloud, payload)
    item = enqueue(store, "r-200", payload=payload)
    with uploader(store, cloud.url) as up:
        up.run_once(now=NOW)
    row = store.get(item.id)
    assert row.state == "delivered" and row.cloud_id == first.json()["id"]
    assert cloud.stored_keys()[payload["idempotency_key"]] == 1
    assert cloud.post_counts()[payload["idempotency_key"]] == 2


def test_400_dead_letters_with_the_servers_reason(cloud, store):
    item = enqueue(store, "r-400", body=b"not json at all")
    with uploader(store, cloud.url) as up:
        up.run_once(now=NOW)
    row = store.get(item.id)
    assert row.state == "dead"
    assert "HTTP 400" in row.last_error and "not valid JSON" in row.last_error


def test_422_dead_letters_with_details_and_no_email_in_clear(cloud, store):
    payload = example_receipt("r-422", code="jan.jansen@example.com")
    payload["colour"] = "blue"
    item = enqueue(store, "r-422", payload=payload)
    payload2 = example_receipt("r-422b", code="jan.jansen@example.com")
    payload2["customer"]["email"] = "jan.jansen@example"
    item2 = enqueue(store, "r-422b", payload=payload2)
    with uploader(store, cloud.url) as up:
        up.run_once(now=NOW)
    rows = [store.get(item.id), store.get(item2.id)]
    assert [r.state for r in rows] == ["dead", "dead"]
    assert "HTTP 422" in rows[0].last_error and "colour" in rows[0].last_error
    assert "details" in rows[1].last_error and "customer" in rows[1].last_error
    assert not any("jan.jansen@" in r.last_error for r in rows)


def test_409_same_key_other_body_dead_letters(cloud, store):
    payload = example_receipt("r-409")
    other = example_receipt("r-409")
    other["totals"]["incl"] = 999
    assert post_directly(cloud, other).status_code == 201
    item = enqueue(store, "r-409", payload=payload)
    with uploader(store, cloud.url) as up:
        up.run_once(now=NOW)
    row = store.get(item.id)
    assert row.state == "dead" and "HTTP 409" in row.last_error
    assert cloud.receipts() == [other]


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_keeps_rows_retries_slowly_and_alerts_once(cloud, store, caplog, status):
    items = [enqueue(store, f"r-auth-{n}") for n in range(3)]
    if status == 401:
        cloud.faults.token_valid = False
    else:
        cloud.faults.force_status = 403
    caplog.set_level(logging.INFO, logger="boniq")
    with uploader(store, cloud.url, workers=1, auth_retry_delay=60) as up:
        up.run_once(now=NOW)
        up.run_once(now=NOW + 100)
        rows = [store.get(i.id) for i in items]
        assert all(r.state == "pending" for r in rows)
        assert all(r.next_attempt_at >= NOW + 45 for r in rows if r.attempts)
        assert f"HTTP {status}" in rows[0].last_error
        assert TOKEN not in rows[0].last_error
        alerts = [r for r in caplog.records if "refuses the agent's token" in r.getMessage()]
        assert len(alerts) == 1 and sum(r.attempts for r in rows) == 2
        assert up.auth_failing
        cloud.faults.update(token_valid=True, force_status=None)
        up.run_once(now=NOW + 1000)
        assert not up.auth_failing
    assert [store.get(i.id).state for i in items] == ["delivered"] * 3
    assert any("token again" in r.getMessage() for r in caplog.records)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 418])
def test_transient_status_is_retried_with_backoff_then_delivered(cloud, store, status):
    cloud.faults.update(force_status=status, retry_after=None)
    item = enqueue(store, f"r-{status}")
    with uploader(store, cloud.url, base_delay=0.5) as up:
        stats = up.run_once(now=NOW)
        row = store.get(item.id)
        assert stats.retried == 1 and row.state == "pending" and row.attempts == 1
        assert f"HTTP {status}" in row.last_error
        assert NOW <= row.next_attempt_at <= NOW + 0.5
        cloud.faults.force_status = None
        up.run_once(now=NOW + 1)
    assert store.get(item.id).state == "delivered"


def test_a_failing_batch_stops_taking_rows(cloud, store):
    items = [enqueue(store, f"r-batch-{n}") for n in range(10)]
    cloud.faults.update(force_status=503, retry_after=None)
    with uploader(store, cloud.url, workers=1, base_delay=30) as up:
        up.run_once(now=NOW)
        up.run_once(now=NOW)
    assert sum(cloud.post_counts().values()) == 1
    assert sorted(store.get(i.id).attempts for i in items) == [0] * 9 + [1]


def test_connection_refused_is_transient(store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    item = enqueue(store, "r-refused")
    with uploader(store, f"http://127.0.0.1:{closed_port}/") as up:
        up.run_once(now=NOW)
    row = store.get(item.id)
    assert row.state == "pending" and row.attempts == 1
    assert "ConnectionError" in row.last_error


def test_timeout_is_transient_and_the_retry_is_a_replay(cloud, store):
    cloud.faults.latency = 1.0
    item = enqueue(store, "r-slow")
    with uploader(store, cloud.url, timeout=(1.0, 0.2)) as up:
        up.run_once(now=NOW)
        row = store.get(item.id)
        assert row.state == "pending" and "Timeout" in row.last_error
        cloud.faults.latency = 0.0
        time.sleep(1.0)  # the slow request finishes server-side and is stored
        up.run_once(now=NOW + 10)
    assert store.get(item.id).state == "delivered"
    assert list(cloud.stored_keys().values()) == [1]


def test_retry_after_seconds_is_honoured(cloud, store):
    cloud.faults.update(force_status=429, retry_after=120)
    item = enqueue(store, "r-ra")
    with uploader(store, cloud.url, base_delay=0.01) as up:
        up.run_once(now=NOW)
    assert store.get(item.id).next_attempt_at >= NOW + 120


def test_retry_after_http_date_is_honoured(cloud, store):
    not_before = int(time.time()) + 300
    cloud.faults.update(force_status=503, retry_after=formatdate(not_before, usegmt=True))
    item = enqueue(store, "r-date", now=time.time())
    with uploader(store, cloud.url, base_delay=0.01) as up:
        up.run_once()
    assert store.get(item.id).next_attempt_at >= not_before


def test_a_restart_keeps_the_backoff(cloud, tmp_path):
    data = tmp_path / "restart"
    with Store.open(data) as first:
        item = enqueue(first, "r-restart")
        cloud.faults.update(force_status=503, retry_after=600)
        with uploader(first, cloud.url) as up:
            up.run_once(now=NOW)
        scheduled = first.get(item.id).next_attempt_at
    assert scheduled >= NOW + 600
    cloud.faults.force_status = None
    with Store.open(data) as second, uploader(second, cloud.url) as up:
        assert up.run_once(now=NOW + 300).attempted == 0
        assert cloud.count() == 0
        up.run_once(now=scheduled)
        assert second.get(item.id).state == "delivered"


def self_signed(tmp_path) -> tuple[str, str]:
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
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
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_is_verified_and_a_custom_ca_bundle_is_used(store, tmp_path):
    cert, key = self_signed(tmp_path)
    item = enqueue(store, "r-tls")
    with CloudSimulator(TOKEN, tls=(cert, key)) as tls_cloud:
        with uploader(store, tls_cloud.url) as up:
            up.run_once(now=NOW)
            row = store.get(item.id)
            assert row.state == "pending" and "SSLError" in row.last_error
            assert tls_cloud.count() == 0
        with uploader(store, tls_cloud.url, ca_bundle=cert) as up:
            up.run_once(now=NOW + 10)
        assert store.get(item.id).state == "delivered" and tls_cloud.count() == 1
