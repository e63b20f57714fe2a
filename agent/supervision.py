"""Keeping the daemon's stages running without flooding the journal, and telling a fault that a
restart can fix from one that only store IT can (configuration: exit 78).

A stage that crashes the same way again and again is logged once with its traceback, then with
a count (at 10, 100, 1000, … repeats, and when it stops or changes), not once per restart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.errors import ConfigError
from agent.logs import fields, get_logger, redact

log = get_logger(__name__)

MAX_RESTART_DELAY = 30.0


def config_fault(exc: BaseException, paths: Iterable[Path | str] = ()) -> str | None:
    """Why `exc` is really a configuration problem (None when it is not): an invalid config, a
    TLS set-up error (a CA bundle gone), or a file the config names that cannot be read."""
    if isinstance(exc, ConfigError):
        return str(exc)
    if not isinstance(exc, OSError):
        return None
    text = str(exc)
    if "CA certificate bundle" in text:  # requests: verify= names a path that is not there
        return f"TLS set-up failed: {text}"
    named = {str(p) for p in paths}
    if exc.filename is not None and str(exc.filename) in named:
        return f"cannot read {exc.filename}: {exc.strerror}"
    return None


class Repeats:
    """Decides which of a series of failures to log: the first of a kind, then counts."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._signature: tuple[str, str] | None = None
        self.count = 0

    def failed(self, exc: BaseException) -> None:
        signature = (type(exc).__name__, redact(str(exc))[:300])
        if signature != self._signature:
            self.summarise()
            self._signature, self.count = signature, 1
            log.error(f"{self.what} crashed; restarting it", exc_info=exc)
            return
        self.count += 1
        if _is_milestone(self.count):
            log.error(
                f"{self.what} crashed again the same way",
                extra=fields(times=self.count, error=f"{signature[0]}: {signature[1]}"),
            )

    def recovered(self) -> None:
        if self._signature is not None:
            self.summarise()
            log.info(f"{self.what} works again")
        self._signature, self.count = None, 0

    def summarise(self) -> None:
        """The count of a series that ended (the last milestone already said it)."""
        if self._signature is not None and self.count > 1 and not _is_milestone(self.count):
            log.error(
                f"{self.what} crashed the same way repeatedly",
                extra=fields(times=self.count, error=f"{self._signature[0]}: {self._signature[1]}"),
            )

    def delay(self) -> float:
        """Seconds before the next restart: 1, 2, 4, … up to MAX_RESTART_DELAY."""
        return min(MAX_RESTART_DELAY, 2.0 ** max(0, min(self.count - 1, 5)))


def _is_milestone(count: int) -> bool:
    return count >= 10 and str(count).rstrip("0") == "1"


def guarded(
    name: str,
    target: Callable[[threading.Event], None],
    stop: threading.Event,
    *,
    on_config_fault: Callable[[str, str], None],
    paths: Callable[[], Iterable[Path | str]] = tuple,
) -> Callable[[], None]:
    """A thread body that restarts `target` after an unexpected exception (with back-off), and
    hands a configuration fault to `on_config_fault(name, reason)` instead of restarting."""

    def body() -> None:
        repeats = Repeats(name)
        while not stop.is_set():
            try:
                target(stop)
                repeats.summarise()
                return
            except Exception as exc:  # noqa: BLE001 - a stage must never take the daemon down
                reason = config_fault(exc, paths())
                if reason is not None:
                    repeats.summarise()
                    on_config_fault(name, reason)
                    return
                repeats.failed(exc)
                stop.wait(repeats.delay())

    return body
