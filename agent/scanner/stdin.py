"""Standard input as a scanner: one scan per line (`demo --interactive`, trials, piping codes in)."""

from __future__ import annotations

import os
import select
import threading
import time

from agent.config import MAX_CODE_LENGTH, StdinScanner
from agent.logs import fields, get_logger
from agent.scanner.base import POLL_SECONDS, Emit, ScanEvent
from agent.scanner.serial import LineFramer

log = get_logger(__name__)


class StdinSource:
    """Reads lines from a file descriptor (standard input by default); returns at end of input."""

    def __init__(self, config: StdinScanner, fd: int = 0) -> None:
        self.name = "stdin"
        self.workplace = config.workplace
        self._fd = fd
        self._max = MAX_CODE_LENGTH

    def run(self, emit: Emit, stop: threading.Event) -> None:
        framer = LineFramer("any", self._max, source=self.name)
        while not stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], POLL_SECONDS)
            if not ready:
                continue
            data = self._read()
            texts = framer.feed(data) if data else framer.finish()
            for text in texts:
                emit(ScanEvent(text, self.name, self.workplace, time.time()))
            if not data:
                log.info(
                    "standard input closed, no more scans from it",
                    extra=fields(source=self.name),
                )
                return

    def _read(self) -> bytes:
        try:
            return os.read(self._fd, 65536)
        except OSError as exc:
            log.warning("standard input failed", extra=fields(source=self.name, error=str(exc)))
            return b""
