"""Prometheus metrics and the /metrics, /livez, /readyz endpoint for store IT.

Names follow the Prometheus naming rules: `boniq_agent_` prefix, counters end in `_total`,
timestamps rather than ages (alert on
`time() - boniq_agent_outbox_oldest_pending_timestamp_seconds > 3600`), few labels and never a
customer code or e-mail. Store-derived gauges (outbox depth by state, oldest
pending item, last delivery) are read once per scrape through `set_collect_callback`, so they
are right after a restart and cost nothing between scrapes.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal, NamedTuple, TypedDict

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from agent import __version__, listener
from agent.listener import Handler, Limits, Server
from agent.logs import fields, get_logger
from agent.printable import printable

log = get_logger(__name__)

SourceKind = Literal["serial", "hid", "webcam", "stdin", "manual", "webhook", "cashier"]
ScanOutcome = Literal["accepted", "rejected", "duplicate", "failed"]
UploadOutcome = Literal["delivered", "retry", "dead", "auth"]
ClaimEnd = Literal["delivered", "expired", "unsure", "cancelled", "assigned"]
_CLAIM_ENDS: tuple[ClaimEnd, ...] = ("delivered", "expired", "unsure", "cancelled", "assigned")
_SOURCES: tuple[SourceKind, ...] = (
    "serial",
    "hid",
    "webcam",
    "stdin",
    "manual",
    "webhook",
    "cashier",
)
_SCAN_OUTCOMES: tuple[ScanOutcome, ...] = ("accepted", "rejected", "duplicate", "failed")
_UPLOAD_OUTCOMES: tuple[UploadOutcome, ...] = ("delivered", "retry", "dead", "auth")

LIMITS = Limits(max_connections=32, header_bytes=8 * 1024, body_bytes=0, timeout=5.0, backlog=1024)
"""A scrape is one short GET: no body, small headers, a Prometheus scrape_timeout of seconds."""

__all__ = ["LIMITS", "Metrics", "Server", "StoreGauges", "parse_listen", "serve"]


class StoreGauges(TypedDict, total=False):
    """What the collect callback returns; every key is optional."""

    outbox: Mapping[str, int]  # state → number of rows, e.g. {"pending": 3, "dead": 1}
    claims_pending: int
    claims: Mapping[str, int]  # claim state → number of claims, e.g. {"pending": 1, "unsure": 2}
    oldest_pending: float | None  # unix time of the oldest undelivered outbox row
    last_delivery: float | None  # unix time of the last 2xx from the cloud


class Metrics:
    """The agent's metrics in a registry of their own (tests may build several)."""

    def __init__(self, version: str = __version__) -> None:
        # `_created` series double the exposition and no dashboard of ours reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        self.registry = CollectorRegistry()
        self._collect: Callable[[], StoreGauges] | None = None
        self._last_delivery = 0.0
        r = self.registry
        Info("boniq_agent_build", "Version of the running agent.", registry=r).info(
            {"version": printable(version)}
        )
        self._declare_counters(r)
        self._declare_gauges(r)
        self._zero_series()
        r.register(_StoreCollector(self._store_gauges, lambda: self._last_delivery))

    def _declare_counters(self, r: CollectorRegistry) -> None:
        self._scans = Counter(
            "boniq_agent_scans",
            "Codes read by a scanner source.",
            ["source", "outcome"],
            registry=r,
        )
        self._claims_created = Counter(
            "boniq_agent_claims_created", "Claims stored, each waiting for its sale.", registry=r
        )
        self._claims_expired = Counter(
            "boniq_agent_claims_expired", "Claims that found no sale within claim_ttl.", registry=r
        )
        self._receipts_matched = Counter(
            "boniq_agent_receipts_matched",
            "Receipts attached to a customer (by a claim, or as the credit of a delivered sale).",
            ["via"],
            registry=r,
        )
        self._uploads = Counter(
            "boniq_agent_uploads",
            "Upload attempts to the BONIQ cloud by outcome.",
            ["outcome"],
            registry=r,
        )
        self._claims_closed = Counter(
            "boniq_agent_claims_closed",
            "Claims closed, by how they ended; `reason` says why an unsure claim was not matched.",
            ["state", "reason"],
            registry=r,
        )
        self._pos_polls = Counter(
            "boniq_agent_pos_polls", "getReceipts polls of the POS.", registry=r
        )
        self._pos_poll_errors = Counter(
            "boniq_agent_pos_poll_errors", "getReceipts polls that failed.", registry=r
        )

    def _declare_gauges(self, r: CollectorRegistry) -> None:
        self._pos_clock_offset = Gauge(
            "boniq_agent_pos_clock_offset_seconds",
            "POS clock minus this till's clock, measured at the last reference refresh.",
            registry=r,
        )
        self._pos_clock_tolerance = Gauge(
            "boniq_agent_pos_clock_tolerance_seconds",
            "The clock offset matching tolerates (matching.clock_skew); alert beyond it.",
            registry=r,
        )
        self._scanner_up = Gauge(
            "boniq_agent_scanner_up",
            "1 while a scanner source has its device open, 0 while it is absent or failing.",
            ["source"],
            registry=r,
        )

    def _zero_series(self) -> None:
        """Every known label set exported as 0 from the start, so rate() and alerts see it."""
        for source in _SOURCES:
            for scan_outcome in _SCAN_OUTCOMES:
                self._scans.labels(source, scan_outcome)
        for via in ("claim", "credit"):
            self._receipts_matched.labels(via)
        for end in _CLAIM_ENDS:
            self._claims_closed.labels(end, "")
        for upload_outcome in _UPLOAD_OUTCOMES:
            self._uploads.labels(upload_outcome)

    def scan(self, source: str, outcome: ScanOutcome) -> None:
        """`source`: the kind of source (an unknown kind, e.g. a test's, counts as `other`)."""
        kind = source if source in _SOURCES else "other"
        self._scans.labels(kind, outcome).inc()

    def claim_created(self) -> None:
        self._claims_created.inc()

    def claims_expired(self, count: int = 1) -> None:
        self._claims_expired.inc(count)

    def claim_closed(self, state: str, reason: str = "", count: int = 1) -> None:
        """`reason`: a short fixed word for unsure claims (never customer data)."""
        self._claims_closed.labels(state, printable(reason)).inc(count)

    def pos_clock_offset(self, seconds: float) -> None:
        self._pos_clock_offset.set(seconds)

    def pos_clock_tolerance(self, seconds: float) -> None:
        self._pos_clock_tolerance.set(seconds)

    def scanner_up(self, source: str, up: bool) -> None:
        """`source`: the source's name, `KIND:DEVICE` (one series per configured scanner)."""
        self._scanner_up.labels(source).set(1 if up else 0)

    def watch_filesystem(self, path: Path) -> None:
        """Export free and total bytes of the filesystem holding `path` (the data_dir)."""
        self.registry.register(_FilesystemCollector(path))

    def receipt_matched(self, via: Literal["claim", "credit"] = "claim") -> None:
        self._receipts_matched.labels(via).inc()

    def upload(self, outcome: UploadOutcome) -> None:
        self._uploads.labels(outcome).inc()
        if outcome == "delivered":
            self._last_delivery = time.time()

    def pos_poll(self, ok: bool) -> None:
        self._pos_polls.inc()
        if not ok:
            self._pos_poll_errors.inc()

    def set_collect_callback(self, collect: Callable[[], StoreGauges]) -> None:
        """`collect` runs on every scrape, in the HTTP thread: make it a cheap read-only query."""
        self._collect = collect

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def _store_gauges(self) -> StoreGauges:
        if self._collect is None:
            return {}
        try:
            return self._collect()
        except Exception as exc:  # noqa: BLE001 - a locked or damaged store must not break the scrape
            log.warning("store metrics unavailable", extra=fields(error=type(exc).__name__))
            return {}


class _StoreCollector(Collector):
    def __init__(
        self, store_gauges: Callable[[], StoreGauges], last_delivery: Callable[[], float]
    ) -> None:
        self._store_gauges = store_gauges
        self._last_delivery = last_delivery

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        gauges = self._store_gauges()
        if "outbox" in gauges:
            items = GaugeMetricFamily(
                "boniq_agent_outbox_items", "Outbox rows by state.", labels=["state"]
            )
            for state, count in sorted(gauges["outbox"].items()):
                items.add_metric([state], count)
            yield items
        if "claims_pending" in gauges:
            yield GaugeMetricFamily(
                "boniq_agent_claims_pending",
                "Claims waiting for their sale.",
                value=gauges["claims_pending"],
            )
        if "claims" in gauges:
            claims = GaugeMetricFamily(
                "boniq_agent_claims", "Claims in the store by state.", labels=["state"]
            )
            for state, count in sorted(gauges["claims"].items()):
                claims.add_metric([state], count)
            yield claims
        if "oldest_pending" in gauges:
            yield GaugeMetricFamily(
                "boniq_agent_outbox_oldest_pending_timestamp_seconds",
                "Unix time of the oldest undelivered outbox row; scrape time when none is pending.",
                value=gauges["oldest_pending"] or time.time(),
            )
        last = max(gauges.get("last_delivery") or 0.0, self._last_delivery())
        yield GaugeMetricFamily(
            "boniq_agent_last_delivery_timestamp_seconds",
            "Unix time of the last receipt the cloud accepted; 0 if none yet.",
            value=last,
        )


class _FilesystemCollector(Collector):
    def __init__(self, path: Path) -> None:
        self._path = path

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        probe = self._path if self._path.exists() else self._path.parent
        try:
            usage = shutil.disk_usage(probe)
        except OSError:
            return
        yield GaugeMetricFamily(
            "boniq_agent_data_dir_free_bytes",
            "Bytes free to the agent on the filesystem holding data_dir.",
            value=usage.free,
        )
        yield GaugeMetricFamily(
            "boniq_agent_data_dir_size_bytes",
            "Size in bytes of the filesystem holding data_dir.",
            value=usage.total,
        )


def serve(listen: str, metrics: Metrics, ready: Callable[[], bool]) -> Server | None:
    """Serve on `listen` ("host:port", "[::1]:port"); None when it is empty or cannot be bound.

    A bind failure is logged, not raised: receipts matter more than metrics.
    """
    return listener.serve(
        listen, _Handler, limits=LIMITS, name="metrics", context=_Context(metrics, ready)
    )


def parse_listen(listen: str) -> tuple[str, int]:
    return listener.parse_listen(listen, key="metrics.listen")


class _Context(NamedTuple):
    metrics: Metrics
    ready: Callable[[], bool]


class _Handler(Handler):
    context: _Context

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/metrics":
            self.reply(200, self.context.metrics.exposition(), CONTENT_TYPE_PLAIN_0_0_4)
        elif path == "/livez":
            self.reply(200, b"ok\n")
        elif path == "/readyz":
            ok = self._is_ready()
            self.reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
        else:
            self.reply(404, b"not found: try /metrics, /livez or /readyz\n")

    def _is_ready(self) -> bool:
        try:
            return bool(self.context.ready())
        except Exception as exc:  # noqa: BLE001 - a failing check is "not ready", not a 500
            log.warning("readiness check failed", extra=fields(error=type(exc).__name__))
            return False
