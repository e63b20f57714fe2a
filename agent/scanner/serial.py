"""Serial and USB CDC-ACM scanners: one code per line, optional AIM symbology prefix."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import serial

from agent.config import MAX_CODE_LENGTH, SerialScanner
from agent.errors import ScannerUnavailable
from agent.logs import fields, get_logger
from agent.scanner.base import (
    POLL_SECONDS,
    Emit,
    ScanEvent,
    clean_text,
    keep_running,
)

log = get_logger(__name__)

_TERMINATORS = {
    "any": re.compile(rb"\r|\n"),
    "cr": re.compile(rb"\r"),
    "lf": re.compile(rb"\n"),
    "crlf": re.compile(rb"\r\n"),
}
_QR_AIM = "Q"


class LineFramer:
    """Bytes in, scanned texts out. Pure: no I/O, never raises, bounded memory."""

    def __init__(
        self,
        line_ending: str = "any",
        max_length: int = MAX_CODE_LENGTH,
        aim_prefix: bool = False,
        source: str = "serial",
    ) -> None:
        if line_ending not in _TERMINATORS:
            raise ValueError(f"line_ending must be one of {', '.join(_TERMINATORS)}")
        self._terminator = _TERMINATORS[line_ending]
        self._max = max_length
        self._aim = aim_prefix
        self._source = source
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        texts = []
        while match := self._terminator.search(self._buf):
            frame = bytes(self._buf[: match.start()])
            del self._buf[: match.end()]
            if self._discarding:
                self._discarding = False
            elif (text := self._accept(frame)) is not None:
                texts.append(text)
        if len(self._buf) > self._max + 1:
            if not self._discarding:
                self._too_long(len(self._buf))
            self._discarding = True
            self._buf.clear()
        return texts

    def finish(self) -> list[str]:
        """The last line of a stream that ended without a terminator."""
        frame, discarding = bytes(self._buf), self._discarding
        self._buf.clear()
        self._discarding = False
        text = None if discarding else self._accept(frame)
        return [text] if text is not None else []

    def _accept(self, frame: bytes) -> str | None:
        if len(frame) > self._max:
            self._too_long(len(frame))
            return None
        text = clean_text(frame)
        if not text:
            return None
        if self._aim and text.startswith("]") and len(text) >= 3:
            if text[1] != _QR_AIM:
                log.info(
                    "scan ignored: not a QR code",
                    extra=fields(source=self._source, aim=text[:3]),
                )
                return None
            text = text[3:].strip()
        return text or None

    def _too_long(self, length: int) -> None:
        log.warning(
            "scan ignored: line too long",
            extra=fields(source=self._source, length=f">={length}", max_length=self._max),
        )


def framer_for(config: SerialScanner, source: str) -> LineFramer:
    return LineFramer(
        line_ending=config.line_ending,
        max_length=config.max_length,
        aim_prefix=config.aim_prefix,
        source=source,
    )


class SerialSource:
    """Reads `/dev/serial/by-id/...` (or any pyserial URL such as `loop://`) and reopens after unplug."""

    def __init__(self, config: SerialScanner) -> None:
        device = config.device
        if not device:
            raise ScannerUnavailable("a serial scanner needs `device:` (a /dev/serial/by-id/ path)")
        self.device: str = device
        self.name = f"serial:{device}"
        self.workplace = config.workplace
        self._config = config
        self._exclusive = True if "://" not in device else None  # not for pyserial URLs

    def run(self, emit: Emit, stop: threading.Event) -> None:
        keep_running(self.name, lambda opened: self._session(emit, stop, opened), stop)

    def _session(self, emit: Emit, stop: threading.Event, opened: Callable[[], None]) -> None:
        framer = framer_for(self._config, self.name)
        c = self._config
        with serial.serial_for_url(
            self.device,
            timeout=POLL_SECONDS,
            baudrate=c.baudrate,
            parity=c.parity,
            bytesize=c.bytesize,
            stopbits=c.stopbits,
            exclusive=self._exclusive,
        ) as port:
            opened()
            while not stop.is_set():
                data = port.read(max(1, port.in_waiting))
                # Quiet for a read timeout: the line is over, terminated or not. So an endless or
                # unterminated line cannot swallow the next customer's code.
                for text in framer.feed(data) if data else framer.finish():
                    emit(ScanEvent(text, self.name, self.workplace, time.time()))
