"""The running agent: scanner sources → claims → POS poller/matcher → outbox → uploader.

Each stage runs in its own thread and talks to the others only through the SQLite store, so a
crash anywhere loses nothing that was acknowledged: a scan is acknowledged ("accepted" feedback)
only after its claim is committed, and a receipt only after its outbox row is.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent import __version__, codes, health, supervision, systemd
from agent.config import Config, load
from agent.errors import AgentError, CodeRejected, ConfigError, ScannerError, StoreError
from agent.feedback import Feedback
from agent.kassa.client import KassaClient
from agent.kassa.poller import Poller
from agent.logs import correlation, fields, get_logger, mask_code, new_correlation_id
from agent.metrics import Metrics, serve
from agent.queue.store import Claim, OutboxItem, Store
from agent.queue.uploader import Uploader
from agent.scanner import build_source
from agent.scanner.base import ScanEvent, Source

log = get_logger(__name__)

STOP_GRACE = 8.0
PURGE_EVERY = 3600.0
EXIT_CONFIG = 78
# What SIGHUP applies in place (SPEC §9); every other change needs a restart.
RELOADABLE = ("log_level", "feedback", "matching")


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
    config_path: Path | None = None  # where reload() reads the configuration again

    def __post_init__(self) -> None:
        self.exit_status = 0
        self.started_at = time.time()
        self.scans_refused = 0
        self.scans_failed = 0
        self.cloud_last_success: float | None = None
        self.cloud_failing = False
        self._unbuilt: list[str] = []  # scanner sources that could not start
        self._wake = threading.Event()  # cuts the supervisor's wait short (stop, reload)
        self._reload_requested = False
        self.store = Store.open(self.config.data_dir)
        self.metrics = Metrics()
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
            on_outcome=self._upload_outcome,
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
                self._unbuilt.append(f"{scanner.type}:{scanner.device or '-'}")
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
            self.scans_refused += 1
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
            self.scans_failed += 1
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

    def _upload_outcome(self, outcome: str) -> None:
        self.metrics.upload(outcome)
        if outcome in ("delivered", "dead"):  # the cloud answered
            self.cloud_last_success = time.time()
        self.cloud_failing = outcome in ("retry", "auth")

    def _delivered(self, item: OutboxItem) -> None:
        self.feedback.delivered()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.heartbeat.register("poller", "uploader")
        self._spawn("poller", self.poller.run)
        self._spawn("uploader", lambda stop: self.uploader.run(stop, self.upload_wake))
        for source in self.sources or []:
            self._spawn(f"source {source.name}", lambda stop, s=source: self._run_source(s, stop))
        self.metrics.set_collect_callback(self._gauges)
        listen = self.config.metrics.listen
        self._metrics_server = serve(listen, self.metrics, ready=self.ready) if listen else None
        self._write_health()
        systemd.ready()
        log.info("boniq-agent started", extra=fields(
            version=__version__, config=str(self.config_path or "-"),
            pos=_host(self.config.kassa.url), cloud=_host(self.config.cloud.url),
            sources=",".join(s.name for s in self.sources or []) or "none",
            workplace=self.config.store.workplace, data_dir=str(self.config.data_dir)))

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        body = supervision.guarded(name, target, self.stop_event,
                                   on_config_fault=self._config_fault, paths=self._named_files)
        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _named_files(self) -> list[Path]:
        files = [self.config.kassa.ca_bundle, self.config.cloud.ca_bundle,
                 self.config.kassa.secret_file, self.config.cloud.token_file,
                 self.config.credential_path("kassa-secret"), self.config.credential_path("cloud-token")]
        return [f for f in files if f is not None]

    def _config_fault(self, stage: str, reason: str) -> None:
        """A restart cannot fix it: stop with exit status 78 (systemd leaves the unit failed)."""
        log.error("the configuration stops the agent; fix it, then start the agent again "
                  "(`boniq-agent check-config`)", extra=fields(stage=stage, reason=reason))
        self.exit_status = EXIT_CONFIG
        self.request_stop()

    def request_stop(self) -> None:
        self.stop_event.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def reload(self) -> bool:
        """Read the config file again and apply what can change in place: log_level, feedback
        and matching. An invalid file is logged and the running configuration kept."""
        if self.config_path is None:
            log.warning("reload requested, but the agent was not started from a config file")
            return False
        try:
            new = load(self.config_path)
        except ConfigError as exc:
            log.error("reload refused: the configuration file is invalid; the agent keeps "
                      "running with the previous one", extra=fields(problems="; ".join(exc.problems)))
            return False
        for warning in new.warnings:
            log.warning(warning)
        changed = _changed_keys(self.config.model_dump(), new.model_dump())
        applied = [k for k in changed if k.split(".")[0] in RELOADABLE]
        pending = [k for k in changed if k.split(".")[0] not in RELOADABLE]
        if new.log_level != self.config.log_level:
            logging.getLogger().setLevel(new.log_level.upper())
        if new.feedback != self.config.feedback:
            fb = new.feedback
            self.feedback = Feedback(fb.accepted, fb.rejected, fb.delivered)
        if new.matching != self.config.matching:
            self.poller.set_matching(new.matching)
        self.config = self.config.model_copy(update={key: getattr(new, key) for key in RELOADABLE})
        visible = logging.INFO if logging.getLogger().level <= logging.INFO else logging.WARNING
        log.log(visible, "configuration reloaded", extra=fields(
            applied=",".join(applied) or "nothing changed",
            needs_restart=",".join(pending) or "nothing"))
        if pending:
            log.warning("some changes take effect only after a restart "
                        "(systemctl restart boniq-agent)", extra=fields(keys=",".join(pending)))
        return True

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
                "oldest_pending": s["oldest_pending_at"],
                "last_delivery": s["last_delivery_at"]}

    def supervise(self) -> None:
        """The main thread's loop: watchdog, STATUS=, retention purge, reload, until stopped."""
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
            if all(t.is_alive() for t in self._threads[:2]):  # poller and uploader
                systemd.keep_alive(self.heartbeat, max_age)
            systemd.status(self.status_line())
            self._write_health()
            if self.clock() - last_purge > PURGE_EVERY:
                last_purge = self.clock()
                self._purge()

    def health_snapshot(self) -> dict[str, Any]:
        """What `boniq-agent status` shows about the running agent (health.json)."""
        scanners = [{"name": s.name, "connected": _connected(s)} for s in self.sources or []]
        scanners += [{"name": name, "connected": False} for name in self._unbuilt]
        return {
            "pid": os.getpid(), "version": __version__, "started_at": self.started_at,
            "updated_at": time.time(),
            "pos": {"last_success": self.poller.last_success, "last_error": self.poller.last_error},
            "cloud": {"last_success": self.cloud_last_success,
                      "auth_failing": self.uploader.auth_failing,
                      "last_error": "uploads are being retried" if self.cloud_failing else None},
            "scanners": scanners,
            "scans": {"refused": self.scans_refused, "failed": self.scans_failed},
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


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two `model_dump()`s."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys
                for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if old != new else []
