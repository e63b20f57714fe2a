"""Standard input as a scanner: a line per scan, the last line even without a newline."""

from __future__ import annotations

import os

from agent.config import StdinScanner
from agent.scanner.stdin import StdinSource

CODES = ["BQ17K3M9QW4RT8ZP2C56", "BQ1ABCDEFGHJKMNPQRSK", "BQ1M9S346Q3D25VT4F56"]


def test_each_line_is_a_scan_and_the_source_ends_with_its_input(run_source) -> None:
    read_end, write_end = os.pipe()
    try:
        running = run_source(StdinSource(StdinScanner(type="stdin", workplace=4), fd=read_end))
        os.write(write_end, f"{CODES[0]}\n\n  {CODES[1]}\r\n\xff\x00\n".encode("latin-1"))
        assert running.events.wait_count(3)
        os.write(write_end, CODES[2].encode())
        os.close(write_end)
        running.thread.join(10)
        assert not running.thread.is_alive()
        assert running.events.texts == [CODES[0], CODES[1], "\ufffd", CODES[2]]
        assert {(event.source, event.workplace) for event in running.events.events} == {
            ("stdin", 4)
        }
    finally:
        os.close(read_end)
