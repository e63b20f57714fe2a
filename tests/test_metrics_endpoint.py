"""The /metrics, /livez and /readyz endpoint, scraped over real HTTP on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from agent.errors import ConfigError
from agent.metrics import Metrics, Server, StoreGauges, serve


class Endpoint:
    def __init__(self, metrics: Metrics, server: Server) -> None:
        self.metrics = metrics
        self.server = server
        self.is_ready = False

    def get(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.server.port}{path}", timeout=10)

    def scrape(self) -> str:
        response = self.get("/metrics")
        assert response.status_code == 200
        return response.text


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    metrics = Metrics(version="9.9.9")
    holder: list[Endpoint] = []
    server = serve("127.0.0.1:0", metrics, lambda: holder[0].is_ready)
    assert server is not None
    holder.append(Endpoint(metrics, server))
    yield holder[0]
    server.close()


def _value(exposition: str, series: str) -> float | None:
    match = re.search(rf"^{re.escape(series)} (\S+)$", exposition, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_scans_are_counted_by_source_and_outcome(endpoint: Endpoint) -> None:
    endpoint.metrics.scan("serial", "accepted")
    endpoint.metrics.scan("hid", "rejected")
    endpoint.metrics.scan("hid", "rejected")
    text = endpoint.scrape()
    assert 'boniq_agent_scans_total{outcome="accepted",source="serial"} 1.0' in text
    assert 'boniq_agent_scans_total{outcome="rejected",source="hid"} 2.0' in text
    assert 'boniq_agent_scans_total{outcome="duplicate",source="webcam"} 0.0' in text


def test_pipeline_counters(endpoint: Endpoint) -> None:
    m = endpoint.metrics
    m.claim_created()
    m.claim_created()
    m.claims_expired()
    m.receipt_matched()
    m.receipt_matched("credit")
    m.upload("retry")
    m.upload("auth")
    m.upload("delivered")
    m.pos_poll(ok=True)
    m.pos_poll(ok=False)
    text = endpoint.scrape()
    expected = {
        "boniq_agent_claims_created_total": 2,
        "boniq_agent_claims_expired_total": 1,
        'boniq_agent_receipts_matched_total{via="claim"}': 1,
        'boniq_agent_receipts_matched_total{via="credit"}': 1,
        'boniq_agent_uploads_total{outcome="delivered"}': 1,
        'boniq_agent_uploads_total{outcome="retry"}': 1,
        'boniq_agent_uploads_total{outcome="auth"}': 1,
        'boniq_agent_uploads_total{outcome="dead"}': 0,
        "boniq_agent_pos_polls_total": 2,
        "boniq_agent_pos_poll_errors_total": 1,
        'boniq_agent_build_info{version="9.9.9"}': 1,
    }
    assert {series: _value(text, series) for series in expected} == expected
    assert _value(text, "boniq_agent_last_delivery_timestamp_seconds") > 1.6e9


def test_names_follow_prometheus_conventions(endpoint: Endpoint) -> None:
    response = endpoint.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", response.text, re.MULTILINE))
    assert types and all(name.startswith("boniq_agent_") for name in types)
    assert [n for n, kind in types.items() if kind == "counter" and not n.endswith("_total")] == []
    assert not any(name.endswith("_created") for name in types)


def _outbox_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("CREATE TABLE outbox (state TEXT, created_at REAL, delivered_at REAL)")
    return db


def test_store_gauges_are_read_at_scrape_time(endpoint: Endpoint, tmp_path: Path) -> None:
    db = _outbox_db(tmp_path / "outbox.db")

    def collect() -> StoreGauges:
        counts = dict(db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
        oldest = db.execute(
            "SELECT MIN(created_at) FROM outbox WHERE state = 'pending'"
        ).fetchone()[0]
        last = db.execute("SELECT MAX(delivered_at) FROM outbox").fetchone()[0]
        return {"outbox": counts, "oldest_pending": oldest, "last_delivery": last}

    endpoint.metrics.set_collect_callback(collect)
    db.executemany(
        "INSERT INTO outbox VALUES (?, ?, ?)",
        [
            ("pending", 1_700_000_100, None),
            ("pending", 1_700_000_050, None),
            ("dead", 1_700_000_000, None),
        ],
    )
    text = endpoint.scrape()
    assert _value(text, 'boniq_agent_outbox_items{state="pending"}') == 2
    assert _value(text, 'boniq_agent_outbox_items{state="dead"}') == 1
    assert _value(text, "boniq_agent_outbox_oldest_pending_timestamp_seconds") == 1_700_000_050
    assert _value(text, "boniq_agent_last_delivery_timestamp_seconds") == 0

    db.execute(
        "UPDATE outbox SET state = 'delivered', delivered_at = ? WHERE state = 'pending'",
        (1_700_000_200,),
    )
    text = endpoint.scrape()
    assert _value(text, 'boniq_agent_outbox_items{state="delivered"}') == 2
    assert _value(text, 'boniq_agent_outbox_items{state="pending"}') is None
    assert _value(text, "boniq_agent_last_delivery_timestamp_seconds") == 1_700_000_200
    # nothing pending: the timestamp is "now", so time() - metric reads as zero age
    assert _value(text, "boniq_agent_outbox_oldest_pending_timestamp_seconds") > 1_700_000_200


def test_a_failing_store_query_does_not_break_the_scrape(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    db = sqlite3.connect(tmp_path / "empty.db", check_same_thread=False)
    endpoint.metrics.set_collect_callback(
        lambda: {"outbox": dict(db.execute("SELECT state, COUNT(*) FROM outbox").fetchall())}
    )
    endpoint.metrics.scan("webcam", "accepted")
    text = endpoint.scrape()
    assert 'boniq_agent_scans_total{outcome="accepted",source="webcam"} 1.0' in text
    assert "boniq_agent_outbox_items" not in text


def test_readyz_follows_the_readiness_check(endpoint: Endpoint) -> None:
    assert endpoint.get("/readyz").status_code == 503
    endpoint.is_ready = True
    response = endpoint.get("/readyz")
    assert (response.status_code, response.text) == (200, "ready\n")


def test_readyz_is_503_when_the_check_raises() -> None:
    def broken() -> bool:
        raise RuntimeError("database is locked")

    server = serve("127.0.0.1:0", Metrics(), broken)
    assert server is not None
    try:
        assert requests.get(f"http://127.0.0.1:{server.port}/readyz", timeout=10).status_code == 503
    finally:
        server.close()


def test_livez_and_unknown_paths(endpoint: Endpoint) -> None:
    assert (endpoint.get("/livez").status_code, endpoint.get("/livez").text) == (200, "ok\n")
    assert endpoint.get("/metrics?debug=1").status_code == 200
    assert endpoint.get("/healthz").status_code == 404


def test_registries_are_independent(endpoint: Endpoint) -> None:
    other = Metrics()
    other.scan("serial", "accepted")
    assert 'boniq_agent_scans_total{outcome="accepted",source="serial"} 0.0' in endpoint.scrape()
    assert b'boniq_agent_scans_total{outcome="accepted",source="serial"} 1.0' in other.exposition()


@pytest.mark.parametrize("listen", ["", "   "])
def test_empty_listen_disables_the_endpoint(listen: str) -> None:
    assert serve(listen, Metrics(), lambda: True) is None


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000"])
def test_malformed_listen_is_a_config_error(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        serve(listen, Metrics(), lambda: True)


def test_a_busy_port_disables_metrics_instead_of_failing(endpoint: Endpoint) -> None:
    assert serve(f"127.0.0.1:{endpoint.server.port}", Metrics(), lambda: True) is None
    assert endpoint.get("/livez").status_code == 200


def test_close_releases_the_port() -> None:
    server = serve("127.0.0.1:0", Metrics(), lambda: True)
    assert server is not None
    port = server.port
    server.close()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
