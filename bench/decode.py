"""Webcam decode benchmark: read rate and cost per 1280x720 gray frame, against plain pyzbar.

    .venv/bin/python bench/decode.py [--per-category 20] [--seed 1] [--save-frames DIR]

Frames are generated in the run (segno QR of a BONIQ code on a phone screen, warped onto a textured
counter, then degraded by category) so the suite needs no files. Every decoder sees the same frames
on one thread. The configured path is the one the webcam source runs (agent.scanner.webcam);
the baseline is plain `pyzbar.decode(frame)` with every symbology, as a first attempt would do.
A read counts only on an exact payload match. Target (SPEC §11): zxing median <= 3 ms per frame.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import segno

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agent.scanner.webcam import load_decoder

WIDTH, HEIGHT = 1280, 720
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TARGET_MEDIAN_MS = 3.0
CATEGORIES = [
    "nominal",
    "small",
    "rotation",
    "perspective",
    "blur",
    "lowcontrast",
    "glare",
    "jpeg",
    "dark",
    "empty",
]


@dataclass
class Scene:
    module_px: float = 5.0
    angle: float = 0.0
    jitter: float = 0.02
    blur: float = 0.5
    contrast: float = 0.85
    noise: float = 3.0
    glare: float = 0.0
    jpeg: int = 85
    dark: bool = False
    with_code: bool = True


def scene_for(category: str, s: float, rng: np.random.Generator) -> Scene:
    """Severity s ramps 0 → 1 across a category's frames."""
    scene = Scene(module_px=rng.uniform(4, 7), angle=rng.uniform(-10, 10))
    match category:
        case "small":
            scene.module_px = 3.2 - 1.6 * s
        case "rotation":
            scene.angle = rng.uniform(0, 360)
        case "perspective":
            scene.angle, scene.jitter = rng.uniform(0, 360), 0.05 + 0.25 * s
        case "blur":
            scene.blur = 1.0 + 2.0 * s
        case "lowcontrast":
            scene.contrast, scene.noise = 0.6 - 0.45 * s, 4 + 11 * s
        case "glare":
            scene.glare = 0.1 + 0.5 * s
        case "jpeg":
            scene.module_px, scene.jpeg = rng.uniform(2.5, 3.5), int(40 - 32 * s)
        case "dark":
            scene.dark = True
        case "empty":
            scene.with_code = False
    return scene


def payload(rng: np.random.Generator) -> str:
    return "BQ1" + "".join(rng.choice(list(CROCKFORD), 17))


def counter(rng: np.random.Generator) -> np.ndarray:
    texture = cv2.GaussianBlur(
        rng.normal(110, 40, (HEIGHT // 8, WIDTH // 8)).astype(np.float32), (0, 0), 1.5
    )
    image = cv2.resize(texture, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        x, y = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))
        w, h = int(rng.integers(20, 200)), int(rng.integers(10, 120))
        cv2.rectangle(image, (x, y), (x + w, y + h), float(rng.uniform(20, 235)), -1)
    return image


def phone(text: str | None, scene: Scene, scale: int = 6) -> np.ndarray:
    """A phone face: dark bezel, app header bar, screen with the QR (4-module quiet zone)."""
    light, dark = (40.0, 225.0) if scene.dark else (235.0, 15.0)
    mid, half = (light + dark) / 2, (light - dark) / 2 * scene.contrast
    light, dark = mid + half, mid - half
    side = 29 * scale
    screen = np.full((int(side * 1.9), int(side * 1.15)), light, np.float32)
    screen[: side // 4] = dark * 0.6 + light * 0.4
    if text is not None:
        modules = np.array(
            list(segno.make(text, error="m", micro=False).matrix_iter(scale=scale, border=4))
        )
        code = np.where(modules == 1, dark, light).astype(np.float32)
        top, left = (
            (screen.shape[0] - code.shape[0]) // 2,
            (screen.shape[1] - code.shape[1]) // 2,
        )
        screen[top : top + code.shape[0], left : left + code.shape[1]] = code
    return cv2.copyMakeBorder(
        screen,
        scale * 4,
        scale * 6,
        scale * 2,
        scale * 2,
        cv2.BORDER_CONSTANT,
        value=25.0,
    )


def place(
    image: np.ndarray,
    face: np.ndarray,
    scene: Scene,
    rng: np.random.Generator,
    scale_px: int = 6,
) -> None:
    """Warp the phone face onto the counter at `scene.module_px` pixels per module (anti-aliased)."""
    scale = scene.module_px / scale_px
    if scale < 1:
        face = cv2.GaussianBlur(face, (0, 0), 0.4 / scale)
    h, w = face.shape
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    half = np.float32([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2 * scale
    turn = np.deg2rad(scene.angle)
    rotation = np.float32([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    corners = half @ rotation.T
    corners += (
        rng.uniform(-1, 1, corners.shape).astype(np.float32) * scene.jitter * max(w, h) * scale
    )
    reach = np.abs(corners).max(axis=0)
    centre = [
        rng.uniform(reach[0], max(reach[0] + 1, WIDTH - reach[0])),
        rng.uniform(reach[1], max(reach[1] + 1, HEIGHT - reach[1])),
    ]
    matrix = cv2.getPerspectiveTransform(src, (corners + np.float32(centre)).astype(np.float32))
    cv2.warpPerspective(
        face,
        matrix,
        (WIDTH, HEIGHT),
        dst=image,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_TRANSPARENT,
    )
    if scene.glare:
        radius = scene.glare * scene.module_px * 29 / 2
        mask = np.zeros_like(image)
        spot = np.float32(centre) + rng.uniform(-1, 1, 2) * scene.module_px * 29 / 4
        cv2.ellipse(
            mask,
            (int(spot[0]), int(spot[1])),
            (int(radius), int(radius * 0.6)),
            float(rng.uniform(0, 180)),
            0,
            360,
            1.0,
            -1,
        )
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, radius / 6))
        np.maximum(image, mask * 255, out=image)


def render(category: str, s: float, rng: np.random.Generator) -> tuple[np.ndarray, str | None]:
    scene = scene_for(category, s, rng)
    text = payload(rng) if scene.with_code else None
    image = counter(rng)
    place(image, phone(text, scene), scene, rng)
    image = cv2.GaussianBlur(image, (0, 0), scene.blur) + rng.normal(0, scene.noise, image.shape)
    gray = np.clip(image, 0, 255).astype(np.uint8)
    _, jpeg = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, scene.jpeg])
    return cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE), text


@dataclass
class Outcome:
    reads: dict[str, int] = field(default_factory=dict)
    wrong: int = 0
    false_positives: int = 0
    scored_ms: list[float] = field(default_factory=list)
    empty_ms: list[float] = field(default_factory=list)


def plain_pyzbar() -> Callable[[np.ndarray], list[str]]:
    from pyzbar import pyzbar

    return lambda gray: [
        code.data.decode("utf-8", errors="replace") for code in pyzbar.decode(gray)
    ]


def measure(
    decode: Callable[[np.ndarray], list[str]],
    frames: list[tuple[str, np.ndarray, str | None]],
) -> Outcome:
    decode(frames[0][1])
    outcome = Outcome()
    for category, gray, text in frames:
        started = time.perf_counter()
        found = decode(gray)
        elapsed = (time.perf_counter() - started) * 1000
        if text is None:
            outcome.empty_ms.append(elapsed)
            outcome.false_positives += bool(found)
            continue
        outcome.scored_ms.append(elapsed)
        outcome.reads[category] = outcome.reads.get(category, 0) + (text in found)
        outcome.wrong += any(t != text for t in found)
    return outcome


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def report(results: dict[str, Outcome], per_category: int) -> None:
    scored = [c for c in CATEGORIES if c != "empty"]
    print(
        f"\n{'decoder':<22}"
        + "".join(f"{c[:7]:>8}" for c in scored)
        + f"{'read %':>9}{'wrong':>6}{'FP':>4}"
        f"{'med ms':>8}{'p95 ms':>8}{'idle ms':>8}"
    )
    for name, out in results.items():
        rate = 100 * sum(out.reads.values()) / len(out.scored_ms)
        print(
            f"{name:<22}"
            + "".join(f"{out.reads.get(c, 0):>5}/{per_category:<2}" for c in scored)
            + f"{rate:>9.1f}{out.wrong:>6}{out.false_positives:>4}{statistics.median(out.scored_ms):>8.2f}"
            f"{p95(out.scored_ms):>8.2f}{statistics.median(out.empty_ms):>8.2f}"
        )
    names = list(results)
    configured, baseline = results[names[0]], results[names[-1]]
    med, base_med = (
        statistics.median(configured.scored_ms),
        statistics.median(baseline.scored_ms),
    )
    rate = sum(configured.reads.values()) / max(1, sum(baseline.reads.values()))
    print(
        f"\n{names[0]} vs {names[-1]}: {base_med / med:.1f}x faster per frame (median), "
        f"{rate:.2f}x the reads, p95 {p95(baseline.scored_ms) / p95(configured.scored_ms):.1f}x faster"
    )
    verdict = "PASS" if med <= TARGET_MEDIAN_MS else "FAIL"
    print(f"target median <= {TARGET_MEDIAN_MS} ms per 1280x720 gray frame: {med:.2f} ms {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--per-category",
        type=int,
        default=20,
        help="frames per category (10 categories)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--save-frames", type=Path, help="write the frames as PNG here to look at them"
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    frames = [
        (category, *render(category, i / max(1, args.per_category - 1), rng))
        for category in CATEGORIES
        for i in range(args.per_category)
    ]
    print(
        f"{len(frames)} frames {WIDTH}x{HEIGHT} generated in {time.perf_counter() - started:.1f} s (seed {args.seed})"
    )
    if args.save_frames:
        args.save_frames.mkdir(parents=True, exist_ok=True)
        for n, (category, gray, _) in enumerate(frames):
            cv2.imwrite(str(args.save_frames / f"{n:03d}-{category}.png"), gray)
    decoders = {
        "zxing (configured)": load_decoder("zxing"),
        "pyzbar QR-only": load_decoder("pyzbar"),
        "plain pyzbar (base)": plain_pyzbar(),
    }
    results = {name: measure(decode, frames) for name, decode in decoders.items()}
    report(results, args.per_category)
    return 0


if __name__ == "__main__":
    sys.exit(main())
