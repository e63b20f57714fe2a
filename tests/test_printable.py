"""One escaping rule for every output path: log lines and fields, CLI output, STATUS=, metrics."""

from __future__ import annotations

import io
import logging

import pytest

from agent import logs, systemd
from agent.metrics import Metrics
from agent.printable import PrintableStream, printable

CONTROLS = [
    "\x00",
    "\x07",
    "\x08",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9b",
    "\u202e",
    "\u2066",
    "\u200f",
    "\u2028",
    "\u200b",
    "\ufeff",
    "\r",
    "\t",
    "\n",
    "\U000e0001",
]


@pytest.mark.parametrize("char", CONTROLS)
def test_every_non_printable_character_is_escaped(char: str) -> None:
    out = printable(f"a{char}b")
    assert out.isprintable() and out.startswith("a\\") and out.endswith("b")


def test_printable_text_is_left_alone() -> None:
    text = 'Jürgen\'s Bäckerei — 3 × €2,50 [ok] \\ "quoted" 日本'
    assert printable(text) == text
    assert printable("\x1b[31m") == "\\x1b[31m" and printable("\u202e") == "\\u202e"


def test_log_messages_fields_and_tracebacks_are_escaped() -> None:
    stream = io.StringIO()
    handler = logs.setup("debug", stream=stream)
    log = logs.get_logger("agent.test")
    try:
        log.warning("cloud says \x1b]0;pwned\x07", extra=logs.fields(reason="\x1b[2J\u202egnp.exe"))
        try:
            raise ValueError("bad \x9b1m")
        except ValueError:
            log.exception("failed \x00")
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert "\\x1b]0;pwned\\x07" in text and "\\u202egnp.exe" in text and "\\x9b1m" in text
    assert all(line.isprintable() for line in text.splitlines())


def test_the_systemd_status_line_is_escaped() -> None:
    assert (
        systemd._status_line("last error: \x1b[31mred\x07")
        == "STATUS=last error: \\x1b[31mred\\x07"
    )


def test_metric_labels_are_escaped() -> None:
    metrics = Metrics(version="1.0\x1b[31m")
    metrics.claim_closed("unsure", "\x1b]0;x\x07")
    text = metrics.exposition().decode()
    assert "\x1b" not in text and "\x07" not in text and "\\x1b" in text


def test_cli_output_is_escaped_but_keeps_its_lines() -> None:
    out = io.StringIO()
    PrintableStream(out).write("row 1 \x1b[2J\nrow 2\n")
    assert out.getvalue() == "row 1 \\x1b[2J\nrow 2\n"
