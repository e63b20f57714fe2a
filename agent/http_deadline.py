"""One wall-clock deadline per request, from connect to the last byte: while a `Deadline` is
active in a thread, a reaper shuts down every socket that thread's requests opened once it
passes, however slowly the bytes trickle in (requests' own timeouts are per socket operation).
`DeadlineAdapter` makes a requests.Session's connections watched sockets."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()


class Deadline:
    """While active in a thread, every socket the thread's requests use is shut down at `at`."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._socks: list[socket.socket] = []

    def __enter__(self) -> Deadline:
        self._outer = getattr(_current, "deadline", None)
        _current.deadline = self
        _REAPER.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _REAPER.remove(self)
        _current.deadline = self._outer

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with _REAPER.lock:
            self._socks.append(sock)
            late = self.expired
        if late:
            _cut(sock)

    def expire(self) -> None:
        """Called by the reaper with its lock held."""
        self.expired = True
        for sock in self._socks:
            _cut(sock)


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Reaper:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._wake = threading.Condition(self.lock)
        self._active: set[Deadline] = set()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self.lock:
            self._active.add(deadline)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-deadline", daemon=True)
                self._thread.start()
            self._wake.notify()

    def remove(self, deadline: Deadline) -> None:
        with self.lock:
            self._active.discard(deadline)

    def _run(self) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                for deadline in [d for d in self._active if d.at <= now]:
                    self._active.discard(deadline)
                    deadline.expire()
                following = min((d.at for d in self._active), default=None)
                self._wake.wait(None if following is None else following - now)


_REAPER = _Reaper()


def _watch(sock: socket.socket | None) -> None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)  # a connection reused from the pool
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager
