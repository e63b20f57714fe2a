"""The uploader tests' cloud: a real simulator taking `UPLOAD_TOKEN` (the store: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agent_harness import UPLOAD_TOKEN

from agent.sim.cloud import CloudSimulator


@pytest.fixture
def cloud() -> Iterator[CloudSimulator]:
    with CloudSimulator(UPLOAD_TOKEN) as sim:
        yield sim
