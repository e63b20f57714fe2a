"""sd_notify, the watchdog interval and a progress heartbeat, in the standard library.

The notify protocol is stable and is the API (sd_notify(3)): one AF_UNIX datagram of
newline-separated `KEY=VALUE` lines to `$NOTIFY_SOCKET`; a leading `@` names an abstract socket.
Outside systemd every call is a no-op, so the daemon runs the same in a terminal.

The watchdog must mean "the pipeline moves", not "the process exists": the POS poller and the
uploader call `Heartbeat.beat(name)` once per turn, idle turns included, and the daemon sends
`watchdog()` only while `Heartbeat.healthy()`; a hung thread then becomes a restart instead of a
silently "active" unit. Scanner sources do not beat: they block on their device for as long as
no code is scanned, and report up or down through the `scanner_up` metric and `status`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

from agent.logs import fields, get_logger
from agent.printable import printable

log = get_logger(__name__)


_failing = threading.Event()


def notify(*lines: str) -> bool:
    """Send `lines` as one datagram; False when not under systemd or the socket is gone.

    Non-blocking: a listener that stops reading must never stall the daemon's main loop."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not lines:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        with socket.socket(socket.AF_UNIX, kind) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError as exc:
        if _failing.is_set() is False:
            log.warning(
                "systemd notifications not delivered (logged once until they work)",
                extra=fields(error=exc.strerror),
            )
        _failing.set()
        return False
    _failing.clear()
    return True


def ready(status_text: str | None = None) -> bool:
    return notify("READY=1", *([_status_line(status_text)] if status_text else []))


def status(text: str) -> bool:
    """The one line `systemctl status` shows under the unit, e.g. "outbox 3 pending"."""
    return notify(_status_line(text))


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """Seconds between pings (half of WatchdogSec=), or None when no watchdog applies to us."""
    pid = os.environ.get("WATCHDOG_PID")
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


def _status_line(text: str) -> str:
    return "STATUS=" + printable(" ".join(text.split()))


class Heartbeat:
    """Last-progress times of the pipeline's loops; thread-safe, clock injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._beats: dict[str, float] = {}
        self._lock = threading.Lock()

    def register(self, *names: str) -> None:
        """Expect a beat from each name; registering counts as the first beat (start-up grace)."""
        for name in names:
            self.beat(name)

    def beat(self, name: str) -> None:
        now = self._clock()
        with self._lock:
            self._beats[name] = now

    def stale(self, max_age: float) -> list[str]:
        """Names that have not beaten within `max_age` seconds, oldest first."""
        now = self._clock()
        with self._lock:
            late = [(at, name) for name, at in self._beats.items() if now - at > max_age]
        return [name for _, name in sorted(late)]

    def healthy(self, max_age: float) -> bool:
        return not self.stale(max_age)


def keep_alive(heartbeat: Heartbeat, max_age: float) -> bool:
    """Ping the watchdog only if every loop made progress within `max_age`; else name the laggards.

    Call it every `watchdog_interval()` seconds from the main thread.
    """
    stale = heartbeat.stale(max_age)
    if stale:
        log.error(
            "watchdog not fed: a pipeline loop made no progress; systemd restarts the agent soon",
            extra=fields(stalled=",".join(stale), max_age=max_age),
        )
        return False
    return watchdog()
