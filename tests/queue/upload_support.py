"""Shared by the uploader tests: a real cloud simulator, a real Store in tmp_path, row builders."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.queue.store import OutboxItem, Store
from agent.sim.cloud import CloudSimulator, canonical, example_receipt

TOKEN = "tok-Upl0ad-9f3k"


@pytest.fixture(name="cloud")
def cloud_fixture() -> Iterator[CloudSimulator]:
    with CloudSimulator(TOKEN) as sim:
        yield sim


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "data") as s:
        yield s


def enqueue(
    store: Store, receipt_id: str, *, payload: dict[str, Any] | None = None,
    body: bytes | None = None, key: str | None = None, now: float = 1000.0,
) -> OutboxItem:
    payload = payload or example_receipt(receipt_id)
    return store.enqueue(receipt_id, key or payload["idempotency_key"],
                         body if body is not None else canonical(payload), f"c-{receipt_id}",
                         now=now)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
