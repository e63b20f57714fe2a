"""A running MplusKASSA simulator on 127.0.0.1 and a client with short timeouts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.kassa.client import KassaClient
from agent.sim.kassa import KassaSimulator

IDENT = "ident-7Qx41"
SECRET = "s3cret-Zp9w-K2"
@pytest.fixture(scope="module")
def sim() -> Iterator[KassaSimulator]:
    with KassaSimulator(
        ident=IDENT, secret=SECRET, workplaces=(1, 2, 3, 4), seed=4711
    ) as running:
        yield running


@pytest.fixture()
def clean_sim(sim: KassaSimulator) -> Iterator[KassaSimulator]:
    sim.faults.reset()
    yield sim
    sim.faults.reset()


@pytest.fixture()
def client(clean_sim: KassaSimulator) -> Iterator[KassaClient]:
    kassa = KassaClient(
        clean_sim.url, IDENT, SECRET, timeout=(0.5, 0.5), max_response_bytes=1_000_000
    )
    yield kassa
    kassa.close()
