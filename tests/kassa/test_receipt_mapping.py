"""Simulator XML → client parse → mapping → a payload the cloud accepts, reconciling to the cent."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.kassa.client import KassaClient
from agent.kassa.mapping import (
    canonical_json,
    decimal_string,
    idempotency_key,
    rate_string,
    to_payload,
)
from agent.kassa.receipt import Receipt
from agent.sim.kassa import KassaSimulator, SimLine, sale_total

MERCHANT = "demo-merchant"
CODE = {"boniq_code": "BQ17K3M9QW4RT8ZP2C56"}
SCANNED = datetime(2026, 10, 3, 14, 40, 55, tzinfo=timezone(timedelta(hours=2)))

_names = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn")), min_size=1, max_size=30)
_piece = st.builds(
    SimLine,
    article=st.integers(1, 10**9),
    text=_names,
    price=st.integers(0, 250_000),
    vat=st.sampled_from([0, 9, 21]),
    quantity=st.integers(1, 40),
    decimal_places=st.just(0),
    discount_pct=st.sampled_from([0, 0, 5, 10, 25, 100]),
    plu=st.none() | st.text("ABCDEFGHJK-0123456789", min_size=1, max_size=12),
)
_weighed = st.builds(
    SimLine,
    article=st.integers(1, 10**9),
    text=_names,
    price=st.integers(1, 9_999),
    vat=st.just(9),
    quantity=st.integers(1, 25_000),
    decimal_places=st.just(3),
    discount_pct=st.sampled_from([0, 10]),
)
_sales = st.tuples(
    st.lists(_piece | _weighed, min_size=1, max_size=8),
    st.sampled_from(["PIN", "CASH", "CREDITCARD", "split"]),
    st.integers(0, 100),
    st.integers(1, 4),
)


def _payload(receipt: Receipt, client: KassaClient) -> dict[str, Any]:
    return to_payload(
        receipt,
        merchant_id=MERCHANT,
        customer=CODE,
        scanned_at=SCANNED,
        payment_methods=client.get_payment_methods(),
        vat_scale=1,
        agent_version="0.1.0",
        host="kassa-2",
        store_name="Winkel Utrecht Centrum",
    )


def assert_reconciles(payload: dict[str, Any]) -> None:
    totals = payload["totals"]
    assert sum(line["total"] for line in payload["lines"]) == totals["incl"]
    assert sum(group["vat"] for group in payload["vat"]) == totals["vat"]
    assert sum(group["excl"] for group in payload["vat"]) == totals["excl"]
    assert sum(p["amount"] for p in payload["payments"]) == totals["incl"]
    assert totals["excl"] + totals["vat"] == totals["incl"]


def _book(
    sim: KassaSimulator, lines: list[SimLine], style: str, cash_pct: int, workplace: int
) -> str:
    if style != "split":
        return sim.book_sale(workplace, lines=lines, payments=[style])
    cash = sale_total(lines) * cash_pct // 100
    return sim.book_sale(workplace, lines=lines, payments=[("CASH", cash), "PIN"])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(sale=_sales)
def test_generated_sales_and_their_credits_map_to_valid_reconciling_payloads(
    sale: tuple[list[SimLine], str, int, int],
    client: KassaClient,
    sim: KassaSimulator,
    receipt_validator: jsonschema.Draft202012Validator,
) -> None:
    lines, style, cash_pct, workplace = sale
    sale_id = _book(sim, lines, style, cash_pct, workplace)
    credit_id = sim.book_credit(sale_id)
    sale_receipt, credit_receipt = (
        client.get_receipt(sale_id),
        client.get_receipt(credit_id),
    )
    assert sale_receipt is not None and credit_receipt is not None

    payload = _payload(sale_receipt, client)
    receipt_validator.validate(payload)
    assert_reconciles(payload)
    assert payload["kind"] == "sale" and payload["credits_receipt_id"] is None
    assert payload["store"]["workplace"] == workplace
    for spec, line in zip(lines, payload["lines"], strict=True):
        assert Decimal(line["quantity"]) == Decimal(spec.quantity).scaleb(-spec.decimal_places)
        assert line["description"] == spec.text.strip()
        assert line["vat_rate"] == str(spec.vat)
        assert line["unit_price"] == spec.price
    if style == "split":
        assert [p["method"] for p in payload["payments"]] == ["CASH", "PIN"]

    credit = _payload(credit_receipt, client)
    receipt_validator.validate(credit)
    assert_reconciles(credit)
    assert credit["kind"] == "credit" and credit["credits_receipt_id"] == sale_id
    assert credit["totals"] == {k: -v for k, v in payload["totals"].items()}
    assert [Decimal(x["quantity"]) for x in credit["lines"]] == [
        -Decimal(x["quantity"]) for x in payload["lines"]
    ]
    assert credit["idempotency_key"] != payload["idempotency_key"]


def test_random_simulator_sales_reconcile(
    client: KassaClient,
    sim: KassaSimulator,
    receipt_validator: jsonschema.Draft202012Validator,
) -> None:
    start = client.get_current_sync_markers()["receipt"] + 1
    for n in range(60):
        sim.book_sale(1 + n % 4)
    receipts = client.get_receipts(1, start)
    assert len(receipts) == 60
    kinds_of_payment = set()
    for receipt in receipts:
        payload = _payload(receipt, client)
        receipt_validator.validate(payload)
        assert_reconciles(payload)
        kinds_of_payment.add(tuple(p["method"] for p in payload["payments"]))
    assert ("CASH", "PIN") in kinds_of_payment


def test_payload_fields_follow_the_contract(client: KassaClient, sim: KassaSimulator) -> None:
    at = datetime(2026, 3, 29, 1, 59, 59, tzinfo=timezone(timedelta(hours=1)))
    lines = [SimLine(2230, "Bananen", 199, 9, quantity=1530, decimal_places=3)]
    receipt = client.get_receipt(sim.book_sale(2, lines=lines, payments=["PIN"], at=at))
    assert receipt is not None
    payload = _payload(receipt, client)
    assert payload["issued_at"] == "2026-03-29T01:59:59+01:00"
    assert payload["scanned_at"] == "2026-10-03T14:40:55+02:00"
    assert payload["financial_date"] == "2026-03-29"
    assert payload["lines"][0]["quantity"] == "1.530"
    assert payload["payments"] == [{"method": "PIN", "description": "Pinbetaling", "amount": 304}]
    assert payload["pos"]["number"] == {
        "branch": 1,
        "workplace": 2,
        "year": 2026,
        "number": receipt.number,
    }
    assert payload["customer"] == CODE and payload["store"]["name"] == "Winkel Utrecht Centrum"


def test_idempotency_key_matches_the_contract_example() -> None:
    receipt_id = "3f1c2a9e-8d4b-4c1e-9a57-0b6f2d7e1c44"
    expected = hashlib.sha256(f"boniq.receipt/1|demo-merchant|{receipt_id}".encode()).hexdigest()
    assert idempotency_key("demo-merchant", receipt_id) == expected
    assert idempotency_key("other-merchant", receipt_id) != expected


def test_canonical_json_is_stable_compact_utf8() -> None:
    payload = {"b": [1, {"z": "é", "a": None}], "a": "€"}
    data = canonical_json(payload)
    assert data == '{"a":"€","b":[1,{"a":null,"z":"é"}]}'.encode()
    assert canonical_json(json.loads(data)) == data


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        (530, 3, "0.530"),
        (2, 0, "2"),
        (-2, 0, "-2"),
        (-1530, 3, "-1.530"),
        (5, 2, "0.05"),
        (0, 3, "0.000"),
    ],
)
def test_quantities_become_decimal_strings(value: int, places: int, expected: str) -> None:
    assert decimal_string(value, places) == expected


@pytest.mark.parametrize(
    ("percentage", "scale", "expected"),
    [(21, 1, "21"), (0, 1, "0"), (2100, 100, "21"), (950, 100, "9.5"), (0, 100, "0")],
)
def test_vat_rates_become_decimal_strings(percentage: int, scale: int, expected: str) -> None:
    assert rate_string(percentage, scale) == expected


def test_naive_scan_time_is_refused(client: KassaClient, sim: KassaSimulator) -> None:
    receipt = client.get_receipt(sim.book_sale(1))
    assert receipt is not None
    with pytest.raises(ValueError, match="UTC offset"):
        to_payload(
            receipt,
            merchant_id=MERCHANT,
            customer=CODE,
            scanned_at=datetime(2026, 1, 1),  # noqa: DTZ001 - the naive time under test
            payment_methods={},
            vat_scale=1,
            agent_version="0.1.0",
            host=None,
        )
