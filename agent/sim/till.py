"""A till that plays MplusKASSA POS sessions to a webhook URL, the way the real till client would.

Facts and what is unknown: reference/mplus-webhooks.md (§1 transport, §2 HMAC, §3 JSON, §6 the
receipt link, §8 what a faithful fake must do). Each event is `POST <base>/<eventName>` with
`X-Mplus-Subscription-Id`, `X-Mplus-Signature` (Base64 HMAC-SHA256 of the exact body bytes),
`Content-Type` and `Accept: application/json`, and the envelope
`{"event": {eventBlocking, eventCounter, eventTimestamp}, "sender": {branchNumber,
workplaceNumber, instanceId}, "session": {sessionId, lines[]}}` plus the event's own object.

Each workplace is one POS client with its own `instanceId` (new on `restart`) and `eventCounter`
(`reset_counter`). Blocking events (`scanCode` and `completeSession` by default) wait up to
`timeout` seconds for the reply, check its signature, status and JSON, and apply it to what the
till's screens show (`Till.screen()`, `GET /_sim/screen`). A reply the till cannot accept makes
it POST an *error request* to the same event URL. A 400 is the endpoint rejecting the request.
No answer in time (or a refused connection) is the till's own webhook error: the scanned code
is not linked, and the till looks it up as an article. Non-blocking events are sent in order
(each waits at most `timeout` for delivery, so the order holds) and their replies are ignored.

A completed session books its receipt in the attached `KassaSimulator`, each line carrying
`webhookData.webhookLineId` = the session line's `lineId`; a credited one books the credit
receipt (`creditedReceiptId`) and sends `creditSession` with the same `sessionId`.

Usage::

    with KassaSimulator() as sim:
        till = Till("http://127.0.0.1:18090/mplus", key, "boniq-shop-1", sim=sim)
        session = till.start_session(2)
        session.add_line(1001)                      # a Cappuccino from the catalogue
        entry = session.scan("BNQ-…")               # what the till's screens show
        assert entry.recognized, entry.cashier
        session.start_payment()
        receipt_id = session.complete(["PIN"])      # booked; completeSession sent
        credit_id = session.credit()                # creditSession, same sessionId

Not played: polling events, dialogs, forms, `lineChanges` (recorded, not applied), background
polls, a cashier cancelling a blocking wait.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from agent.http import HttpError, Transport
from agent.kassa import signature
from agent.kassa.receipt import POS_ZONE
from agent.sim.kassa import CATALOGUE, KassaSimulator, SimLine, sale_total

CodeType = Literal["barcode", "rfid", "qrcode"]
KeyForm = Literal["base64", "text"]
CODE_TYPES = ("barcode", "rfid", "qrcode")
DEFAULT_BLOCKING = frozenset({"scanCode", "completeSession"})
ERROR_TYPE_RESPONSE = "WEBHOOK-ERROR-TYPE-RESPONSE"

RECOGNIZED = "recognized"
NOT_RECOGNIZED = "not recognized"
ACCEPTED = "accepted"
NOT_SENT = "not sent"
NO_ANSWER = "no answer"
ENDPOINT_ERROR = "endpoint error"
BAD_REPLY = "bad reply"

TILL_WEBHOOK_ERROR = "the till shows its own webhook error"
NOT_LINKED = "; the code is not linked (the till looks it up as an article)"

MAX_REPLY = 1_000_000
MAX_SCREEN = 10_000
MAX_SESSIONS = 10_000
_DETAILS = {"addSessionLine", "updateSessionLine", "removeSessionLine"}


@dataclass(frozen=True)
class ScreenEntry:
    """What the till's screens showed after one blocking event (or a scan that was not sent).

    `outcome`: "recognized" | "not recognized" (scanCode), "accepted" (another blocking event),
    "endpoint error CODE" (the endpoint answered 400, or `HTTP-nnn`), "bad reply CODE" (the till
    rejected the reply and sent an error request), "no answer" (timeout, refused), "not sent"
    (no trigger pattern let the code through). `code` is the error code of the last three.
    """

    at: str
    workplace: int
    session_id: str
    event: str
    counter: int
    cashier: str
    customer: str
    outcome: str
    code: str | None = None

    @property
    def recognized(self) -> bool:
        """The till will not look the code up itself (only a valid `recognized: true` reply)."""
        return self.outcome == RECOGNIZED

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "recognized": self.recognized}


@dataclass(frozen=True)
class Delivery:
    """One request the till sent: an event (blocking or not), a duplicate or an error request.

    `outcome`: "ok" (200 and, for a blocking event, a reply the till accepted), "endpoint error
    CODE", "bad reply CODE", "no answer", or for error requests the reply status as "ok"/"error".
    """

    event: str
    workplace: int
    session_id: str
    counter: int
    blocking: bool
    status: int | None
    outcome: str
    error_request: bool = False
    duplicate: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TriggerPattern:
    """A scanCode trigger pattern (WSDL `WebhookConsumerTriggerPattern`): codes matching a
    non-reject pattern of their code type are sent, unless a reject pattern matches. The regex
    dialect and anchoring are not documented: `re.search`, so anchor explicitly."""

    pattern: str
    code_type: str | None = None
    reject: bool = False

    def applies(self, code: str, code_type: str) -> bool:
        if self.code_type not in (None, code_type):
            return False
        return re.search(self.pattern, code) is not None


@dataclass(frozen=True)
class SessionLine:
    """A line of a POS session: `spec` as the simulator books it (price in cents incl. VAT)."""

    line_id: str
    spec: SimLine

    def to_webhook(self) -> dict[str, Any]:
        spec = self.spec
        line: dict[str, Any] = {
            "lineId": self.line_id,
            "articleNumber": spec.article,
            "priceIncl": spec.price / 100,
            "quantity": spec.quantity / 10**spec.decimal_places
            if spec.decimal_places
            else spec.quantity,
            "text": spec.text,
        }
        if spec.discount_pct:
            line["discountPercentage"] = spec.discount_pct
        return line


@dataclass
class Reply:
    """How the till took the answer to one request: `outcome` as in ScreenEntry ("ok" for a
    non-blocking event), the screen texts, and the reply's JSON when it was accepted."""

    outcome: str
    code: str | None = None
    cashier: str = ""
    customer: str = ""
    body: dict[str, Any] = field(default_factory=dict)


class _Pos:
    """One POS client (a workplace): its instanceId, its counter, one event at a time."""

    def __init__(self, workplace: int) -> None:
        self.workplace = workplace
        self.instance_id = str(uuid.uuid4())
        self.counter = 0
        self.lock = threading.RLock()


class Till:
    """The POS clients of one branch, sending their sessions' events to `webhook_url`.

    `key` is the secret key as typed in the back office; `key_form` says how it becomes the HMAC
    key ("base64": its Base64-decoded bytes, "text": its UTF-8 bytes). `blocking` overrides the
    per-event blocking flags (default: scanCode and completeSession blocking). `sim`: the
    KassaSimulator that books the receipts and whose HTTP server carries the control endpoints;
    its POS clock (`clock_offset`) is the till's clock. Only loopback URLs are accepted.
    """

    def __init__(
        self,
        webhook_url: str,
        key: str,
        subscription_id: str,
        *,
        sim: KassaSimulator | None = None,
        key_form: KeyForm = "base64",
        branch: int | None = None,
        workplaces: Sequence[int] | None = None,
        timeout: float = 5.0,
        blocking: Mapping[str, bool] | None = None,
        trigger_patterns: Sequence[TriggerPattern] = (),
    ) -> None:
        _check_loopback(webhook_url)
        if key_form not in ("base64", "text"):
            raise ValueError("key_form is base64 or text")
        (self._key,) = signature.keys(key, key_form)
        if self._key.form != key_form:
            raise ValueError("the webhook key is not Base64; use key_form='text'")
        self.webhook_url = webhook_url.rstrip("/")
        self.subscription_id = subscription_id
        self.key_form: KeyForm = key_form
        self.sim = sim
        self.branch = branch if branch is not None else (sim.branch if sim else 1)
        places = workplaces if workplaces is not None else (sim.workplaces if sim else (1,))
        self._pos = {int(w): _Pos(int(w)) for w in places}
        self.timeout = timeout
        self.blocking = {event: True for event in DEFAULT_BLOCKING}
        self.blocking.update(blocking or {})
        self.trigger_patterns = tuple(trigger_patterns)
        self._transport = Transport(timeout=timeout, max_bytes=MAX_REPLY)
        self._lock = threading.Lock()
        self._screen: deque[ScreenEntry] = deque(maxlen=MAX_SCREEN)
        self._deliveries: deque[Delivery] = deque(maxlen=MAX_SCREEN)
        self._sessions: dict[str, TillSession] = {}
        if sim is not None:
            sim.till = self

    # -- the POS clients -----------------------------------------------------------------------

    @property
    def workplaces(self) -> tuple[int, ...]:
        return tuple(self._pos)

    def start_session(self, workplace: int | None = None) -> TillSession:
        """A new session at `workplace` (default: the first); sends startSession."""
        pos = self._pos_of(workplace)
        session = TillSession(self, pos.workplace)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
            self._sessions[session.session_id] = session
        session.send("startSession")
        return session

    def session(self, session_id: str) -> TillSession:
        """A session started here, by id (KeyError if unknown)."""
        with self._lock:
            found = self._sessions.get(session_id)
        if found is None:
            raise KeyError(f"no till session {session_id}")
        return found

    def restart(self, workplace: int | None = None) -> dict[int, str]:
        """Restart the POS at `workplace` (default: every one): a new instanceId, counter 0."""
        for pos in self._chosen(workplace):
            with pos.lock:
                pos.instance_id = str(uuid.uuid4())
                pos.counter = 0
        return self.instance_ids()

    def reset_counter(self, workplace: int | None = None, to: int = 0) -> None:
        """Set the eventCounter (the next event gets `to` + 1), as a till "occasionally" does."""
        for pos in self._chosen(workplace):
            with pos.lock:
                pos.counter = to

    def instance_ids(self) -> dict[int, str]:
        return {pos.workplace: pos.instance_id for pos in self._pos.values()}

    def is_blocking(self, event: str) -> bool:
        return self.blocking.get(event, False)

    def pos_now(self) -> datetime:
        """Now on the POS clock (the simulator's, when one is attached)."""
        return self.sim.pos_now() if self.sim is not None else datetime.now(POS_ZONE)

    # -- what was shown and sent ---------------------------------------------------------------

    def screen(self, workplace: int | None = None) -> list[ScreenEntry]:
        """Screen entries, oldest first (at most MAX_SCREEN kept)."""
        with self._lock:
            return [e for e in self._screen if workplace in (None, e.workplace)]

    def screen_json(self) -> list[dict[str, Any]]:
        return [entry.to_json() for entry in self.screen()]

    def deliveries(self) -> list[Delivery]:
        """Every request sent, oldest first (at most MAX_SCREEN kept)."""
        with self._lock:
            return list(self._deliveries)

    def close(self) -> None:
        """Detach from the simulator and close the connections."""
        if self.sim is not None and self.sim.till is self:
            self.sim.till = None
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------------

    def post(
        self,
        workplace: int,
        event: str,
        session: Mapping[str, Any] | None,
        details: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], Delivery, Reply]:
        """Send one event now: the envelope, `session` and `{event: details}` when given.

        The low-level door for events the session API does not play (pauseSession, …)."""
        pos = self._pos_of(workplace)
        with pos.lock:
            pos.counter += 1
            request: dict[str, Any] = {
                "event": {
                    "eventBlocking": self.is_blocking(event),
                    "eventCounter": pos.counter,
                    "eventTimestamp": self.pos_now().isoformat(timespec="milliseconds"),
                },
                "sender": {
                    "branchNumber": self.branch,
                    "workplaceNumber": pos.workplace,
                    "instanceId": pos.instance_id,
                },
            }
            if session is not None:
                request["session"] = dict(session)
            if details is not None:
                request[event] = dict(details)
            delivery, reply = self._exchange(pos.workplace, event, request, duplicate=False)
        return request, delivery, reply

    def repeat(
        self, workplace: int, event: str, request: Mapping[str, Any]
    ) -> tuple[Delivery, Reply]:
        """Send `request` again byte for byte (same eventCounter): a duplicated delivery."""
        pos = self._pos_of(workplace)
        with pos.lock:
            return self._exchange(pos.workplace, event, dict(request), duplicate=True)

    def _exchange(
        self, workplace: int, event: str, request: dict[str, Any], *, duplicate: bool
    ) -> tuple[Delivery, Reply]:
        blocking = bool(request["event"]["eventBlocking"])
        status, headers, body = self._send(event, _dump(request))
        if status is None:
            reply = Reply(NO_ANSWER)
        elif status == 400:
            reply = _endpoint_error(body)
        elif status != 200:
            reply = Reply(f"{ENDPOINT_ERROR} HTTP-{status}", f"HTTP-{status}")
        elif not blocking:
            reply = Reply("ok")
        else:
            reply = self._read_reply(event, headers, body)
        session_id = str(request.get("session", {}).get("sessionId", ""))
        counter = int(request["event"]["eventCounter"])
        outcome = "ok" if reply.outcome in (ACCEPTED, RECOGNIZED, NOT_RECOGNIZED) else reply.outcome
        delivery = Delivery(
            event, workplace, session_id, counter, blocking, status, outcome, duplicate=duplicate
        )
        self._record(delivery)
        if reply.outcome.startswith(BAD_REPLY):
            self._error_request(workplace, event, request, reply)
        return delivery, reply

    def _send(self, event: str, body: bytes) -> tuple[int | None, Mapping[str, str], bytes]:
        headers = {
            "X-Mplus-Subscription-Id": self.subscription_id,
            signature.HEADER: signature.sign(self._key, body),
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        try:
            answer = self._transport.request(
                "POST", f"{self.webhook_url}/{event}", data=body, headers=headers
            )
        except HttpError:
            return None, {}, b""
        return answer.status, answer.headers, answer.body

    def _read_reply(self, event: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """A 200 reply to a blocking event: signature, JSON, shape, then its screen texts."""
        if not body.strip():
            return Reply(NOT_RECOGNIZED if event == "scanCode" else ACCEPTED)  # allowed, §1.6
        given = headers.get(signature.HEADER)
        if not given:
            return _bad("INVALID_SIGNATURE", "the reply has no X-Mplus-Signature")
        if signature.verify(given, body, (self._key,)) is None:
            return _bad("INVALID_SIGNATURE", "the reply's signature does not match")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return _bad("INVALID_JSON", "the reply is not JSON")
        problem = _shape_problem(data)
        if problem:
            return _bad("INVALID_DATA", problem)
        return _applied(event, data)

    def _error_request(
        self, workplace: int, event: str, original: dict[str, Any], reply: Reply
    ) -> None:
        """POST the error and the original event to the same URL. The wrapping key `original` is
        not documented by MplusKASSA (a third-party receiver unwraps it, reference §1.9)."""
        payload = {
            "error": {"type": ERROR_TYPE_RESPONSE, "code": reply.code, "message": reply.cashier},
            "original": original,
        }
        status, _, _ = self._send(event, _dump(payload))
        self._record(
            Delivery(
                event,
                workplace,
                str(original.get("session", {}).get("sessionId", "")),
                int(original["event"]["eventCounter"]),
                False,
                status,
                "ok" if status == 200 else "error",
                error_request=True,
            )
        )

    def show(self, entry: ScreenEntry) -> None:
        with self._lock:
            self._screen.append(entry)

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries.append(delivery)

    def scan_passes(self, code: str, code_type: str) -> bool:
        """Whether the trigger patterns let the code through to the webhook (no patterns: all)."""
        if not self.trigger_patterns:
            return True
        if any(p.reject and p.applies(code, code_type) for p in self.trigger_patterns):
            return False
        return any(not p.reject and p.applies(code, code_type) for p in self.trigger_patterns)

    def _pos_of(self, workplace: int | None) -> _Pos:
        if workplace is None:
            return next(iter(self._pos.values()))
        pos = self._pos.get(int(workplace))
        if pos is None:
            raise ValueError(f"workplace {workplace} is not one of {list(self._pos)}")
        return pos

    def _chosen(self, workplace: int | None) -> list[_Pos]:
        return list(self._pos.values()) if workplace is None else [self._pos_of(workplace)]

    # -- control endpoints -----------------------------------------------------------------------

    def control(self, path: str) -> Callable[[dict[str, Any]], Any] | None:
        """The POST control endpoint at `path`, for the simulator's HTTP server (None: not ours).

        Bad input raises ValueError/TypeError (400), an unknown session KeyError (404)."""
        return {
            "/_sim/session/start": lambda d: {
                "session_id": self.start_session(_opt_int(d.get("workplace"))).session_id
            },
            "/_sim/session/line": self._control_line,
            "/_sim/session/scan": lambda d: (
                self._of(d).scan(str(d["code"]), str(d.get("code_type", "qrcode"))).to_json()
            ),
            "/_sim/session/pay": lambda d: self._of(d).start_payment().to_json(),
            "/_sim/session/cancel-payment": lambda d: self._of(d).cancel_payment().to_json(),
            "/_sim/session/complete": lambda d: {
                "receipt_id": self._of(d).complete(
                    _payments(d.get("payments")),
                    receipt_delay=float(d.get("receipt_delay", 0)),
                    empty_session_id=bool(d.get("empty_session_id", False)),
                )
            },
            "/_sim/session/cancel": lambda d: self._of(d).cancel().to_json(),
            "/_sim/session/credit": lambda d: {"receipt_id": self._of(d).credit()},
            "/_sim/session/resend": lambda d: self._of(d).resend().to_json(),
            "/_sim/till/restart": lambda d: {
                str(k): v for k, v in self.restart(_opt_int(d.get("workplace"))).items()
            },
            "/_sim/till/counter": lambda d: self.reset_counter(
                _opt_int(d.get("workplace")), int(d.get("to", 0))
            ),
        }.get(path)

    def view(self, path: str) -> Any:
        """The GET control endpoint at `path` (None: not ours)."""
        if path == "/_sim/screen":
            return self.screen_json()
        if path == "/_sim/deliveries":
            return [d.to_json() for d in self.deliveries()]
        if path == "/_sim/sessions":
            with self._lock:
                sessions = list(self._sessions.values())
            return [s.to_json() for s in sessions]
        return None

    def _of(self, data: Mapping[str, Any]) -> TillSession:
        if "session_id" not in data:
            raise ValueError("session_id is required")
        return self.session(str(data["session_id"]))

    def _control_line(self, data: dict[str, Any]) -> dict[str, Any]:
        session = self._of(data)
        action = data.get("action", "add")
        if action == "add":
            line_id = session.add_line(
                int(data["article"]),
                int(data.get("quantity", 1)),
                price=_opt_int(data.get("price")),
                text=data.get("text"),
                vat=_opt_int(data.get("vat")),
            )
            return {"line_id": line_id}
        if action == "update":
            session.update_line(
                str(data["line_id"]),
                quantity=_opt_int(data.get("quantity")),
                price=_opt_int(data.get("price")),
            )
            return {"line_id": data["line_id"]}
        if action == "remove":
            session.remove_line(str(data["line_id"]))
            return {"line_id": data["line_id"]}
        raise ValueError("action is add, update or remove")


class TillSession:
    """One POS session at one workplace; every change sends its event at once.

    `state`: open → paying → completed → credited, or cancelled. `receipt_id`/`credit_receipt_id`
    are the simulator's receipts; `receipt_footer` and `relation_number` come from replies.
    """

    def __init__(self, till: Till, workplace: int) -> None:
        self.till = till
        self.workplace = workplace
        self.session_id = str(uuid.uuid4())
        self.lines: list[SessionLine] = []
        self.state = "open"
        self.receipt_id: str | None = None
        self.credit_receipt_id: str | None = None
        self.receipt_footer: str | None = None
        self.relation_number: int | None = None
        self.last: Delivery | None = None
        self._last_request: tuple[str, dict[str, Any]] | None = None

    # -- lines -----------------------------------------------------------------------------------

    def add_line(
        self,
        article: int | SimLine,
        quantity: int = 1,
        *,
        price: int | None = None,
        text: str | None = None,
        vat: int | None = None,
    ) -> str:
        """Add an article (a catalogue number, or a SimLine); sends addSessionLine.

        `price` is cents incl. VAT per unit (per kg for weighed articles, whose `quantity` is in
        grams, decimal_places 3). Returns the line's `lineId`."""
        self._open()
        spec = _spec(article, quantity, price, text, vat)
        line = SessionLine(str(uuid.uuid4()), spec)
        self.lines.append(line)
        self.send("addSessionLine", {"line": line.to_webhook()})
        return line.line_id

    def update_line(
        self, line_id: str, *, quantity: int | None = None, price: int | None = None
    ) -> Delivery:
        """Change a line's quantity or price; sends updateSessionLine."""
        self._open()
        index = self._index(line_id)
        spec = self.lines[index].spec
        spec = replace(
            spec,
            quantity=spec.quantity if quantity is None else quantity,
            price=spec.price if price is None else price,
        )
        if spec.quantity <= 0:
            raise ValueError("a line needs a positive quantity; remove it instead")
        self.lines[index] = SessionLine(line_id, spec)
        return self.send("updateSessionLine", {"line": self.lines[index].to_webhook()})

    def remove_line(self, line_id: str) -> Delivery:
        self._open()
        removed = self.lines.pop(self._index(line_id))
        return self.send("removeSessionLine", {"line": removed.to_webhook()})

    # -- scanning and paying ---------------------------------------------------------------------

    def scan(self, code: str, code_type: str = "qrcode") -> ScreenEntry:
        """The till's scanner reads `code`; returns what its screens show.

        Not recognized (no webhook reply saying so, a bad reply, no answer, or no trigger pattern
        letting it through) means the till looks the code up as an article."""
        if code_type not in CODE_TYPES:
            raise ValueError(f"code_type is one of {CODE_TYPES}")
        self._open()
        if not self.till.scan_passes(code, code_type):
            entry = ScreenEntry(
                self.till.pos_now().isoformat(timespec="milliseconds"),
                self.workplace,
                self.session_id,
                "scanCode",
                0,
                "",
                "",
                NOT_SENT,
            )
            self.till.show(entry)
            return entry
        return self._shown("scanCode", {"scannedCode": code, "codeType": code_type})

    def start_payment(self) -> Delivery:
        self._open()
        self.state = "paying"
        return self.send("startPayment")

    def cancel_payment(self) -> Delivery:
        """The payment screen closed without paying: the session goes on."""
        if self.state != "paying":
            raise ValueError("no payment to cancel")
        self.state = "open"
        return self.send("cancelPayment")

    def complete(
        self,
        payments: Sequence[Any] | None = None,
        *,
        receipt_delay: float = 0.0,
        empty_session_id: bool = False,
    ) -> str | None:
        """Pay and finish: books the receipt, then sends completeSession with the final lines.

        `payments` as `KassaSimulator.book_sale` takes them (default `["PIN"]`). The
        `completeSession` object's fields are not documented (reference §3.3); this sends
        `{"payments": [{"method": "PIN", "amount": 4.95}]}` (amount in euros). `receipt_delay`:
        the API shows the receipt only that many seconds later (a till that replicates late).
        `empty_session_id`: the split-payment bug fixed in 59.4.2, a negative case. Returns the
        receipt id (None without a simulator)."""
        self._open()
        if not self.lines:
            raise ValueError("a session needs a line to be paid")
        methods = list(payments or ["PIN"])
        self.receipt_id, paid = self._book(methods, receipt_delay)
        self.state = "completed"
        session = self._session()
        if empty_session_id:
            session["sessionId"] = ""
        self._shown("completeSession", {"payments": paid}, session=session)
        return self.receipt_id

    def cancel(self) -> Delivery:
        """cancelSession: the session ends unpaid, never to be resumed."""
        self._open()
        self.state = "cancelled"
        return self.send("cancelSession")

    def credit(self) -> str | None:
        """Credit the completed session: books the credit receipt (`creditedReceiptId`) and
        sends creditSession with the same sessionId. Its lines are the sale's, negated, under
        new lineIds (whether a till reuses the ids is not documented, reference §3.4); the
        credit receipt's lines carry no webhookData (also unknown; the link is
        `creditedReceiptId`). Returns the credit receipt id (None without a simulator)."""
        if self.state != "completed":
            raise ValueError("only a completed session can be credited")
        if self.till.sim is not None and self.receipt_id is not None:
            self.credit_receipt_id = self.till.sim.book_credit(self.receipt_id)
        self.state = "credited"
        lines = [
            SessionLine(str(uuid.uuid4()), replace(x.spec, quantity=-x.spec.quantity))
            for x in self.lines
        ]
        self._shown(
            "creditSession",
            None,
            session={"sessionId": self.session_id, "lines": [x.to_webhook() for x in lines]},
        )
        return self.credit_receipt_id

    # -- sending ---------------------------------------------------------------------------------

    def send(
        self,
        event: str,
        details: Mapping[str, Any] | None = None,
        *,
        session: Mapping[str, Any] | None = None,
    ) -> Delivery:
        """Send `event` for this session (its current lines unless `session` is given); a
        blocking one is shown on the screen. For events the methods above do not play."""
        if self.till.is_blocking(event):
            self._shown(event, details, session=session)
            assert self.last is not None
            return self.last
        request, delivery, _ = self.till.post(
            self.workplace, event, self._session() if session is None else session, details
        )
        self._remember(event, request, delivery)
        return delivery

    def resend(self) -> Delivery:
        """Deliver the last event again, same eventCounter and bytes (a duplicate)."""
        if self._last_request is None:
            raise ValueError("nothing sent yet")
        event, request = self._last_request
        delivery, reply = self.till.repeat(self.workplace, event, request)
        if self.till.is_blocking(event):
            self._apply(event, request, reply)
        self.last = delivery
        return delivery

    def screen(self) -> list[ScreenEntry]:
        """What the till's screens showed for this session, oldest first."""
        return [e for e in self.till.screen(self.workplace) if e.session_id == self.session_id]

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "workplace": self.workplace,
            "state": self.state,
            "lines": [x.to_webhook() for x in self.lines],
            "receipt_id": self.receipt_id,
            "credit_receipt_id": self.credit_receipt_id,
        }

    def _shown(
        self,
        event: str,
        details: Mapping[str, Any] | None,
        *,
        session: Mapping[str, Any] | None = None,
    ) -> ScreenEntry:
        request, delivery, reply = self.till.post(
            self.workplace, event, self._session() if session is None else session, details
        )
        self._remember(event, request, delivery)
        return self._apply(event, request, reply)

    def _apply(self, event: str, request: Mapping[str, Any], reply: Reply) -> ScreenEntry:
        body = reply.body
        if isinstance(body.get("scanCode"), dict) and reply.outcome == RECOGNIZED:
            number = body["scanCode"].get("relationNumber")
            self.relation_number = number if isinstance(number, int) else self.relation_number
        footer = body.get("receiptFooter")
        if event == "completeSession" and isinstance(footer, dict):
            self.receipt_footer = footer.get("text")
        cashier = reply.cashier
        if reply.outcome == NO_ANSWER or reply.outcome.startswith(BAD_REPLY):
            cashier = TILL_WEBHOOK_ERROR + (NOT_LINKED if event == "scanCode" else "")
        entry = ScreenEntry(
            str(request["event"]["eventTimestamp"]),
            self.workplace,
            str(request.get("session", {}).get("sessionId", "")),
            event,
            int(request["event"]["eventCounter"]),
            cashier,
            reply.customer,
            reply.outcome,
            reply.code,
        )
        self.till.show(entry)
        return entry

    def _remember(self, event: str, request: dict[str, Any], delivery: Delivery) -> None:
        self._last_request = (event, request)
        self.last = delivery

    def _session(self) -> dict[str, Any]:
        return {"sessionId": self.session_id, "lines": [x.to_webhook() for x in self.lines]}

    def _book(self, methods: list[Any], delay: float) -> tuple[str | None, list[dict[str, Any]]]:
        sim = self.till.sim
        specs: list[SimLine | Mapping[str, Any]] = [x.spec for x in self.lines]
        if sim is None:
            total = sale_total(specs)
            first = methods[0] if isinstance(methods[0], str) else methods[0][0]
            return None, [{"method": first, "amount": total / 100}]
        receipt_id = sim.book_sale(
            self.workplace,
            lines=specs,
            payments=methods,
            delay=delay,
            webhook_line_ids=[x.line_id for x in self.lines],
        )
        summary = next(r for r in reversed(sim.receipts()) if r["receipt_id"] == receipt_id)
        return receipt_id, [
            {"method": p["method"], "amount": p["amount"] / 100} for p in summary["payments"]
        ]

    def _open(self) -> None:
        if self.state not in ("open", "paying"):
            raise ValueError(f"the session is {self.state}")

    def _index(self, line_id: str) -> int:
        for index, line in enumerate(self.lines):
            if line.line_id == line_id:
                return index
        raise KeyError(f"no line {line_id} in session {self.session_id}")


# -- helpers ------------------------------------------------------------------------------------


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _bad(code: str, message: str) -> Reply:
    return Reply(f"{BAD_REPLY} {code}", code, message)


def _endpoint_error(body: bytes) -> Reply:
    """A 400: the endpoint rejected the request with `{"error": {"code", "message"}}`."""
    code, message = "?", ""
    try:
        error = json.loads(body).get("error")
        code = str(error.get("code") or "?")
        message = str(error.get("message") or "")
    except (ValueError, AttributeError, RecursionError):
        pass
    cashier = f"webhook error {code}" + (f": {message}" if message else "")
    return Reply(f"{ENDPOINT_ERROR} {code}", code, cashier)


def _shape_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "the reply is not a JSON object"
    scan = data.get("scanCode")
    if scan is not None:
        if not isinstance(scan, dict):
            return "scanCode is not an object"
        if "recognized" in scan and not isinstance(scan["recognized"], bool):
            return "scanCode.recognized is not a boolean"
        for name in ("message", "customerMessage"):
            if name in scan and not isinstance(scan[name], str):
                return f"scanCode.{name} is not a string"
        number = scan.get("relationNumber")
        if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
            return "scanCode.relationNumber is not a number"
    messages = data.get("messages")
    if messages is not None:
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return "messages is not a list of objects"
        for m in messages:
            for name in ("message", "customerMessage"):
                if name in m and not isinstance(m[name], str):
                    return f"messages[].{name} is not a string"
    footer = data.get("receiptFooter")
    if footer is not None and not (
        isinstance(footer, dict) and isinstance(footer.get("text", ""), str)
    ):
        return "receiptFooter is not an object with a text"
    return None


def _applied(event: str, data: dict[str, Any]) -> Reply:
    cashier: list[str] = []
    customer: list[str] = []
    scan = data.get("scanCode") or {}
    if scan.get("message"):
        cashier.append(scan["message"])
    if scan.get("customerMessage"):
        customer.append(scan["customerMessage"])
    for m in data.get("messages") or []:
        if m.get("message"):
            cashier.append(m["message"])
        if m.get("customerMessage"):
            customer.append(m["customerMessage"])
    if event == "scanCode":
        outcome = RECOGNIZED if scan.get("recognized") is True else NOT_RECOGNIZED
    else:
        outcome = ACCEPTED
    return Reply(outcome, None, "\n".join(cashier), "\n".join(customer), data)


def _spec(
    article: int | SimLine, quantity: int, price: int | None, text: str | None, vat: int | None
) -> SimLine:
    if isinstance(article, SimLine):
        return article
    known = next((x for x in CATALOGUE if x.article == article), None)
    if known is None and (price is None or text is None or vat is None):
        raise ValueError(f"article {article} is not in the catalogue: give price, text and vat")
    base = known or SimLine(article, str(text), int(price or 0), int(vat or 0))
    spec = replace(
        base,
        quantity=quantity,
        price=base.price if price is None else price,
        text=base.text if text is None else text,
        vat=base.vat if vat is None else vat,
    )
    if spec.quantity <= 0 or spec.price < 0:
        raise ValueError("a line needs a positive quantity and a price")
    return spec


def _payments(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise TypeError("payments is a list")
    return [p if isinstance(p, str) else tuple(p) for p in value]


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _check_loopback(url: str) -> None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("the webhook URL is http://HOST:PORT/PATH")
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError("the till player only sends to loopback addresses")
