"""The webhook receiver of the real daemon, spoken to over HTTP as the till would: signed
requests, every documented refusal, replays, and both key forms.

The till-session flows (a queue, walk-aways, a second customer's code, late receipts) are in
tests/test_webhook_sessions.py; these are the requests one at a time.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import requests
from agent_harness import Agent, customer_code, free_port, wait_until

from agent.kassa import signature
from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator

KEY = base64.b64encode(b"k" * 32).decode()  # the back office's form: Base64 of 32 bytes
SUBSCRIPTION = "boniq-shop-1"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    folder = tmp_path_factory.mktemp("webhooks")
    with KassaSimulator(seed=3) as kassa, CloudSimulator("demo-token") as cloud:
        port = free_port()
        agent = Agent(
            folder,
            kassa.url,
            cloud.url,
            kassa_options=(
                f"webhooks: {{listen: '127.0.0.1:{port}', subscription_id: {SUBSCRIPTION},"
                f" key: '{KEY}'}}"
            ),
        )
        agent.webhook_url = f"http://127.0.0.1:{port}/mplus/"
        agent.start()
        agent.wait_ready()
        yield agent
        agent.close()


def envelope(
    event: str,
    session: str,
    *,
    counter: int | None = None,
    instance: str = "i-1",
    workplace: int = 2,
    **details: object,
) -> dict:
    body = {
        "event": {"eventBlocking": True, "eventTimestamp": "2026-12-01T10:15:02.481+01:00"},
        "sender": {"branchNumber": 1, "workplaceNumber": workplace, "instanceId": instance},
        "session": {"sessionId": session, "lines": []},
    }
    if counter is not None:
        body["event"]["eventCounter"] = counter
    body.update(details)
    return body


def post(
    agent: Agent,
    event: str,
    body: bytes | dict,
    *,
    key: str = KEY,
    form: str = "base64",
    headers: dict | None = None,
    drop: tuple[str, ...] = (),
) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    signing = next(k for k in signature.keys(key) if k.form == form)
    sent = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-Mplus-Subscription-Id": SUBSCRIPTION,
        signature.HEADER: signature.sign(signing, data),
        **(headers or {}),
    }
    for name in drop:
        sent.pop(name)
    return requests.post(agent.webhook_url + event, data=data, headers=sent, timeout=5)


def reply_signed(response: requests.Response) -> bool:
    given = response.headers.get(signature.HEADER, "")
    return signature.verify(given, response.content, signature.keys(KEY)) is not None


def scan(agent: Agent, session: str, code: str, **kw: object) -> requests.Response:
    return post(
        agent,
        "scanCode",
        envelope("scanCode", session, **kw, scanCode={"scannedCode": code, "codeType": "qrcode"}),
    )


def test_a_boniq_code_is_recognized_only_once_its_claim_is_stored(agent):
    session, code = str(uuid.uuid4()), customer_code(101)
    response = scan(agent, session, code, counter=1)
    assert response.status_code == 200 and reply_signed(response)
    answer = response.json()["scanCode"]
    assert answer["recognized"] is True
    assert answer["customerMessage"] == "BONIQ: uw bon komt in de app"
    claims = agent.claims_of(code)
    assert [(c.session_id, c.state, c.source) for c in claims] == [(session, "pending", "webhook")]


def test_an_article_barcode_is_left_to_the_till(agent):
    before = agent.summary()["claims_pending"]
    response = scan(agent, str(uuid.uuid4()), "8712345678906")
    assert response.status_code == 200 and reply_signed(response)
    assert response.json() == {"scanCode": {"recognized": False}}
    assert agent.summary()["claims_pending"] == before


def test_a_second_code_in_a_session_is_not_linked_and_the_first_keeps_it(agent):
    session, first, second = str(uuid.uuid4()), customer_code(102), customer_code(103)
    scan(agent, session, first)
    response = scan(agent, session, second)
    answer = response.json()["scanCode"]
    assert answer["recognized"] is True  # the till must not look it up as an article
    assert "al een BONIQ-code" in answer["message"] and "customerMessage" not in answer
    assert agent.claims_of(second) == []
    assert [c.session_id for c in agent.claims_of(first)] == [session]


def test_the_same_code_again_in_its_session_is_the_same_claim(agent):
    session, code = str(uuid.uuid4()), customer_code(104)
    for _ in range(3):
        assert scan(agent, session, code).json()["scanCode"]["recognized"] is True
    assert len(agent.claims_of(code)) == 1


def test_a_replayed_event_makes_one_claim_and_gets_the_same_answer(agent):
    session, code = str(uuid.uuid4()), customer_code(105)
    first = scan(agent, session, code, counter=77, instance="replay")
    again = scan(agent, session, code, counter=77, instance="replay")
    assert first.json() == again.json()
    assert len(agent.claims_of(code)) == 1


def test_the_key_as_text_is_accepted_when_key_encoding_is_auto(agent):
    session, code = str(uuid.uuid4()), customer_code(106)
    response = post(
        agent,
        "scanCode",
        envelope("scanCode", session, scanCode={"scannedCode": code}),
        form="text",
    )
    assert response.status_code == 200 and response.json()["scanCode"]["recognized"] is True
    assert "key_form=base64" in agent.log_text()  # the form the back office shows, logged once


def test_cancel_session_closes_its_claim_cancelled(agent):
    session, code = str(uuid.uuid4()), customer_code(107)
    scan(agent, session, code)
    response = post(agent, "cancelSession", envelope("cancelSession", session))
    assert response.status_code == 200 and reply_signed(response)
    assert [c.state for c in agent.claims_of(code)] == ["cancelled"]


def test_cancel_payment_keeps_the_claim(agent):
    session, code = str(uuid.uuid4()), customer_code(108)
    scan(agent, session, code)
    post(agent, "startPayment", envelope("startPayment", session))
    post(agent, "cancelPayment", envelope("cancelPayment", session))
    assert [c.state for c in agent.claims_of(code)] == ["pending"]


def test_an_error_request_from_the_till_is_logged(agent):
    body = {
        "error": {
            "type": "WEBHOOK-ERROR-TYPE-RESPONSE",
            "code": "INVALID_SIGNATURE",
            "message": "reply signature wrong",
        },
        "original": envelope("scanCode", "s"),
    }
    response = post(agent, "scanCode", body)
    assert response.status_code == 200
    wait_until(lambda: "reply signature wrong" in agent.log_text(), what="the till's error logged")


def bad_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


REFUSALS = [
    ("NO_CONTENT_TYPE", {"drop": ("Content-Type",)}),
    ("INVALID_CONTENT_TYPE", {"headers": {"Content-Type": "text/plain"}}),
    ("NO_SUBSCRIPTION_ID", {"drop": ("X-Mplus-Subscription-Id",)}),
    ("INVALID_SUBSCRIPTION_ID", {"headers": {"X-Mplus-Subscription-Id": "someone-else"}}),
    ("NO_SIGNATURE", {"drop": (signature.HEADER,)}),
    ("INVALID_SIGNATURE", {"key": base64.b64encode(b"x" * 32).decode()}),
]


@pytest.mark.parametrize("code,how", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_request_that_fails_a_header_check_is_refused_and_stores_nothing(agent, code, how):
    customer, mark = customer_code(200 + len(code)), len(agent.log_text())
    response = post(
        agent,
        "scanCode",
        envelope("scanCode", str(uuid.uuid4()), scanCode={"scannedCode": customer}),
        **how,
    )
    assert response.status_code == 400 and reply_signed(response)
    assert response.json()["error"]["code"] == code
    assert agent.claims_of(customer) == []
    wait_until(lambda: agent.log_text()[mark:].count(f"code={code}") == 1, what=f"one {code} line")


BODIES = [
    ("INVALID_JSON", b'{"event": '),
    ("INVALID_JSON", bad_json(40)),
    ("INVALID_DATA", b'["not", "an", "object"]'),
    ("INVALID_DATA", json.dumps({"event": {}, "session": {"sessionId": "s"}}).encode()),
    ("NO_EVENT_DETAILS", json.dumps(envelope("scanCode", "s-1")).encode()),
    ("NO_SCANNED_CODE", json.dumps(envelope("scanCode", "s-2", scanCode={})).encode()),
]


def test_every_malformed_body_gets_its_code_nothing_stored_and_one_line_each(agent):
    claims_before, mark = agent.summary()["claims_by_state"], len(agent.log_text())
    for expected, body in BODIES:
        response = post(agent, "scanCode", body)
        assert response.status_code == 400 and reply_signed(response)
        assert response.json()["error"]["code"] == expected
    assert agent.summary()["claims_by_state"] == claims_before
    for code in {c for c, _ in BODIES}:
        count = sum(1 for c, _ in BODIES if c == code)
        wait_until(
            lambda code=code, count=count: agent.log_text()[mark:].count(f"code={code}") == count,
            what=f"{count} {code} lines",
        )


def test_a_signed_scan_posted_to_cancel_session_is_refused(agent):
    """The path is not signed: the signed bytes of a scanCode, posted again under another event
    name, must not cancel the customer's claim."""
    session, code = str(uuid.uuid4()), customer_code(109)
    body = envelope("scanCode", session, counter=9, scanCode={"scannedCode": code})
    assert post(agent, "scanCode", body).json()["scanCode"]["recognized"] is True
    response = post(agent, "cancelSession", body)
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_DATA"
    assert [c.state for c in agent.claims_of(code)] == ["pending"]


def test_a_body_over_the_cap_is_refused_before_it_is_read(agent):
    response = post(agent, "scanCode", b"{" + b" " * 300_000 + b"}")
    assert response.status_code == 413
    assert agent.process.poll() is None
