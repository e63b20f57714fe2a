"""The bounded HTTP listener every server of the agent uses, attacked over real sockets."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from agent_harness import report_figure, wait_until

from agent.errors import ConfigError
from agent.listener import Handler, Limits, Server, parse_listen, serve

LIMITS = Limits(max_connections=16, header_bytes=2048, body_bytes=4096, timeout=1.0)


class Echo(Handler):
    def do_GET(self) -> None:
        self.reply(200, b"ok\n", headers={"X-Context": str(self.context)})

    def do_POST(self) -> None:
        self.reply(200, self.read_body(), "application/octet-stream")


@pytest.fixture
def server() -> Iterator[Server]:
    running = serve("127.0.0.1:0", Echo, limits=LIMITS, name="test", context="ctx")
    assert running is not None
    yield running
    running.close()


def livez(server: Server) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{server.port}/livez", timeout=5)


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_handler_reads_the_context_and_replies(server: Server) -> None:
    response = livez(server)
    assert (response.status_code, response.text, response.headers["X-Context"]) == (
        200,
        "ok\n",
        "ctx",
    )
    assert response.headers["Connection"] == "close"


def test_500_idle_connections_hold_neither_threads_nor_descriptors(server: Server) -> None:
    threads_before = threading.active_count()
    idle = [connect(server) for _ in range(500)]
    try:
        # every one was accepted and then either kept (at most the cap) or closed at once
        wait_until(lambda: server.open_connections <= LIMITS.max_connections, 10, "the cap")
        # a connection cut to make room ends its thread a moment later
        wait_until(
            lambda: threading.active_count() <= threads_before + LIMITS.max_connections + 1,
            10,
            "the threads of cut connections to end",
        )
        for _ in range(5):
            assert livez(server).status_code == 200  # the oldest idle one makes room
        held = server.open_connections
        threads = threading.active_count() - threads_before
    finally:
        for sock in idle:
            sock.close()
    report_figure("listener 500 idle connections", held=held, threads=threads)
    wait_until(lambda: server.open_connections == 0, 10, "idle connections closed")
    assert livez(server).status_code == 200


def test_idle_connections_are_closed_after_the_timeout(server: Server) -> None:
    sock = connect(server)
    with sock:
        assert closed_by_server(sock, timeout=LIMITS.timeout * 5)


def test_a_header_trickler_is_cut_off_by_the_deadline(server: Server) -> None:
    sock = connect(server)
    with sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        cut = False
        for _ in range(100):  # 100 × 0.1 s: ten times the listener's deadline
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            time.sleep(0.1)
            sock.settimeout(0.001)
            try:
                if sock.recv(1) == b"":
                    cut = True
                    break
            except TimeoutError:
                pass
        report_figure("listener header trickler", cut_after_s=round(time.monotonic() - started, 1))
        assert cut
        assert livez(server).status_code == 200


def test_an_oversized_head_is_refused_with_431(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 4000 + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 431")
    many = {f"X-{i}": "a" * 50 for i in range(100)}
    response = requests.get(f"http://127.0.0.1:{server.port}/", headers=many, timeout=5)
    assert response.status_code == 431
    with connect(server) as sock:
        sock.sendall(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 431")
    assert livez(server).status_code == 200


def test_a_body_is_read_within_its_cap(server: Server) -> None:
    url = f"http://127.0.0.1:{server.port}/"
    assert requests.post(url, data=b"x" * 4096, timeout=5).content == b"x" * 4096
    assert requests.post(url, data=b"x" * 4097, timeout=5).status_code == 413
    chunked = requests.post(url, data=iter([b"x" * 10]), timeout=5)
    assert chunked.status_code == 400
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 413")
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 400")


def test_a_body_trickler_is_cut_off(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n")
        cut = False
        for _ in range(100):
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            time.sleep(0.1)
            sock.settimeout(0.001)
            try:
                if sock.recv(1) == b"":
                    cut = True
                    break
            except TimeoutError:
                pass
        assert cut


def test_when_every_slot_is_busy_new_connections_are_closed_at_once() -> None:
    release = threading.Event()

    class Slow(Handler):
        def do_GET(self) -> None:
            release.wait(10)
            self.reply(200, b"done\n")

    limits = Limits(max_connections=2, timeout=5.0)
    running = serve("127.0.0.1:0", Slow, limits=limits, name="slow")
    assert running is not None
    busy: list[socket.socket] = []
    try:
        for _ in range(2):
            sock = connect(running)
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            busy.append(sock)
        wait_until(lambda: running.open_connections == 2, 5, "two busy requests")
        time.sleep(0.2)  # both heads parsed: neither may be evicted now
        with connect(running) as extra:
            assert closed_by_server(extra, timeout=3)
        release.set()
        for sock in busy:
            sock.settimeout(5)
            assert sock.recv(100).startswith(b"HTTP/1.0 200")
    finally:
        release.set()
        for sock in busy:
            sock.close()
        running.close()


def test_close_releases_the_port_and_cuts_open_connections() -> None:
    running = serve("127.0.0.1:0", Echo, limits=LIMITS, name="test")
    assert running is not None
    port = running.port
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    wait_until(lambda: running.open_connections == 1, 5, "the connection")
    fds = open_fds()
    running.close()
    with idle:
        assert closed_by_server(idle, timeout=3)
    assert open_fds() < fds
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_busy_port_disables_the_endpoint(server: Server) -> None:
    assert serve(f"127.0.0.1:{server.port}", Echo, name="other") is None


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1:", "127.0.0.1:http", "[::1]:70000"])
def test_malformed_listen_names_the_key(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"screen\.listen"):
        serve(listen, Echo, name="screen")
    with pytest.raises(ConfigError, match=r"webhook\.listen"):
        parse_listen(listen, key="webhook.listen")


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        running = serve("[::1]:0", Echo, limits=LIMITS, name="test")
    except OSError:
        pytest.skip("no ::1")
    if running is None:
        pytest.skip("no ::1")
    try:
        assert requests.get(f"http://[::1]:{running.port}/", timeout=5).status_code == 200
    finally:
        running.close()


SPIN_CHILD = r"""
import resource, sys, threading, time
sys.path.insert(0, sys.argv[1])
from agent.listener import Handler, Limits, serve
class Hold(Handler):
    def do_GET(self):
        time.sleep(30)
resource.setrlimit(resource.RLIMIT_NOFILE, (48, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
server = serve("127.0.0.1:0", Hold, limits=Limits(max_connections=500, timeout=30), name="t")
print(server.port, flush=True)
time.sleep(30)
"""


def test_the_accept_loop_does_not_spin_when_descriptors_run_out() -> None:
    import subprocess
    import sys

    from agent_harness import ROOT

    child = subprocess.Popen(
        [sys.executable, "-c", SPIN_CHILD, str(ROOT)], stdout=subprocess.PIPE, text=True
    )
    held: list[socket.socket] = []
    try:
        port = int(child.stdout.readline())
        for _ in range(80):  # more than the child's 48 descriptors
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            held.append(sock)
        time.sleep(0.5)

        def cpu() -> float:
            with open(f"/proc/{child.pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu()
        time.sleep(2.0)
        used = cpu() - before
        report_figure("listener out of descriptors", cpu_s_per_2s=round(used, 2))
        assert used < 0.3  # a spinning accept loop burns ~0.9 s of them here; a paused one ~0
    finally:
        for sock in held:
            sock.close()
        child.kill()
        child.wait(10)
