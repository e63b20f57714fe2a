"""The real daemon as a subprocess, with a serial scanner on a pty and both simulators over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import codes
from agent.queue.store import Claim, OutboxItem, Store
from agent.sim.cloud import canonical, example_receipt

ROOT = Path(__file__).resolve().parents[1]


FIGURES = Path(__file__).resolve().parent / ".figures"

# Tests that serve customers back to back, seconds apart, compress a shop day: the next code is
# read within `recent_sale_guard` of the previous sale, which a real till cannot do. They turn the
# guard off; the guard itself is tested in tests/kassa and tests/test_matching_situations.py.
BACK_TO_BACK = "matching: {recent_sale_guard: 0}\n"


def report_figure(name: str, **figures: object) -> str:
    """A measured figure of a reliability run: printed, and collected for the end of the run."""
    line = f"RELIABILITY {name}: " + " ".join(f"{k}={v}" for k, v in figures.items())
    print(line)
    with FIGURES.open("a") as out:
        out.write(line + "\n")
    return line


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


UPLOAD_TOKEN = "tok-Upl0ad-9f3k"  # the cloud fixture of tests/queue takes this one


def enqueue(
    store: Store,
    receipt_id: str,
    *,
    payload: dict[str, Any] | None = None,
    body: bytes | None = None,
    key: str | None = None,
    now: float = 1000.0,
) -> OutboxItem:
    """An outbox row for `receipt_id`, as the poller would store it (the example receipt)."""
    payload = payload or example_receipt(receipt_id)
    return store.enqueue(
        receipt_id,
        key or payload["idempotency_key"],
        body if body is not None else canonical(payload),
        f"c-{receipt_id}",
        now=now,
    )


def customer_code(n: int) -> str:
    token = "".join(codes.ALPHABET[(n >> (5 * i)) % 32] for i in range(16))
    return codes.make_code(token)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """One agent installation in a folder: config, data, a pty scanner, a notify socket."""

    def __init__(
        self,
        folder: Path,
        kassa_url: str,
        cloud_url: str,
        *,
        workplace: int = 2,
        ident: str = "demo-ident",
        secret: str = "demo-secret",
        token: str = "demo-token",
        extra: str = "",
        scanner_workplaces: tuple[int, ...] | None = None,
        data_dir: Path | None = None,
        poll_interval: float = 0.2,
        extra_scanners: str = "",
        cloud_options: str = "",
        cashier_listen: str = "",
        kassa_options: str = "",
    ) -> None:
        """One serial scanner on a pty per entry of `scanner_workplaces` (default: `workplace`);
        `extra_scanners`: more YAML list items for `scanners:` (e.g. a webcam); `cloud_options`:
        more `cloud:` keys in flow style (e.g. `retry_base: 0.05, retry_max: 0.5`);
        `kassa_options` likewise for `kassa:` (e.g. `webhooks: {…}`)."""
        self.folder = folder
        self.data_dir = data_dir or folder / "data"
        self.workplace = workplace
        self.ptys: dict[int, tuple[int, int]] = {}
        for till in scanner_workplaces or (workplace,):
            master, slave = os.openpty()
            self.ptys[till] = (master, slave)
        self.master, self._slave = self.ptys[(scanner_workplaces or (workplace,))[0]]
        self.device = os.ttyname(self._slave)
        scanners = (
            "".join(
                f"  - {{type: serial, device: '{os.ttyname(slave)}', workplace: {till}}}\n"
                for till, (_, slave) in self.ptys.items()
            )
            + extra_scanners
        )
        self.metrics_port = free_port()
        self.config = folder / "config.yaml"
        self.config.write_text(
            f"store: {{merchant_id: demo-merchant, branch: 1, workplace: {workplace}}}\n"
            f"kassa: {{url: '{kassa_url}', ident: {ident}, secret: {secret},"
            f" poll_interval: {poll_interval}, timeout: 2"
            f"{', ' + kassa_options if kassa_options else ''}}}\n"
            f"cloud: {{url: '{cloud_url}', token: {token}, timeout: 2"
            f"{', ' + cloud_options if cloud_options else ''}}}\n"
            f"scanners:\n{scanners}"
            f"data_dir: {self.data_dir}\n"
            f"metrics: {{listen: '127.0.0.1:{self.metrics_port}'}}\n"
            f"cashier: {{listen: '{cashier_listen}'}}\n" + extra
        )
        self.config.chmod(0o600)
        self.log = folder / "agent.log"
        self.notify_path = folder / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.1)
        self.process: subprocess.Popen | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        environment = {
            **os.environ,
            "NOTIFY_SOCKET": str(self.notify_path),
            "PYTHONFAULTHANDLER": "1",
            "WATCHDOG_USEC": "1000000",
            **(env or {}),
        }
        environment.pop("WATCHDOG_PID", None)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=log,
            )

    def messages(self, timeout: float = 0.5) -> list[str]:
        out, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                out.extend(self.notify.recv(4096).decode().splitlines())
            except TimeoutError:
                if out:
                    break
        return out

    def drain_notify(self) -> None:
        """Forget what earlier runs sent, so the next `wait_ready` sees this run's READY=1."""
        self.notify.setblocking(False)
        try:
            while True:
                self.notify.recv(4096)
        except BlockingIOError:
            pass
        finally:
            self.notify.settimeout(0.1)

    def restart(self) -> None:
        """SIGKILL the daemon (if it runs) and start it again, ready."""
        self.kill()
        self.drain_notify()
        self.start()
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while "READY=1" not in seen:
            assert time.monotonic() < deadline, f"no READY=1; log:\n{self.log_text()}"
            assert self.process and self.process.poll() is None, self.log_text()
            seen.extend(self.messages(0.2))
        return seen

    def scan(self, text: str | bytes, workplace: int | None = None) -> None:
        master = self.ptys[workplace][0] if workplace is not None else self.master
        data = text.encode() if isinstance(text, str) else text
        os.write(master, data + b"\r\n")

    def store(self) -> Store:
        return Store.open(self.data_dir, readonly=True)

    def summary(self) -> dict:
        with self.store() as store:
            return store.summary()

    def has_claim(self, customer: str) -> bool:
        if not (self.data_dir / "boniq-agent.db").exists():
            return False
        with self.store() as store:
            return any(c.customer == customer for c in store.claims(limit=10_000))

    def claim_fenced(self, customer: str) -> bool:
        """The claim is stored and the agent has polled the POS since (the cashier's moment)."""
        if not (self.data_dir / "boniq-agent.db").exists():
            return False
        with self.store() as store:
            return any(
                c.customer == customer and (c.fence_marker is not None or c.state != "pending")
                for c in store.claims(limit=10_000)
            )

    def claims_of(self, customer: str) -> list[Claim]:
        """The customer's claims, newest first (none before the store exists)."""
        if not (self.data_dir / "boniq-agent.db").exists():
            return []
        with self.store() as store:
            return [c for c in store.claims(limit=100_000) if c.customer == customer]

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            self.process.wait(10)
            raise AssertionError(
                f"no exit {timeout} s after SIGTERM:\n{self.log_text()[-8000:]}"
            ) from None

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        self.kill()
        self.notify.close()
        for master, slave in self.ptys.values():
            os.close(master)
            os.close(slave)
