"""The cloud simulator speaks contracts/cloud-api.md and injects the faults uploads must survive."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from agent.sim.cloud import CloudSimulator, canonical, example_receipt, retry_after_date

TOKEN = "sim-T0ken-x81"


@pytest.fixture
def cloud() -> Iterator[CloudSimulator]:
    with CloudSimulator(TOKEN, merchant_id="shop-42") as sim:
        yield sim


def post(
    url: str,
    payload: dict | bytes,
    *,
    token: str = TOKEN,
    key: str | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    body = payload if isinstance(payload, bytes) else canonical(payload)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key is None and isinstance(payload, dict):
        key = payload["idempotency_key"]
    if key is not None:
        headers["Idempotency-Key"] = key
    return (session or requests).post(url + "v1/receipts", data=body, headers=headers, timeout=5)


def test_health_needs_the_token(cloud):
    ok = requests.get(cloud.url + "v1/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json() == {"status": "ok", "merchant_id": "shop-42"}
    assert requests.get(cloud.url + "v1/health").status_code == 401
    cloud.faults.token_valid = False
    bad = requests.get(cloud.url + "v1/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bad.status_code == 401


def test_store_replay_and_conflict(cloud):
    payload = example_receipt("3f1c2a9e-8d4b-4c1e-9a57-0b6f2d7e1c44")
    first = post(cloud.url, payload)
    again = post(cloud.url, payload)
    changed = dict(payload, totals={"incl": 1, "excl": 1, "vat": 0})
    conflict = post(cloud.url, changed)
    assert first.status_code == 201 and first.json()["status"] == "stored"
    assert again.status_code == 200 and again.json() == {
        "id": first.json()["id"],
        "status": "duplicate",
    }
    assert conflict.status_code == 409 and "error" in conflict.json()
    assert cloud.receipts() == [payload]
    assert cloud.stored_keys() == {payload["idempotency_key"]: 1}
    assert cloud.post_counts() == {payload["idempotency_key"]: 3}


@pytest.mark.parametrize(
    "mutate, status, needle",
    [
        (lambda p: p.update(colour="blue"), 422, "colour"),
        (lambda p: p.update(issued_at="3 Oct 2026"), 422, "date-time"),
        (lambda p: p["customer"].update(boniq_code="BQ1ILLEGAL"), 422, "customer"),
        (lambda p: p.update(kind="refund"), 422, "kind"),
    ],
)
def test_schema_violations_are_422_with_details(cloud, mutate, status, needle):
    payload = example_receipt("r-1")
    mutate(payload)
    answer = post(cloud.url, payload)
    assert answer.status_code == status
    assert any(needle in d for d in answer.json()["details"])
    assert cloud.count() == 0


def test_bad_requests_are_400_or_401(cloud):
    payload = example_receipt("r-2")
    assert post(cloud.url, payload, token="wrong").status_code == 401
    no_key = requests.post(
        cloud.url + "v1/receipts",
        data=canonical(payload),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert no_key.status_code == 400
    assert post(cloud.url, payload, key="0" * 64).status_code == 400
    assert post(cloud.url, b"{broken", key=payload["idempotency_key"]).status_code == 400
    assert cloud.count() == 0


def test_keep_alive_reuses_one_connection(cloud):
    with requests.Session() as session:
        for n in range(20):
            assert post(cloud.url, example_receipt(f"r-ka-{n}"), session=session).ok
        assert post(cloud.url, b"{", key="1" * 64, session=session).status_code == 400
        assert (
            post(cloud.url, example_receipt("r-ka-x"), token="no", session=session).status_code
            == 401
        )
        assert post(cloud.url, example_receipt("r-ka-y"), session=session).status_code == 201
    assert cloud.connections_accepted == 1


def test_faults_are_set_over_http_and_receipts_read_back(cloud):
    payload = example_receipt("r-3")
    assert post(cloud.url, payload).status_code == 201
    stored = requests.get(cloud.url + "_sim/receipts").json()
    assert stored == [payload]
    changed = requests.post(cloud.url + "_sim/faults", json={"rate_limit": 1, "retry_after": 7})
    assert changed.json()["rate_limit"] == 1
    limited = post(cloud.url, example_receipt("r-4"))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert requests.post(cloud.url + "_sim/faults", json={"nonsense": 1}).status_code == 400


def test_retry_after_as_http_date(cloud):
    date = retry_after_date(60)
    cloud.faults.update(force_status=503, retry_after=date)
    answer = post(cloud.url, example_receipt("r-5"))
    assert answer.status_code == 503 and answer.headers["Retry-After"] == date


def test_error_rate_down_and_forced_status(cloud):
    cloud.faults.error_rate = 1.0
    assert post(cloud.url, example_receipt("r-6")).status_code in (500, 503)
    cloud.faults.update(error_rate=0.0, down=True)
    assert (
        requests.get(
            cloud.url + "v1/health", headers={"Authorization": f"Bearer {TOKEN}"}
        ).status_code
        == 503
    )
    cloud.faults.update(down=False, force_status=425)
    assert post(cloud.url, example_receipt("r-7")).status_code == 425
    assert cloud.count() == 0


def test_reset_drops_the_connection_without_an_answer(cloud):
    cloud.faults.reset_rate = 1.0
    for n in range(6):
        with pytest.raises(requests.ConnectionError):
            post(cloud.url, example_receipt(f"r-reset-{n}"))
    cloud.faults.reset_rate = 0.0
    assert post(cloud.url, example_receipt("r-after")).status_code == 201


def test_latency_delays_the_answer_past_a_client_timeout(cloud):
    cloud.faults.latency = 0.5
    payload = example_receipt("r-slow")
    with pytest.raises(requests.Timeout):
        requests.post(
            cloud.url + "v1/receipts",
            data=canonical(payload),
            timeout=(1, 0.1),
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "Idempotency-Key": payload["idempotency_key"],
            },
        )


def test_a_db_file_keeps_receipts_across_restarts(tmp_path):
    payload = example_receipt("r-8")
    with CloudSimulator(TOKEN, db_path=tmp_path / "cloud.db") as sim:
        assert post(sim.url, payload).status_code == 201
    with CloudSimulator(TOKEN, db_path=tmp_path / "cloud.db") as sim:
        assert post(sim.url, payload).status_code == 200
        assert sim.receipts() == [payload]


def test_cli_serves_until_sigterm(tmp_path):
    code = (
        "from agent.sim.cloud import serve_forever_cli; "
        f"serve_forever_cli(0, {TOKEN!r}, {str(tmp_path / 'c.db')!r})"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        url = child.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert post(url, example_receipt("r-9")).status_code == 201
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0
    finally:
        child.kill()
        child.wait()
