"""POS reference data the receipts need: payment method names, the VAT scale, the clock offset.

Refreshed every `REFRESH` seconds; a failed refresh keeps the last values rather than stop the
receipts, and is tried again at the next poll. The clock offset is the POS's `serverDateTime`
minus this till's clock at the middle of the call: booking times are corrected by it before any
rule compares them with a scan, which also absorbs a `timezone` field that is 0 or of the other
sign (docs/mpluskassa.md). Until it has been measured once, booking times prove nothing
(`clock_known` is False); a POS that sends no `serverDateTime` is taken at its word, with only
`matching.clock_skew` of margin.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.errors import KassaError
from agent.kassa import mapping
from agent.logs import Problem, fields, get_logger

log = get_logger(__name__)

REFRESH = 600.0
SERVER_TIME_RESOLUTION = 1.0  # serverDateTime has whole seconds, truncated


@dataclass
class Reference:
    payment_methods: dict[str, str] = field(default_factory=dict)
    vat_scale: int | None = None
    clock_offset: float = 0.0  # POS clock minus this till's clock, seconds
    clock_known: bool = False


class ReferenceData:
    def __init__(
        self,
        client: Any,
        *,
        clock_skew: float,
        on_offset: Callable[[float], None] = lambda seconds: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.clock_skew = clock_skew
        self.on_offset = on_offset
        self.clock = clock
        self.current = Reference()
        self._refreshed_at: float | None = None
        self._measured_at: float | None = None
        self.problem = Problem(
            "POS reference data not refreshed; keeping the last",
            "POS reference data refreshed again",
        )

    def refresh(self, now: float) -> Reference:
        """The reference data, refreshed when due; raises only while none was ever read or the
        POS clock was never measured: a poll judged without the clock offset would close
        claims unsure that a moment later it could match (a fault just after a start)."""
        try:
            if self._due(self._refreshed_at, now):
                self.current.payment_methods = self.client.get_payment_methods()
                self.current.vat_scale = mapping.detect_vat_scale(self.client.get_vat_groups())
                self._refreshed_at = now
            if self._due(self._measured_at, now):
                self._measure_offset()
                self._measured_at = now
            self.problem.recovered(log)
        except KassaError as exc:
            if self.current.vat_scale is None or not self.current.clock_known:
                raise
            self.problem.failed(log, exc)
        return self.current

    @staticmethod
    def _due(last: float | None, now: float) -> bool:
        return last is None or now - last >= REFRESH

    def _measure_offset(self) -> None:
        before = self.clock()
        server = self.client.get_server_time()
        after = self.clock()
        if server is None:
            if not self.current.clock_known:
                log.warning(
                    "the POS sends no serverDateTime: booking times are taken as they"
                    " come, with only matching.clock_skew of margin"
                )
            self.current.clock_known = True
            return
        offset = server.timestamp() + SERVER_TIME_RESOLUTION / 2 - (before + after) / 2
        self._report(offset)
        self.current.clock_offset = offset
        self.current.clock_known = True
        self.on_offset(offset)

    def _report(self, offset: float) -> None:
        previous, known = self.current.clock_offset, self.current.clock_known
        if known and abs(offset - previous) > self.clock_skew:
            log.warning(
                "the POS clock jumped against this till's clock",
                extra=fields(offset=f"{offset:+.1f}s", before=f"{previous:+.1f}s"),
            )
        elif abs(offset) > self.clock_skew and not (known and abs(previous) > self.clock_skew):
            log.warning(
                "the POS clock differs from this till's by more than"
                " matching.clock_skew; booking times are corrected by the difference",
                extra=fields(offset=f"{offset:+.1f}s", clock_skew=self.clock_skew),
            )
