"""USB HID keyboard-wedge scanners read from their evdev node, grabbed so no window sees the keys."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from evdev import ecodes as e

from agent.config import MAX_CODE_LENGTH, HidScanner
from agent.errors import ScannerUnavailable
from agent.logs import fields, get_logger
from agent.scanner.base import (
    POLL_SECONDS,
    Emit,
    ScanEvent,
    clean_text,
    keep_running,
)
from agent.scanner.keymaps import keymap

log = get_logger(__name__)

KEY_DOWN, KEY_UP, KEY_REPEAT = 1, 0, 2
_SHIFT = frozenset({e.KEY_LEFTSHIFT, e.KEY_RIGHTSHIFT})
_ALTGR = frozenset({e.KEY_RIGHTALT})
_BLOCKING = frozenset(
    {e.KEY_LEFTCTRL, e.KEY_RIGHTCTRL, e.KEY_LEFTALT, e.KEY_LEFTMETA, e.KEY_RIGHTMETA}
)
_MODIFIERS = _SHIFT | _ALTGR | _BLOCKING
_ENTER = frozenset({e.KEY_ENTER, e.KEY_KPENTER})


class InputEventLike(Protocol):
    type: int
    code: int
    value: int

    def timestamp(self) -> float: ...


class HidDecoder:
    """Key events in, scanned texts out. Pure: the caller supplies the time of every event."""

    def __init__(
        self,
        layout: str = "us",
        gap_ms: float = 50,
        max_length: int = MAX_CODE_LENGTH,
        source: str = "hid",
    ) -> None:
        self._keymap = keymap(layout)
        self._gap = gap_ms / 1000
        self._max = max_length
        self._source = source
        self._held: set[int] = set()
        self._chars: list[str] = []
        self._last_at: float | None = None
        self._after_dead = False
        self._overflow = False

    def feed_event(self, event: InputEventLike) -> list[str]:
        if event.type != e.EV_KEY:
            return []
        return self.feed(event.code, event.value, event.timestamp())

    def feed(self, code: int, value: int, at: float) -> list[str]:
        texts = self.flush_due(at)
        self._last_at = at
        if code in _MODIFIERS:
            self._track_modifier(code, value)
        elif value == KEY_DOWN:
            if code in _ENTER:
                texts += self._flush()
            else:
                self._type(code)
        return texts

    def flush_due(self, now: float) -> list[str]:
        """The partial code, once no key came for `gap_ms`. A modifier still held then is
        forgotten: its key-up was lost (evdev SYN_DROPPED) and must not shift every later code."""
        if self._last_at is not None and now - self._last_at > self._gap:
            self._held.clear()
            return self._flush()
        return []

    def deadline(self) -> float | None:
        pending = self._chars or self._overflow
        return self._last_at + self._gap if pending and self._last_at is not None else None

    def _track_modifier(self, code: int, value: int) -> None:
        if value == KEY_DOWN:
            self._held.add(code)
        elif value == KEY_UP:
            self._held.discard(code)

    def _type(self, code: int) -> None:
        levels = self._keymap.keys.get(code)
        if levels is None or self._held & _BLOCKING:
            return
        plain, shifted, altgr = levels
        if self._held & _ALTGR:
            char = altgr
        else:
            char = shifted if self._held & _SHIFT else plain
        swallow = self._after_dead and char == " "
        self._after_dead = code in self._keymap.dead
        if not char or swallow:
            return
        if len(self._chars) >= self._max:
            if not self._overflow:
                log.warning(
                    "scan ignored: too long",
                    extra=fields(source=self._source, max_length=self._max),
                )
            self._overflow = True
            self._chars.clear()
        if not self._overflow:
            self._chars.append(char)

    def _flush(self) -> list[str]:
        text = clean_text("".join(self._chars))
        dropped = self._overflow
        self._chars.clear()
        self._overflow = False
        self._after_dead = False
        return [text] if text and not dropped else []


class KeyboardDevice(Protocol):
    fd: int

    def grab(self) -> None: ...
    def read(self) -> Iterable[InputEventLike]: ...
    def close(self) -> None: ...


def _open_evdev(path: str) -> KeyboardDevice:
    from evdev import InputDevice

    return InputDevice(path)


class HidSource:
    """Reads `/dev/input/by-id/...-event-kbd`; waits for the device and picks it up when it appears."""

    def __init__(
        self, config: HidScanner, open_device: Callable[[str], KeyboardDevice] = _open_evdev
    ) -> None:
        device = config.device
        if not device:
            raise ScannerUnavailable(
                "a HID scanner needs `device:` (a /dev/input/by-id/...-event-kbd path)"
            )
        self.device: str = device
        self.name = f"hid:{device}"
        self.workplace = config.workplace
        self._layout = config.layout
        self._gap_ms = config.gap_ms
        self._max = MAX_CODE_LENGTH
        self._grab = config.grab
        self._open = open_device
        try:
            keymap(self._layout)
        except ValueError as exc:
            raise ScannerUnavailable(str(exc)) from None

    def run(self, emit: Emit, stop: threading.Event) -> None:
        keep_running(self.name, lambda opened: self._session(emit, stop, opened), stop)

    def _session(self, emit: Emit, stop: threading.Event, opened: Callable[[], None]) -> None:
        device = self._open(self.device)
        try:
            if self._grab:
                device.grab()
            opened()
            self._read(device, emit, stop)
        finally:
            device.close()

    def _read(self, device: KeyboardDevice, emit: Emit, stop: threading.Event) -> None:
        decoder = HidDecoder(self._layout, self._gap_ms, self._max, self.name)
        while not stop.is_set():
            deadline = decoder.deadline()
            timeout = (
                POLL_SECONDS
                if deadline is None
                else max(0.0, min(POLL_SECONDS, deadline - time.time()))
            )
            ready, _, _ = select.select([device.fd], [], [], timeout)
            texts = [
                text for event in self._events(device, ready) for text in decoder.feed_event(event)
            ]
            texts += decoder.flush_due(time.time())
            for text in texts:
                emit(ScanEvent(text, self.name, self.workplace, time.time()))

    @staticmethod
    def _events(device: KeyboardDevice, ready: list[int]) -> list[InputEventLike]:
        if not ready:
            return []
        try:
            return list(device.read())
        except BlockingIOError:
            return []
