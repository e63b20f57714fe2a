"""The one outgoing transport: a wall-clock deadline, a capped answer, nothing from the
environment, no redirects; against real hostile servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_harness import report_figure

from agent.errors import CloudTransient, KassaError, KassaRejected, KassaTransient
from agent.http import HttpTimeout, HttpTooLarge, Transport, timeouts
from agent.kassa.client import KassaClient
from agent.queue.store import Store
from agent.queue.uploader import Uploader
from agent.sim.cloud import canonical, example_receipt
from agent.supervision import config_fault


class RawServer:
    """A TCP server on 127.0.0.1 that runs `behave(conn)` for each connection."""

    def __init__(self, behave: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.connections = 0
        self.requests: list[bytes] = []
        self.cut_early = threading.Event()
        self._behave = behave
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                self.requests.append(conn.recv(65536))
                self._behave(conn)
            except OSError:
                self.cut_early.set()

    def close(self) -> None:
        self.sock.close()


def trickle_headers(conn: socket.socket) -> None:
    """One header byte every 0.1 s for 20 s: past every per-read timeout, never finishing."""
    head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200
    for byte in head:
        conn.sendall(bytes([byte]))
        time.sleep(0.1)
    conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def trickler() -> Iterator[RawServer]:
    server = RawServer(trickle_headers)
    yield server
    server.close()


def test_the_timeout_is_one_wall_clock_budget() -> None:
    assert timeouts(10) == timeouts(10.0)
    t = timeouts(10)
    assert (t.total, t.read) == (10, 10) and t.connect < t.total
    assert timeouts(1).connect <= 1
    assert timeouts((1.0, 2.0)).total == 3.0


def test_a_header_trickler_cannot_hold_a_request_past_its_deadline(trickler: RawServer) -> None:
    transport = Transport(timeout=1.0, max_bytes=1000)
    started = time.monotonic()
    with pytest.raises(HttpTimeout, match="incomplete"):
        transport.request("GET", trickler.url)
    held = time.monotonic() - started
    report_figure("http header trickler", held_s=round(held, 2), budget_s=1.0, trickle_s=20)
    assert trickler.cut_early.wait(5)  # the server was still sending when the client left


def test_the_pos_client_gives_up_on_a_trickled_header(trickler: RawServer) -> None:
    client = KassaClient(trickler.url, "ident-q", "secret-q", timeout=1.0)
    with pytest.raises(KassaTransient, match="in time"):
        client.get_api_version()
    assert trickler.cut_early.wait(5)


def test_the_uploader_gives_up_on_a_trickled_header(trickler: RawServer, tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        payload = example_receipt("r-slow")
        row = store.enqueue(
            "r-slow", payload["idempotency_key"], canonical(payload), "c-1", now=1000.0
        )
        with Uploader(store, trickler.url.rstrip("/"), "tok", timeout=1.0, workers=1) as up:
            up.run_once(now=1000.0)
        after = store.get(row.id)
    assert after.state == "pending" and "Timeout" in (after.last_error or "")
    assert trickler.cut_early.wait(5)


def test_a_too_long_answer_is_cut() -> None:
    def endless(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n")
        for _ in range(2000):
            conn.sendall(b"x" * 65536)

    server = RawServer(endless)
    try:
        with pytest.raises(HttpTooLarge, match="100000"):
            Transport(timeout=5.0, max_bytes=100_000).request("GET", server.url)
        cut = Transport(timeout=5.0, max_bytes=100_000, truncate=True).request("GET", server.url)
        assert len(cut.body) == 100_000
    finally:
        server.close()


def answer(status: int, headers: str = "", body: bytes = b"") -> Callable[[socket.socket], None]:
    def reply(conn: socket.socket) -> None:
        conn.sendall(
            f"HTTP/1.1 {status} X\r\n{headers}Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )

    return reply


def test_the_environment_proxy_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = RawServer(answer(200, body=b"proxied"))
    target = RawServer(answer(200, body=b"direct"))
    try:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert Transport(timeout=5.0, max_bytes=100).request("GET", target.url).body == b"direct"
        client = KassaClient(target.url, "ident-p", "secret-p", timeout=2.0)
        with pytest.raises(KassaError):
            client.get_api_version()
        assert proxy.connections == 0
        via = Transport(timeout=5.0, max_bytes=100, proxy=proxy.url)
        assert via.request("GET", target.url).body == b"proxied"  # an explicit proxy is used
    finally:
        proxy.close()
        target.close()


def test_a_redirect_is_not_followed_with_the_secret() -> None:
    elsewhere = RawServer(answer(200))
    redirecting = RawServer(answer(307, f"Location: {elsewhere.url}steal\r\n"))
    try:
        client = KassaClient(redirecting.url, "ident-r", "secret-r", timeout=2.0)
        with pytest.raises(KassaRejected, match="HTTP 307"):
            client.get_api_version()
        assert elsewhere.connections == 0
        assert b"secret-r" in redirecting.requests[0]
    finally:
        elsewhere.close()
        redirecting.close()


def test_a_missing_ca_bundle_is_a_configuration_fault_not_a_network_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    transport = Transport(timeout=2.0, max_bytes=100, ca_bundle=missing)
    with pytest.raises(OSError, match="CA certificate bundle") as raised:
        transport.request("GET", "https://127.0.0.1:9/")
    assert config_fault(raised.value), "the supervisor would retry it forever"
    with Store.open(tmp_path / "data") as store:
        payload = example_receipt("r-ca")
        row = store.enqueue(
            "r-ca", payload["idempotency_key"], canonical(payload), "c-1", now=1000.0
        )
        with (
            Uploader(
                store, "https://127.0.0.1:9", "tok", ca_bundle=str(missing), timeout=1.0
            ) as up,
            pytest.raises(OSError, match="CA certificate bundle"),
        ):
            up.run_once(now=1000.0)
        assert store.get(row.id).state == "pending"
    with pytest.raises(OSError, match="CA certificate bundle"):
        KassaClient(
            "https://127.0.0.1:9/", "i", "s", timeout=1.0, verify=str(missing)
        ).get_api_version()


def test_an_unreachable_cloud_is_transient(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Exception) as caught:
        Transport(timeout=1.0, max_bytes=10).request("GET", f"http://127.0.0.1:{port}/?secret=zz")
    assert "zz" not in repr(caught.value) and caught.value.__context__ is None
    assert not isinstance(caught.value, CloudTransient)
