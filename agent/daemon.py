"""The running agent: scanner sources → claims → POS poller/matcher → outbox → uploader.

Each stage runs in its own thread and talks to the others only through the SQLite store, so a
crash anywhere loses nothing that was acknowledged: a scan is acknowledged ("accepted" feedback)
only after its claim is committed, and a receipt only after its outbox row is.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent import codes, systemd
from agent.config import Config
from agent.errors import AgentError, CodeRejected, ScannerError, StoreError
from agent.feedback import Feedback
from agent.kassa.client import KassaClient
from agent.kassa.poller import Poller
from agent.logs import correlation, fields, get_logger, mask_code, new_correlation_id
from agent.metrics import Metrics, serve
from agent.queue.store import Claim, OutboxItem, Store
from agent.queue.uploader import Uploader
from agent.scanner import base as scanner_base, build_source
from agent.scanner.base import ScanEvent, Source

log = get_logger(__name__)

STOP_GRACE = 8.0
PURGE_EVERY = 3600.0


@dataclass
class ScanOutcome:
    outcome: str  # accepted | duplicate | rejected | failed
    reason: str = ""
    claim: Claim | None = None


@dataclass
class Daemon:
    config: Config
    sources: list[Source] | None = None
    clock: Callable[[], float] = time.time
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.store = Store.open(self.config.data_dir)
        self.metrics = Metrics()
        self.metrics.watch_filesystem(self.config.data_dir)
        self.metrics.pos_clock_tolerance(self.config.matching.clock_skew)
        self.heartbeat = systemd.Heartbeat()
        self.upload_wake = threading.Event()
        fb = self.config.feedback
        self.feedback = Feedback(fb.accepted, fb.rejected, fb.delivered)
        self.client = KassaClient(
            self.config.kassa.url, self.config.kassa.ident, self.config.kassa_secret,
            timeout=(3.05, self.config.kassa.timeout),
            verify=str(self.config.kassa.ca_bundle) if self.config.kassa.ca_bundle else True,
        )
        self.poller = Poller(
            self.client, self.store, merchant_id=self.config.store.merchant_id,
            branch=self.config.store.branch, claim_ttl=self.config.matching.claim_ttl,
            clock_skew=self.config.matching.clock_skew,
            late_scan_window=self.config.matching.late_scan_window,
            interval=self.config.kassa.poll_interval, batch=self.config.kassa.batch,
            store_name=self.config.store.name, on_stored=self._stored, on_expired=self._expired,
            on_cycle=self._polled, clock=self.clock,
        )
        self.uploader = Uploader(
            self.store, self.config.cloud.url, self.config.cloud_token,
            ca_bundle=str(self.config.cloud.ca_bundle) if self.config.cloud.ca_bundle else None,
            timeout=(3.05, self.config.cloud.timeout), workers=self.config.cloud.workers,
            base_delay=self.config.cloud.retry_base, max_delay=self.config.cloud.retry_max,
            on_delivered=self._delivered, on_pass=lambda: self.heartbeat.beat("uploader"),
            on_outcome=self.metrics.upload,
        )
        if self.sources is None:
            self.sources = self._build_sources()
        self._threads: list[threading.Thread] = []
        self._metrics_server: Any = None

    def _build_sources(self) -> list[Source]:
        """Every source that can run here; one that cannot is logged and left out."""
        sources = []
        for scanner in self.config.scanners:
            try:
                sources.append(build_source(scanner))
            except ScannerError as exc:
                self.metrics.scanner_up(f"{scanner.type}:{scanner.device}", False)
                log.error("scanner source cannot start", extra=fields(
                    type=scanner.type, device=scanner.device, reason=str(exc)))
        return sources

    # -- scans ---------------------------------------------------------------------------------

    def on_scan(self, event: ScanEvent) -> ScanOutcome:
        """A source's scan: parsed, stored durably, and only then acknowledged to the cashier."""
        source_kind = event.source.split(":", 1)[0]
        try:
            code = codes.parse(event.text, url_hosts=self.config.codes.url_hosts)
        except CodeRejected as exc:
            log.info("scan rejected", extra=fields(source=event.source, reason=str(exc)))
            self.metrics.scan(source_kind, "rejected")
            self.feedback.rejected()
            return ScanOutcome("rejected", str(exc))
        workplace = event.workplace if event.workplace is not None else self.config.store.workplace
        try:
            result = self.store.add_claim(
                correlation_id=new_correlation_id(), customer_kind=code.kind,
                customer=code.value, workplace=workplace, source=event.source,
                scanned_at=event.at, pos_marker=self.store.get_cursor(),
                dedupe_window=self.config.matching.dedupe_window,
            )
        except StoreError as exc:
            log.error("scan NOT stored: the store refused it", extra=fields(
                source=event.source, reason=str(exc)))
            self.metrics.scan(source_kind, "failed")
            self.feedback.rejected()
            return ScanOutcome("failed", str(exc))
        self.poller.wake.set()
        return self._acknowledge(result, event, source_kind)

    def _acknowledge(self, result: Any, event: ScanEvent, source_kind: str) -> ScanOutcome:
        claim = result.claim
        with correlation(claim.correlation_id):
            for old in result.replaced:
                log.info("a new code at this till: the earlier claim now only takes a sale "
                         "booked before this scan", extra=fields(
                             workplace=claim.workplace, earlier=mask_code(old.customer)))
            outcome = "duplicate" if result.duplicate else "accepted"
            log.info(f"scan {outcome}: claim waits for the sale", extra=fields(
                source=event.source, workplace=claim.workplace, kind=claim.customer_kind,
                customer=mask_code(claim.customer)))
        self.metrics.scan(source_kind, outcome)
        if not result.duplicate:
            self.metrics.claim_created()
        self.feedback.accepted()
        return ScanOutcome(outcome, claim=claim)

    # -- callbacks from the stages -----------------------------------------------------------

    def _stored(self, items: list[OutboxItem]) -> None:
        for item in items:
            self.metrics.receipt_matched("credit" if item.claim_id is None else "claim")
        self.upload_wake.set()

    def _expired(self, claims: list[Claim]) -> None:
        self.metrics.claims_expired(len(claims))

    def _polled(self, ok: bool) -> None:
        self.heartbeat.beat("poller")
        self.metrics.pos_poll(ok)

    def _delivered(self, item: OutboxItem) -> None:
        self.feedback.delivered()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.heartbeat.register("poller", "uploader")
        scanner_base.on_state_change(self.metrics.scanner_up)
        self._spawn("poller", self.poller.run)
        self._spawn("uploader", lambda stop: self.uploader.run(stop, self.upload_wake))
        for source in self.sources or []:
            self._spawn(f"source {source.name}", lambda stop, s=source: self._run_source(s, stop))
        self.metrics.set_collect_callback(self._gauges)
        listen = self.config.metrics.listen
        self._metrics_server = serve(listen, self.metrics, ready=self.ready) if listen else None
        systemd.ready()
        log.info("boniq-agent started", extra=fields(
            sources=len(self.sources or []), workplace=self.config.store.workplace,
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
        self._threads.append(thread)

    def _run_source(self, source: Source, stop: threading.Event) -> None:
        try:
            source.run(self.on_scan, stop)
        except ScannerError as exc:
            self.metrics.scanner_up(source.name, False)
            log.error("scanner source cannot run", extra=fields(source=source.name, reason=str(exc)))

    def ready(self) -> bool:
        return not self.stop_event.is_set() and self.poller.last_success is not None

    def _gauges(self) -> dict[str, Any]:
        s = self.store.summary()
        return {"outbox": {state: s[f"outbox_{state}"] for state in ("pending", "delivered", "dead")},
                "claims_pending": s["claims_pending"], "claims": s["claims_by_state"],
                "oldest_pending": s["oldest_pending_at"],
                "last_delivery": s["last_delivery_at"]}

    def supervise(self) -> None:
        """The main thread's loop: watchdog, STATUS=, retention purge, until stopped."""
        interval = systemd.watchdog_interval() or 5.0
        max_age = max(120.0, 3 * self.config.kassa.poll_interval)
        last_purge = 0.0
        while not self.stop_event.wait(min(interval, 5.0)):
            if all(t.is_alive() for t in self._threads[:2]):  # poller and uploader
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
        return (f"pending claims {s['claims_pending']}, outbox {s['outbox_pending']}, "
                f"dead {s['outbox_dead']}, delivered {s['outbox_delivered']}, last error: {error}"[:200])

    def stop(self) -> None:
        self.stop_event.set()
        self.upload_wake.set()
        self.poller.wake.set()
        systemd.stopping()
        deadline = time.monotonic() + STOP_GRACE
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._metrics_server is not None:
            self._metrics_server.close()
        self.uploader.close()
        self.store.close()
        log.info("boniq-agent stopped")


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
