"""The one interface every scanner source implements, and what the sources share.

A source turns a device into `ScanEvent`s. It never raises on bad input and never dies: it logs one
short line, waits a little and tries again, until the daemon sets `stop`.
"""

from __future__ import annotations

import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.logs import Problem, get_logger

log = get_logger(__name__)

POLL_SECONDS = 0.25
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 1.0


@dataclass(frozen=True)
class ScanEvent:
    text: str
    source: str
    workplace: int | None
    at: float


Emit = Callable[[ScanEvent], object]  # what it returns (the daemon's ScanResult) is not read


class Source(Protocol):
    name: str

    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Blocks until `stop` is set; reopens the device with back-off after unplug or absence."""


def clean_text(raw: bytes | str) -> str:
    """Scanner bytes → text: invalid UTF-8 replaced, control characters dropped, ends stripped."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return "".join(c for c in text if unicodedata.category(c) != "Cc").strip()


_state_listener: Callable[[str, bool], None] | None = None


def on_state_change(listener: Callable[[str, bool], None] | None) -> None:
    """`listener(source_name, up)` hears every device open (True) and failure (False)."""
    global _state_listener
    _state_listener = listener


def _tell(name: str, up: bool) -> None:
    if _state_listener is not None:
        _state_listener(name, up)


class _Reporter:
    """Logs a device problem once per change, so a scanner absent for hours costs one line."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._problem = Problem("scanner unavailable, retrying", "scanner back")

    def failed(self, exc: BaseException) -> None:
        _tell(self.name, False)
        self._problem.failed(log, exc, source=self.name)

    def opened(self) -> None:
        _tell(self.name, True)
        self._problem.recovered(log, source=self.name)


def keep_running(
    name: str, session: Callable[[Callable[[], None]], None], stop: threading.Event
) -> None:
    """Run `session` again and again with back-off until `stop` is set.

    `session(opened)` opens the device, calls `opened()` once it is open, reads until `stop` is set and
    raises (any exception) when the device is gone. Whatever it raises is logged once and retried.
    """
    reporter = _Reporter(name)
    delay = BACKOFF_FIRST
    while not stop.is_set():
        started = time.monotonic()
        try:
            session(reporter.opened)
        except Exception as exc:  # noqa: BLE001 - a source must never die
            reporter.failed(exc)
        if time.monotonic() - started > BACKOFF_MAX:
            delay = BACKOFF_FIRST
        stop.wait(delay)
        delay = min(delay * 2, BACKOFF_MAX)
