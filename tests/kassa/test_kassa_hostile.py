"""Hostile, huge, slow and failing answers end in the right typed error; the client lives on."""

from __future__ import annotations

import logging
import socket
import traceback
from typing import Any

import pytest

from agent.errors import KassaError, KassaRejected, KassaResponseError, KassaTransient
from agent.kassa import soap
from agent.kassa.client import KassaClient
from agent.sim.kassa import KassaSimulator


def _leaks(exc: BaseException, *values: str) -> list[str]:
    """Every credential value found in the error, its traceback or anything chained to it."""
    texts = []
    seen: BaseException | None = exc
    while seen is not None:
        texts.append("".join(traceback.format_exception(seen)) + repr(seen))
        seen = seen.__cause__ or seen.__context__
    return [v for v in values if any(v in t for t in texts)]


def _fails_then_recovers(
    client: KassaClient,
    sim: KassaSimulator,
    faults: dict[str, Any],
    expected: type[KassaError],
) -> KassaError:
    sim.faults.update(faults)
    with pytest.raises(expected) as caught:
        client.get_receipts(1, 0)
    assert not _leaks(caught.value, sim.ident, sim.secret)
    sim.faults.reset()
    assert client.get_api_version() == "67.1.3"
    return caught.value


@pytest.mark.parametrize(
    ("faults", "expected", "says"),
    [
        ({"entity_bomb": True}, KassaResponseError, "hostile XML"),
        ({"external_entity": True}, KassaResponseError, "hostile XML"),
        ({"huge_body": 50_000_000}, KassaResponseError, "limit"),
        ({"trickle": True}, KassaTransient, "incomplete"),
        ({"server_fault_rate": 1.0}, KassaTransient, "Server"),
        ({"drop_rate": 1.0}, KassaTransient, "hung up"),
        ({"hang": True}, KassaTransient, "in time"),
        ({"latency": 1.5}, KassaTransient, "in time"),
        ({"http_status": 502}, KassaTransient, "HTTP 502"),
        ({"http_status": 429}, KassaTransient, "HTTP 429"),
    ],
)
def test_fault_gives_typed_error_and_client_recovers(
    client: KassaClient,
    clean_sim: KassaSimulator,
    faults: dict[str, Any],
    expected: type[KassaError],
    says: str,
) -> None:
    error = _fails_then_recovers(client, clean_sim, faults, expected)
    assert says in str(error)


def test_answer_declared_over_the_limit_is_refused(clean_sim: KassaSimulator) -> None:
    clean_sim.book_sale(1)
    client = KassaClient(
        clean_sim.url,
        clean_sim.ident,
        clean_sim.secret,
        timeout=(0.5, 0.5),
        max_response_bytes=1000,
    )
    with pytest.raises(KassaResponseError, match="over the 1000 limit"):
        client.get_receipts(1, 0)
    assert client.get_api_version() == "67.1.3"


def test_unreachable_api_is_transient_and_leaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret, ident = "top-secret-77Zq", "ident-Hx31"
    client = KassaClient(f"http://127.0.0.1:{port}/", ident, secret, timeout=(0.5, 0.5))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(KassaTransient, match="unreachable") as caught:
        client.get_current_sync_markers()
    assert not _leaks(caught.value, secret, ident)
    assert secret not in caplog.text and ident not in caplog.text


def test_wrong_path_is_rejected(clean_sim: KassaSimulator) -> None:
    client = KassaClient(
        clean_sim.url + "_sim/nowhere",
        clean_sim.ident,
        clean_sim.secret,
        timeout=(0.5, 0.5),
    )
    with pytest.raises(KassaRejected, match="HTTP 404"):
        client.get_api_version()


def test_stop_is_not_blocked_by_a_hanging_call() -> None:
    sim = KassaSimulator()
    client = KassaClient(sim.start(), sim.ident, sim.secret, timeout=(0.5, 0.5))
    sim.faults.hang = True
    with pytest.raises(KassaTransient):
        client.get_api_version()
    sim.stop()
    with pytest.raises(KassaTransient, match="unreachable"):
        client.get_api_version()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not xml at all", KassaResponseError),
        (b"<html><body>proxy login</body></html>", KassaResponseError),
        (soap.response_envelope("GetBranchesResponse", {}), KassaResponseError),
        (soap.fault_envelope("Client.Authentication", "bad"), KassaRejected),
        (soap.fault_envelope("Server.Busy", "later"), KassaTransient),
        (soap.fault_envelope("Client", "x" * 5000 + "\u2028\x07 end"), KassaRejected),
    ],
)
def test_parse_response_classifies_bodies(body: bytes, expected: type[KassaError]) -> None:
    with pytest.raises(expected) as caught:
        soap.parse_response(body, "getReceipts")
    assert len(str(caught.value)) < 300


def test_request_envelope_escapes_values_and_parses_back() -> None:
    body = soap.request_envelope(
        "getReceipt",
        {"receiptId": "<&>'\"", "flags": [True, False], "empty": {}, "none": None},
    )
    call = soap.body_element(body)
    assert soap.local_name(call.tag) == "getReceipt" and call.tag.startswith("{urn:mplusqapi}")
    assert soap.text(call, "receiptId") == "<&>'\""
    assert [e.text for e in soap.children(call, "flags")] == ["true", "false"]
    assert soap.child(call, "empty") is not None and soap.child(call, "none") is None
