"""Exponential back-off with jitter, the one rule every retry loop of the agent uses.

`delay(base, failures, ceiling)` is `min(ceiling, base · 2^failures)` scaled by a random factor
in `[low, 1]`: `low=0` is full jitter (the uploader: many rows, spread them out), `low=0.5` keeps
at least half the wait (the POS poller: one caller, a floor avoids hammering a struggling API).
"""

from __future__ import annotations

import random

MAX_DOUBLINGS = 32  # 2^32 × any base is past every ceiling; keeps the power finite


def delay(base: float, failures: int, ceiling: float, *, low: float = 0.0) -> float:
    grown = min(ceiling, base * 2.0 ** min(max(failures, 0), MAX_DOUBLINGS))
    return grown * random.uniform(low, 1.0)
