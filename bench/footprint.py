"""Idle footprint of the real daemon: CPU share of one core and memory, against bare interpreters.

    python bench/footprint.py [--seconds 60] [--fps 30] [--no-webcam] [--env KEY=VALUE ...]

`boniq-agent run` runs as a subprocess (the test harness's Agent: a serial scanner on a pty, both
simulators in this process on 127.0.0.1, poll_interval 1.0, WatchdogSec=30 as in the unit file),
serves one customer to warm up, then idles for the window. CPU is utime+stime from /proc/PID/stat
over the window; memory is VmRSS (end, and peak of 0.5 s samples), VmHWM, and the private pages
(smaps_rollup: what the process costs beyond shared libraries); disk writes from /proc/PID/io.
Second run: the same plus a webcam source reading a video file generated here (1280x720 mp4v, no
QR, paced at --fps like a camera). Its CPU is decode work, so only the RSS target applies; and a
file goes through FFmpeg's decoder (~25 MB of buffers here), which a V4L2 camera may not need.
Baselines in the same run: `python -c "import time; time.sleep(N)"` over the same window, and the
memory of `python -c "import agent.daemon"` (plus OpenCV and zxing-cpp for the webcam run).
Targets (SPEC §11): idle CPU < 1 % of a core; RSS ≤ 40 MB without webcam, ≤ 100 MB with.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from agent_harness import Agent, customer_code, wait_until

from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator

CPU_TARGET = 1.0
RSS_TARGET_MB = 40.0
RSS_WEBCAM_TARGET_MB = 100.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = 0.5
WATCHDOG_USEC = "30000000"  # WatchdogSec=30 in systemd/boniq-agent.service
MEMORY_PROBE = (
    "import re, sys\n{imports}\n"
    "status = open('/proc/self/status').read()\n"
    "print(*(re.search(key + r':\\s+(\\d+)', status).group(1)"
    " for key in ('VmRSS', 'VmHWM')))\n"
)


@dataclass
class Footprint:
    cpu_percent: float
    rss_mb: float  # at the end of the window
    rss_max_mb: float  # highest sample in the window
    hwm_mb: float  # the kernel's peak RSS over the process's life
    uss_mb: float  # private pages only: what the process costs beyond shared libraries
    written_kb_per_min: float  # bytes the process caused to be written to disk


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    utime, stime = stat.rsplit(")", 1)[1].split()[11:13]
    return (int(utime) + int(stime)) / CLOCK_TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss, hwm = (re.search(rf"{key}:\s+(\d+)", status) for key in ("VmRSS", "VmHWM"))
    assert rss and hwm
    return int(rss.group(1)) / 1024, int(hwm.group(1)) / 1024


def written_bytes(pid: int) -> int:
    io = Path(f"/proc/{pid}/io").read_text()
    found = re.search(r"^write_bytes:\s+(\d+)", io, re.MULTILINE)
    assert found
    return int(found.group(1))


def private_mb(pid: int) -> float:
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return sum(int(n) for n in re.findall(r"^Private_\w+:\s+(\d+)", rollup, re.MULTILINE)) / 1024


def watch(pids: list[int], seconds: float) -> list[Footprint]:
    """Sample every process together over one window, so they share the machine's conditions."""
    started, cpu0 = time.monotonic(), [cpu_seconds(pid) for pid in pids]
    written0 = [written_bytes(pid) for pid in pids]
    peaks = [0.0] * len(pids)
    while time.monotonic() - started < seconds:
        time.sleep(SAMPLE_EVERY)
        peaks = [max(peak, memory_mb(pid)[0]) for peak, pid in zip(peaks, pids, strict=True)]
    elapsed = time.monotonic() - started
    result = []
    for pid, before, peak, written in zip(pids, cpu0, peaks, written0, strict=True):
        rss, hwm = memory_mb(pid)
        per_minute = (written_bytes(pid) - written) / 1024 / elapsed * 60
        result.append(
            Footprint(
                100 * (cpu_seconds(pid) - before) / elapsed,
                rss,
                peak,
                hwm,
                private_mb(pid),
                per_minute,
            )
        )
    return result


def import_memory(imports: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE.format(imports=imports)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]) / 1024, int(out[1]) / 1024


def make_video(path: Path, seconds: float, fps: float) -> int:
    """A counter seen from above with a box sliding through: real decode work, never a QR."""
    import cv2
    import numpy as np

    width, height = 1280, 720
    rng = np.random.default_rng(7)
    counter = rng.integers(60, 200, (height // 8, width // 8, 3), dtype=np.uint8)
    counter = cv2.resize(cv2.GaussianBlur(counter, (3, 3), 0), (width, height))
    frames = int(seconds * fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for n in range(frames):
        frame = counter.copy()
        x = (n * 7) % (width - 200)
        cv2.rectangle(frame, (x, 300), (x + 150, 450), (30, 30, 30), -1)
        writer.write(frame)
    writer.release()
    return frames


def drain_notify(agent: Agent, stop: threading.Event) -> None:
    while not stop.is_set():
        agent.messages(0.2)


def run_daemon(
    folder: Path, seconds: float, extra_scanners: str = "", env: dict[str, str] | None = None
) -> tuple[Footprint, ...]:
    """The daemon and a sleeping interpreter, watched over the same window."""
    folder.mkdir()
    with KassaSimulator(seed=5) as kassa, CloudSimulator("demo-token") as cloud:
        agent = Agent(
            folder, kassa.url, cloud.url, poll_interval=1.0, extra_scanners=extra_scanners
        )
        sleeper = subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep({seconds + 60})"]
        )
        stop = threading.Event()
        drainer = threading.Thread(target=drain_notify, args=(agent, stop), daemon=True)
        try:
            agent.start({"WATCHDOG_USEC": WATCHDOG_USEC, **(env or {})})
            agent.wait_ready()
            drainer.start()
            warm_up(agent, kassa, cloud)
            time.sleep(2.0)
            assert agent.process is not None
            daemon, bare = watch([agent.process.pid, sleeper.pid], seconds)
            if agent.process.poll() is not None:
                raise SystemExit(f"the daemon died during the window:\n{agent.log_text()[-4000:]}")
            if agent.terminate() != 0:
                raise SystemExit(f"the daemon did not stop cleanly:\n{agent.log_text()[-4000:]}")
            return daemon, bare
        finally:
            stop.set()
            if drainer.is_alive():
                drainer.join()
            sleeper.kill()
            sleeper.wait()
            agent.close()


def warm_up(agent: Agent, kassa: KassaSimulator, cloud: CloudSimulator) -> None:
    """One customer served end to end, so the window sees a daemon that has done its work once."""
    code = customer_code(4242)
    agent.scan(code)
    wait_until(lambda: agent.claim_fenced(code), what="the warm-up claim")
    kassa.book_sale(agent.workplace, after=4)
    wait_until(lambda: cloud.count() == 1, what="the warm-up receipt in the cloud")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(
    title: str,
    daemon: Footprint,
    bare: Footprint,
    imported: tuple[float, float],
    rss_target: float,
    cpu_applies: bool,
) -> None:
    print(f"\n{title}")
    print(
        f"  baseline sleeping python:   CPU {bare.cpu_percent:6.3f} %   RSS {bare.rss_mb:6.1f} MB"
    )
    print(
        f"  baseline imports only:                      RSS {imported[0]:6.1f} MB"
        f" (peak {imported[1]:.1f})"
    )
    print(
        f"  daemon idle:                CPU {daemon.cpu_percent:6.3f} %"
        f"   RSS {daemon.rss_mb:6.1f} MB"
        f" (window peak {daemon.rss_max_mb:.1f}, VmHWM {daemon.hwm_mb:.1f},"
        f" private {daemon.uss_mb:.1f})"
    )
    print(
        f"  disk written while idle:    {daemon.written_kb_per_min:8.1f} KB/min"
        f" (sleeping python {bare.written_kb_per_min:.1f})"
    )
    print(
        f"  ratio RSS daemon/bare python {daemon.rss_mb / bare.rss_mb:5.2f},"
        f" daemon/imports {daemon.rss_mb / imported[0]:5.2f}"
    )
    cpu_line = (
        f"{verdict(daemon.cpu_percent < CPU_TARGET)}"
        if cpu_applies
        else "n/a (a camera source decodes every frame: not idle)"
    )
    print(f"  target idle CPU < {CPU_TARGET:.0f} % of a core:  {cpu_line}")
    print(f"  target RSS ≤ {rss_target:.0f} MB (VmHWM):    {verdict(daemon.hwm_mb <= rss_target)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each window")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the webcam file")
    parser.add_argument("--no-webcam", action="store_true", help="only the serial-only run")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the daemon, e.g. MALLOC_ARENA_MAX=2",
    )
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    env = dict(item.split("=", 1) for item in args.env)
    if env:
        print("daemon environment:", " ".join(args.env))
    with tempfile.TemporaryDirectory(prefix="boniq-footprint-") as tmp:
        folder = Path(tmp)
        imported = import_memory("import agent.daemon")
        daemon, bare = run_daemon(folder / "serial", args.seconds, env=env)
        report(
            f"serial scanner only ({args.seconds:.0f} s window)",
            daemon,
            bare,
            imported,
            RSS_TARGET_MB,
            cpu_applies=True,
        )
        if args.no_webcam:
            return
        video = folder / "counter.mp4"
        frames = make_video(video, args.seconds + 60, args.fps)
        webcam = (
            f"  - {{type: webcam, device: '{video}', fps: {args.fps}, decoder: zxing,"
            f" workplace: 3}}\n"
        )
        imported = import_memory(
            "import agent.daemon\nfrom agent.scanner import webcam\n"
            "webcam.load_cv2(); webcam.load_decoder('zxing')"
        )
        daemon, bare = run_daemon(folder / "webcam", args.seconds, webcam, env)
        report(
            f"serial + webcam, {frames} frames of 1280x720 at {args.fps:.0f} fps"
            f" ({args.seconds:.0f} s window)",
            daemon,
            bare,
            imported,
            RSS_WEBCAM_TARGET_MB,
            cpu_applies=False,
        )


if __name__ == "__main__":
    main()
