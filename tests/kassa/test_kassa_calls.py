"""Every MplusKASSA call the agent relies on, over HTTP against the simulator."""

from __future__ import annotations

import traceback
from datetime import datetime, timedelta, timezone

import pytest

from agent.errors import KassaRejected
from agent.kassa import soap
from agent.kassa.client import KassaClient
from agent.kassa.mapping import detect_vat_scale, to_payload
from agent.kassa.receipt import Receipt, parse_receipt
from agent.sim.kassa import KassaSimulator, SimLine


def test_api_version_and_markers(client: KassaClient, sim: KassaSimulator) -> None:
    assert client.get_api_version() == "67.1.3"
    before = client.get_current_sync_markers()["receipt"]
    sim.book_sale(2)
    assert client.get_current_sync_markers()["receipt"] == before + 1


def test_get_receipts_from_a_marker_keeps_order_and_limit(
    client: KassaClient, sim: KassaSimulator
) -> None:
    start = client.get_current_sync_markers()["receipt"] + 1
    booked = [sim.book_sale(wp) for wp in (1, 2, 3, 4, 2)]
    receipts = client.get_receipts(branch=1, sync_marker=start)
    assert [r.receipt_id for r in receipts] == booked
    assert [r.workplace for r in receipts] == [1, 2, 3, 4, 2]
    assert all(
        r.lines and r.payments and r.vat_groups and r.is_paid and r.is_sale for r in receipts
    )
    assert [r.receipt_id for r in client.get_receipts(1, start, limit=2)] == booked[:2]
    assert client.get_receipts(branch=9, sync_marker=start) == []


def test_get_receipt_parses_a_weighed_discounted_sale(
    client: KassaClient, sim: KassaSimulator
) -> None:
    at = datetime(2026, 10, 3, 14, 41, 12, tzinfo=timezone(timedelta(hours=2)))
    lines = [
        SimLine(2210, "Jong belegen kaas", 1290, 9, quantity=530, decimal_places=3),
        SimLine(2040, "Appeltaart", 450, 9, discount_pct=10),
        SimLine(3001, "T-shirt zwart M", 1995, 21, plu="TS-M-BLK"),
    ]
    receipt_id = sim.book_sale(3, lines=lines, payments=[("CASH", 1000), "PIN"], at=at)
    receipt = client.get_receipt(receipt_id)
    assert receipt is not None
    assert receipt.booked_at == at and receipt.booked_at.utcoffset() == timedelta(hours=2)
    assert receipt.financial_date.isoformat() == "2026-10-03"
    assert (receipt.workplace, receipt.branch, receipt.year) == (3, 1, 2026)
    cheese, pie, shirt = receipt.lines
    assert (cheese.quantity, cheese.decimal_places, cheese.total_incl) == (530, 3, 684)
    assert (pie.discount_amount, pie.total_incl) == (45, 405)
    assert shirt.plu == "TS-M-BLK"
    assert receipt.total_incl == 684 + 405 + 1995
    assert [(p.method, p.amount) for p in receipt.payments] == [
        ("CASH", 1000),
        ("PIN", 2084),
    ]
    assert receipt.employee and receipt.transaction.startswith("1.3.2026.")


def test_unknown_receipt_is_none(client: KassaClient) -> None:
    assert client.get_receipt("00000000-0000-4000-8000-000000000000") is None


def test_master_data(client: KassaClient) -> None:
    [branch] = client.get_branches()
    assert branch.number == 1 and branch.name
    assert [w.number for w in branch.workplaces] == [1, 2, 3, 4]
    assert client.get_payment_methods()["PIN"] == "Pinbetaling"
    groups = client.get_vat_groups()
    assert sorted(g.percentage for g in groups) == [0, 9, 21]
    assert detect_vat_scale(groups) == 1


def test_vat_scale_in_hundredths_is_detected() -> None:
    with KassaSimulator(vat_percentage_scale=100) as sim:
        client = KassaClient(sim.url, sim.ident, sim.secret, timeout=(0.5, 0.5))
        groups = client.get_vat_groups()
        assert sorted(g.percentage for g in groups) == [0, 900, 2100]
        assert detect_vat_scale(groups) == 100


@pytest.mark.parametrize("wrong", ["secret", "ident"])
def test_wrong_credentials_are_rejected_without_echoing_them(
    clean_sim: KassaSimulator, wrong: str
) -> None:
    ident = "wrong-ident-y" if wrong == "ident" else clean_sim.ident
    secret = "wrong-secret-x" if wrong == "secret" else clean_sim.secret
    client = KassaClient(clean_sim.url, ident, secret, timeout=(0.5, 0.5))
    with pytest.raises(KassaRejected) as caught:
        client.get_receipts(1, 0)
    text = "".join(traceback.format_exception(caught.value))
    assert "Invalid ident or secret" in str(caught.value)
    for value in (ident, secret, clean_sim.ident, clean_sim.secret):
        assert value not in text


def _receipt_xml(receipt_type: str, state: str, *, timezone_minutes: int | None) -> Receipt:
    stamp = {
        "sec": 5,
        "min": 30,
        "hour": 9,
        "day": 1,
        "mon": 7,
        "year": 2026,
        "timezone": timezone_minutes,
    }
    content = {
        "result": "GET-RECEIPT-RESULT-OK",
        "receipt": {
            "receiptId": "r-1",
            "syncMarker": 5,
            "receiptType": receipt_type,
            "employeeNumber": 1,
            "employeeName": "Sanne",
            "entryTimestamp": stamp,
            "financialDate": {"day": 1, "mon": 7, "year": 2026},
            "financialBranchNumber": 1,
            "workplaceNumber": 2,
            "totalInclAmount": 1000,
            "totalExclAmount": 1000,
            "paidAmount": 1000,
            "state": state,
        },
    }
    response = soap.parse_response(
        soap.response_envelope("GetReceiptResponse", content), "getReceipt"
    )
    return parse_receipt(soap.child(response, "receipt"))


@pytest.mark.parametrize(
    ("receipt_type", "state", "paid"),
    [
        ("RECEIPT-TYPE-RECEIPT", "RECEIPT-STATE-PAID", True),
        ("RECEIPT-TYPE-RECEIPT", "RECEIPT-STATE-HANDLED", True),
        ("RECEIPT-TYPE-CREDIT-RECEIPT", "RECEIPT-STATE-PAID", True),
        ("RECEIPT-TYPE-RECEIPT", "RECEIPT-STATE-PARTLY-PAID", False),
        ("RECEIPT-TYPE-RECEIPT", "RECEIPT-STATE-OUTSTANDING", False),
        ("RECEIPT-TYPE-CASH-INFLOW", "RECEIPT-STATE-PAID", False),
    ],
)
def test_only_settled_customer_receipts_count_as_paid(
    receipt_type: str, state: str, paid: bool
) -> None:
    assert _receipt_xml(receipt_type, state, timezone_minutes=120).is_paid is paid


def test_timestamp_without_zone_is_amsterdam_time() -> None:
    receipt = _receipt_xml("RECEIPT-TYPE-RECEIPT", "RECEIPT-STATE-PAID", timezone_minutes=None)
    assert receipt.booked_at.isoformat() == "2026-07-01T09:30:05+02:00"
    assert receipt.transaction == "1.2.2026.000000" and receipt.lines == ()


def test_cash_movements_are_not_mapped() -> None:
    receipt = _receipt_xml("RECEIPT-TYPE-CASH-INFLOW", "RECEIPT-STATE-PAID", timezone_minutes=120)
    with pytest.raises(ValueError, match="not a customer receipt"):
        to_payload(
            receipt,
            merchant_id="m",
            customer={"email": "a@b.nl"},
            scanned_at=None,
            payment_methods={},
            vat_scale=1,
            agent_version="0.1.0",
            host=None,
        )
