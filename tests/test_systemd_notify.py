"""sd_notify datagrams reach a real AF_UNIX socket; the watchdog is fed only while loops move."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator

import pytest

from agent import systemd


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def _pending(sock: socket.socket) -> bytes | None:
    sock.setblocking(False)
    try:
        return sock.recv(4096)
    except BlockingIOError:
        return None
    finally:
        sock.settimeout(5)


@pytest.fixture
def notify_socket(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[socket.socket]:
    path = tmp_path_factory.mktemp("n") / "notify"  # short: sun_path holds 107 bytes
    with _receiver(str(path)) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def test_ready_sends_ready_and_status_in_one_datagram(notify_socket: socket.socket) -> None:
    assert systemd.ready("outbox 0 pending")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=outbox 0 pending"


def test_status_is_forced_onto_one_line(notify_socket: socket.socket) -> None:
    assert systemd.status("POS unreachable\nREADY=1  retrying")
    assert notify_socket.recv(4096) == b"STATUS=POS unreachable READY=1 retrying"


def test_watchdog_and_stopping(notify_socket: socket.socket) -> None:
    assert systemd.watchdog()
    assert systemd.stopping()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_abstract_socket_name(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"boniq-test-{secrets.token_hex(6)}"
    with _receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_outside_systemd_every_call_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False
    assert systemd.watchdog() is False


def test_a_vanished_socket_does_not_raise(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path_factory.mktemp("n") / "gone"))
    assert systemd.ready() is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "other", None),
        ("0", None, None),
        ("thirty", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for key, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            own = os.getpid()
            monkeypatch.setenv(key, {"self": str(own), "other": str(own + 1)}.get(value, value))
    assert systemd.watchdog_interval() == expected


def test_heartbeat_turns_unhealthy_when_one_loop_stops() -> None:
    clock = FakeClock()
    beats = systemd.Heartbeat(clock)
    beats.register("scanner:serial", "poller", "uploader")
    assert beats.healthy(max_age=30)

    for _ in range(4):
        clock.now += 10
        beats.beat("scanner:serial")
        beats.beat("poller")
    assert beats.stale(max_age=30) == ["uploader"]
    assert not beats.healthy(max_age=30)

    beats.beat("uploader")
    assert beats.healthy(max_age=30)


def test_keep_alive_feeds_the_watchdog_only_while_every_loop_progresses(
    notify_socket: socket.socket,
) -> None:
    clock = FakeClock()
    beats = systemd.Heartbeat(clock)
    beats.register("poller", "uploader")

    clock.now += 10
    assert systemd.keep_alive(beats, max_age=30)
    assert notify_socket.recv(4096) == b"WATCHDOG=1"

    clock.now += 25
    beats.beat("poller")
    assert not systemd.keep_alive(beats, max_age=30)
    assert _pending(notify_socket) is None

    beats.beat("uploader")
    assert systemd.keep_alive(beats, max_age=30)
    assert notify_socket.recv(4096) == b"WATCHDOG=1"


def test_a_listener_that_stops_reading_never_blocks_the_sender(tmp_path, monkeypatch):
    import socket as socket_module

    from agent import systemd as sd

    path = tmp_path / "full.sock"
    listener = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_DGRAM)
    listener.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        results = [sd.status("x" * 200) for _ in range(5000)]  # far beyond the socket buffer
    finally:
        listener.close()
    assert results[0] is True and results[-1] is False
