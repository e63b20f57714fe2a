"""Every SOAP request the client sends and every answer the simulator gives validates against the
official MplusKASSA WSDL's schema: the WSDL is the authority, not our client.

The traffic is captured byte for byte by a recording proxy between the real client and the
real simulator, over HTTP on 127.0.0.1. Skipped, with the reason, where the WSDL is absent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
from wsdl_support import (
    Exchange,
    RecordingProxy,
    Wsdl,
    body_of,
    load_wsdl,
    local,
    require_wsdl,
)

from agent.kassa import soap
from agent.kassa.client import KassaClient
from agent.sim.kassa import RESPONSE_ELEMENTS, KassaSimulator, SimLine

IDENT, SECRET = "wsdl-ident", "wsdl-Secret-55"
CLIENT_CALLS = {
    "getApiVersion",
    "getCurrentSyncMarkersV2",
    "getReceipts",
    "getReceipt",
    "getBranches",
    "getPaymentMethods",
    "getVatGroupList",
    "getWebhookConsumers",
}
CONSUMERS: list[Mapping[str, Any]] = [
    {"endpoint_url": "http://127.0.0.1:18090/mplus", "subscription_id": "boniq-shop-1"},
    {
        "endpoint_url": "https://pay.example/mplus",
        "subscription_id": "pay",
        "enabled": False,
        "application_name": "Pay.",
        "workplaces": [1, 2],
        "events": {
            "startExternalPayment": {"enabled": True, "blocking": True},
            "scanCode": {"enabled": False, "blocking": False},
        },
        "patterns": [
            {"code_type": "CODE-TYPE-BARCODE", "pattern": "25.*"},
            {"code_type": "CODE-TYPE-QRCODE", "pattern": "^BQ1", "reject": True},
        ],
    },
    {"endpoint_url": "http://10.0.0.5/hooks", "subscription_id": "x", "events": {}, "patterns": []},
]


@pytest.fixture(scope="module")
def wsdl() -> Wsdl:
    return load_wsdl(require_wsdl())


@pytest.fixture()
def recorded() -> Iterator[tuple[KassaSimulator, KassaClient, RecordingProxy]]:
    with (
        KassaSimulator(ident=IDENT, secret=SECRET, seed=1503, webhook_consumers=CONSUMERS) as sim,
        RecordingProxy(sim.url) as proxy,
    ):
        client = KassaClient(proxy.url, IDENT, SECRET, timeout=5.0)
        try:
            yield sim, client, proxy
        finally:
            client.close()


def violations(wsdl: Wsdl, exchanges: list[Exchange]) -> list[str]:
    """Every way these exchanges depart from the WSDL, named by call and side."""
    found = []
    for exchange in exchanges:
        request, response = body_of(exchange.request), body_of(exchange.response)
        expected = {
            "request": wsdl.inputs.get(exchange.operation),
            "response": wsdl.outputs.get(exchange.operation),
        }
        for side, element in (("request", request), ("response", response)):
            if local(element.tag) != expected[side]:
                found.append(
                    f"{exchange.operation} {side}: element {local(element.tag)}, "
                    f"the WSDL says {expected[side]}"
                )
            found += [f"{exchange.operation} {side}: {p}" for p in wsdl.problems(element)]
    return found


def book_every_variant(sim: KassaSimulator) -> list[str]:
    """One receipt of each kind the simulator can book; returns their ids."""
    ids = [sim.book_sale(w) for w in (1, 2, 3, 4) for _ in range(6)]  # random mixes
    weighed = SimLine(2210, "Jong belegen kaas", 1290, 9, quantity=1234, decimal_places=3)
    discounted = SimLine(3300, "Rioja Crianza 75 cl", 899, 21, quantity=2, discount_pct=25)
    zero_rated = SimLine(4100, "Cadeaubon", 2500, 0)
    plu = SimLine(3001, "T-shirt zwart M", 1995, 21, plu="TS-M-BLK")
    lines: list[SimLine | Mapping[str, Any]] = [weighed, discounted, zero_rated, plu]
    ids.append(sale := sim.book_sale(1, lines=lines, payments=[("CASH", 1000), "PIN"]))
    ids.append(sim.book_credit(sale))
    ids.append(sim.book_sale(2, lines=[plu], payments=["CREDITCARD"]))
    ids.append(sim.book_sale(2, state="RECEIPT-STATE-PARTLY-PAID"))
    ids.append(sim.book_sale(3, state="RECEIPT-STATE-OUTSTANDING"))
    ids.append(sim.book_sale(3, receipt_type="RECEIPT-TYPE-CASH-INFLOW"))
    ids.append(sim.book_sale(4, branch=7))
    ids.append(sim.book_sale(4, at=sim.pos_now() - timedelta(hours=30)))
    ids.append(sim.book_sale(1, after=5))
    sim.settle(ids[-6], "RECEIPT-STATE-HANDLED")
    ids.append(
        sim.book_sale(
            2,
            lines=[plu, zero_rated],  # a webhook session's receipt
            webhook_line_ids=[str(uuid.uuid4()), str(uuid.uuid4())],
        )
    )
    return ids


def test_the_schema_refuses_what_the_simulator_used_to_send(wsdl: Wsdl) -> None:
    """The validator sees names and order: the old answers would fail this test."""
    wrong_name = body_of(
        soap.response_envelope(
            "GetApiVersionResponse",
            {"majorNumber": 67, "minorNumber": 1, "revisionNumber": 3, "inDebugMode": False},
        )
    )
    out_of_order = body_of(
        soap.response_envelope(
            "GetPaymentMethodsResponse",
            {
                "paymentMethodList": {
                    "paymentMethod": [
                        {
                            "method": "PIN",
                            "description": "Pinbetaling",
                            "buttonText": "Pin",
                            "type": "PAYMENT-METHOD-TYPE-EFT",
                            "allowNegativeAmount": True,
                        }
                    ]
                }
            },
        )
    )
    wrapped = body_of(
        soap.response_envelope(
            "getVatGroupListResponse",
            {"vatGroupList": {"vatGroup": [{"vatCode": 1, "vatPercentage": 21}]}},
        )
    )
    for element in (wrong_name, out_of_order, wrapped):
        assert wsdl.problems(element), local(element.tag)


def test_every_call_of_the_client_and_every_answer_of_the_simulator_follow_the_wsdl(
    wsdl: Wsdl, recorded: tuple[KassaSimulator, KassaClient, RecordingProxy]
) -> None:
    sim, client, proxy = recorded
    ids = book_every_variant(sim)
    assert client.get_api_version() == "67.1.3"
    assert client.get_server_time() is not None
    assert client.get_current_sync_markers()["receipt"] == sim.marker
    receipts = client.get_receipts(1, 0, limit=1000)
    assert len(receipts) == len(ids) - 1  # all but the other branch's
    assert client.get_receipts(7, 0)
    assert all(client.get_receipt(i) for i in ids)
    assert client.get_receipt("00000000-0000-4000-8000-000000000000") is None
    assert client.get_branches()[0].workplaces
    assert client.get_payment_methods()["PIN"] == "Pinbetaling"
    assert {g.percentage for g in client.get_vat_groups()} == {21, 9, 0}
    assert len(client.get_webhook_consumers(1, 2)) == 3
    assert len(client.get_webhook_consumers(1, 3)) == 2
    assert client.get_webhook_consumers(9, 2) == []
    exchanges = proxy.recording.take()
    assert {e.operation for e in exchanges} == CLIENT_CALLS
    assert all(e.status == 200 for e in exchanges)
    assert violations(wsdl, exchanges) == []


def test_receipts_validate_in_every_clock_and_scale_the_simulator_plays(wsdl: Wsdl) -> None:
    for timezone in ("offset", "zero", "negated"):
        with (
            KassaSimulator(ident=IDENT, secret=SECRET, seed=7, vat_percentage_scale=100) as sim,
            RecordingProxy(sim.url) as proxy,
        ):
            sim.timezone_field, sim.clock_offset = timezone, -3600.0
            book_every_variant(sim)
            client = KassaClient(proxy.url, IDENT, SECRET, timeout=5.0)
            try:
                client.get_receipts(1, 0, limit=1000)
                client.get_api_version()
            finally:
                client.close()
            assert violations(wsdl, proxy.recording.take()) == [], timezone


def test_every_operation_the_simulator_answers_is_named_as_the_wsdl_names_it(wsdl: Wsdl) -> None:
    assert CLIENT_CALLS <= set(RESPONSE_ELEMENTS)
    for operation, element in RESPONSE_ELEMENTS.items():
        assert wsdl.outputs[operation] == element, operation


def test_answers_the_client_never_asks_for_validate_too(wsdl: Wsdl) -> None:
    """The simulator also answers getCurrentSyncMarkers (V1) and getReceipts without lines."""
    with KassaSimulator(ident=IDENT, secret=SECRET, seed=3) as sim:
        sim.book_sale(1)
        calls = {
            "getCurrentSyncMarkers": None,
            "getReceipts": {
                "request": {
                    "syncMarker": 0,
                    "articlePluNumbers": {},
                    "articleBarcodes": {},
                    "includeLineList": False,
                }
            },
        }
        for operation, params in calls.items():
            request = body_of(soap.request_envelope(operation, params))
            assert wsdl.problems(request) == [], operation
            element, content = sim.answer(
                operation, soap.body_element(soap.request_envelope(operation, params))
            )
            answer = body_of(soap.response_envelope(element, content))
            assert wsdl.problems(answer) == [], operation
