"""Serial scanners: framing, AIM prefixes, garbage, and a real tty (pty pair, socat with unplug/replug)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import tty
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import SerialScanner
from agent.scanner import build_source
from agent.scanner.serial import LineFramer

CODES = ["BQ17K3M9QW4RT8ZP2C56", "BQ1ABCDEFGHJKMNPQRSK", "BQ1M9S346Q3D25VT4F56"]
HUNDRED = [f"{CODES[i % 3][:-2]}{i:02d}" for i in range(100)]
PROBE = "PROBE"


def serial_config(device: str, **overrides: object) -> SerialScanner:
    values = {
        "type": "serial",
        "device": device,
        "workplace": 2,
        "baudrate": 9600,
        "parity": "N",
        "bytesize": 8,
        "stopbits": 1,
        "line_ending": "any",
        "aim_prefix": False,
        "max_length": 512,
    }
    return SerialScanner.model_validate(values | overrides)


def feed_all(framer: LineFramer, chunks: list[bytes]) -> list[str]:
    return [text for chunk in chunks for text in framer.feed(chunk)]


@pytest.mark.parametrize("ending", [b"\r", b"\n", b"\r\n"])
def test_any_line_ending_frames_each_scan_once(ending: bytes) -> None:
    stream = b"".join(code.encode() + ending for code in CODES)
    assert (
        feed_all(LineFramer("any"), [stream[i : i + 3] for i in range(0, len(stream), 3)]) == CODES
    )


def test_crlf_framing_waits_for_the_lf_even_across_chunks() -> None:
    framer = LineFramer("crlf")
    assert framer.feed(b"BQ17K3M9QW4RT8ZP2C56\r") == []
    assert framer.feed(b"\nBQ1ABCDEFGHJKMNPQRSK\r\n") == CODES[:2]


def test_aim_prefix_is_stripped_from_qr_and_other_symbologies_are_dropped() -> None:
    framer = LineFramer("cr", aim_prefix=True)
    assert (
        framer.feed(b"]Q1BQ17K3M9QW4RT8ZP2C56\r]E04006381333931\r]Q3BQ1ABCDEFGHJKMNPQRSK\r")
        == CODES[:2]
    )


def test_aim_prefix_is_kept_as_text_when_the_option_is_off() -> None:
    assert LineFramer("cr").feed(b"]Q1BQ17K3M9QW4RT8ZP2C56\r") == ["]Q1BQ17K3M9QW4RT8ZP2C56"]


def test_an_endless_line_is_dropped_and_the_next_scan_still_arrives() -> None:
    framer = LineFramer("any", max_length=64)
    texts = feed_all(framer, [b"X" * 1000] * 10 + [b"STILL-GARBAGE\rBQ17K3M9QW4RT8ZP2C56\r"])
    assert texts == [CODES[0]]


def test_a_10_kb_line_in_one_chunk_is_dropped() -> None:
    assert LineFramer("any").feed(b"A" * 10_000 + b"\r" + CODES[1].encode() + b"\r") == [CODES[1]]


def test_non_utf8_bytes_and_control_characters_do_not_stop_the_scan() -> None:
    texts = LineFramer("any").feed(b"\xff\xfeBQ1\x00\x1bM9S346Q3D25VT4F56\x07\r")
    assert texts == ["\ufffd\ufffdBQ1M9S346Q3D25VT4F56"]


@settings(max_examples=300, deadline=None)
@given(
    codes=st.lists(
        st.text(
            st.characters(codec="ascii", categories=["Lu", "Nd"]),
            min_size=1,
            max_size=40,
        ),
        max_size=20,
    ),
    ending=st.sampled_from([b"\r", b"\n", b"\r\n"]),
    cuts=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30),
)
def test_any_chunking_of_a_scan_stream_yields_the_same_scans(
    codes: list[str], ending: bytes, cuts: list[int]
) -> None:
    stream = b"".join(code.encode() + ending for code in codes)
    chunks, position = [], 0
    for cut in cuts * (len(stream) // len(cuts) + 1):
        if position >= len(stream):
            break
        chunks.append(stream[position : position + cut])
        position += cut
    assert feed_all(LineFramer("any"), chunks) == codes


@settings(max_examples=500, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=300), max_size=20),
    ending=st.sampled_from(["any", "cr", "lf", "crlf"]),
    aim=st.booleans(),
    max_length=st.integers(min_value=1, max_value=600),
)
def test_fuzzed_bytes_never_raise_and_yield_only_clean_bounded_text(
    chunks: list[bytes], ending: str, aim: bool, max_length: int
) -> None:
    framer = LineFramer(ending, max_length=max_length, aim_prefix=aim)
    for text in feed_all(framer, chunks) + framer.finish():
        assert text and text == text.strip()
        assert not any(unicodedata.category(c) == "Cc" for c in text)
        assert len(text) <= max_length


def until_flowing(write: Callable[[bytes], object], running, timeout: float = 15.0) -> None:
    """Send probe scans until one comes through: the port is open and the line settings are right."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        write(PROBE.encode() + b"\r\n")
        if running.events.wait_for(lambda texts: PROBE in texts[-1:], timeout=0.3):
            return
    raise AssertionError("the serial source never started reading")


def scans_after_probe(running, count: int) -> list[str]:
    running.events.wait_for(lambda texts: len([t for t in texts if t != PROBE]) >= count)
    return [text for text in running.events.texts if text != PROBE]


def test_100_back_to_back_scans_over_a_pty_arrive_as_100_events(run_source) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        running = run_source(build_source(serial_config(os.ttyname(slave))))
        until_flowing(lambda data: os.write(master, data), running)
        os.write(master, b"".join(code.encode() + b"\r\n" for code in HUNDRED))
        assert scans_after_probe(running, 100) == HUNDRED
        event = running.events.events[-1]
        assert (event.source, event.workplace) == (f"serial:{os.ttyname(slave)}", 2)
    finally:
        os.close(master)
        os.close(slave)


class Socat:
    """A pty pair with stable symlinks: `device` plays /dev/serial/by-id/..., `host` is the scanner end."""

    def __init__(self, directory: Path) -> None:
        self.device = directory / "usb-Scanner-if00"
        self.host = directory / "scanner-end"
        self.process: subprocess.Popen[bytes] | None = None

    def plug(self) -> None:
        self.process = subprocess.Popen(
            [
                "socat",
                f"pty,raw,echo=0,link={self.device}",
                f"pty,raw,echo=0,link={self.host}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (self.device.exists() and self.host.exists()):
            assert time.monotonic() < deadline, "socat did not create its pty links"
            time.sleep(0.02)
        self.fd = os.open(self.host, os.O_RDWR | os.O_NOCTTY)

    def unplug(self) -> None:
        assert self.process is not None
        os.close(self.fd)
        self.process.terminate()
        self.process.wait(timeout=10)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)


@pytest.fixture
def socat(tmp_path: Path) -> Iterator[Socat]:
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed")
    pair = Socat(tmp_path)
    pair.plug()
    yield pair
    if pair.process and pair.process.poll() is None:
        pair.unplug()


def test_scans_flow_again_after_the_scanner_is_unplugged_and_replugged(
    socat: Socat, run_source
) -> None:
    running = run_source(build_source(serial_config(str(socat.device))))
    until_flowing(socat.write, running)
    socat.write(b"".join(code.encode() + b"\r" for code in HUNDRED))
    assert scans_after_probe(running, 100) == HUNDRED

    socat.unplug()
    assert not socat.device.exists()
    socat.plug()
    until_flowing(socat.write, running)
    socat.write(b"".join(code.encode() + b"\r\n" for code in CODES))

    assert scans_after_probe(running, 103) == HUNDRED + CODES
    assert running.thread.is_alive()


def test_a_missing_device_does_not_end_the_source_and_is_picked_up_when_it_appears(
    tmp_path: Path, run_source
) -> None:
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed")
    pair = Socat(tmp_path)
    running = run_source(build_source(serial_config(str(pair.device))))
    time.sleep(0.3)
    assert running.thread.is_alive()
    pair.plug()
    try:
        until_flowing(pair.write, running)
        pair.write(CODES[2].encode() + b"\r")
        assert scans_after_probe(running, 1) == [CODES[2]]
    finally:
        pair.unplug()
