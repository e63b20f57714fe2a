"""Where the stages report (the sink of their events): metrics, the systemd heartbeat, the
cashier's feedback, the refused scans the cashier screen lists and the counts `status` shows."""

from __future__ import annotations

import time
from collections.abc import Callable

from agent import systemd
from agent.cashier.outcomes import STORE_FAILED, Refused, RefusedScans
from agent.feedback import Feedback
from agent.intake import ScanResult
from agent.kassa.poller import log_close
from agent.metrics import Metrics, ScanOutcome, UploadOutcome
from agent.queue.claims import ClaimState, Close
from agent.queue.outbox import OutboxItem
from agent.scanner.base import ScanEvent


class Reporter:
    """Where the stages report: metrics, the systemd heartbeat, the cashier's feedback, the
    refused scans the cashier screen lists and the counts `status` shows."""

    def __init__(
        self,
        metrics: Metrics,
        heartbeat: systemd.Heartbeat,
        feedback: Feedback,
        wake_uploader: Callable[[], None],
    ) -> None:
        self.metrics = metrics
        self.heartbeat = heartbeat
        self.feedback = feedback
        self.wake_uploader = wake_uploader
        self.refused = RefusedScans()
        self.scans = {"refused": 0, "failed": 0}
        self.cloud_last_success: float | None = None
        self.cloud_failing = False

    def scanned(self, event: ScanEvent, workplace: int, result: ScanResult) -> None:
        self.metrics.scan(event.source.split(":", 1)[0], result.outcome)
        if result.outcome == "accepted":
            self.metrics.claim_created()
        if result.claim is None:
            self.scans["failed" if result.outcome == "failed" else "refused"] += 1
            reason = STORE_FAILED if result.outcome == "failed" else result.reason
            self.refused.add(Refused(event.at, workplace, event.source, reason))
        (self.feedback.accepted if result.claim else self.feedback.rejected)()

    def webhook_scan(self, workplace: int, outcome: ScanOutcome) -> None:
        """A code the till's own scanner read (its screen is the cashier's feedback)."""
        self.metrics.scan("webhook", outcome)
        if outcome == "accepted":
            self.metrics.claim_created()

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

    def uploaded(self, outcome: UploadOutcome) -> None:
        self.metrics.upload(outcome)
        if outcome in ("delivered", "dead"):  # the cloud answered
            self.cloud_last_success = time.time()
        self.cloud_failing = outcome in ("retry", "auth")

    def delivered(self, item: OutboxItem) -> None:
        self.feedback.delivered()


class WebhookEvents:
    """The webhook receiver's reports: to the Reporter, and completed sessions wake the poller
    so their receipt is read at once."""

    def __init__(self, reporter: Reporter, wake_poller: Callable[[], None]) -> None:
        self.reporter = reporter
        self.wake_poller = wake_poller

    def webhook_scan(self, workplace: int, outcome: ScanOutcome) -> None:
        self.reporter.webhook_scan(workplace, outcome)

    def closed(self, closes: list[Close]) -> None:
        for close in closes:
            log_close(close)
        self.reporter.closed(closes)

    def session_done(self) -> None:
        self.wake_poller()
