"""The BONIQ cloud as the agent speaks to it (docs/cloud-api.md): one client, built once.

`CloudClient.post_receipt` sends one outbox row and classifies the answer: 201/200 delivered;
400/409/422 `CloudRejected` with the server's reason; 401/403 `CloudAuthError`; everything else
(408/425/429/5xx, unexpected statuses, network, TLS, timeouts) `CloudTransient`, with the
Retry-After it carried. The answer is read capped; reasons are cut, redacted and e-mails masked.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import agent
from agent.errors import CloudAuthError, CloudRejected, CloudTransient
from agent.http import Answer, HttpError, Transport, secret_reader
from agent.logs import fields, get_logger, redact, register_secret

log = get_logger(__name__)

DELIVERED = (200, 201)
REJECTED = (400, 409, 422)
AUTH_FAILED = (401, 403)
MAX_ANSWER = 64 * 1024
MAX_RETRY_AFTER = 24 * 3600.0
_ANY_EMAIL = re.compile(r"([^\s'\"@:{,])[^\s'\"@]*@([^\s'\"@]*)")  # invalid addresses too


@dataclass(frozen=True)
class Delivered:
    status: int
    cloud_id: str | None


class CloudClient:
    """POST /v1/receipts with the bearer token; safe to use from several threads."""

    def __init__(
        self,
        url: str,
        token: str | Callable[[], str],
        *,
        ca_bundle: str | None = None,
        timeout: float | tuple[float, float] = 10.0,
        proxy: str | None = None,
        user_agent: str = f"boniq-agent/{agent.__version__}",
    ) -> None:
        """`token`: the token, or a function that reads it again (a rotated token file or
        credential is picked up by `reload_token`, called on a 401/403)."""
        self._token_source = secret_reader(token)
        first = self._token_source()
        register_secret(first)
        self.endpoint = url.rstrip("/") + "/v1/receipts"
        self.ca_bundle = ca_bundle
        self._transport = Transport(
            timeout=timeout, max_bytes=MAX_ANSWER, ca_bundle=ca_bundle, proxy=proxy, truncate=True
        )
        self._lock = threading.Lock()
        self._headers = {
            "Authorization": f"Bearer {first}",
            "Content-Type": "application/json",
            "User-Agent": user_agent,
        }

    def post_receipt(self, body: bytes, idempotency_key: str) -> Delivered:
        """Raises CloudRejected, CloudAuthError or CloudTransient."""
        headers = {**self._headers, "Idempotency-Key": idempotency_key}
        try:
            answer = self._transport.request("POST", self.endpoint, data=body, headers=headers)
        except HttpError as exc:
            raise CloudTransient(f"{exc.label}: {_short(str(exc))}") from None
        return _classify(answer)

    def reload_token(self) -> bool:
        """Read the token again; True when store IT has put a new one in place."""
        try:
            token = self._token_source()
        except Exception as exc:  # noqa: BLE001 - a half-written file must not stop the uploader
            log.warning("cannot read the cloud token again", extra=fields(reason=str(exc)))
            return False
        with self._lock:
            if self._headers["Authorization"] == f"Bearer {token}":
                return False
            register_secret(token)
            self._headers = {**self._headers, "Authorization": f"Bearer {token}"}
        log.warning("the cloud token changed; retrying with the new one")
        return True

    def close(self) -> None:
        self._transport.close()


def _classify(answer: Answer) -> Delivered:
    status = answer.status
    text = answer.body.decode("utf-8", "replace")
    if status in DELIVERED:
        return Delivered(status, _cloud_id(text))
    reason = f"HTTP {status}: {_server_reason(text)}"
    if status in REJECTED:
        raise CloudRejected(reason)
    if status in AUTH_FAILED:
        raise CloudAuthError(reason)
    retry_after = _parse_retry_after(answer.headers.get("Retry-After"))
    raise CloudTransient(reason, retry_after=retry_after)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: `[[[[…` nested past the C stack guard
        return None


def _cloud_id(text: str) -> str | None:
    body = _json(text)
    value = body.get("id") if isinstance(body, dict) else None
    return str(value)[:128] if value is not None else None


def _server_reason(text: str) -> str:
    body = _json(text)
    if not isinstance(body, dict):
        return _short(text.strip()) or "(no body)"
    reason = str(body.get("error") or "(no error message)")
    details = body.get("details")
    if isinstance(details, list) and details:
        reason += "; details: " + "; ".join(str(d) for d in details)
    return _short(reason, 500)


def _short(text: str, limit: int = 200) -> str:
    # Cut before masking: _ANY_EMAIL is quadratic on a long run without `@` (25 s for 64 KB).
    text = _ANY_EMAIL.sub(r"\1***@\2", redact(" ".join(text[: 4 * limit].split())))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After (delay-seconds or an HTTP date) as seconds from now; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not `²`: str.isdigit() takes it, float() does not
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER)
