"""The MplusKASSA simulator as other processes use it: HTTP control endpoints and the CLI entry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from agent.errors import KassaTransient
from agent.kassa.client import KassaClient
from agent.sim.kassa import KassaSimulator


@pytest.fixture()
def sim() -> Iterator[KassaSimulator]:
    with KassaSimulator(seed=7) as running:
        yield running


def test_book_and_credit_over_http_show_up_in_the_api(sim: KassaSimulator) -> None:
    booked = requests.post(sim.url + "_sim/book", json={"workplace": 3}, timeout=2)
    assert booked.status_code == 200
    sale_id = booked.json()["receipt_id"]
    credited = requests.post(sim.url + "_sim/credit", json={"receipt_id": sale_id}, timeout=2)
    credit_id = credited.json()["receipt_id"]

    summaries = requests.get(sim.url + "_sim/receipts", timeout=2).json()
    assert [(s["receipt_id"], s["kind"], s["workplace"]) for s in summaries] == [
        (sale_id, "sale", 3),
        (credit_id, "credit", 3),
    ]
    assert summaries[1]["credited_receipt_id"] == sale_id
    assert summaries[1]["total_incl"] == -summaries[0]["total_incl"]

    client = KassaClient(sim.url, sim.ident, sim.secret, timeout=(0.5, 0.5))
    credit = client.get_receipt(credit_id)
    assert credit is not None and credit.is_credit and credit.credited_receipt_id == sale_id


def test_book_with_given_lines_and_split_payment_over_http(sim: KassaSimulator) -> None:
    body = {
        "workplace": 2,
        "lines": [
            {
                "article": 2210,
                "text": "Kaas",
                "price": 1290,
                "vat": 9,
                "quantity": 530,
                "decimal_places": 3,
            }
        ],
        "payments": [["CASH", 500], "PIN"],
    }
    sale_id = requests.post(sim.url + "_sim/book", json=body, timeout=2).json()["receipt_id"]
    [summary] = requests.get(sim.url + "_sim/receipts", timeout=2).json()
    assert summary["receipt_id"] == sale_id
    assert summary["payments"] == [
        {"method": "CASH", "amount": 500},
        {"method": "PIN", "amount": 184},
    ]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("_sim/book", {"workplace": 9}, 400),
        ("_sim/book", {"workplace": 1, "payments": [["CASH", 1]]}, 400),
        ("_sim/credit", {"receipt_id": "nope"}, 404),
        ("_sim/faults", {"no_such_fault": 1}, 400),
        ("_sim/elsewhere", {}, 404),
    ],
)
def test_bad_control_requests_are_refused(
    sim: KassaSimulator, path: str, body: dict, status: int
) -> None:
    response = requests.post(sim.url + path, json=body, timeout=2)
    assert response.status_code == status and response.json()["error"]


def test_faults_set_over_http_take_effect_and_clear(sim: KassaSimulator) -> None:
    client = KassaClient(sim.url, sim.ident, sim.secret, timeout=(0.5, 0.5))
    answer = requests.post(
        sim.url + "_sim/faults", json={"server_fault_rate": 1.0}, timeout=2
    ).json()
    assert answer["server_fault_rate"] == 1.0
    with pytest.raises(KassaTransient):
        client.get_api_version()
    requests.post(sim.url + "_sim/faults", json={"server_fault_rate": 0}, timeout=2)
    assert client.get_api_version()
    assert requests.get(sim.url + "_sim/faults", timeout=2).json()["server_fault_rate"] == 0.0


def test_plain_get_is_method_not_allowed_like_the_real_api(sim: KassaSimulator) -> None:
    assert sim.url.startswith("http://127.0.0.1:")
    assert requests.get(sim.url, timeout=2).status_code == 405


def test_same_seed_books_the_same_sales() -> None:
    at = datetime(2026, 10, 3, 12, 0, tzinfo=UTC)
    contents = []
    for _ in range(2):
        sim = KassaSimulator(seed=99)
        for workplace in (1, 2, 3):
            sim.book_sale(workplace, at=at)
        contents.append(sim.receipts())
    assert contents[0] == contents[1]


def _start_cli(*extra: str) -> tuple[subprocess.Popen[str], str]:
    code = (
        "import sys; from agent.sim.kassa import serve_forever_cli; "
        "serve_forever_cli(0, 'cli-ident', 'cli-secret', float(sys.argv[1]))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, *extra],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    url = next(word for word in line.split() if word.startswith("http://127.0.0.1:"))
    return process, url


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(signum: int) -> None:
    process, url = _start_cli("0")
    try:
        client = KassaClient(url, "cli-ident", "cli-secret", timeout=(0.5, 0.5))
        assert client.get_api_version()
        requests.post(url + "_sim/book", json={"workplace": 2}, timeout=2)
        assert len(client.get_receipts(1, 0)) == 1
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()


def test_cli_books_sales_by_itself() -> None:
    process, url = _start_cli("1200")
    try:
        summaries: list = []
        for _ in range(100):
            summaries = requests.get(url + "_sim/receipts", timeout=2).json()
            if len(summaries) >= 3:
                break
            time.sleep(0.05)
        assert len(summaries) >= 3
        assert {s["workplace"] for s in summaries} <= {1, 2, 3, 4}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_clock_booking_time_late_visibility_and_receipt_types_over_http(
    sim: KassaSimulator,
) -> None:
    client = KassaClient(sim.url, sim.ident, sim.secret, timeout=2.0)
    clock = requests.post(
        sim.url + "_sim/clock", json={"offset": -5, "timezone": "zero"}, timeout=2
    ).json()
    assert clock == {"offset": -5.0, "timezone": "zero"}
    server = client.get_server_time()
    assert server is not None and server.utcoffset().total_seconds() == 0  # timezone 0
    late = requests.post(
        sim.url + "_sim/book", json={"workplace": 2, "after": -30, "delay": 0.5}, timeout=2
    ).json()["receipt_id"]
    inflow = requests.post(
        sim.url + "_sim/book",
        json={
            "workplace": 2,
            "type": "RECEIPT-TYPE-CASH-INFLOW",
            "state": "RECEIPT-STATE-PARTLY-PAID",
        },
        timeout=2,
    ).json()["receipt_id"]
    first = client.get_receipts(1, 0)
    assert [r.receipt_id for r in first] == [inflow], "the late receipt showed at once"
    assert (first[0].receipt_type, first[0].state) == (
        "RECEIPT-TYPE-CASH-INFLOW",
        "RECEIPT-STATE-PARTLY-PAID",
    )
    time.sleep(0.6)
    (shown, _) = client.get_receipts(1, 0)
    assert shown.receipt_id == late and shown.sync_marker < first[0].sync_marker
    requests.post(sim.url + "_sim/settle", json={"receipt_id": inflow}, timeout=2)
    settled = next(r for r in client.get_receipts(1, 0) if r.receipt_id == inflow)
    assert settled.state == "RECEIPT-STATE-PAID" and not settled.is_paid  # never a customer sale
    client.close()
