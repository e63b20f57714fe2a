"""The cashier screen's HTTP server: the page, its static files and a two-call JSON API.

    GET  /                the page (or the PIN form when `cashier.pin` is set)
    GET  /static/NAME     the page's script, style sheet and icons
    GET  /api/outcomes    the feed; `ETag`/`If-None-Match`, so the page's twice-a-second poll
                          costs one small query and a 304 most of the time
    POST /api/claim       {"address": "..."}: goes through `Daemon.on_scan` like any scan
    POST /login           pin=...: a session cookie

Short polling rather than server-sent events: the listener caps connections and cuts slow ones,
and an open event stream per screen would hold a slot and look like a slow client.
"""

from __future__ import annotations

import hashlib
import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from agent.cashier.access import (
    CSRF_HEADER,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Guard,
    is_loopback_listen,
)
from agent.cashier.outcomes import STORE_FAILED, ClaimSource, RefusedScans, feed
from agent.cashier.texts import OUTCOMES, PAGE, reason_text
from agent.config import CashierSection
from agent.listener import Handler, Limits, Server
from agent.listener import serve as listen_on
from agent.logs import fields, get_logger, mask_code
from agent.scanner.base import ScanEvent

log = get_logger(__name__)

SOURCE = "cashier"
LIMITS = Limits(max_connections=32, header_bytes=8 * 1024, body_bytes=2 * 1024, timeout=10.0)
POLL_MS = 500
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make a form POST say Origin: null
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _static(name: str) -> bytes | None:
    try:
        return resources.files("agent.cashier").joinpath("static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def render(template: str, values: dict[str, str]) -> bytes:
    """`{{key}}` → the HTML-escaped value; the templates hold no other markup logic."""
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", html.escape(value, quote=True))
    return template.encode()


@dataclass
class CashierApp:
    """What the handler needs from the daemon; tests build one around a real Daemon."""

    scan: Callable[[ScanEvent], Any]  # Daemon.on_scan: returns a ScanOutcome
    store: ClaimSource
    refused: RefusedScans
    workplace: int
    language: str
    guard: Guard

    def outcomes(self) -> list[dict[str, Any]]:
        return [
            e.as_json()
            for e in feed(
                self.store, self.refused, workplace=self.workplace, language=self.language
            )
        ]

    def claim(self, address: str) -> dict[str, Any]:
        result = self.scan(ScanEvent(address, SOURCE, None, time.time()))
        outcome = result.outcome
        if outcome in ("accepted", "duplicate"):
            icon, title, detail = OUTCOMES[self.language]["pending"]
            if outcome == "duplicate":
                detail = PAGE[self.language]["duplicate"]
            return {
                "outcome": outcome,
                "icon": icon,
                "detail": detail,
                "title": f"{title} {mask_code(result.claim.customer)}",
            }
        icon, title, _ = OUTCOMES[self.language]["rejected"]
        reason = STORE_FAILED if outcome == "failed" else result.reason
        return {
            "outcome": "rejected",
            "icon": icon,
            "title": title,
            "detail": reason_text(reason, self.language),
        }


class CashierHandler(Handler):
    context: CashierApp

    # -- routing ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        path = self.path.partition("?")[0]
        if path.startswith("/static/"):
            return self._send_static(path[len("/static/") :])
        session = self.context.guard.session(self.headers.get("Cookie"))
        if path == "/":
            return self._send_page(session)
        if path == "/api/outcomes":
            if session is None:
                return self._json(401, {"error": "log in with the till PIN"})
            return self._send_outcomes()
        self._send(404, b"not found\n")

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        guard = self.context.guard
        if guard.cross_origin(self.headers, self.headers.get("Host")):
            log.warning(
                "cashier screen: cross-origin request refused", extra=fields(path=self.path[:64])
            )
            return self._json(403, {"error": "cross-origin request refused"})
        path = self.path.partition("?")[0]
        if path == "/login":
            return self._login()
        if path != "/api/claim":
            return self._send(404, b"not found\n")
        session = guard.session(self.headers.get("Cookie"))
        if session is None:
            return self._json(401, {"error": "log in with the till PIN"})
        if not guard.csrf_ok(session, self.headers.get(CSRF_HEADER)):
            log.warning("cashier screen: request without a valid CSRF token refused")
            return self._json(403, {"error": "missing or wrong CSRF token"})
        address = self._address()
        if address is None:
            return self._json(400, {"error": 'send JSON {"address": "..."}'})
        self._json(200, self.context.claim(address))

    # -- pieces --------------------------------------------------------------------------------

    def _host_ok(self) -> bool:
        if self.context.guard.host_allowed(self.headers.get("Host")):
            return True
        self._send(421, b"this page only answers on 127.0.0.1 or localhost\n")
        return False

    def _address(self) -> str | None:
        if self.headers.get_content_type() != "application/json":
            return None
        try:
            data = json.loads(self.read_body())
        except (ValueError, UnicodeDecodeError):
            return None
        address = data.get("address") if isinstance(data, dict) else None
        return address if isinstance(address, str) else None

    def _send_page(self, session: str | None) -> None:
        language = self.context.language
        texts = dict(PAGE[language], till_number=str(self.context.workplace), poll_ms=str(POLL_MS))
        if session is None:
            message = ""
            if "wrong" in self.path:
                message = PAGE[language][
                    "pin_locked" if self.context.guard.locked() else "pin_wrong"
                ]
            texts.update(csrf=self.context.guard.csrf_token(""), message=message)
            return self._send(
                200, render(_template("login.html"), texts), "text/html; charset=utf-8"
            )
        texts["csrf"] = self.context.guard.csrf_token(session)
        self._send(200, render(_template("page.html"), texts), "text/html; charset=utf-8")

    def _send_outcomes(self) -> None:
        entries = self.context.outcomes()
        version = hashlib.sha256("|".join(e["key"] for e in entries).encode()).hexdigest()
        etag = f'"{version[:20]}"'
        if self.headers.get("If-None-Match") == etag:
            return self._send(304, b"", headers={"ETag": etag})
        self._json(200, {"entries": entries}, headers={"ETag": etag})

    def _send_static(self, name: str) -> None:
        suffix = name[name.rfind(".") :] if "." in name else ""
        body = _static(name) if "/" not in name and suffix in _STATIC_TYPES else None
        if body is None:
            return self._send(404, b"not found\n")
        self._send(200, body, _STATIC_TYPES[suffix])

    def _login(self) -> None:
        guard = self.context.guard
        if not guard.csrf_ok("", self.headers.get(CSRF_HEADER) or self._form().get("csrf")):
            return self._json(403, {"error": "missing or wrong CSRF token"})
        session = guard.login(self._form().get("pin", ""))
        if session is None:
            log.warning("cashier screen: wrong PIN", extra=fields(locked=guard.locked()))
            return self._send(303, b"", headers={"Location": "/?wrong=1"})
        cookie = (
            f"{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; "
            f"Max-Age={SESSION_SECONDS}"
        )
        self._send(303, b"", headers={"Location": "/", "Set-Cookie": cookie})

    def _form(self) -> dict[str, str]:
        if not hasattr(self, "_form_cache"):
            body = self.read_body().decode("utf-8", errors="replace")
            self._form_cache = {k: v[0] for k, v in parse_qs(body).items()}
        return self._form_cache

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(
            status,
            json.dumps(data, ensure_ascii=False).encode(),
            "application/json; charset=utf-8",
            headers,
        )

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.reply(status, body, content_type, {**_SECURITY_HEADERS, **(headers or {})})


def _template(name: str) -> str:
    body = _static(name)
    assert body is not None, f"agent/cashier/static/{name} is missing from the package"
    return body.decode()


def serve(
    section: CashierSection,
    *,
    scan: Callable[[ScanEvent], Any],
    store: ClaimSource,
    refused: RefusedScans,
    workplace: int,
) -> Server | None:
    """Start the cashier screen on `cashier.listen`; None when it is empty or cannot be bound."""
    if not section.listen.strip():
        return None
    pin = section.pin.get_secret_value() if section.pin is not None else None
    guard = Guard(pin=pin, loopback=is_loopback_listen(section.listen))
    app = CashierApp(scan, store, refused, workplace, section.language, guard)
    return listen_on(section.listen, CashierHandler, limits=LIMITS, name="cashier", context=app)


__all__ = ["CashierApp", "CashierHandler", "serve"]
