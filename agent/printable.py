"""The one escaping rule for text the agent writes where a person reads it.

Text from outside (a cloud error body, a POS fault, a scanned code, a receipt id) may hold ESC
sequences that recolour or rewrite a terminal, BEL, backspaces that hide what precedes them,
C1 controls that some terminals obey, and bidi overrides (U+202E) that show text reversed.
`printable` turns every character `str.isprintable()` refuses (C0, DEL, C1, format characters
such as bidi controls and zero-width joiners, line and paragraph separators, unassigned code
points) into a visible escape: `\\x1b`, `\\u202e`, `\\n`. Log lines, CLI output, systemd's
STATUS= line and metric labels all go through it.
"""

from __future__ import annotations

from typing import Any, TextIO

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, *, keep: str = "") -> str:
    """`text` with every non-printable character except those in `keep` escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escape(c) for c in text)


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    point = ord(char)
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


class PrintableStream:
    """A text stream that escapes what is written to it, line breaks kept (for CLI output)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(printable(text, keep="\n"))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
