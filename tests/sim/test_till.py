"""The till-session player against a real HTTP webhook receiver on loopback.

The receiver is built on the agent's own listener (`agent.listener`): it checks every request's
signature and subscription id the way the agent's receiver must, records what arrived, and
answers as each test tells it (recognise BONIQ codes, sign wrongly, hang, reject).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from agent.kassa import signature
from agent.kassa.client import KassaClient
from agent.listener import Handler, Limits, serve
from agent.sim.kassa import KassaSimulator
from agent.sim.till import NO_ANSWER, TILL_WEBHOOK_ERROR, Till, TriggerPattern

KEY = base64.b64encode(bytes(range(7, 39))).decode()  # as the back office would show it
SUBSCRIPTION = "boniq-shop-1"
CODE = "BNQ-7F3K9Q2M"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")


@dataclass
class Received:
    event: str
    body: bytes
    data: Any
    key_form: str | None
    headers: dict[str, str]


class Receiver:
    """A webhook endpoint: `mode` is normal | bad-signature | not-json | bad-shape | hang |
    reject. BONIQ codes (BNQ-…) are recognised."""

    def __init__(self, key_encoding: signature.KeyEncoding = "auto") -> None:
        self.candidates = signature.keys(KEY, key_encoding)
        self.mode = "normal"
        self.received: list[Received] = []
        self.release = threading.Event()
        self.hanging = 0
        self.lock = threading.Lock()
        server = serve("127.0.0.1:0", _Hook, limits=Limits(timeout=5.0), name="hook", context=self)
        assert server is not None
        self.server = server
        self.url = f"http://127.0.0.1:{server.port}/mplus"

    def events(self, name: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.received if name in (None, r.event)]

    def handle(self, hook: _Hook) -> None:
        body = hook.read_body()
        event = hook.path.rstrip("/").rsplit("/", 1)[-1]
        given = hook.headers.get(signature.HEADER) or ""
        key = signature.verify(given, body, self.candidates)
        with self.lock:
            self.received.append(
                Received(
                    event, body, json.loads(body), key.form if key else None, dict(hook.headers)
                )
            )
        if hook.headers.get("X-Mplus-Subscription-Id") != SUBSCRIPTION:
            return self._answer(hook, 400, {"error": {"code": "INVALID_SUBSCRIPTION_ID"}})
        if key is None:
            return self._answer(
                hook, 400, {"error": {"code": "INVALID_SIGNATURE", "message": "signature mismatch"}}
            )
        if self.mode == "reject":
            return self._answer(
                hook, 400, {"error": {"code": "NO_SCANNED_CODE", "message": "no code"}}
            )
        if "error" in json.loads(body):  # an error request: logged, nothing to answer
            return self._answer(hook, 200, {}, key)
        if self.mode == "hang" and event == "scanCode":
            with self.lock:
                self.hanging += 1
            self.release.wait(10)
            return None
        self._answer(hook, 200, self._reply(event, json.loads(body)), key)

    def _reply(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        if event == "scanCode":
            code = data["scanCode"]["scannedCode"]
            if not code.startswith("BNQ-"):
                return {"scanCode": {"recognized": False}}
            return {
                "scanCode": {
                    "recognized": True,
                    "message": "BONIQ-code gekoppeld",
                    "customerMessage": "BONIQ: uw bon komt in de app",
                },
                "messages": [{"message": "sessie " + data["session"]["sessionId"][:8]}],
            }
        if event == "completeSession":
            return {"receiptFooter": {"text": "Uw bon staat in de BONIQ-app"}}
        return {}

    def _answer(
        self, hook: _Hook, status: int, value: Any, key: signature.Key | None = None
    ) -> None:
        """Signed with the key form the request matched, as the agent's receiver does."""
        key = key or self.candidates[0]
        body = json.dumps(value).encode()
        if self.mode == "not-json" and status == 200 and value:
            body = b"{not json"
        elif self.mode == "bad-shape" and status == 200 and value:
            body = json.dumps({"scanCode": {"recognized": "yes"}}).encode()
        sign = signature.sign(key, body)
        if self.mode == "bad-signature":
            sign = signature.sign(signature.Key("text", b"another key"), body)
        hook.reply(status, body, "application/json", {signature.HEADER: sign})

    def close(self) -> None:
        self.release.set()
        self.server.close()


class _Hook(Handler):
    def do_POST(self) -> None:
        self.context.handle(self)


@pytest.fixture()
def sim() -> Iterator[KassaSimulator]:
    with KassaSimulator(seed=3) as running:
        yield running


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.close()


def _till(sim: KassaSimulator, receiver: Receiver, **options: Any) -> Till:
    return Till(receiver.url, KEY, SUBSCRIPTION, sim=sim, **options)


def _webhook_line_ids(client: KassaClient, receipt_id: str) -> list[str | None]:
    """The receipt's lines' webhookData.webhookLineId, as the agent's client reads them."""
    receipt = client.get_receipt(receipt_id)
    assert receipt is not None
    return [line.webhook_line_id for line in receipt.lines]


@pytest.mark.parametrize("form", ["base64", "text"])
def test_requests_are_signed_in_the_key_form_the_till_uses(
    sim: KassaSimulator, receiver: Receiver, form: str
) -> None:
    till = _till(sim, receiver, key_form=form)
    session = till.start_session(2)
    session.add_line(1001)
    entry = session.scan(CODE)

    assert entry.recognized, entry
    arrived = receiver.events()
    assert [r.event for r in arrived] == ["startSession", "addSessionLine", "scanCode"]
    assert {r.key_form for r in arrived} == {form}
    scan = arrived[-1]
    assert scan.headers["X-Mplus-Subscription-Id"] == SUBSCRIPTION
    assert scan.headers["Content-Type"] == scan.headers["Accept"] == "application/json"
    event, sender = scan.data["event"], scan.data["sender"]
    assert event["eventBlocking"] is True and event["eventCounter"] == 3
    assert TIMESTAMP.match(event["eventTimestamp"]), event["eventTimestamp"]
    assert sender == {"branchNumber": 1, "workplaceNumber": 2, "instanceId": till.instance_ids()[2]}
    assert scan.data["session"]["sessionId"] == session.session_id
    assert scan.data["session"]["lines"] == [
        {
            "lineId": session.lines[0].line_id,
            "articleNumber": 1001,
            "priceIncl": 3.5,
            "quantity": 1,
            "text": "Cappuccino",
        }
    ]
    assert scan.data["scanCode"] == {"scannedCode": CODE, "codeType": "qrcode"}
    assert arrived[0].data["event"]["eventBlocking"] is False
    till.close()


def test_an_endpoint_reading_the_key_the_other_way_rejects_and_the_cashier_sees_it(
    sim: KassaSimulator,
) -> None:
    strict = Receiver(key_encoding="base64")
    try:
        till = Till(strict.url, KEY, SUBSCRIPTION, sim=sim, key_form="text")
        entry = till.start_session(1).scan(CODE)
        assert not entry.recognized
        assert entry.outcome == "endpoint error INVALID_SIGNATURE"
        assert "signature mismatch" in entry.cashier
        assert not [r for r in strict.events() if "error" in r.data]  # a 400 is not a bad reply
        till.close()
    finally:
        strict.close()


def test_a_recognised_scan_shows_both_messages_and_a_foreign_code_does_not(
    sim: KassaSimulator, receiver: Receiver
) -> None:
    till = _till(sim, receiver)
    session = till.start_session(3)
    article = session.scan("8712345678906", code_type="barcode")
    boniq = session.scan(CODE)

    assert not article.recognized and article.outcome == "not recognized"
    assert boniq.recognized
    assert boniq.cashier == f"BONIQ-code gekoppeld\nsessie {session.session_id[:8]}"
    assert boniq.customer == "BONIQ: uw bon komt in de app"
    shown = requests.get(sim.url + "_sim/screen", timeout=2).json()
    assert [(s["event"], s["outcome"], s["workplace"], s["session_id"]) for s in shown] == [
        ("scanCode", "not recognized", 3, session.session_id),
        ("scanCode", "recognized", 3, session.session_id),
    ]
    assert shown[1]["customer"] == "BONIQ: uw bon komt in de app"
    assert session.screen() == [article, boniq]
    till.close()


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("bad-signature", "INVALID_SIGNATURE"),
        ("not-json", "INVALID_JSON"),
        ("bad-shape", "INVALID_DATA"),
    ],
)
def test_a_bad_reply_makes_exactly_one_error_request_with_the_original_event(
    sim: KassaSimulator, receiver: Receiver, mode: str, code: str
) -> None:
    till = _till(sim, receiver)
    session = till.start_session(2)
    receiver.mode = mode
    entry = session.scan(CODE)

    assert not entry.recognized, "the till took a reply it could not trust"
    assert entry.outcome == f"bad reply {code}"
    assert entry.cashier.startswith(TILL_WEBHOOK_ERROR)
    scans = receiver.events("scanCode")
    assert len(scans) == 2
    original, error = scans
    assert error.key_form == "base64", "the error request is not signed"
    assert error.data["error"]["type"] == "WEBHOOK-ERROR-TYPE-RESPONSE"
    assert error.data["error"]["code"] == code
    assert error.data["original"] == original.data
    till.close()


def test_a_hanging_endpoint_is_no_answer_and_the_code_is_not_linked(
    sim: KassaSimulator, receiver: Receiver
) -> None:
    till = _till(sim, receiver, timeout=0.5)
    session = till.start_session(2)
    receiver.mode = "hang"
    entry = session.scan(CODE)

    assert receiver.hanging == 1 and not receiver.release.is_set()  # the till gave up first
    assert entry.outcome == NO_ANSWER and not entry.recognized
    assert "not linked" in entry.cashier
    assert len(receiver.events("scanCode")) == 1, "no error request for a reply that never came"
    till.close()


def test_a_refused_connection_is_no_answer(sim: KassaSimulator, receiver: Receiver) -> None:
    url = receiver.url
    receiver.close()
    till = Till(url, KEY, SUBSCRIPTION, sim=sim, timeout=1.0)
    session = till.start_session(1)
    entry = session.scan(CODE)
    assert entry.outcome == NO_ANSWER and not entry.recognized
    assert session.last is not None and session.last.status is None
    till.close()


def test_a_rejected_request_is_recorded_as_the_endpoints_error(
    sim: KassaSimulator, receiver: Receiver
) -> None:
    till = _till(sim, receiver)
    session = till.start_session(2)
    receiver.mode = "reject"
    entry = session.scan(CODE)
    assert entry.outcome == "endpoint error NO_SCANNED_CODE" and entry.code == "NO_SCANNED_CODE"
    assert not entry.recognized
    assert len(receiver.events("scanCode")) == 1
    till.close()


def test_the_receipt_of_a_completed_session_carries_its_webhook_line_ids(
    sim: KassaSimulator, receiver: Receiver
) -> None:
    till = _till(sim, receiver)
    other = sim.book_sale(1)  # a sale at another till, not through webhooks
    session = till.start_session(2)
    coffee = session.add_line(1001, 2)
    session.add_line(3410)
    cheese = session.add_line(2210, 412)  # 412 g
    session.update_line(coffee, quantity=3)
    session.remove_line(cheese)
    session.scan(CODE)
    session.start_payment()
    session.cancel_payment()
    session.start_payment()
    receipt_id = session.complete([("CASH", 1000), "PIN"])

    assert receipt_id is not None
    complete = receiver.events("completeSession")[-1].data
    final = [line["lineId"] for line in complete["session"]["lines"]]
    assert final == [line.line_id for line in session.lines] and cheese not in final
    assert complete["completeSession"] == {
        "payments": [{"method": "CASH", "amount": 10.0}, {"method": "PIN", "amount": 15.49}]
    }
    assert session.receipt_footer == "Uw bon staat in de BONIQ-app"
    client = KassaClient(sim.url, sim.ident, sim.secret, timeout=2.0)
    assert _webhook_line_ids(client, receipt_id) == final
    assert _webhook_line_ids(client, other) == [None] * len(_webhook_line_ids(client, other))
    booked = next(r for r in client.get_receipts(1, 0) if r.receipt_id == receipt_id)
    assert (booked.workplace, booked.total_incl) == (2, 3 * 350 + 1499)
    client.close()
    till.close()


def test_a_credit_follows_with_the_same_session_id_and_a_credit_receipt(
    sim: KassaSimulator, receiver: Receiver
) -> None:
    till = _till(sim, receiver)
    session = till.start_session(4)
    session.add_line(3300)
    session.scan(CODE)
    receipt_id = session.complete()
    credit_id = session.credit()

    credit = receiver.events("creditSession")
    assert len(credit) == 1 and credit[0].data["session"]["sessionId"] == session.session_id
    assert [line["quantity"] for line in credit[0].data["session"]["lines"]] == [-1]
    client = KassaClient(sim.url, sim.ident, sim.secret, timeout=2.0)
    booked = client.get_receipt(str(credit_id))
    assert booked is not None and booked.is_credit and booked.credited_receipt_id == receipt_id
    client.close()
    till.close()


def test_a_duplicate_carries_the_same_counter_and_a_restart_a_new_instance(
    sim: KassaSimulator, receiver: Receiver
) -> None:
    till = _till(sim, receiver)
    session = till.start_session(2)
    session.scan(CODE)
    session.resend()
    session.add_line(1001)
    first, again = receiver.events("scanCode")
    assert again.body == first.body and again.data["event"]["eventCounter"] == 2
    assert receiver.events("addSessionLine")[0].data["event"]["eventCounter"] == 3
    assert [d.duplicate for d in till.deliveries()] == [False, False, True, False]

    before = till.instance_ids()[2]
    till.restart(2)
    till.start_session(2)
    restarted = receiver.events("startSession")[-1].data
    assert restarted["sender"]["instanceId"] != before
    assert restarted["event"]["eventCounter"] == 1
    till.close()


def test_walk_away_second_customer_and_split_payment_bug_are_playable(
    sim: KassaSimulator, receiver: Receiver
) -> None:
    till = _till(sim, receiver)
    walked = till.start_session(1)
    walked.scan(CODE)
    walked.cancel()
    never = till.start_session(2)
    never.add_line(2040)
    never.scan("BNQ-FIRST001")
    second = never.scan("BNQ-SECOND02")  # the next customer's phone, handed over early
    split = till.start_session(3)
    split.add_line(4001)
    receipt_id = split.complete(empty_session_id=True)

    assert second.recognized and second.session_id == never.session_id
    assert receiver.events("cancelSession")[0].data["session"]["sessionId"] == walked.session_id
    assert never.state == "open" and never.receipt_id is None
    bug = receiver.events("completeSession")[0].data
    assert bug["session"]["sessionId"] == ""
    client = KassaClient(sim.url, sim.ident, sim.secret, timeout=2.0)
    assert _webhook_line_ids(client, str(receipt_id)) == [split.lines[0].line_id]
    client.close()
    with pytest.raises(ValueError):
        walked.scan(CODE)
    till.close()


def test_a_code_no_trigger_pattern_accepts_is_not_sent(
    sim: KassaSimulator, receiver: Receiver
) -> None:
    till = _till(sim, receiver, trigger_patterns=[TriggerPattern(r"^BNQ-[0-9A-Z]{8}$", "qrcode")])
    session = till.start_session(2)
    article = session.scan("8712345678906", code_type="barcode")
    boniq = session.scan(CODE)
    assert article.outcome == "not sent" and boniq.recognized
    assert [r.data["scanCode"]["scannedCode"] for r in receiver.events("scanCode")] == [CODE]
    till.close()


def test_control_endpoints_play_a_session(sim: KassaSimulator, receiver: Receiver) -> None:
    till = _till(sim, receiver)

    def post(path: str, **data: Any) -> Any:
        answer = requests.post(sim.url + "_sim/" + path, json=data, timeout=5)
        assert answer.status_code == 200, answer.text
        return answer.json()

    session_id = post("session/start", workplace=2)["session_id"]
    line_id = post("session/line", session_id=session_id, article=1001, quantity=2)["line_id"]
    shown = post("session/scan", session_id=session_id, code=CODE)
    post("session/pay", session_id=session_id)
    receipt_id = post("session/complete", session_id=session_id, payments=["PIN"])["receipt_id"]

    assert shown["recognized"] and shown["customer"] == "BONIQ: uw bon komt in de app"
    assert requests.get(sim.url + "_sim/screen", timeout=2).json()[-1]["event"] == "completeSession"
    client = KassaClient(sim.url, sim.ident, sim.secret, timeout=2.0)
    assert _webhook_line_ids(client, receipt_id) == [line_id]
    client.close()
    unknown = requests.post(
        sim.url + "_sim/session/scan", json={"session_id": "nope", "code": CODE}, timeout=2
    )
    assert unknown.status_code == 404
    till.close()
    assert requests.post(sim.url + "_sim/session/start", json={}, timeout=2).status_code == 404


def test_cli_attaches_the_player(receiver: Receiver) -> None:
    code = "import sys; from agent.cli import main; sys.exit(main(sys.argv[1:]))"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "sim",
            "kassa",
            "--port",
            "0",
            "--webhook-url",
            receiver.url,
            "--webhook-key",
            KEY,
            "--subscription-id",
            SUBSCRIPTION,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://127.0.0.1:"))
        started = requests.post(url + "_sim/session/start", json={"workplace": 1}, timeout=5)
        session_id = started.json()["session_id"]
        shown = requests.post(
            url + "_sim/session/scan", json={"session_id": session_id, "code": CODE}, timeout=5
        ).json()
        assert shown["recognized"]
        assert [r.event for r in receiver.events()] == ["startSession", "scanCode"]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_webhook_url_off_loopback_is_refused() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Till("http://192.0.2.7/mplus", KEY, SUBSCRIPTION)
