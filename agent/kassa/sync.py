"""Reading receipts from the POS by syncMarker, with an overlap for receipts that arrive late.

A receipt can become visible in the API after receipts with higher syncMarkers (a till that
replicates late). Each poll therefore reads again from the cursor as it was `LATE_WINDOW`
seconds ago (at most `OVERLAP` markers back); the store's record of receipts seen keeps a receipt
from being judged twice. When nothing changed in that window the overlap is empty, so an idle
till costs one small call a poll.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.logs import fields, get_logger
from agent.queue.store import PollCommit, Store

log = get_logger(__name__)

LATE_WINDOW = 120.0
OVERLAP = 50


@dataclass(frozen=True)
class Fetched:
    receipts: list[Any]
    unreadable: list[Any]
    cursor: int  # before this poll
    marker: int  # the cursor after it
    started: float

    @property
    def caught_up(self) -> bool:
        """The POS had nothing new (a complete view of everything up to `marker`)."""
        return self.marker == self.cursor


class ReceiptSync:
    def __init__(
        self,
        client: Any,
        store: Store,
        *,
        branch: int,
        batch: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.store = store
        self.branch = branch
        self.batch = batch
        self.clock = clock
        self._history: deque[tuple[float, int]] = deque()

    def fetch(self) -> Fetched:
        cursor = self._cursor()
        started = self.clock()
        start = self._overlap_start(cursor)
        batch = self.client.fetch_receipts(self.branch, start + 1, self.batch + cursor - start)
        return Fetched(
            batch.receipts, batch.unreadable, cursor, max([cursor, *batch.markers]), started
        )

    def committed(self, fetched: Fetched) -> None:
        """Remember the cursor a committed poll reached, for the overlap of later polls."""
        self._history.append((fetched.started, fetched.marker))
        cutoff = fetched.started - LATE_WINDOW
        while len(self._history) > 1 and self._history[1][0] <= cutoff:
            self._history.popleft()

    def _overlap_start(self, cursor: int) -> int:
        floor = max(0, cursor - OVERLAP)
        if not self._history:
            return floor  # just started: read the last markers once more
        return max(floor, min(cursor, self._history[0][1]))

    def _cursor(self) -> int:
        cursor = self.store.get_cursor()
        if cursor is None:
            cursor = int(self.client.get_current_sync_markers().get("receipt", 0))
            if self.store.pending_claims():  # scans came before the cursor existed: look
                cursor = max(0, cursor - self.batch)  # back and let booking times judge
            self.store.commit_poll(PollCommit(marker=cursor, now=self.clock()))
            log.info(
                "POS cursor initialised from getCurrentSyncMarkersV2",
                extra=fields(sync_marker=cursor),
            )
        return cursor
