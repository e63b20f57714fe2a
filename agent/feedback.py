"""Cashier feedback: run the configured command (a sound, a light) on accepted / rejected / delivered.

Commands are split with shlex and run without a shell, in their own session, never waited for by the
caller. A reaper thread per command kills it after `timeout` seconds. A failing command is logged once
per kind until it works again, so a missing sound player does not flood the log on a busy till.
The command sees the kind in `$BONIQ_FEEDBACK`.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time

from agent.errors import ConfigError
from agent.logs import fields, get_logger

log = get_logger(__name__)

KINDS = ("accepted", "rejected", "delivered")


_PASSED_ON = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "HOME",
    "USER",
    "LOGNAME",
    "XDG_RUNTIME_DIR",
    "PULSE_SERVER",
    "DISPLAY",
)


def minimal_environment() -> dict[str, str]:
    """What a sound or light command needs, and nothing of the agent's own: no
    CREDENTIALS_DIRECTORY (the POS secret, the token), no NOTIFY_SOCKET, no proxy settings."""
    env = {k: os.environ[k] for k in _PASSED_ON if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


def _split(kind: str, command: str | None) -> list[str] | None:
    if not command or not command.strip():
        return None
    try:
        return shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"feedback.{kind}: cannot split the command: {exc}") from None


class Feedback:
    def __init__(
        self,
        accepted: str | None = None,
        rejected: str | None = None,
        delivered: str | None = None,
        *,
        timeout: float = 5.0,
        max_running: int = 8,
    ) -> None:
        commands = {"accepted": accepted, "rejected": rejected, "delivered": delivered}
        self._argv = {kind: _split(kind, command) for kind, command in commands.items()}
        self._timeout = timeout
        self._max_running = max_running
        self._running = 0
        self._broken: set[str] = set()
        self._idle = threading.Condition()

    def accepted(self) -> None:
        self._start("accepted")

    def rejected(self) -> None:
        self._start("rejected")

    def delivered(self) -> None:
        self._start("delivered")

    def wait_idle(self, timeout: float) -> bool:
        """Wait for running commands to finish; False if some still run after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._idle:
            return self._idle.wait_for(
                lambda: self._running == 0, max(0.0, deadline - time.monotonic())
            )

    def _start(self, kind: str) -> None:
        argv = self._argv[kind]
        if argv is None or not self._reserve(kind):
            return
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                env=minimal_environment() | {"BONIQ_FEEDBACK": kind},
            )
        except (OSError, ValueError) as exc:
            self._finished(kind, f"cannot start: {exc}")
            return
        threading.Thread(
            target=self._reap,
            args=(kind, process),
            name=f"feedback-{kind}",
            daemon=True,
        ).start()

    def _reserve(self, kind: str) -> bool:
        with self._idle:
            if self._running >= self._max_running:
                self._report(kind, f"skipped, {self._running} feedback commands still running")
                return False
            self._running += 1
            return True

    def _reap(self, kind: str, process: subprocess.Popen[bytes]) -> None:
        try:
            status = process.wait(self._timeout)
            error = None if status == 0 else f"exit status {status}"
        except subprocess.TimeoutExpired:
            _kill_group(process)
            error = f"killed after {self._timeout:g} s"
        self._finished(kind, error)

    def _finished(self, kind: str, error: str | None) -> None:
        with self._idle:
            self._running -= 1
            if error is None:
                self._broken.discard(kind)
            else:
                self._report(kind, error)
            self._idle.notify_all()

    def _report(self, kind: str, error: str) -> None:
        if kind not in self._broken:
            self._broken.add(kind)
            log.warning("feedback command failed", extra=fields(kind=kind, error=error[:200]))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
