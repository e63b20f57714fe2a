"""Code sources: hid (evdev), serial (pyserial), webcam (OpenCV + decoder), stdin — one interface.

sources = build_sources(config.scanners)
threading.Thread(target=source.run, args=(emit, stop), daemon=True).start()   # for each
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agent.errors import ScannerUnavailable
from agent.scanner.base import ScanEvent, Source

__all__ = ["ScanEvent", "Source", "build_source", "build_sources"]


def _hid(config: Any) -> Source:
    from agent.scanner.hid import HidSource

    return HidSource(config)


def _serial(config: Any) -> Source:
    from agent.scanner.serial import SerialSource

    return SerialSource(config)


def _webcam(config: Any) -> Source:
    from agent.scanner.webcam import WebcamSource

    return WebcamSource(config)


def _stdin(config: Any) -> Source:
    from agent.scanner.stdin import StdinSource

    return StdinSource(config)


_BUILDERS: dict[str, Callable[[Any], Source]] = {
    "hid": _hid,
    "serial": _serial,
    "webcam": _webcam,
    "stdin": _stdin,
}


def build_source(config: Any) -> Source:
    """Raises ScannerUnavailable when the source cannot run here (e.g. the webcam extra is missing)."""
    kind = config.type
    if kind not in _BUILDERS:
        raise ScannerUnavailable(
            f"unknown scanner type {kind!r}; use one of {', '.join(_BUILDERS)}"
        )
    return _BUILDERS[kind](config)


def build_sources(scanners: Sequence[Any]) -> list[Source]:
    return [build_source(config) for config in scanners]
