"""Running a scanner source in a thread the way the daemon does, and waiting for what it emits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from agent.scanner.base import ScanEvent, Source

WAIT_SECONDS = 15.0


class Collector:
    def __init__(self) -> None:
        self._events: list[ScanEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: ScanEvent) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    @property
    def texts(self) -> list[str]:
        with self._cond:
            return [event.text for event in self._events]

    @property
    def events(self) -> list[ScanEvent]:
        with self._cond:
            return list(self._events)

    def wait_for(
        self, predicate: Callable[[list[str]], bool], timeout: float = WAIT_SECONDS
    ) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate([event.text for event in self._events]):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait_count(self, count: int, timeout: float = WAIT_SECONDS) -> bool:
        return self.wait_for(lambda texts: len(texts) >= count, timeout)


class Running:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.events = Collector()
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=source.run, args=(self.events, self.stop), daemon=True
        )

    def finish(self, timeout: float = 5.0) -> None:
        self.stop.set()
        self.thread.join(timeout)


@pytest.fixture
def run_source() -> Iterator[Callable[[Source], Running]]:
    started: list[Running] = []

    def start(source: Source) -> Running:
        running = Running(source)
        running.thread.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.finish()
        assert not running.thread.is_alive(), "a source did not return after stop was set"
