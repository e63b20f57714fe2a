"""Who may use the cashier screen, and which requests are refused before they do anything.

- On loopback the page needs no PIN, but the Host header must name loopback, so a web page that
  rebinds its own DNS name to 127.0.0.1 cannot read the page (and with it the CSRF token).
- Anywhere else `cashier.pin` is required: a wrong PIN five times within a minute locks the login
  for a minute; a right one gives an HttpOnly, SameSite=Strict session cookie.
- Every state-changing request carries the CSRF token in a header (which also forces a CORS
  preflight that is never granted) and is refused when the browser says it is cross-origin.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from email.message import Message

SESSION_COOKIE = "boniq_cashier"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 64
LOCK_AFTER = 5
LOCK_SECONDS = 60.0
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.strip().rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def is_loopback_listen(listen: str) -> bool:
    return _is_loopback_host(split_listen(listen)[0])


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class Guard:
    """The access decisions of one running cashier server (tokens live as long as the process)."""

    def __init__(
        self, *, pin: str | None, loopback: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.pin = pin
        self.loopback = loopback
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._sessions: OrderedDict[str, float] = OrderedDict()
        self._failures: deque[float] = deque(maxlen=LOCK_AFTER)
        self._lock = threading.Lock()

    # -- host and origin ------------------------------------------------------------------------

    def host_allowed(self, host_header: str | None) -> bool:
        """On loopback only a loopback Host; behind a PIN any Host (a tablet uses the IP)."""
        if not self.loopback:
            return True
        return bool(host_header) and _is_loopback_host(_host_of(host_header or ""))

    @staticmethod
    def cross_origin(headers: Mapping[str, str] | Message, host_header: str | None) -> bool:
        """What the browser tells about where the request comes from (absent for curl)."""
        site = headers.get("Sec-Fetch-Site")
        if site is not None and site.lower() not in ("same-origin", "none"):
            return True
        origin = headers.get("Origin")
        if origin is None:
            return False
        return origin.lower() not in {
            f"http://{(host_header or '').lower()}",
            f"https://{(host_header or '').lower()}",
        }

    # -- sessions and the PIN -------------------------------------------------------------------

    def session(self, cookie_header: str | None) -> str | None:
        """The caller's session id: "" when no PIN is needed, None when they must log in."""
        if self.pin is None:
            return ""
        token = _cookie(cookie_header, SESSION_COOKIE)
        with self._lock:
            started = self._sessions.get(token or "")
            if started is None or self._clock() - started > SESSION_SECONDS:
                return None
        return token

    def locked(self) -> bool:
        with self._lock:
            return (
                len(self._failures) == LOCK_AFTER
                and self._clock() - self._failures[0] < LOCK_SECONDS
            )

    def login(self, pin: str) -> str | None:
        """A new session id for the right PIN; None for a wrong one or while locked."""
        if self.pin is None or self.locked():
            return None
        if not hmac.compare_digest(pin.encode(), self.pin.encode()):
            with self._lock:
                self._failures.append(self._clock())
            return None
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._failures.clear()
            self._sessions[token] = self._clock()
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return token

    # -- CSRF -------------------------------------------------------------------------------------

    def csrf_token(self, session: str) -> str:
        """Bound to the session (or to the process when there is no PIN)."""
        return hmac.new(self._key, f"csrf:{session}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(session), token or "")


def _cookie(header: str | None, name: str) -> str | None:
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
