"""One bounded HTTP listener for every server of the agent (metrics, webhooks, cashier screen).

A till is reachable from the shop network, so a listener must survive what anyone there can send:
thousands of idle connections, a client trickling one header byte a second, a megabyte of
headers, a body without end. What bounds each:

- `Limits.max_connections` connections at once, each on its own thread. When a new one arrives
  at the cap, the oldest connection still waiting for its request head is cut off to make room
  (an idle attacker cannot lock out a health check); when every slot is busy with a request, the
  new connection is closed at once instead of queueing.
- `Limits.timeout` seconds, wall clock, from accept until the request (head and body) is read:
  a reaper thread cuts off whoever is slower, however the bytes trickle in. The same figure is
  the socket timeout of every read and write.
- `Limits.header_bytes` for the request line and headers together (431 beyond).
- `Limits.body_bytes` for a body, which needs a Content-Length (`Handler.read_body`: 413, 400).
- One request per connection (HTTP/1.0 semantics): no idle keep-alive connection stays open.
- The accept loop pauses instead of spinning when the process is out of file descriptors.

Usage::

    class Hello(Handler):
        def do_GET(self) -> None:
            self.reply(200, b"hello\\n")

    server = serve("127.0.0.1:8080", Hello, limits=Limits(), name="hello", context=whatever)
    ...  # handlers read `self.context`
    server.close()
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.errors import ConfigError
from agent.logs import fields, get_logger

log = get_logger(__name__)

_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_REAP_INTERVAL = 0.2


@dataclass(frozen=True)
class Limits:
    """What one listener may spend; the defaults suit a small JSON or text endpoint."""

    max_connections: int = 64
    header_bytes: int = 16 * 1024
    body_bytes: int = 1024 * 1024
    timeout: float = 10.0
    backlog: int = 128


class RequestRefused(Exception):
    """Raised inside a handler after the refusal (4xx) has been sent; ends the request quietly."""


class _HeadTooLarge(Exception):
    pass


class _Connection:
    __slots__ = ("sock", "accepted", "deadline", "reading_head")

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.accepted = time.monotonic()
        self.deadline = self.accepted + timeout
        self.reading_head = True

    def cut(self) -> None:
        """Wake the connection's thread from any blocking read or write; it then closes."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _HeadReader:
    """The handler's `rfile`: caps what `readline` returns while the request head is read."""

    def __init__(self, raw: Any, connection: _Connection, header_bytes: int) -> None:
        self._raw = raw
        self._connection = connection
        self._left = header_bytes

    def readline(self, limit: int = -1) -> bytes:
        if not self._connection.reading_head:
            return bytes(self._raw.readline(limit))
        if self._left <= 0:
            raise _HeadTooLarge
        want = self._left + 1 if limit < 0 else min(limit, self._left + 1)
        line = bytes(self._raw.readline(want))
        self._left -= len(line)
        if self._left < 0:
            raise _HeadTooLarge
        return line

    def read(self, size: int = -1) -> bytes:
        return bytes(self._raw.read(size))

    def close(self) -> None:
        self._raw.close()


class Handler(BaseHTTPRequestHandler):
    """Base class of the agent's request handlers: `do_GET`/`do_POST` use `read_body`, `reply`."""

    server: _BoundedServer
    server_version = "boniq-agent"
    protocol_version = "HTTP/1.0"
    _connection_entry: _Connection

    @property
    def context(self) -> Any:
        """The `context` given to `serve`."""
        return self.server.context

    @property
    def limits(self) -> Limits:
        return self.server.limits

    def setup(self) -> None:
        self.request.settimeout(self.server.limits.timeout)
        self.requestline, self.command, self.request_version = "", "", "HTTP/1.0"
        super().setup()
        self._connection_entry = self.server.connection_of(self.request)
        self.rfile = _HeadReader(self.rfile, self._connection_entry, self.limits.header_bytes)  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _HeadTooLarge:
            self.close_connection = True
            self._refuse(431, "request header fields too large")
        except RequestRefused:
            self.close_connection = True
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self._connection_entry.reading_head = False
        return ok

    def read_body(self, limit: int | None = None) -> bytes:
        """The request body, at most `limit` (default `Limits.body_bytes`) bytes.

        Refuses (and raises `RequestRefused`) with 400 without a valid Content-Length (chunked
        bodies included) and 413 beyond the limit, before reading a byte of it.
        """
        cap = self.limits.body_bytes if limit is None else limit
        raw = self.headers.get("Content-Length")
        if (
            self.headers.get("Transfer-Encoding")
            or raw is None
            or not (raw.strip().isascii() and raw.strip().isdigit())
        ):
            self._refuse(400, "a body needs a Content-Length")
            raise RequestRefused
        length = int(raw)
        if length > cap:
            self._refuse(413, f"body larger than {cap} bytes")
            raise RequestRefused
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise RequestRefused
        return body

    def reply(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send a whole response; the connection closes after it."""
        self._connection_entry.deadline = float("inf")  # reading is done: socket timeouts rule
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def _refuse(self, status: int, message: str) -> None:
        try:
            self.reply(status, (message + "\n").encode())
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(
            f"{self.server.name} request", extra=fields(request=getattr(self, "requestline", ""))
        )


class _BoundedServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: Any,
        family: int,
        handler_class: type[Handler],
        limits: Limits,
        name: str,
        context: Any,
    ) -> None:
        self.address_family = family
        self.request_queue_size = limits.backlog
        self.limits = limits
        self.name = name
        self.context = context
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, _Connection] = {}
        self.refused = 0
        self.evicted = 0
        super().__init__(address, handler_class)

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in _OUT_OF_DESCRIPTORS:
                time.sleep(0.1)  # the listening socket stays readable: do not spin on it
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._admit(request):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread could be started
            self._forget(request)
            self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def connection_of(self, request: socket.socket) -> _Connection:
        with self._lock:
            found = self._connections.get(request)
        return found or _Connection(request, 0.0)  # evicted before its thread started

    def _admit(self, request: socket.socket) -> bool:
        with self._lock:
            if len(self._connections) >= self.limits.max_connections:
                waiting = [c for c in self._connections.values() if c.reading_head]
                if not waiting:
                    return False
                oldest = min(waiting, key=lambda c: c.accepted)
                oldest.reading_head = False  # not chosen twice
                oldest.cut()
                del self._connections[oldest.sock]
                self.evicted += 1
            self._connections[request] = _Connection(request, self.limits.timeout)
            return True

    def _forget(self, request: socket.socket) -> None:
        with self._lock:
            self._connections.pop(request, None)

    def reap(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [c for c in self._connections.values() if c.deadline < now]
            for connection in late:
                connection.deadline = float("inf")
        for connection in late:
            connection.cut()

    def cut_all(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
        for connection in connections:
            connection.cut()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)


class Server:
    """A running listener; `port` is the bound port (useful with port 0)."""

    def __init__(self, httpd: _BoundedServer) -> None:
        self._httpd = httpd
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=httpd.name,
            daemon=True,
        )
        self._reaper = threading.Thread(target=self._reap, name=f"{httpd.name}-reaper", daemon=True)
        self._thread.start()
        self._reaper.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def open_connections(self) -> int:
        return self._httpd.open_connections

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.cut_all()
        self._thread.join()
        self._reaper.join()

    def _reap(self) -> None:
        while not self._stop.wait(_REAP_INTERVAL):
            self._httpd.reap()


def serve(
    listen: str,
    handler_class: type[Handler],
    *,
    limits: Limits | None = None,
    name: str,
    context: Any = None,
    key: str | None = None,
) -> Server | None:
    """Listen on `listen` ("host:port", "[::1]:port"); None when empty or it cannot be bound.

    `name` names the threads and log lines; `key` is the configuration key of `listen` for
    messages (default `{name}.listen`). A malformed `listen` raises ConfigError; a bind failure
    is logged, not raised: receipts matter more than any endpoint.
    """
    if not listen.strip():
        return None
    key = key or f"{name}.listen"
    host, port = parse_listen(listen, key=key)
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        httpd = _BoundedServer(address, family, handler_class, limits or Limits(), name, context)
    except OSError as exc:
        log.error(
            f"{name} endpoint disabled: cannot listen; pick a free {key} address",
            extra=fields(listen=listen, error=exc.strerror or str(exc)),
        )
        return None
    if not ipaddress.ip_address(address[0]).is_loopback:
        log.warning(
            f"{name} endpoint reachable from the network; prefer 127.0.0.1 on a till",
            extra=fields(listen=listen),
        )
    server = Server(httpd)
    log.info(f"{name} endpoint listening", extra=fields(host=server.host, port=server.port))
    return server


def parse_listen(listen: str, *, key: str = "metrics.listen") -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port); ConfigError naming `key` otherwise."""
    host, sep, port = listen.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{key}: expected HOST:PORT such as 127.0.0.1:9464, got {listen!r}")
    return host, int(port)
