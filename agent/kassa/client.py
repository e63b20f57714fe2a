"""The MplusKASSA SOAP calls the agent needs, over one `requests.Session`.

Every failure is one of KassaTransient (retry), KassaRejected (fix request or credentials) or
KassaResponseError (malformed, hostile, oversized answer). Messages never carry the URL query:
`ident` and `secret` travel as query parameters, so requests' own exceptions are replaced, not
chained. The transport (`agent.http`) gives each call one wall-clock deadline, connect to last
byte, so a server that trickles its headers or answer cannot hold the poller.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, quote_plus
from xml.etree.ElementTree import Element

import requests

from agent.errors import KassaError, KassaRejected, KassaResponseError, KassaTransient
from agent.http import (
    HttpError,
    HttpTimeout,
    HttpTLSError,
    HttpTooLarge,
    HttpUnreachable,
    Transport,
    secret_reader,
    timeouts,
)
from agent.kassa import soap
from agent.kassa.consumers import WebhookConsumer, parse_consumer
from agent.kassa.receipt import (
    INTEGER,
    Branch,
    Receipt,
    VatGroup,
    parse_branch,
    parse_datetime,
    parse_receipt,
    parse_vat_group,
)
from agent.logs import fields, get_logger, redact_url, register_secret

log = get_logger(__name__)

MAX_ANSWER = 8_000_000
"""Bytes of one POS answer: 100 receipts with 40 lines each are 2.4 MB, with 1–6 lines 0.4 MB."""


@dataclass(frozen=True)
class Unreadable:
    """A receipt in a getReceipts answer that could not be parsed: what little is known of it."""

    receipt_id: str | None
    sync_marker: int | None
    workplace: int | None
    reason: str


@dataclass(frozen=True)
class ReceiptBatch:
    receipts: list[Receipt]
    unreadable: list[Unreadable]

    @property
    def markers(self) -> list[int]:
        return [r.sync_marker for r in self.receipts] + [
            u.sync_marker for u in self.unreadable if u.sync_marker is not None
        ]


def _unreadable(element: Element, reason: str) -> Unreadable:
    def number(name: str) -> int | None:
        value = (soap.text(element, name) or "").strip()
        return int(value) if INTEGER.fullmatch(value) else None  # not isdigit(): `²` is a digit

    return Unreadable(
        soap.text(element, "receiptId"), number("syncMarker"), number("workplaceNumber"), reason
    )


class KassaClient:
    def __init__(
        self,
        url: str,
        ident: str,
        secret: str | Callable[[], str],
        *,
        timeout: float | tuple[float, float] = 10.0,
        max_response_bytes: int = MAX_ANSWER,
        session: requests.Session | None = None,
        verify: bool | str = True,
        deadline: float | None = None,
        proxy: str | None = None,
    ) -> None:
        """`timeout`: seconds for a whole call (see `agent.http.timeouts`); `deadline` overrides
        its total. `verify`: True or the path of a CA bundle."""
        self._secret_source = secret_reader(secret)
        secret = self._secret_source()
        register_secret(secret)
        self._url = url
        self._where = redact_url(url.split("?", 1)[0])
        self._auth = {"ident": ident, "secret": secret}
        self._transport = Transport(
            timeout=timeout if deadline is None else _with_total(timeout, deadline),
            max_bytes=max_response_bytes,
            ca_bundle=verify if isinstance(verify, str) else None,
            proxy=proxy,
            session=session,
        )

    def __repr__(self) -> str:
        return f"KassaClient({self._where!r})"

    def close(self) -> None:
        self._transport.close()

    # -- calls -------------------------------------------------------------------------------

    def get_api_version(self) -> str:
        response = self._call("getApiVersion")
        parts = [soap.text(response, n) for n in ("majorNumber", "minorNumber", "revisionNumber")]
        if not parts[0]:
            raise KassaResponseError("getApiVersion answer holds no majorNumber")
        return ".".join(p for p in parts if p)

    def get_server_time(self) -> datetime | None:
        """The POS's own clock (`getApiVersion` `serverDateTime`), None when it sends none."""
        found = soap.child(self._call("getApiVersion"), "serverDateTime")
        return parse_datetime(found) if found is not None else None

    def get_current_sync_markers(self) -> dict[str, int]:
        """`{"receipt": 18232, …}`: every `<entity>SyncMarker` in the answer."""
        response = self._call(
            "getCurrentSyncMarkersV2", {"request": {"includeReceiptSyncMarker": True}}
        )
        markers: dict[str, int] = {}
        for item in response:
            name = soap.local_name(item.tag)
            if name.endswith("SyncMarker") and INTEGER.fullmatch((item.text or "").strip()):
                markers[name.removesuffix("SyncMarker")] = int((item.text or "").strip())
        if "receipt" not in markers:
            raise KassaResponseError("getCurrentSyncMarkersV2 answer holds no receiptSyncMarker")
        return markers

    def reload_secret(self) -> bool:
        """Read the secret again (a rotated secret file or credential); True when it changed."""
        try:
            secret = self._secret_source()
        except Exception as exc:  # noqa: BLE001 - a half-written file: keep the old secret
            log.warning("cannot read the POS secret again", extra=fields(reason=str(exc)))
            return False
        if secret == self._auth["secret"]:
            return False
        register_secret(secret)
        self._auth = {**self._auth, "secret": secret}
        log.warning("the POS secret changed; polling with the new one")
        return True

    def get_receipts(self, branch: int, sync_marker: int, limit: int = 100) -> list[Receipt]:
        """Receipts of `branch` with syncMarker >= `sync_marker` (pass last seen + 1), oldest first.

        Raises KassaResponseError if any receipt cannot be read; `fetch_receipts` keeps going."""
        batch = self.fetch_receipts(branch, sync_marker, limit)
        if batch.unreadable:
            raise KassaResponseError(batch.unreadable[0].reason)
        return batch.receipts

    def fetch_receipts(self, branch: int, sync_marker: int, limit: int = 100) -> ReceiptBatch:
        """Like `get_receipts`, but one receipt that cannot be read does not hide the others."""
        request = {
            "syncMarker": sync_marker,
            "syncMarkerLimit": limit,
            "branchNumbers": [branch],
            "articlePluNumbers": {},
            "articleBarcodes": {},
            "includeLineList": True,
        }
        response = self._call("getReceipts", {"request": request})
        batch = ReceiptBatch([], [])
        for element in soap.descendants(response, "receipt", having="receiptId"):
            try:
                batch.receipts.append(parse_receipt(element))
            except (KassaResponseError, ValueError, OverflowError) as exc:
                batch.unreadable.append(_unreadable(element, str(exc)))
        batch.receipts.sort(key=lambda r: r.sync_marker)
        return batch

    def get_receipt(self, receipt_id: str) -> Receipt | None:
        response = self._call("getReceipt", {"receiptId": receipt_id})
        result = soap.text(response, "result") or ""
        found = soap.child(response, "receipt")
        if result.endswith("NOT-FOUND") or found is None:
            return None
        return parse_receipt(found)

    def get_branches(self) -> list[Branch]:
        response = self._call("getBranches")
        return [
            parse_branch(e) for e in soap.descendants(response, "branch", having="branchNumber")
        ]

    def get_payment_methods(self) -> dict[str, str]:
        """Payment method code → description (e.g. `PIN` → `Pinbetaling`)."""
        response = self._call("getPaymentMethods")
        methods: dict[str, str] = {}
        for item in soap.descendants(response, "paymentMethod", having="method"):
            code = soap.text(item, "method") or ""
            methods[code] = soap.text(item, "description") or soap.text(item, "buttonText") or code
        return methods

    def get_vat_groups(self) -> list[VatGroup]:
        response = self._call("getVatGroupList")
        return [
            parse_vat_group(e) for e in soap.descendants(response, "vatGroup", having="vatCode")
        ]

    def get_webhook_consumers(self, branch: int, workplace: int) -> list[WebhookConsumer]:
        """The webhook consumers as the POS resolves them for this workplace."""
        workplace_key = {"branchNumber": branch, "workplaceNumber": workplace}
        response = self._call("getWebhookConsumers", {"request": {"workplace": workplace_key}})
        return [
            parse_consumer(e)
            for e in soap.descendants(response, "webhookConsumer", having="endpointUrl")
        ]

    # -- transport ---------------------------------------------------------------------------

    def _call(self, operation: str, params: dict[str, Any] | None = None) -> Element:
        started = time.monotonic()
        try:
            status, body = self._exchange(operation, soap.request_envelope(operation, params))
            result = self._interpret(operation, status, body)
        except KassaError as exc:
            log.debug(
                "MplusKASSA call failed",
                extra=fields(op=operation, error=type(exc).__name__, ms=_ms(started)),
            )
            raise self._scrubbed(exc) from None
        log.debug(
            "MplusKASSA call done",
            extra=fields(op=operation, bytes=len(body), ms=_ms(started)),
        )
        return result

    def _exchange(self, operation: str, envelope: bytes) -> tuple[int, bytes]:
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": operation,
            "X-Request-Id": f"boniq-{uuid.uuid4().hex[:16]}",
        }
        try:
            answer = self._transport.request(
                "POST", self._url, params=self._auth, data=envelope, headers=headers
            )
        except HttpError as exc:
            failure = self._failure(operation, exc)
        else:
            return answer.status, answer.body
        raise failure

    def _failure(self, operation: str, exc: HttpError) -> KassaError:
        if isinstance(exc, HttpTooLarge):
            return KassaResponseError(f"MplusKASSA answer to {operation}: {exc}")
        if isinstance(exc, HttpTimeout):
            return KassaTransient(
                f"MplusKASSA API at {self._where} did not answer {operation} in time ({exc})"
            )
        if isinstance(exc, HttpTLSError):
            return KassaTransient(
                f"TLS with the MplusKASSA API at {self._where} failed for {operation}: {exc}"
            )
        if isinstance(exc, HttpUnreachable):
            return KassaTransient(
                f"MplusKASSA API at {self._where} unreachable or hung up on {operation}"
            )
        return KassaTransient(f"MplusKASSA API request {operation} failed: {exc}")

    def _interpret(self, operation: str, status: int, body: bytes) -> Element:
        try:
            result = soap.parse_response(body, operation)
        except KassaResponseError:
            if status == 200:
                raise
            raise _status_error(operation, status) from None
        if status != 200:
            raise _status_error(operation, status)
        return result

    def _scrubbed(self, exc: KassaError) -> KassaError:
        """The same error with the credentials blotted out of server-supplied text."""
        message = str(exc)
        for value in self._auth.values():
            if len(value) >= 3:
                for form in sorted(
                    {value, quote(value, safe=""), quote_plus(value)}, key=len, reverse=True
                ):  # a fault may echo the query %-encoded
                    message = message.replace(form, "[REDACTED]")
        return type(exc)(redact_url(message))


def _status_error(operation: str, status: int) -> KassaError:
    if status >= 500 or status in (408, 425, 429):
        return KassaTransient(f"MplusKASSA API answered {operation} with HTTP {status}")
    if status in (401, 403):
        return KassaRejected(
            f"MplusKASSA API refused the credentials (HTTP {status}) for {operation}"
        )
    return KassaRejected(f"MplusKASSA API answered {operation} with HTTP {status}; check kassa.url")


def _with_total(timeout: float | tuple[float, float], total: float) -> tuple[float, float]:
    t = timeouts(timeout)
    return (min(t.connect, total), total - min(t.connect, total))


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
