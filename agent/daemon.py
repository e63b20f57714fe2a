"""The running agent, built in the order data flows (docs/architecture.md):

    sources → scan intake → claims (store) → POS sync + matcher → outbox (store) → uploader

Each stage runs in its own thread and talks to the others only through the SQLite store, so a
crash anywhere loses nothing that was acknowledged: a scan is acknowledged ("accepted" feedback)
only after its claim is committed, and a receipt only after its outbox row is. The stages report
what happens to one `Reporter`, which keeps the metrics, the heartbeat and the cashier feedback.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from agent import hardening, systemd
from agent.cashier import server as cashier
from agent.cashier.outcomes import STORE_FAILED, Refused, RefusedScans
from agent.config import Config
from agent.errors import AgentError, ScannerError, StoreError
from agent.feedback import Feedback
from agent.http import cleartext
from agent.intake import ScanIntake, ScanResult
from agent.kassa.client import KassaClient
from agent.kassa.poller import Poller
from agent.logs import fields, get_logger
from agent.metrics import Metrics, serve
from agent.queue.claims import ClaimState, Close
from agent.queue.outbox import OutboxItem
from agent.queue.store import Store
from agent.queue.uploader import Uploader
from agent.scanner import build_source
from agent.scanner.base import ScanEvent, Source

log = get_logger(__name__)

STOP_GRACE = 8.0
PURGE_EVERY = 3600.0


class Reporter:
    """Where the stages report: metrics, the systemd heartbeat, the cashier's feedback and the
    refused scans the cashier screen lists."""

    def __init__(self, metrics: Metrics, heartbeat: systemd.Heartbeat, feedback: Feedback,
                 wake_uploader: Callable[[], None]) -> None:
        self.metrics = metrics
        self.heartbeat = heartbeat
        self.feedback = feedback
        self.wake_uploader = wake_uploader
        self.refused = RefusedScans()

    def scanned(self, event: ScanEvent, workplace: int, result: ScanResult) -> None:
        self.metrics.scan(event.source.split(":", 1)[0], result.outcome)
        if result.outcome == "accepted":
            self.metrics.claim_created()
        if result.claim is None:
            reason = STORE_FAILED if result.outcome == "failed" else result.reason
            self.refused.add(Refused(event.at, workplace, event.source, reason))
        (self.feedback.accepted if result.claim else self.feedback.rejected)()

    def stored(self, items: list[OutboxItem]) -> None:
        for item in items:
            self.metrics.receipt_matched("credit" if item.claim_id is None else "claim")
            if item.claim_id is not None:
                self.metrics.claim_closed("delivered")
        self.wake_uploader()

    def closed(self, closes: list[Close]) -> None:
        for close in closes:
            self.metrics.claim_closed(close.state.value, close.reason.value if close.reason else "")
            if close.state == ClaimState.EXPIRED:
                self.metrics.claims_expired()

    def polled(self, ok: bool) -> None:
        self.heartbeat.beat("poller")
        self.metrics.pos_poll(ok)

    def clock_offset(self, seconds: float) -> None:
        self.metrics.pos_clock_offset(seconds)

    def delivered(self, item: OutboxItem) -> None:
        self.feedback.delivered()


class Daemon:
    def __init__(self, config: Config, sources: list[Source] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.stop_event = threading.Event()
        self.upload_wake = threading.Event()
        self.metrics = Metrics()
        self.heartbeat = systemd.Heartbeat()
        fb = config.feedback
        self.reporter = Reporter(self.metrics, self.heartbeat,
                                 Feedback(fb.accepted, fb.rejected, fb.delivered),
                                 self.upload_wake.set)
        self.sources = _build_sources(config) if sources is None else sources
        self.store = Store.open(config.data_dir)
        hardening.keep_private(config.data_dir)
        self.poller = self._poller()
        self.intake = ScanIntake(self.store, config, events=self.reporter,
                                 wake=self.poller.wake.set)
        self.uploader = self._uploader()
        self._threads: dict[str, threading.Thread] = {}
        self._metrics_server: Any = None
        self._cashier_server: Any = None

    def _poller(self) -> Poller:
        kassa = self.config.kassa
        client = KassaClient(
            kassa.url, kassa.ident, self.config.kassa_secret, timeout=kassa.timeout,
            verify=str(kassa.ca_bundle) if kassa.ca_bundle else True, proxy=kassa.proxy)
        if cleartext(kassa.url):  # allowed by kassa.allow_http, else the config refused it
            log.warning("kassa.allow_http: the POS secret and receipts travel in clear on the "
                        "shop network; prefer https:// if the POS API offers it")
        return Poller(client, self.store, merchant_id=self.config.store.merchant_id,
                      branch=self.config.store.branch, matching=self.config.matching,
                      interval=kassa.poll_interval, batch=kassa.batch,
                      store_name=self.config.store.name, events=self.reporter, clock=self.clock)

    def _uploader(self) -> Uploader:
        cloud = self.config.cloud
        return Uploader(
            self.store, cloud.url, self.config.cloud_token,
            ca_bundle=str(cloud.ca_bundle) if cloud.ca_bundle else None,
            timeout=cloud.timeout, proxy=cloud.proxy, workers=cloud.workers,
            base_delay=cloud.retry_base, max_delay=cloud.retry_max,
            on_delivered=self.reporter.delivered, on_pass=lambda: self.heartbeat.beat("uploader"),
            on_outcome=self.metrics.upload)

    def on_scan(self, event: ScanEvent) -> ScanResult:
        return self.intake.take(event)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        for source in self.sources:
            self._spawn(f"source {source.name}", lambda stop, s=source: self._run_source(s, stop))
        self.heartbeat.register("poller", "uploader")
        self._spawn("poller", self.poller.run)
        self._spawn("uploader", lambda stop: self.uploader.run(stop, self.upload_wake))
        self.metrics.set_collect_callback(self._gauges)
        listen = self.config.metrics.listen
        self._metrics_server = serve(listen, self.metrics, ready=self.ready) if listen else None
        self._cashier_server = cashier.serve(
            self.config.cashier, scan=self.on_scan, store=self.store,
            refused=self.reporter.refused, workplace=self.config.store.workplace)
        systemd.ready()
        log.info("boniq-agent started", extra=fields(
            sources=len(self.sources), workplace=self.config.store.workplace,
            data_dir=str(self.config.data_dir)))

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        def guarded() -> None:
            while not self.stop_event.is_set():
                try:
                    target(self.stop_event)
                    return
                except Exception:  # a stage must never take the daemon down
                    log.exception(f"{name} crashed; restarting it in 1 s")
                    self.stop_event.wait(1.0)

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self._threads[name] = thread

    def _run_source(self, source: Source, stop: threading.Event) -> None:
        try:
            source.run(self.on_scan, stop)
        except ScannerError as exc:
            log.error("scanner source cannot run", extra=fields(source=source.name, reason=str(exc)))

    def ready(self) -> bool:
        return not self.stop_event.is_set() and self.poller.last_success is not None

    def _gauges(self) -> dict[str, Any]:
        s = self.store.summary()
        return {"outbox": {state: s[f"outbox_{state}"] for state in ("pending", "delivered", "dead")},
                "claims_pending": s["claims_pending"], "claims": s["claims_by_state"],
                "oldest_pending": s["oldest_pending_at"], "last_delivery": s["last_delivery_at"]}

    def supervise(self) -> None:
        """The main thread's loop: watchdog, STATUS=, retention purge, until stopped."""
        interval = systemd.watchdog_interval() or 5.0
        max_age = max(120.0, 3 * self.config.kassa.poll_interval)
        last_purge = 0.0
        while not self.stop_event.wait(min(interval, 5.0)):
            if all(self._threads[name].is_alive() for name in ("poller", "uploader")):
                systemd.keep_alive(self.heartbeat, max_age)
            systemd.status(self.status_line())
            if self.clock() - last_purge > PURGE_EVERY:
                last_purge = self.clock()
                self._purge()

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
        return (f"pending claims {s['claims_pending']}, unsure {s['claims_unsure']}, "
                f"outbox {s['outbox_pending']}, dead {s['outbox_dead']}, "
                f"delivered {s['outbox_delivered']}, last error: {error}"[:200])

    def stop(self) -> None:
        self.stop_event.set()
        self.upload_wake.set()
        self.poller.wake.set()
        systemd.stopping()
        deadline = time.monotonic() + STOP_GRACE
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        for server in (self._metrics_server, self._cashier_server):
            if server is not None:
                server.close()
        self.uploader.close()
        self.store.close()
        log.info("boniq-agent stopped")


def _build_sources(config: Config) -> list[Source]:
    """Every source that can run here; one that cannot is logged and left out."""
    sources = []
    for scanner in config.scanners:
        try:
            sources.append(build_source(scanner))
        except ScannerError as exc:
            log.error("scanner source cannot start", extra=fields(
                type=scanner.type, device=scanner.device, reason=str(exc)))
    return sources


def run(config: Config) -> int:
    """`boniq-agent run`: start, supervise until SIGTERM/SIGINT, stop cleanly, exit 0."""
    daemon = Daemon(config)

    def on_signal(signum: int, frame: Any) -> None:
        log.info("stop requested", extra=fields(signal=signal.Signals(signum).name))
        daemon.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.start()
    try:
        daemon.supervise()
    finally:
        daemon.stop()
    return 0
