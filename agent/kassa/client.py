"""The MplusKASSA SOAP calls the agent needs, over one `requests.Session`.

Every failure is one of KassaTransient (retry), KassaRejected (fix request or credentials) or
KassaResponseError (malformed, hostile, oversized answer). Messages never carry the URL query:
`ident` and `secret` travel as query parameters, so requests' own exceptions are replaced, not
chained. Each call has a total deadline besides requests' per-read timeout, so a server that
trickles its answer forever cannot hold the poller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.etree.ElementTree import Element

import requests
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from agent.errors import KassaError, KassaRejected, KassaResponseError, KassaTransient
from agent.kassa import soap
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

_READ_CHUNK = 16_384
_DEADLINE_FACTOR = 3.0


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
            u.sync_marker for u in self.unreadable if u.sync_marker is not None]


def _unreadable(element: Element, reason: str) -> Unreadable:
    def number(name: str) -> int | None:
        value = (soap.text(element, name) or "").strip()
        return int(value) if INTEGER.fullmatch(value) else None  # not isdigit(): `²` is a digit

    return Unreadable(soap.text(element, "receiptId"), number("syncMarker"),
                      number("workplaceNumber"), reason)


class KassaClient:
    def __init__(
        self,
        url: str,
        ident: str,
        secret: str | Callable[[], str],
        *,
        timeout: tuple[float, float] = (3.05, 10.0),
        max_response_bytes: int = 20_000_000,
        session: requests.Session | None = None,
        verify: bool | str = True,
        deadline: float | None = None,
    ) -> None:
        self._secret_source: Callable[[], str] = secret if callable(secret) else (lambda: secret)
        secret = self._secret_source()
        register_secret(secret)
        self._url = url
        self._where = redact_url(url.split("?", 1)[0])
        self._auth = {"ident": ident, "secret": secret}
        self._timeout = timeout
        self._deadline = (
            deadline
            if deadline is not None
            else timeout[0] + _DEADLINE_FACTOR * timeout[1]
        )
        self._max_bytes = max_response_bytes
        self._session = session or requests.Session()
        self._verify = verify

    def __repr__(self) -> str:
        return f"KassaClient({self._where!r})"

    def close(self) -> None:
        self._session.close()

    # -- calls -------------------------------------------------------------------------------

    def get_api_version(self) -> str:
        response = self._call("getApiVersion")
        parts = [
            soap.text(response, n)
            for n in ("majorNumber", "minorNumber", "revisionNumber")
        ]
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
                markers[name.removesuffix("SyncMarker")] = int(item.text.strip())
        if "receipt" not in markers:
            raise KassaResponseError(
                "getCurrentSyncMarkersV2 answer holds no receiptSyncMarker"
            )
        return markers

    def reload_secret(self) -> bool:
        """Read the secret again (a rotated secret file or credential); True when it changed."""
        try:
            secret = self._secret_source()
        except Exception as exc:  # a half-written file: keep the old secret
            log.warning("cannot read the POS secret again", extra=fields(reason=str(exc)))
            return False
        if secret == self._auth["secret"]:
            return False
        register_secret(secret)
        self._auth = {**self._auth, "secret": secret}
        log.warning("the POS secret changed; polling with the new one")
        return True

    def get_receipts(
        self, branch: int, sync_marker: int, limit: int = 100
    ) -> list[Receipt]:
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
            parse_branch(e)
            for e in soap.descendants(response, "branch", having="branchNumber")
        ]

    def get_payment_methods(self) -> dict[str, str]:
        """Payment method code → description (e.g. `PIN` → `Pinbetaling`)."""
        response = self._call("getPaymentMethods")
        methods: dict[str, str] = {}
        for item in soap.descendants(response, "paymentMethod", having="method"):
            code = soap.text(item, "method") or ""
            methods[code] = (
                soap.text(item, "description") or soap.text(item, "buttonText") or code
            )
        return methods

    def get_vat_groups(self) -> list[VatGroup]:
        response = self._call("getVatGroupList")
        return [
            parse_vat_group(e)
            for e in soap.descendants(response, "vatGroup", having="vatCode")
        ]

    # -- transport ---------------------------------------------------------------------------

    def _call(self, operation: str, params: dict[str, Any] | None = None) -> Element:
        started = time.monotonic()
        try:
            status, body = self._exchange(
                operation, soap.request_envelope(operation, params)
            )
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
        deadline = time.monotonic() + self._deadline
        failure: KassaError | None = None
        try:
            response = self._session.post(
                self._url,
                params=self._auth,
                data=envelope,
                headers=headers,
                timeout=self._timeout,
                stream=True,
                verify=self._verify,
            )
        except requests.Timeout:
            failure = KassaTransient(
                f"MplusKASSA API at {self._where} did not answer {operation} in time"
            )
        except requests.exceptions.SSLError:
            failure = KassaTransient(
                f"TLS with the MplusKASSA API at {self._where} failed for {operation}"
            )
        except requests.ConnectionError:
            failure = KassaTransient(
                f"MplusKASSA API at {self._where} unreachable or hung up on {operation}"
            )
        except requests.RequestException as exc:
            failure = KassaTransient(
                f"MplusKASSA API request {operation} failed ({type(exc).__name__})"
            )
        if failure is not None:
            raise failure
        with response:
            return response.status_code, self._read_body(response, operation, deadline)

    def _read_body(
        self, response: requests.Response, operation: str, deadline: float
    ) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise KassaResponseError(
                f"MplusKASSA answer to {operation} is {int(declared)} bytes, over the {self._max_bytes} limit"
            )
        body = bytearray()
        failure: KassaError | None = None
        try:
            while chunk := response.raw.read1(_READ_CHUNK, decode_content=True):
                body += chunk
                if len(body) > self._max_bytes:
                    failure = KassaResponseError(
                        f"MplusKASSA answer to {operation} exceeds the {self._max_bytes} byte limit"
                    )
                    break
                if time.monotonic() > deadline:
                    failure = KassaTransient(
                        f"MplusKASSA answer to {operation} still incomplete after {self._deadline:.1f} s"
                    )
                    break
        except ReadTimeoutError:
            failure = KassaTransient(
                f"MplusKASSA API stalled while sending {operation}"
            )
        except Urllib3Error as exc:
            failure = KassaTransient(
                f"MplusKASSA API broke off its answer to {operation} ({type(exc).__name__})"
            )
        except OSError as exc:
            failure = KassaTransient(
                f"MplusKASSA connection lost during {operation} ({type(exc).__name__})"
            )
        if failure is not None:
            raise failure
        return bytes(body)

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
                message = message.replace(value, "[REDACTED]")
        return type(exc)(redact_url(message))


def _status_error(operation: str, status: int) -> KassaError:
    if status >= 500 or status in (408, 425, 429):
        return KassaTransient(f"MplusKASSA API answered {operation} with HTTP {status}")
    if status in (401, 403):
        return KassaRejected(
            f"MplusKASSA API refused the credentials (HTTP {status}) for {operation}"
        )
    return KassaRejected(
        f"MplusKASSA API answered {operation} with HTTP {status}; check kassa.url"
    )


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
