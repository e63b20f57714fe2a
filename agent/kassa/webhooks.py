"""The webhook receiver: MplusKASSA's till posts `scanCode` and its session events here.

A source like the scanners, but exact: the code is read by the till's own scanner inside a POS
session, and the receipt of that session carries the session's line ids, which the poller
matches (`pos-session`, docs/matching.md). Facts and unknowns: docs/webhooks.md.

Each request is checked in this order, and refused with HTTP 400 and the documented error code,
storing nothing: content type (`NO_CONTENT_TYPE`, `INVALID_CONTENT_TYPE`), subscription id
(`NO_SUBSCRIPTION_ID`, `INVALID_SUBSCRIPTION_ID`), signature (`NO_SIGNATURE`,
`INVALID_SIGNATURE`: HMAC-SHA256 of the exact body, `agent/kassa/signature.py`), JSON
(`INVALID_JSON`, at most `MAX_DEPTH` levels), envelope (`INVALID_DATA`), the event's own object
(`NO_EVENT_DETAILS`, `NO_SCANNED_CODE`). Every reply is signed. The event is the last segment of
the path, whatever base path the back office was given.

A `scanCode` reply says `recognized: true` only after the claim is committed. A request that
carries an `error` object is the till reporting a problem with an earlier reply: it is logged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from agent import codes
from agent.config import Config, WebhooksSection
from agent.errors import AgentError, CodeRejected, StoreError
from agent.kassa import signature
from agent.kassa.webhook_requests import (
    SESSION_EVENTS,
    Envelope,
    Refused,
    envelope,
    event_name,
    parse_json,
)
from agent.listener import Handler, Limits, Server, serve
from agent.logs import correlation, fields, get_logger, mask_code, new_correlation_id
from agent.metrics import ScanOutcome
from agent.printable import printable
from agent.queue.claims import ClaimState, Close, NewClaim, Reason
from agent.queue.sessions import (
    SessionEvent,
    SessionScan,
    SessionScanOutcome,
)
from agent.queue.store import Store

log = get_logger(__name__)

LIMITS = Limits(max_connections=16, header_bytes=16 * 1024, body_bytes=256 * 1024, timeout=5.0)
STORE_FAILED_MESSAGE = "BONIQ-code NIET opgeslagen: probeer opnieuw of gebruik het kassascherm"


_SCAN_OUTCOMES: dict[SessionScanOutcome, ScanOutcome] = {  # as the scan metric counts them
    SessionScanOutcome.LINKED: "accepted",
    SessionScanOutcome.SAME: "duplicate",
    SessionScanOutcome.SECOND_CODE: "rejected",
    SessionScanOutcome.RECENT_SALE: "rejected",
    SessionScanOutcome.PREVIOUS_SALE: "duplicate",
}


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]


class ReceiverEvents(Protocol):
    """What the receiver reports (metrics, feedback, the poller's wake-up)."""

    def webhook_scan(self, workplace: int, outcome: ScanOutcome) -> None: ...
    def closed(self, closes: list[Close]) -> None: ...
    def session_done(self) -> None: ...


class Receiver:
    """Turns one verified request into a reply; the HTTP side is `_Handler`."""

    def __init__(
        self,
        config: Config,
        store: Store,
        key: Callable[[], str],
        events: ReceiverEvents,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert config.kassa.webhooks is not None
        self.section: WebhooksSection = config.kassa.webhooks
        self.branch = config.store.branch
        self.rescan_guard = config.matching.recent_sale_guard
        self.url_hosts = config.codes.url_hosts
        self.store = store
        self.key = key
        self.events = events
        self.clock = clock
        self._key_form: str | None = None
        self._lock = threading.Lock()

    def keys(self) -> tuple[signature.Key, ...]:
        return signature.keys(self.key(), self.section.key_encoding)

    def handle(self, path: str, headers: Any, body: bytes) -> tuple[Reply, signature.Key | None]:
        """The reply to one request, and the key to sign it with (None: no key to sign with)."""
        try:
            keys = self.keys()
        except AgentError as exc:  # the key file went away: the till must not see "recognized"
            log.error(
                "webhook request not handled: the key cannot be read", extra=fields(reason=str(exc))
            )
            return Reply(503, {"error": {"code": "NO_KEY", "message": "not handled"}}), None
        try:
            used = self._verify(headers, body, keys)
        except Refused as exc:
            return self._refused(exc, path), keys[0]
        try:
            return self._dispatch(path, parse_json(body)), used
        except Refused as exc:
            return self._refused(exc, path), used

    # -- checks -----------------------------------------------------------------------------

    def _verify(self, headers: Any, body: bytes, keys: tuple[signature.Key, ...]) -> signature.Key:
        content_type = headers.get("Content-Type")
        if not content_type:
            raise Refused("NO_CONTENT_TYPE", "Content-Type is missing")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise Refused("INVALID_CONTENT_TYPE", "Content-Type must be application/json")
        subscription = headers.get("X-Mplus-Subscription-Id")
        if not subscription:
            raise Refused("NO_SUBSCRIPTION_ID", "X-Mplus-Subscription-Id is missing")
        if subscription.strip() != self.section.subscription_id:
            raise Refused(
                "INVALID_SUBSCRIPTION_ID",
                "X-Mplus-Subscription-Id is not this agent's subscription",
            )
        given = headers.get(signature.HEADER)
        if not given:
            raise Refused("NO_SIGNATURE", f"{signature.HEADER} is missing")
        used = signature.verify(given, body, keys)
        if used is None:
            raise Refused("INVALID_SIGNATURE", "the signature does not match the body")
        self._note_key_form(used)
        return used

    def _note_key_form(self, key: signature.Key) -> None:
        with self._lock:
            if self._key_form == key.form:
                return
            self._key_form = key.form
        log.info(
            "webhook signatures verify with the key as configured",
            extra=fields(
                key_form=key.form,
                key_encoding=self.section.key_encoding,
                hint=f"kassa.webhooks.key_encoding: {key.form} pins it",
            ),
        )

    def _refused(self, exc: Refused, path: str) -> Reply:
        log.warning(
            "webhook request refused",
            extra=fields(event=event_name(path) or "-", code=exc.code, reason=exc.message),
        )
        return Reply(400, {"error": {"code": exc.code, "message": exc.message}})

    # -- events -----------------------------------------------------------------------------

    def _dispatch(self, path: str, body: dict[str, Any]) -> Reply:
        if isinstance(body.get("error"), dict):
            return self._till_error(path, body["error"])
        event = event_name(path)
        if not event:
            raise Refused("INVALID_DATA", "no event name in the request path")
        if event not in SESSION_EVENTS:
            return Reply(200, {})
        request = envelope(event, body)
        return self._scan(request) if event == "scanCode" else self._session(request)

    def _till_error(self, path: str, error: dict[str, Any]) -> Reply:
        log.warning(
            "the till reports a problem with the agent's webhook reply",
            extra=fields(
                event=event_name(path) or "-",
                type=_short(error.get("type")),
                code=_short(error.get("code")),
                reason=_short(error.get("message")),
            ),
        )
        return Reply(200, {})

    def _scan(self, envelope: Envelope) -> Reply:
        details = envelope.body.get("scanCode")
        if not isinstance(details, dict):
            raise Refused("NO_EVENT_DETAILS", "scanCode without a scanCode object")
        scanned = details.get("scannedCode")
        if not isinstance(scanned, str) or not scanned:
            raise Refused("NO_SCANNED_CODE", "scanCode without scannedCode")
        try:
            code = codes.parse(scanned, url_hosts=self.url_hosts)
        except CodeRejected:
            return Reply(200, {"scanCode": {"recognized": False}})
        event = envelope.session
        if event.branch != self.branch:
            log.warning(
                "a BONIQ code scanned at another branch is not linked",
                extra=fields(branch=event.branch, workplace=event.workplace),
            )
            return Reply(200, {"scanCode": {"recognized": False}})
        now = self.clock()
        new = NewClaim(
            new_correlation_id(),
            code.kind,
            code.value,
            event.workplace,
            "webhook",
            scanned_at=now,
            pos_marker=None,
        )  # a session claim needs no marker
        try:
            scan = self.store.scan_in_session(
                replace(event, at=now), new, rescan_guard=self.rescan_guard
            )
        except StoreError as exc:
            log.error(
                "webhook scan NOT stored: the store refused it",
                extra=fields(workplace=event.workplace, reason=str(exc)),
            )
            self.events.webhook_scan(event.workplace, "failed")
            return Reply(200, {"scanCode": {"recognized": False, "message": STORE_FAILED_MESSAGE}})
        self._report_scan(event, scan)
        return Reply(200, {"scanCode": self._scan_reply(scan)})

    def _scan_reply(self, scan: SessionScan) -> dict[str, Any]:
        if scan.outcome is SessionScanOutcome.SECOND_CODE:
            return {"recognized": True, "message": self.section.second_code_message}
        if scan.outcome is SessionScanOutcome.RECENT_SALE:
            return {"recognized": True, "message": self.section.recent_sale_message}
        if scan.outcome is SessionScanOutcome.PREVIOUS_SALE:
            return {"recognized": True, "message": self.section.previous_sale_message}
        return {
            "recognized": True,
            "message": self.section.cashier_message,
            "customerMessage": self.section.customer_message,
        }

    def _report_scan(self, event: SessionEvent, scan: SessionScan) -> None:
        outcome = _SCAN_OUTCOMES[scan.outcome]
        with correlation(scan.claim.correlation_id):
            log.info(
                "webhook scan",
                extra=fields(
                    outcome=scan.outcome.value,
                    repeated=scan.replayed or None,
                    workplace=event.workplace,
                    session=event.session_id,
                    kind=scan.claim.customer_kind,
                    customer=mask_code(scan.claim.customer),
                ),
            )
        if not scan.replayed:
            self.events.webhook_scan(event.workplace, outcome)
            if scan.outcome is SessionScanOutcome.RECENT_SALE:
                self.events.closed([Close(scan.claim, ClaimState.UNSURE, Reason.RECENT_SALE)])

    def _session(self, envelope: Envelope) -> Reply:
        event = replace(envelope.session, at=self.clock())
        if not event.session_id:
            log.warning(
                "a session event without sessionId cannot be linked (MplusKASSA before "
                "59.4.2 sent this for split payments); its claim will expire",
                extra=fields(event=event.event, workplace=event.workplace),
            )
            return Reply(200, {})
        try:
            update = self.store.session_event(event)
        except StoreError as exc:
            log.error(
                "webhook session event NOT stored: the store refused it",
                extra=fields(event=event.event, workplace=event.workplace, reason=str(exc)),
            )
            return Reply(503, {"error": {"code": "STORE_FAILED", "message": "not stored"}})
        if update.closed:
            self.events.closed(update.closed)
        if event.event in ("completeSession", "creditSession") and not update.replayed:
            self.events.session_done()
        return Reply(200, {})


def _short(value: Any) -> str:
    return printable(str(value))[:200] if value is not None else "-"


class _Handler(Handler):
    def do_POST(self) -> None:
        body = self.read_body()
        receiver: Receiver = self.context
        try:
            reply, key = receiver.handle(self.path, self.headers, body)
        except Exception as exc:  # noqa: BLE001 - a bug must cost this request, not the listener
            log.error("webhook request failed", extra=fields(error=type(exc).__name__))
            reply, key = Reply(500, {"error": {"code": "INTERNAL", "message": "failed"}}), None
        data = json.dumps(reply.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        signed = {signature.HEADER: signature.sign(key, data)} if key is not None else {}
        self.reply(reply.status, data, "application/json", signed)

    def do_GET(self) -> None:
        self.reply(405, b"webhooks are POSTed\n", headers={"Allow": "POST"})


def serve_receiver(receiver: Receiver) -> Server | None:
    return serve(
        receiver.section.listen,
        _Handler,
        limits=LIMITS,
        name="webhooks",
        context=receiver,
        key="kassa.webhooks.listen",
    )
