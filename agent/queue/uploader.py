"""The sink: send due outbox rows with the `CloudClient` and record each answer in the row.

This is the scheduler: a delivered row is marked delivered; a rejected one dead-lettered with the
server's reason; an auth failure kept and retried slowly with one alert per outage; anything
transient retried with full-jitter exponential back-off, never sooner than Retry-After. The schedule lives in the row, so a restart
keeps it. After a transient or auth failure the whole uploader also pauses (in memory) so that a
failing cloud is not hammered with the rest of the backlog.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import agent
from agent import backoff
from agent.cloud import CloudClient, Delivered
from agent.errors import CloudAuthError, CloudRejected, CloudTransient, StoreError
from agent.logs import Problem, correlation, fields, get_logger
from agent.metrics import UploadOutcome
from agent.queue.store import OutboxItem, Store
from agent.supervision import Repeats, config_fault

log = get_logger(__name__)

BATCH = 200


@dataclass
class UploadStats:
    attempted: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    auth_failed: int = 0


def _store_problem() -> Problem:
    """One line per store outage (disk full, lock), not one traceback per pass."""
    return Problem(
        "uploader cannot record cloud answers in the store; receipts stay pending and are"
        " sent again once it works",
        "uploader records cloud answers in the store again",
    )


class Uploader:
    """`run(stop, wake)` in a thread of its own; `on_delivered` is called from a worker thread."""

    # Run state in memory: these defaults until the instance sets its own (under `_lock`).
    _paused_until: float = 0.0
    _auth_outage: bool = False
    _stop: threading.Event | None = None

    def __init__(
        self,
        store: Store,
        url: str,
        token: str | Callable[[], str],
        *,
        ca_bundle: str | None = None,
        timeout: float | tuple[float, float] = 10.0,
        proxy: str | None = None,
        workers: int = 4,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        auth_retry_delay: float = 60.0,
        on_delivered: Callable[[OutboxItem], None] | None = None,
        on_pass: Callable[[], None] | None = None,
        on_outcome: Callable[[UploadOutcome], None] | None = None,
        user_agent: str = f"boniq-agent/{agent.__version__}",
    ) -> None:
        """`token`: the token, or a function that reads it again (a rotated token file or
        credential is picked up on the next 401/403). `on_pass`: called once per loop turn.
        `on_outcome`: called with delivered, retry, dead or auth after every attempt (metrics)."""
        self.cloud = CloudClient(
            url, token, ca_bundle=ca_bundle, timeout=timeout, proxy=proxy, user_agent=user_agent
        )
        self.store = store
        self.workers = max(1, workers)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.auth_retry_delay = auth_retry_delay
        self.on_delivered = on_delivered
        self.on_pass = on_pass or (lambda: None)
        self.on_outcome = on_outcome or (lambda outcome: None)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._store_problem = _store_problem()

    # -- public -------------------------------------------------------------------------------

    @property
    def paused_until(self) -> float:
        """Epoch seconds before which no row is sent: the cloud failed and is given time."""
        return self._paused_until

    @property
    def auth_failing(self) -> bool:
        """The cloud refused the token on the last try (the health snapshot `status` reads)."""
        return self._auth_outage

    def run_once(self, now: float | None = None) -> UploadStats:
        """Send the rows due at `now` (default: the clock) until one fails transiently."""
        clock: Callable[[], float] = (lambda: now) if now is not None else time.time
        stats = UploadStats()
        if clock() < self._paused_until:
            return stats
        items = self.store.due(clock(), limit=BATCH)
        if not items:
            return stats
        queue = iter(items)
        halt = threading.Event()
        take = threading.Lock()
        pool = self._executor()
        futures = [
            pool.submit(self._work, queue, take, halt, clock, stats)
            for _ in range(min(self.workers, len(items)))
        ]
        for future in futures:
            future.result()
        return stats

    def run(self, stop: threading.Event, wake: threading.Event | None = None) -> None:
        """Upload until `stop` is set; `wake` (set by the matcher on enqueue) cuts a wait short."""
        self._stop = stop
        crashes = Repeats("uploader pass")
        try:
            while not stop.is_set():
                self.on_pass()
                try:
                    if self.run_once().attempted:
                        self._store_problem.recovered(log)
                    crashes.recovered()
                except StoreError as exc:
                    self._store_problem.failed(log, exc, level="error")
                    stop.wait(1.0)
                except Exception as exc:
                    if config_fault(exc, [self.cloud.ca_bundle] if self.cloud.ca_bundle else []):
                        raise  # the daemon stops with exit 78: retrying cannot fix it
                    crashes.failed(exc)
                    stop.wait(1.0)
                self._wait(stop, wake)
        finally:
            self._stop = None

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self.cloud.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- one pass -------------------------------------------------------------------------------

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="uploader")
        return self._pool

    def _work(
        self,
        queue: Iterator[OutboxItem],
        take: threading.Lock,
        halt: threading.Event,
        clock: Callable[[], float],
        stats: UploadStats,
    ) -> None:
        while not halt.is_set() and not (self._stop and self._stop.is_set()):
            with take:
                item = next(queue, None)
            if item is None:
                return
            with correlation(item.correlation_id):
                if not self._upload(item, clock, stats):
                    halt.set()

    def _upload(self, item: OutboxItem, clock: Callable[[], float], stats: UploadStats) -> bool:
        """One attempt for one row; False when the cloud is failing and the pass should stop."""
        with self._lock:
            stats.attempted += 1
        try:
            delivered = self.cloud.post_receipt(item.body, item.idempotency_key)
        except CloudRejected as exc:
            self._dead(item, str(exc), stats)
            return True
        except CloudAuthError as exc:
            self._auth_failed(item, str(exc), clock(), stats)
            return False
        except CloudTransient as exc:
            self._transient(item, exc, clock(), stats)
            return False
        self._delivered(item, delivered, clock(), stats)
        return True

    # -- outcomes -------------------------------------------------------------------------------

    def _delivered(
        self, item: OutboxItem, answer: Delivered, now: float, stats: UploadStats
    ) -> None:
        self.store.mark_delivered(item.id, cloud_id=answer.cloud_id, now=now)
        self.on_outcome("delivered")
        with self._lock:
            stats.delivered += 1
            recovered, self._auth_outage = self._auth_outage, False
        if recovered:
            log.info("cloud accepts the token again; uploads resume")
        log.info(
            "receipt delivered",
            extra=fields(
                receipt=item.receipt_id,
                status=answer.status,
                cloud_id=answer.cloud_id,
                attempts=item.attempts + 1,
            ),
        )
        if self.on_delivered:
            try:
                self.on_delivered(item)
            except Exception:
                log.exception("delivery callback failed")

    def _dead(self, item: OutboxItem, reason: str, stats: UploadStats) -> None:
        self.store.mark_dead(item.id, reason=reason)
        self.on_outcome("dead")
        with self._lock:
            stats.dead += 1
        log.error(
            "receipt rejected by the cloud and dead-lettered; fix it, then `boniq-agent outbox"
            " retry`",
            extra=fields(receipt=item.receipt_id, reason=reason),
        )

    def _auth_failed(self, item: OutboxItem, reason: str, now: float, stats: UploadStats) -> None:
        delay = self.auth_retry_delay * random.uniform(0.75, 1.25)
        if self.cloud.reload_token():
            delay = 0.0
        self.store.schedule_retry(item.id, next_attempt_at=now + delay, error=reason)
        self.on_outcome("auth")
        with self._lock:
            stats.auth_failed += 1
            first, self._auth_outage = not self._auth_outage, True
            self._paused_until = max(self._paused_until, now + delay)
        if first:
            log.error(
                "the cloud refuses the agent's token; receipts are kept and retried "
                "every ~%.0f s — check cloud.token",
                self.auth_retry_delay,
                extra=fields(reason=reason),
            )

    def _transient(
        self, item: OutboxItem, exc: CloudTransient, now: float, stats: UploadStats
    ) -> None:
        wait = backoff.delay(self.base_delay, item.attempts, self.max_delay)
        next_at = now + max(wait, exc.retry_after or 0.0)
        self.store.schedule_retry(item.id, next_attempt_at=next_at, error=str(exc))
        self.on_outcome("retry")
        with self._lock:
            stats.retried += 1
            self._paused_until = max(self._paused_until, next_at)
        log.warning(
            "receipt upload failed; will retry",
            extra=fields(
                receipt=item.receipt_id,
                error=str(exc),
                attempts=item.attempts + 1,
                retry_in=f"{next_at - now:.2f}s",
            ),
        )

    def _wait(self, stop: threading.Event, wake: threading.Event | None) -> None:
        next_due = self.store.next_due_at()
        target = max(next_due if next_due is not None else float("inf"), self._paused_until)
        deadline = time.monotonic() + max(0.0, min(1.0, target - time.time()))
        if wake is None:
            stop.wait(deadline - time.monotonic())
            return
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if wake.wait(min(left, 0.2)):
                wake.clear()
                return
