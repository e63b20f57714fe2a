"""Webcam scanner: a video file written here plays the camera; each presentation is one scan."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import segno

from agent.config import HidScanner, SerialScanner, StdinScanner, WebcamScanner
from agent.errors import ScannerUnavailable
from agent.scanner import build_source, build_sources
from agent.scanner.webcam import HoldFilter

CODES = ["BQ17K3M9QW4RT8ZP2C56", "BQ1ABCDEFGHJKMNPQRSK", "BQ1M9S346Q3D25VT4F56"]
WIDTH, HEIGHT, FPS = 640, 480, 10


def webcam_config(device: str, **overrides: object) -> WebcamScanner:
    values = {
        "type": "webcam",
        "device": device,
        "workplace": 1,
        "decoder": "zxing",
        "repeat_after": 2.0,
        "fps": None,
    }
    return WebcamScanner.model_validate(values | overrides)


def qr_image(text: str, scale: int) -> np.ndarray:
    modules = np.array(
        list(segno.make(text, error="m", micro=False).matrix_iter(scale=scale, border=4)),
        np.uint8,
    )
    return (255 - modules * 255).astype(np.uint8)


def frame(
    rng: np.random.Generator,
    text: str | None = None,
    *,
    dark: bool = False,
    angle: float = 0.0,
    noise: float = 6.0,
) -> np.ndarray:
    """A BGR frame of a grey counter, optionally with a QR on a phone screen."""
    canvas = np.full((HEIGHT, WIDTH), 120, np.float32) + rng.normal(0, noise, (HEIGHT, WIDTH))
    if text is not None:
        qr = qr_image(text, scale=6)
        if dark:
            qr = 255 - qr
        size = qr.shape[0]
        top, left = (HEIGHT - size) // 2, (WIDTH - size) // 2
        canvas[top : top + size, left : left + size] = qr
        if angle:
            turn = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), angle, 1.0)
            canvas = cv2.warpAffine(canvas, turn, (WIDTH, HEIGHT), borderValue=120)
    gray = np.clip(canvas, 0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for image in frames:
        writer.write(image)
    writer.release()
    return path


@pytest.fixture(scope="module")
def presentation_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Counter, code 1 held 2 s with a garbled frame in the middle, noise, code 2 held, a pause,
    code 3 tilted in dark mode, counter again."""
    rng = np.random.default_rng(7)
    frames = [frame(rng) for _ in range(5)]
    frames += [frame(rng, CODES[0]) for _ in range(10)] + [frame(rng, noise=60)]
    frames += [frame(rng, CODES[0], angle=3) for _ in range(10)]
    frames += [frame(rng, noise=80) for _ in range(3)]
    frames += [frame(rng, CODES[1], angle=-8) for _ in range(15)]
    frames += [frame(rng) for _ in range(10)]
    frames += [frame(rng, CODES[2], dark=True, angle=20) for _ in range(12)]
    frames += [frame(rng) for _ in range(6)]
    return write_video(tmp_path_factory.mktemp("video") / "counter.avi", frames)


@pytest.mark.parametrize(
    ("decoder", "expected"),
    [
        ("zxing", CODES),
        ("pyzbar", CODES[:2]),
    ],  # zbar cannot read dark-mode (inverted) codes
)
def test_each_code_held_in_view_is_scanned_exactly_once(
    presentation_video: Path,
    decoder: str,
    expected: list[str],
    run_source,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    running = run_source(build_source(webcam_config(str(presentation_video), decoder=decoder)))
    running.thread.join(30)
    assert not running.thread.is_alive(), "a video file source ends at the end of the file"
    assert running.events.texts == expected
    assert {event.source for event in running.events.events} == {f"webcam:{presentation_video}"}
    assert [r.getMessage() for r in caplog.records if "webcam" in r.name] == [
        "video file ended, source ends"
    ]


def test_a_code_shown_again_after_leaving_the_view_is_a_new_scan(
    tmp_path: Path, run_source
) -> None:
    rng = np.random.default_rng(3)
    frames = [frame(rng, CODES[0]) for _ in range(8)] + [frame(rng) for _ in range(8)]
    frames += [frame(rng, CODES[0]) for _ in range(8)]
    running = run_source(
        build_source(webcam_config(str(write_video(tmp_path / "again.avi", frames))))
    )
    running.thread.join(30)
    assert running.events.texts == [CODES[0], CODES[0]]


def test_hold_filter_repeats_a_flickering_code_only_after_repeat_after() -> None:
    holds = HoldFilter(repeat_after=2.0, gone_after=0.5)
    seen = []
    for step in range(60):  # 6 s at 10 fps, the code missing in every fifth frame
        now = step / 10
        seen += [(now, text) for text in holds.update([] if step % 5 == 4 else [CODES[1]], now)]
    assert [round(now, 1) for now, _ in seen] == [0.0, 2.0, 4.0]
    assert holds.update([CODES[2], CODES[1], CODES[2]], 5.95) == [CODES[2]]


def test_a_missing_video_file_ends_the_source_with_a_log_line(
    tmp_path: Path, run_source, caplog: pytest.LogCaptureFixture
) -> None:
    running = run_source(build_source(webcam_config(str(tmp_path / "missing.avi"))))
    running.thread.join(10)
    assert not running.thread.is_alive()
    assert "video file cannot be opened, source ends" in caplog.text


def test_an_absent_camera_keeps_the_source_waiting_until_stopped(run_source, caplog) -> None:
    running = run_source(build_source(webcam_config("/dev/video63")))
    assert running.events.wait_for(lambda texts: False, timeout=1.0) is False
    assert running.thread.is_alive()
    running.finish()
    assert not running.thread.is_alive()
    assert caplog.text.count("scanner unavailable") == 1


@pytest.mark.parametrize("module", ["cv2", "zxingcpp"])
def test_without_the_webcam_extra_only_the_webcam_source_is_refused(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ScannerUnavailable, match=r"pip install 'boniq-agent\[webcam\]'"):
        build_source(webcam_config("0"))
    others = [
        SerialScanner(type="serial", device="loop://"),
        HidScanner(type="hid", device="/dev/input/by-id/kbd"),
        StdinScanner(type="stdin"),
    ]
    assert [source.name for source in build_sources(others)] == [
        "serial:loop://",
        "hid:/dev/input/by-id/kbd",
        "stdin",
    ]
