"""Scan intake: a code from any source becomes a durable claim, and only then is it acknowledged.

Every way a code reaches the agent (a scanner source, `boniq-agent scan`, the cashier screen, a
`scanCode` webhook) goes through `claim_for`, so validation, dedupe and what is stored are the
same for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent import codes
from agent.config import Config
from agent.errors import CodeRejected, StoreError
from agent.logs import correlation, fields, get_logger, mask_code, new_correlation_id
from agent.metrics import ScanOutcome
from agent.queue.claims import Claim
from agent.queue.store import ClaimResult, NewClaim, Store
from agent.scanner.base import ScanEvent

log = get_logger(__name__)


@dataclass(frozen=True)
class ScanResult:
    outcome: ScanOutcome
    reason: str = ""
    claim: Claim | None = None


class IntakeEvents(Protocol):
    def scanned(self, event: ScanEvent, workplace: int, result: ScanResult) -> None: ...


def claim_for(
    store: Store,
    config: Config,
    code: codes.CustomerCode,
    *,
    workplace: int,
    source: str,
    at: float,
    session_id: str | None = None,
) -> ClaimResult:
    """Store the claim for a parsed code (the one place claims are made)."""
    rules = config.matching
    return store.add_claim(
        NewClaim(
            correlation_id=new_correlation_id(),
            customer_kind=code.kind,
            customer=code.value,
            workplace=workplace,
            source=source,
            scanned_at=at,
            pos_marker=store.get_cursor(),
            session_id=session_id,
        ),
        dedupe_window=rules.dedupe_window,
        rescan_guard=rules.recent_sale_guard,
    )


class ScanIntake:
    def __init__(
        self, store: Store, config: Config, *, events: IntakeEvents, wake: Callable[[], None]
    ) -> None:
        self.store = store
        self.config = config
        self.events = events
        self.wake = wake

    def take(self, event: ScanEvent) -> ScanResult:
        """A source's scan: parsed, stored durably, and only then acknowledged."""
        workplace = event.workplace if event.workplace is not None else self.config.store.workplace
        result = self._store(event, workplace)
        self.events.scanned(event, workplace, result)
        return result

    def _store(self, event: ScanEvent, workplace: int) -> ScanResult:
        try:
            code = codes.parse(event.text, url_hosts=self.config.codes.url_hosts)
        except CodeRejected as exc:
            log.info("scan rejected", extra=fields(source=event.source, reason=str(exc)))
            return ScanResult("rejected", str(exc))
        try:
            stored = claim_for(
                self.store, self.config, code, workplace=workplace, source=event.source, at=event.at
            )
        except StoreError as exc:
            log.error(
                "scan NOT stored: the store refused it",
                extra=fields(source=event.source, reason=str(exc)),
            )
            return ScanResult("failed", str(exc))
        self.wake()
        outcome: ScanOutcome = "duplicate" if stored.duplicate else "accepted"
        with correlation(stored.claim.correlation_id):
            log.info(
                f"scan {outcome}: claim waits for the sale",
                extra=fields(
                    source=event.source,
                    workplace=workplace,
                    kind=stored.claim.customer_kind,
                    customer=mask_code(stored.claim.customer),
                ),
            )
        return ScanResult(outcome, claim=stored.claim)
