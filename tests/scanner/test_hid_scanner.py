"""HID wedge scanners: synthetic evdev key events per keyboard-country setting, and the device loop."""

from __future__ import annotations

import errno
import os
import queue
import time
import unicodedata
from pathlib import Path
from typing import ClassVar

import pytest
from evdev import InputEvent
from evdev import ecodes as e
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import HidScanner
from agent.scanner import build_source
from agent.scanner.hid import HidDecoder, HidSource

CODES = ["BQ17K3M9QW4RT8ZP2C56", "BQ1ABCDEFGHJKMNPQRSK", "BQ1M9S346Q3D25VT4F56"]
DIGIT_KEYS = {str(n): getattr(e, f"KEY_{n}") for n in range(10)}
SWAPS = {
    "us": {}, "uk": {},
    "de": {"y": e.KEY_Z, "z": e.KEY_Y},
    "fr": {"a": e.KEY_Q, "q": e.KEY_A, "z": e.KEY_W, "w": e.KEY_Z, "m": e.KEY_SEMICOLON},
}  # fmt: skip
STEP = 0.002


def key_for(char: str, layout: str) -> tuple[int, bool]:
    """How a scanner set to `layout` types an alphanumeric: (key, with shift)."""
    if char.isdigit():
        return DIGIT_KEYS[char], layout == "fr"
    lower = char.lower()
    return SWAPS[layout].get(lower, getattr(e, f"KEY_{lower.upper()}")), char.isupper()


class Typist:
    """Writes key events the way a scanner does: modifier down, key down, key up, modifier up."""

    def __init__(self, at: float = 1000.0) -> None:
        self.at = at
        self.events: list[tuple[int, int, float]] = []

    def key(self, code: int, value: int = 1) -> Typist:
        self.at += STEP
        self.events.append((code, value, self.at))
        return self

    def tap(self, code: int, modifier: int | None = None) -> Typist:
        if modifier is not None:
            self.key(modifier, 1)
        self.key(code, 1).key(code, 0)
        if modifier is not None:
            self.key(modifier, 0)
        return self

    def text(self, text: str, layout: str = "us") -> Typist:
        for char in text:
            code, shift = key_for(char, layout)
            self.tap(code, e.KEY_LEFTSHIFT if shift else None)
        return self

    def enter(self, code: int = e.KEY_ENTER) -> Typist:
        return self.tap(code)

    def pause(self, seconds: float) -> Typist:
        self.at += seconds
        return self


def decode(
    events: list[tuple[int, int, float]], layout: str = "us", **options: object
) -> list[str]:
    decoder = HidDecoder(layout, **options)
    return [text for event in events for text in decoder.feed(*event)]


@pytest.mark.parametrize("layout", ["us", "uk", "de", "fr"])
def test_boniq_codes_typed_by_a_scanner_in_each_layout_arrive_exactly(
    layout: str,
) -> None:
    typist = Typist()
    for code in CODES:
        typist.text(code, layout).enter()
    assert decode(typist.events, layout) == CODES


@pytest.mark.parametrize("layout", ["us", "uk", "de", "fr"])
def test_lower_case_and_mixed_case_keep_their_case(layout: str) -> None:
    typed = "bq17k3M9qw4RT8zp2c56 Wymz"
    assert decode(Typist().text(typed.replace(" ", ""), layout).enter().events, layout) == [
        typed.replace(" ", "")
    ]


def test_azerty_digit_row_without_shift_types_symbols() -> None:
    typist = Typist()
    for digit in "1234567890":
        typist.tap(DIGIT_KEYS[digit])
    assert decode(typist.enter().events, "fr") == ["&é\"'(-è_çà"]


@pytest.mark.parametrize(
    ("layout", "keys", "expected"),
    [
        (
            "us",
            [
                (e.KEY_2, e.KEY_LEFTSHIFT),
                (e.KEY_SLASH, None),
                (e.KEY_SEMICOLON, e.KEY_RIGHTSHIFT),
            ],
            "@/:",
        ),
        (
            "uk",
            [
                (e.KEY_2, e.KEY_LEFTSHIFT),
                (e.KEY_APOSTROPHE, e.KEY_LEFTSHIFT),
                (e.KEY_BACKSLASH, None),
                (e.KEY_3, e.KEY_RIGHTSHIFT),
            ],
            '"@#£',
        ),
        (
            "de",
            [
                (e.KEY_Q, e.KEY_RIGHTALT),
                (e.KEY_7, e.KEY_LEFTSHIFT),
                (e.KEY_SLASH, None),
                (e.KEY_SEMICOLON, None),
                (e.KEY_MINUS, None),
                (e.KEY_DOT, e.KEY_LEFTSHIFT),
            ],
            "@/-öß:",
        ),
        (
            "fr",
            [
                (e.KEY_0, e.KEY_RIGHTALT),
                (e.KEY_DOT, e.KEY_LEFTSHIFT),
                (e.KEY_M, None),
                (e.KEY_SLASH, None),
                (e.KEY_MINUS, None),
            ],
            "@/,!)",
        ),
    ],
)
def test_layout_symbols_with_shift_and_altgr(
    layout: str, keys: list[tuple[int, int | None]], expected: str
) -> None:
    typist = Typist()
    for code, modifier in keys:
        typist.tap(code, modifier)
    assert decode(typist.enter().events, layout) == [expected]


def test_a_dead_key_types_its_character_and_the_following_space_is_swallowed() -> None:
    events = Typist().tap(e.KEY_LEFTBRACE).tap(e.KEY_SPACE).text("BQ1", "fr").enter().events
    assert decode(events, "fr") == ["^BQ1"]


def test_key_up_and_auto_repeat_do_not_type() -> None:
    typist = (
        Typist().key(e.KEY_LEFTSHIFT).key(e.KEY_B).key(e.KEY_B, 2).key(e.KEY_B, 2).key(e.KEY_B, 0)
    )
    typist.key(e.KEY_LEFTSHIFT, 2).key(e.KEY_LEFTSHIFT, 0).key(e.KEY_Q, 0).text(
        "Q17K3M9QW4RT8ZP2C56"
    )
    assert decode(typist.enter(e.KEY_KPENTER).events) == [CODES[0]]


def test_shift_released_means_lower_case_again() -> None:
    typist = (
        Typist().key(e.KEY_RIGHTSHIFT).tap(e.KEY_A).key(e.KEY_RIGHTSHIFT, 0).tap(e.KEY_A).enter()
    )
    assert decode(typist.events) == ["Aa"]


def test_a_partial_code_is_flushed_after_the_inter_key_gap() -> None:
    typist = Typist().text(CODES[0]).pause(0.2).text(CODES[1]).enter()
    assert decode(typist.events, gap_ms=50) == CODES[:2]


def test_flush_due_returns_the_pending_code_once_the_gap_passed() -> None:
    decoder = HidDecoder("us", gap_ms=50)
    typist = Typist().text(CODES[2])
    assert [t for event in typist.events for t in decoder.feed(*event)] == []
    assert decoder.flush_due(typist.at + 0.01) == []
    assert decoder.flush_due(typist.at + 0.06) == [CODES[2]]
    assert decoder.flush_due(typist.at + 1.0) == []


def test_ctrl_combinations_do_not_type_and_an_overlong_scan_is_dropped() -> None:
    typist = Typist().tap(e.KEY_J, e.KEY_LEFTCTRL).text("X" * 40).enter().text(CODES[1]).enter()
    assert decode(typist.events, max_length=32) == [CODES[1]]


def test_real_evdev_input_events_with_sync_and_scan_codes_in_between() -> None:
    decoder = HidDecoder("us")
    texts: list[str] = []
    for code, value, at in Typist().text(CODES[0]).enter().events:
        sec, usec = int(at), round((at % 1) * 1_000_000)
        for event in (
            InputEvent(sec, usec, e.EV_MSC, e.MSC_SCAN, 458757),
            InputEvent(sec, usec, e.EV_KEY, code, value),
            InputEvent(sec, usec, e.EV_SYN, e.SYN_REPORT, 0),
        ):
            texts += decoder.feed_event(event)
    assert texts == [CODES[0]]


@settings(max_examples=400, deadline=None)
@given(
    keys=st.lists(
        st.tuples(st.integers(0, 300), st.integers(-1, 3), st.floats(0, 0.2)),
        max_size=200,
    ),
    layout=st.sampled_from(["us", "uk", "de", "fr"]),
)
def test_fuzzed_key_events_never_raise_and_yield_clean_text(
    keys: list[tuple[int, int, float]], layout: str
) -> None:
    decoder = HidDecoder(layout, gap_ms=50, max_length=64)
    at, texts = 0.0, []
    for code, value, delay in keys:
        at += delay
        texts += decoder.feed(code, value, at)
    texts += decoder.flush_due(at + 1)
    for text in texts:
        assert text and len(text) <= 64
        assert not any(unicodedata.category(c) == "Cc" for c in text)


class FakeKeyboard:
    """An evdev device stand-in: a pipe makes its fd readable; unplugging raises ENODEV like evdev."""

    plugged: ClassVar[dict[str, FakeKeyboard]] = {}

    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        self.path = path
        self._read_end, self._write_end = os.pipe()
        self._events: queue.SimpleQueue[InputEvent] = queue.SimpleQueue()
        self.grabbed = False
        self.gone = False
        FakeKeyboard.plugged[path] = self

    @property
    def fd(self) -> int:
        return self._read_end

    def grab(self) -> None:
        self.grabbed = True

    def send(self, events: list[tuple[int, int, float]]) -> None:
        for code, value, at in events:
            self._events.put(InputEvent(int(at), int((at % 1) * 1e6), e.EV_KEY, code, value))
        os.write(self._write_end, b"x")

    def unplug(self) -> None:
        self.gone = True
        os.write(self._write_end, b"x")

    def read(self) -> list[InputEvent]:
        os.read(self._read_end, 4096)
        if self.gone:
            raise OSError(errno.ENODEV, "No such device")
        events = []
        while not self._events.empty():
            events.append(self._events.get())
        return events

    def close(self) -> None:
        os.close(self._read_end)
        os.close(self._write_end)


def wait_plugged(path: str, previous: FakeKeyboard | None = None) -> FakeKeyboard:
    deadline = time.monotonic() + 10
    while (device := FakeKeyboard.plugged.get(path)) is None or device is previous:
        assert time.monotonic() < deadline, "the HID source never opened the device"
        time.sleep(0.02)
    return device


def test_the_hid_source_waits_for_its_device_grabs_it_and_survives_an_unplug(
    tmp_path: Path, run_source
) -> None:
    node = tmp_path / "usb-Scanner-event-kbd"
    config = HidScanner(
        type="hid", device=str(node), workplace=3, layout="de", grab=True, gap_ms=50
    )
    running = run_source(HidSource(config, open_device=FakeKeyboard))
    node.touch()
    first = wait_plugged(str(node))
    assert first.grabbed
    first.send(Typist(time.time()).text(CODES[0], "de").enter().events)
    assert running.events.wait_count(1)

    first.unplug()
    second = wait_plugged(str(node), previous=first)
    second.send(Typist(time.time()).text(CODES[1], "de").events)
    assert running.events.wait_count(2), "a code without Enter is flushed after the gap"

    assert running.events.texts == CODES[:2]
    assert running.events.events[0].source == f"hid:{node}"
    assert running.events.events[0].workplace == 3
    assert running.thread.is_alive()


def test_an_unknown_layout_is_refused_when_the_source_is_built() -> None:
    from agent.errors import ScannerUnavailable

    with pytest.raises(ScannerUnavailable, match="layout"):
        build_source(
            HidScanner.model_construct(  # unvalidated: the source refuses it on its own
                type="hid",
                device="/dev/input/x",
                workplace=None,
                layout="xx",
                grab=True,
                gap_ms=50,
            )
        )
