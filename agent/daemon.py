"""The running agent, built in the order data flows (docs/architecture.md):

    sources → scan intake → claims (store) → POS sync + matcher → outbox (store) → uploader

Each stage runs in its own thread and talks to the others only through the SQLite store, so a
crash anywhere loses nothing that was acknowledged: a scan is acknowledged ("accepted" feedback)
only after its claim is committed, and a receipt only after its outbox row is. The stages report
what happens to one `Reporter` (agent/reporter.py), which keeps the metrics, the heartbeat, the
cashier feedback and the counts `status` shows; agent/stages.py builds the stages.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent import __version__, hardening, health, reload, stages, supervision, systemd
from agent.cashier import server as cashier
from agent.config import Config
from agent.errors import AgentError, ScannerError, StoreError
from agent.feedback import Feedback
from agent.intake import ScanIntake, ScanResult
from agent.kassa.webhooks import serve_receiver
from agent.logs import fields, get_logger
from agent.metrics import Metrics, StoreGauges, serve
from agent.queue.store import Store
from agent.reporter import Reporter, WebhookEvents
from agent.scanner import base as scanner_base
from agent.scanner.base import ScanEvent, Source

log = get_logger(__name__)

STOP_GRACE = 8.0
PURGE_EVERY = 3600.0
EXIT_CONFIG = 78


class Daemon:
    def __init__(
        self,
        config: Config,
        sources: list[Source] | None = None,
        clock: Callable[[], float] = time.time,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path  # where a reload reads the configuration again
        self.clock = clock
        self.exit_status = 0
        self.started_at = time.time()
        self.stop_event = threading.Event()
        self.upload_wake = threading.Event()
        self._wake = threading.Event()  # cuts the supervisor's wait short (stop, reload)
        self._reload_requested = False
        self.metrics = self._metrics(config)
        self.heartbeat = systemd.Heartbeat()
        self.reporter = Reporter(
            self.metrics, self.heartbeat, _feedback(config), self.upload_wake.set
        )
        self.sources, self.unbuilt = (
            stages.sources(config, self.metrics) if sources is None else (sources, [])
        )  # unbuilt: sources that cannot start
        self.store = Store.open(config.data_dir)
        hardening.keep_private(config.data_dir)
        self.poller = stages.poller(config, self.store, self.reporter, clock)
        self.intake = ScanIntake(
            self.store, config, events=self.reporter, wake=self.poller.wake.set
        )
        self.webhooks = stages.receiver(
            config, self.store, WebhookEvents(self.reporter, self.poller.wake.set)
        )
        self.uploader = stages.uploader(
            config, self.store, self.reporter, lambda: self.heartbeat.beat("uploader")
        )
        self._threads: dict[str, threading.Thread] = {}
        self.metrics_server: Any = None
        self.cashier_server: Any = None
        self.webhook_server: Any = None

    @staticmethod
    def _metrics(config: Config) -> Metrics:
        metrics = Metrics()
        metrics.watch_filesystem(config.data_dir)
        metrics.pos_clock_tolerance(config.matching.clock_skew)
        return metrics

    def on_scan(self, event: ScanEvent) -> ScanResult:
        return self.intake.take(event)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        scanner_base.on_state_change(self.metrics.scanner_up)
        for source in self.sources:
            self._spawn(f"source {source.name}", partial(self._run_source, source))
        self.webhook_server = serve_receiver(self.webhooks) if self.webhooks else None
        self.heartbeat.register("poller", "uploader")
        self._spawn("poller", self.poller.run)
        self._spawn("uploader", lambda stop: self.uploader.run(stop, self.upload_wake))
        self.metrics.set_collect_callback(self._gauges)
        listen = self.config.metrics.listen
        self.metrics_server = serve(listen, self.metrics, ready=self.ready) if listen else None
        self.cashier_server = cashier.serve(
            self.config.cashier,
            scan=self.on_scan,
            store=self.store,
            refused=self.reporter.refused,
            workplace=self.config.store.workplace,
        )
        self._write_health()
        systemd.ready()
        log.info(
            "boniq-agent started",
            extra=fields(
                version=__version__,
                config=str(self.config_path or "-"),
                pos=_host(self.config.kassa.url),
                cloud=_host(self.config.cloud.url),
                sources=",".join(s.name for s in self.sources) or "none",
                workplace=self.config.store.workplace,
                data_dir=str(self.config.data_dir),
            ),
        )

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        body = supervision.guarded(
            name,
            target,
            self.stop_event,
            on_config_fault=self._config_fault,
            paths=self._named_files,
        )
        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        self._threads[name] = thread

    def _named_files(self) -> list[Path]:
        c = self.config
        files = [
            c.kassa.ca_bundle,
            c.cloud.ca_bundle,
            c.kassa.secret_file,
            c.cloud.token_file,
            c.credential_path("kassa-secret"),
            c.credential_path("cloud-token"),
            c.kassa.webhooks.key_file if c.kassa.webhooks else None,
        ]
        return [f for f in files if f is not None]

    def _config_fault(self, stage: str, reason: str) -> None:
        """A restart cannot fix it: stop with exit status 78 (systemd leaves the unit failed)."""
        log.error(
            "the configuration stops the agent; fix it, then start the agent again "
            "(`boniq-agent check-config`)",
            extra=fields(stage=stage, reason=reason),
        )
        self.exit_status = EXIT_CONFIG
        self.request_stop()

    def _run_source(self, source: Source, stop: threading.Event) -> None:
        try:
            source.run(self.on_scan, stop)
        except ScannerError as exc:
            self.metrics.scanner_up(source.name, False)
            log.error(
                "scanner source cannot run", extra=fields(source=source.name, reason=str(exc))
            )

    def request_stop(self) -> None:
        self.stop_event.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def reload(self) -> bool:
        """SIGHUP: apply what can change in place (agent/reload.py)."""
        new = reload.read(self.config, self.config_path)
        if new is None:
            return False
        if new.feedback != self.config.feedback:
            self.reporter.feedback = _feedback(new)
        if new.matching != self.config.matching:
            self.poller.set_matching(new.matching)
            if self.webhooks is not None:
                self.webhooks.rescan_guard = new.matching.recent_sale_guard
        self.config = reload.applied(self.config, new)
        return True

    def ready(self) -> bool:
        return not self.stop_event.is_set() and self.poller.last_success is not None

    def _gauges(self) -> StoreGauges:
        s = self.store.summary()
        return {
            "outbox": {state: s[f"outbox_{state}"] for state in ("pending", "delivered", "dead")},
            "claims_pending": s["claims_pending"],
            "claims": s["claims_by_state"],
            "oldest_pending": s["oldest_pending_at"],
            "last_delivery": s["last_delivery_at"],
        }

    def supervise(self) -> None:
        """The main thread's loop: watchdog, STATUS=, health, reload, retention, until stopped."""
        interval = systemd.watchdog_interval() or 5.0
        max_age = max(120.0, 3 * self.config.kassa.poll_interval)
        last_purge = 0.0
        while not self.stop_event.is_set():
            self._wake.wait(min(interval, 5.0))
            self._wake.clear()
            if self.stop_event.is_set():
                break
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            if all(self._threads[name].is_alive() for name in ("poller", "uploader")):
                systemd.keep_alive(self.heartbeat, max_age)
            systemd.status(self.status_line())
            self._write_health()
            if self.clock() - last_purge > PURGE_EVERY:
                last_purge = self.clock()
                self._purge()

    def health_snapshot(self) -> dict[str, Any]:
        """What `boniq-agent status` shows about the running agent (health.json)."""
        r = self.reporter
        scanners = [{"name": s.name, "connected": _connected(s)} for s in self.sources]
        scanners += [{"name": name, "connected": False} for name in self.unbuilt]
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "pos": {"last_success": self.poller.last_success, "last_error": self.poller.last_error},
            "cloud": {
                "last_success": r.cloud_last_success,
                "auth_failing": self.uploader.auth_failing,
                "last_error": "uploads are being retried" if r.cloud_failing else None,
            },
            "scanners": scanners,
            "scans": dict(r.scans),
        }

    def _write_health(self) -> None:
        try:
            health.write(self.config.data_dir, self.health_snapshot())
        except OSError as exc:
            log.debug("health.json not written", extra=fields(reason=exc.strerror))

    def _purge(self) -> None:
        cutoff = self.clock() - self.config.retention_days * 86400
        try:
            purged = self.store.purge_delivered(delivered_before=cutoff)
        except StoreError as exc:
            log.warning("retention purge failed", extra=fields(reason=str(exc)))
            return
        if purged:
            log.info("purged delivered receipts past retention", extra=fields(rows=purged))

    def status_line(self) -> str:
        try:
            s = self.store.summary()
        except AgentError as exc:
            return f"store error: {exc}"
        error = self.poller.last_error or s["last_error"] or "none"
        return (
            f"pending claims {s['claims_pending']}, unsure {s['claims_unsure']}, "
            f"outbox {s['outbox_pending']}, dead {s['outbox_dead']}, "
            f"delivered {s['outbox_delivered']}, last error: {error}"[:200]
        )

    def stop(self) -> None:
        self.stop_event.set()
        self.upload_wake.set()
        self.poller.wake.set()
        systemd.stopping()
        deadline = time.monotonic() + STOP_GRACE
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        for server in (self.webhook_server, self.metrics_server, self.cashier_server):
            if server is not None:
                server.close()
        self.uploader.close()
        self.store.close()
        try:
            (self.config.data_dir / health.HEALTH_NAME).unlink(missing_ok=True)
        except OSError:
            pass
        log.info("boniq-agent stopped")


def run(config: Config, config_path: Path | str | None = None) -> int:
    """`boniq-agent run`: hold the data_dir, start, supervise until SIGTERM/SIGINT (SIGHUP
    reloads), stop cleanly; exit 0, or 78 when the configuration stopped it."""
    from agent.instance import InstanceLock

    early_reload: list[int] = []  # a SIGHUP while starting must not kill the agent
    signal.signal(signal.SIGHUP, lambda signum, frame: early_reload.append(signum))
    lock = InstanceLock.acquire(config.data_dir)
    try:
        daemon = Daemon(config, config_path=Path(config_path) if config_path else None)

        def on_stop(signum: int, frame: Any) -> None:
            log.info("stop requested", extra=fields(signal=signal.Signals(signum).name))
            daemon.request_stop()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, lambda signum, frame: daemon.request_reload())
        if early_reload:
            daemon.request_reload()
        daemon.start()
        try:
            daemon.supervise()
        finally:
            daemon.stop()
        return daemon.exit_status
    finally:
        lock.release()


def _feedback(config: Config) -> Feedback:
    fb = config.feedback
    return Feedback(fb.accepted, fb.rejected, fb.delivered)


def _connected(source: Source) -> bool | None:
    """A device scanner is connected while its device node exists (a by-id link goes away on
    unplug); stdin always is; a URL (rfc2217://) cannot be told."""
    device = getattr(source, "device", None)
    if device is None:
        return True
    device = str(device)
    if "://" in device:
        return None
    return os.path.exists(f"/dev/video{device}" if device.isdigit() else device)


def _host(url: str) -> str:
    """scheme://host:port of a URL: no path, query or credentials in the start line."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}"
