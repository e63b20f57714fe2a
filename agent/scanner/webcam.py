"""A webcam (or a video file) read with OpenCV and decoded with zxing-cpp or pyzbar, QR only.

OpenCV and the decoders come with the optional `[webcam]` extra and are imported only here, when a
webcam source is built, so HID and serial tills do not carry them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from agent.config import WebcamScanner
from agent.errors import ScannerUnavailable
from agent.logs import fields, get_logger
from agent.scanner.base import Emit, ScanEvent, clean_text, keep_running

log = get_logger(__name__)

INSTALL_HINT = "install the webcam extra: pip install 'boniq-agent[webcam]'"
GONE_AFTER = 0.5
FALLBACK_FPS = 30.0

Decoder = Callable[[Any], list[str]]


def _missing(what: str, exc: BaseException) -> ScannerUnavailable:
    return ScannerUnavailable(f"webcam scanner needs {what} ({exc}); {INSTALL_HINT}")


def load_cv2() -> Any:
    """OpenCV with its own stderr warnings off: a missing camera is reported once, by us."""
    try:
        import cv2
    except ImportError as exc:
        raise _missing("OpenCV", exc) from None
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    return cv2


def _zxing() -> Decoder:
    try:
        import zxingcpp
    except ImportError as exc:
        raise _missing("zxing-cpp", exc) from None
    qr = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)

    def decode(gray: Any) -> list[str]:
        return [code.text for code in zxingcpp.read_barcodes(gray, formats=qr)]

    return decode


def _pyzbar() -> Decoder:
    try:
        from pyzbar import pyzbar
    except ImportError as exc:
        raise _missing("pyzbar and the zbar library (Debian: apt install libzbar0)", exc) from None
    qr = [pyzbar.ZBarSymbol.QRCODE]

    def decode(gray: Any) -> list[str]:
        return [
            code.data.decode("utf-8", errors="replace") for code in pyzbar.decode(gray, symbols=qr)
        ]

    return decode


DECODERS: dict[str, Callable[[], Decoder]] = {"zxing": _zxing, "pyzbar": _pyzbar}


def load_decoder(name: str = "zxing") -> Decoder:
    """A function from a grayscale frame (numpy uint8 array) to the QR texts in it."""
    if name not in DECODERS:
        raise ScannerUnavailable(
            f"unknown webcam decoder {name!r}; use one of {', '.join(DECODERS)}"
        )
    return DECODERS[name]()


class HoldFilter:
    """One scan per presentation: a code held in view is reported once.

    It is reported again when it comes back after leaving the view (unseen for `gone_after` seconds),
    or when it reappears after a short drop-out and `repeat_after` seconds passed since its last scan.
    """

    def __init__(self, repeat_after: float = 2.0, gone_after: float = GONE_AFTER) -> None:
        self._repeat_after = repeat_after
        self._gone_after = gone_after
        self._seen: dict[str, float] = {}
        self._scanned: dict[str, float] = {}
        self._previous: set[str] = set()

    def update(self, texts: Iterable[str], now: float) -> list[str]:
        current = list(dict.fromkeys(texts))
        new = [text for text in current if self._is_new(text, now)]
        for text in new:
            self._scanned[text] = now
        for text in current:
            self._seen[text] = now
        self._previous = set(current)
        self._forget(now)
        return new

    def _is_new(self, text: str, now: float) -> bool:
        seen = self._seen.get(text)
        if seen is None or now - seen > self._gone_after:
            return True
        return (
            text not in self._previous and now - self._scanned.get(text, now) >= self._repeat_after
        )

    def _forget(self, now: float) -> None:
        horizon = max(self._gone_after, self._repeat_after)
        self._seen = {t: at for t, at in self._seen.items() if now - at <= horizon}
        self._scanned = {t: at for t, at in self._scanned.items() if t in self._seen}


def _is_live(device: str) -> bool:
    return device.isdigit() or device.startswith("/dev/")


class WebcamSource:
    """A camera by index or /dev/video path (reopened after unplug), or a video file (ends at its end)."""

    def __init__(self, config: WebcamScanner) -> None:
        device = config.device
        self.device = device
        self.name = f"webcam:{device}"
        self.workplace = config.workplace
        self._live = _is_live(device)
        self._fps = config.fps
        self._repeat_after = config.repeat_after
        self._cv2 = load_cv2()
        self._decode = load_decoder(config.decoder)
        self._decode_failed = False

    def run(self, emit: Emit, stop: threading.Event) -> None:
        if self._live:
            keep_running(self.name, lambda opened: self._camera(emit, stop, opened), stop)
        else:
            self._play_file(emit, stop)

    def _camera(self, emit: Emit, stop: threading.Event, opened: Callable[[], None]) -> None:
        cv2 = self._cv2
        capture = cv2.VideoCapture(int(self.device) if self.device.isdigit() else self.device)
        try:
            if not capture.isOpened():
                raise ScannerUnavailable("camera cannot be opened")
            if self._fps:
                capture.set(cv2.CAP_PROP_FPS, self._fps)
            opened()
            holds = HoldFilter(self._repeat_after)
            while not stop.is_set():
                ok, frame = capture.read()
                if not ok:
                    raise ScannerUnavailable("camera stopped delivering frames")
                self._scan(frame, holds, time.monotonic(), emit)
        finally:
            capture.release()

    def _play_file(self, emit: Emit, stop: threading.Event) -> None:
        capture = self._cv2.VideoCapture(self.device)
        try:
            if not capture.isOpened():
                log.warning(
                    "video file cannot be opened, source ends",
                    extra=fields(source=self.name),
                )
                return
            frames = self._replay(capture, emit, stop)
            log.info(
                "video file ended, source ends",
                extra=fields(source=self.name, frames=frames),
            )
        finally:
            capture.release()

    def _replay(self, capture: Any, emit: Emit, stop: threading.Event) -> int:
        """Frame times come from the file's frame rate, so hold detection does not depend on CPU speed."""
        fps = capture.get(self._cv2.CAP_PROP_FPS) or FALLBACK_FPS
        holds = HoldFilter(self._repeat_after)
        started = time.monotonic()
        frames = 0
        while not stop.is_set():
            ok, frame = capture.read()
            if not ok:
                break
            self._scan(frame, holds, frames / fps, emit)
            frames += 1
            if self._fps:
                stop.wait(max(0.0, started + frames / self._fps - time.monotonic()))
        return frames

    def _scan(self, frame: Any, holds: HoldFilter, now: float, emit: Emit) -> None:
        gray = frame if frame.ndim == 2 else self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2GRAY)
        for text in holds.update(self._texts(gray), now):
            emit(ScanEvent(text, self.name, self.workplace, time.time()))

    def _texts(self, gray: Any) -> list[str]:
        try:
            texts = self._decode(gray)
        except Exception as exc:  # noqa: BLE001 - one bad frame must not end the source
            if not self._decode_failed:
                log.warning(
                    "frame could not be decoded",
                    extra=fields(source=self.name, error=str(exc)[:200]),
                )
            self._decode_failed = True
            return []
        return [text for text in map(clean_text, texts) if text]
