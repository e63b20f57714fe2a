"""The uploader tests' fixtures: a real cloud simulator taking `UPLOAD_TOKEN`, a real Store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import UPLOAD_TOKEN

from agent.queue.store import Store
from agent.sim.cloud import CloudSimulator


@pytest.fixture
def cloud() -> Iterator[CloudSimulator]:
    with CloudSimulator(UPLOAD_TOKEN) as sim:
        yield sim


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "data") as s:
        yield s
