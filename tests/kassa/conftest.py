"""A running MplusKASSA simulator on 127.0.0.1 and a client with short timeouts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from matching_support import MATCH_IDENT, MATCH_SECRET

from agent.kassa.client import KassaClient
from agent.sim.kassa import KassaSimulator

IDENT = "ident-7Qx41"
SECRET = "s3cret-Zp9w-K2"


@pytest.fixture(scope="module")
def sim() -> Iterator[KassaSimulator]:
    with KassaSimulator(ident=IDENT, secret=SECRET, workplaces=(1, 2, 3, 4), seed=4711) as running:
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


# -- matching: a fresh simulator per test, the real client, a real store, the real poller ---------


class Recorder:
    """The poller's events, kept for assertions."""

    def __init__(self) -> None:
        self.cycles: list[bool] = []
        self.closes: list = []
        self.offsets: list[float] = []

    def stored(self, items: list) -> None:
        pass

    def closed(self, closes: list) -> None:
        self.closes.extend(closes)

    def polled(self, ok: bool) -> None:
        self.cycles.append(ok)

    def clock_offset(self, seconds: float) -> None:
        self.offsets.append(seconds)


@pytest.fixture(name="kassa")
def kassa_fixture() -> Iterator[KassaSimulator]:
    with KassaSimulator(MATCH_IDENT, MATCH_SECRET, workplaces=(1, 2, 3), seed=99) as running:
        yield running


@pytest.fixture(name="pos_client")
def pos_client_fixture(kassa: KassaSimulator) -> Iterator[KassaClient]:
    c = KassaClient(kassa.url, MATCH_IDENT, MATCH_SECRET, timeout=(1.0, 2.0))
    yield c
    c.close()


@pytest.fixture(name="events")
def events_fixture() -> Recorder:
    return Recorder()


@pytest.fixture(name="make_poller")
def make_poller_fixture(pos_client, store, events):
    from agent.config import MatchingSection
    from agent.kassa.poller import Poller

    def make(client=None, **matching):
        matching.setdefault("claim_ttl", 120)  # the scans of these tests are minutes old
        return Poller(
            client or pos_client,
            store,
            merchant_id="shop-1",
            branch=1,
            matching=MatchingSection(**matching),
            interval=0.05,
            events=events,
        )

    return make


@pytest.fixture(name="poller")
def poller_fixture(make_poller):
    p = make_poller()
    p.poll_once()
    return p
