"""The uploader's run loop against a misbehaving cloud: nothing lost, nothing stored twice."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from agent_harness import UPLOAD_TOKEN as TOKEN
from agent_harness import enqueue, wait_until

from agent.queue.store import Store
from agent.queue.uploader import Uploader
from agent.sim.cloud import CloudSimulator


@contextmanager
def running(up: Uploader) -> Iterator[threading.Event]:
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=up.run, args=(stop, wake), daemon=True)
    thread.start()
    try:
        yield wake
    finally:
        stop.set()
        thread.join(timeout=10)
        up.close()
    assert not thread.is_alive()


def counts(store: Store) -> dict[str, int]:
    summary = store.summary()
    return {state: summary[f"outbox_{state}"] for state in ("pending", "delivered", "dead")}


def test_a_rotated_token_loses_nothing(cloud: CloudSimulator, store: Store, caplog):
    caplog.set_level(logging.INFO, logger="boniq")
    cloud.faults.token_valid = False
    items = [enqueue(store, f"r-rot-{n}", now=0.0) for n in range(40)]
    up = Uploader(store, cloud.url, TOKEN, auth_retry_delay=0.2, base_delay=0.01)
    with running(up):
        wait_until(lambda: sum(cloud.post_counts().values()) >= 3, timeout=30)
        assert counts(store) == {"pending": 40, "delivered": 0, "dead": 0}
        cloud.faults.token_valid = True
        wait_until(lambda: counts(store)["delivered"] == 40, timeout=30)
    assert cloud.count() == 40 and set(cloud.stored_keys().values()) == {1}
    assert {i.idempotency_key for i in items} == set(cloud.stored_keys())
    alerts = [r for r in caplog.records if "refuses the agent's token" in r.getMessage()]
    assert len(alerts) == 1


@pytest.mark.slow
def test_a_thousand_receipts_survive_errors_and_resets(cloud: CloudSimulator, store: Store):
    cloud.faults.update(error_rate=0.15, rate_limit=0.05, retry_after=None, reset_rate=0.1)
    items = [enqueue(store, f"r-chaos-{n}", now=0.0) for n in range(1000)]
    up = Uploader(store, cloud.url, TOKEN, base_delay=0.005, max_delay=0.05, workers=4)
    with running(up):
        wait_until(lambda: counts(store)["pending"] == 0, timeout=50)
    assert counts(store) == {"pending": 0, "delivered": 1000, "dead": 0}
    stored = cloud.stored_keys()
    assert set(stored) == {i.idempotency_key for i in items}
    assert set(stored.values()) == {1}
    assert sum(cloud.post_counts().values()) > 1100


def test_rows_enqueued_while_running_are_delivered(cloud: CloudSimulator, store: Store):
    up = Uploader(store, cloud.url, TOKEN)
    with running(up) as wake:
        for n in range(5):
            enqueue(store, f"r-wake-{n}", now=0.0)
            wake.set()
        wait_until(lambda: counts(store)["delivered"] == 5, timeout=5)
    assert cloud.count() == 5
