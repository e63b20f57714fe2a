"""One transport for every outgoing request of the agent (the POS API, the BONIQ cloud, doctor).

The rules, in one place:

- **One wall-clock deadline per request**, connect to last byte (`Timeouts.total`). requests'
  own read timeout restarts with every byte, so a server trickling one header byte a second
  would hold a call for ever; here a reaper thread shuts the socket down when the deadline
  passes, whatever phase the request is in (TLS handshake, headers, body).
- **Timeouts from one figure**: the configured `timeout` is the total; the TCP connect gets
  `min(CONNECT_TIMEOUT, timeout)`, each read may wait up to the total (`timeouts()`).
- **A capped answer**: at most `max_bytes`, refused early by Content-Length, cut while reading.
- **No ambient configuration**: no proxy, `.netrc` or CA bundle from the environment
  (`trust_env=False`), no redirects (the POS secret travels in the query string); an explicit
  proxy and CA bundle are parameters.

Failures are `HttpError` subclasses whose messages hold no URL (URLs carry credentials).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import HTTPError as Urllib3Error

from agent.errors import AgentError
from agent.http_deadline import Deadline, DeadlineAdapter

CONNECT_TIMEOUT = 3.0
"""Seconds for a TCP connect: a POS on the shop LAN or a cloud edge answers a SYN in far less;
longer means the host is down or the route is broken, and the rest of the budget is better spent
trying again."""

_READ_CHUNK = 16_384


class HttpError(AgentError):
    """An outgoing request failed; the message is safe to log (no URL, no credentials)."""

    label = "HTTPError"  # the short name operators know from requests' exceptions


class HttpTimeout(HttpError):
    """The request did not complete within its deadline."""

    label = "Timeout"


class HttpUnreachable(HttpError):
    """No connection could be made, or the server hung up before answering."""

    label = "ConnectionError"


class HttpTLSError(HttpError):
    """TLS failed: the certificate, the handshake or the CA bundle."""

    label = "SSLError"


class HttpBroken(HttpError):
    """The server broke off its answer."""

    label = "ConnectionError"


class HttpTooLarge(HttpError):
    """The answer is longer than the cap; `declared` is its Content-Length if that said so."""

    label = "TooLarge"

    def __init__(self, message: str, declared: int | None = None) -> None:
        super().__init__(message)
        self.declared = declared


@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float
    total: float


def timeouts(timeout: float | tuple[float, float]) -> Timeouts:
    """The one rule: `timeout` seconds, wall clock, for a whole request.

    A `(connect, read)` pair (the older form) gives a total of connect + read.
    """
    if isinstance(timeout, tuple):
        connect, read = (float(t) for t in timeout)
        return Timeouts(connect, read, connect + read)
    total = float(timeout)
    return Timeouts(min(CONNECT_TIMEOUT, total), total, total)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport:
    """Thread-safe: each thread gets its own connection pool (requests.Session is not)."""

    def __init__(
        self,
        *,
        timeout: float | tuple[float, float],
        max_bytes: int,
        ca_bundle: str | Path | None = None,
        proxy: str | None = None,
        session: requests.Session | None = None,
        truncate: bool = False,
    ) -> None:
        """`truncate`: keep the first `max_bytes` of a longer answer instead of HttpTooLarge."""
        self.timeouts = timeouts(timeout)
        self.max_bytes = max_bytes
        self.truncate = truncate
        self.verify: str | bool = str(ca_bundle) if ca_bundle else True
        self._proxies = {"http": proxy, "https": proxy} if proxy else {}
        self._given = session
        if session is not None:  # a caller's session gets the same rules
            session.trust_env = False
            adapter = DeadlineAdapter()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        t = self.timeouts
        failure: HttpError | None = None
        with Deadline(t.total) as deadline:
            try:
                response = self._session().request(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers=dict(headers or {}),
                    timeout=(t.connect, min(t.read, t.total)),
                    stream=True,
                    allow_redirects=False,
                    verify=self.verify,
                    proxies=self._proxies,
                )
                with response:
                    body = self._read(response)
            except HttpError as exc:
                failure = exc
            except Exception as exc:  # noqa: BLE001 - every failure below requests becomes an HttpError
                failure = _translated(exc, deadline.expired, t.total)
            if failure is None and deadline.expired:  # a cut socket reads as the answer's end
                failure = HttpTimeout(f"answer incomplete after {t.total:g} s")
        if failure is not None:
            failure.__traceback__ = None
            raise failure  # outside `except`: requests' exceptions hold the URL and its query
        return Answer(response.status_code, response.headers, body)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def _session(self) -> requests.Session:
        if self._given is not None:
            return self._given
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = new_session()
            with self._lock:
                self._sessions.append(session)
        return session

    def _read(self, response: requests.Response) -> bytes:
        declared = response.headers.get("Content-Length", "")
        too_long = declared.isascii() and declared.isdigit() and int(declared) > self.max_bytes
        if too_long and not self.truncate:
            raise HttpTooLarge(
                f"answer is {int(declared)} bytes, over the {self.max_bytes} limit", int(declared)
            )
        body = bytearray()
        while chunk := response.raw.read1(_READ_CHUNK, decode_content=True):
            body += chunk
            if len(body) > self.max_bytes:
                if self.truncate:
                    return bytes(body[: self.max_bytes])
                raise HttpTooLarge(f"answer exceeds the {self.max_bytes} byte limit")
        return bytes(body)


def cleartext(url: str) -> bool:
    """An http:// URL to anything but this machine: credentials and customer data in clear."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        return False
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def secret_reader(secret: str | Callable[[], str]) -> Callable[[], str]:
    """A secret given as text, or as a function that reads it again (a rotated file or
    credential is picked up when the remote refuses the old one)."""
    if callable(secret):
        return secret
    return lambda: secret


def new_session() -> requests.Session:
    """A session that trusts nothing from the environment and cuts requests at their deadline."""
    session = requests.Session()
    session.trust_env = False
    adapter = DeadlineAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _translated(exc: BaseException, expired: bool, total: float) -> HttpError:
    if expired or isinstance(exc, requests.Timeout):
        return HttpTimeout(f"answer incomplete after {total:g} s")
    if isinstance(exc, requests.exceptions.SSLError):
        return HttpTLSError(f"TLS failed: {_root_cause(exc)}")
    if isinstance(exc, requests.ConnectionError):
        return HttpUnreachable(f"unreachable or hung up: {_root_cause(exc)}")
    if isinstance(exc, (requests.RequestException, Urllib3Error)):
        return HttpBroken(f"answer broken off ({type(exc).__name__})")
    if isinstance(exc, OSError) and exc.errno is None:
        # requests raises a bare OSError for a CA bundle that does not exist: configuration,
        # not the network; the stage's supervisor stops the agent with exit status 78
        raise exc
    if isinstance(exc, OSError):
        return HttpBroken(f"connection lost ({exc.strerror or type(exc).__name__})")
    raise exc


def _root_cause(exc: BaseException) -> str:
    """`Connection refused` rather than urllib3's pool and retry wrappers (which hold the URL)."""
    inner: Any = exc.args[0] if exc.args else exc
    inner = getattr(inner, "reason", inner)
    while (
        isinstance(inner, Urllib3Error) and inner.args and isinstance(inner.args[-1], BaseException)
    ):
        inner = inner.args[-1]
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    text = str(inner)
    if "): " in text:
        text = text.rsplit("): ", 1)[1]
    if "?" in text or "://" in text:
        return type(inner).__name__
    return text[:200]
