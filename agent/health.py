"""The running agent's live health, for `boniq-agent status` in another process.

The daemon rewrites `data_dir/health.json` (atomically, 0600) at start and every few seconds:
PID, version, start time, the POS poller's and the uploader's last success and error, whether
the cloud refuses the token, each scanner's state and the scans refused or failed since start.
`status` trusts it only while that PID runs and the file is fresh; otherwise the agent is "not
running". The store's counters come from the database itself, as before.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

HEALTH_NAME = "health.json"
STALE_AFTER = 60.0  # seconds without a rewrite: the agent is hung or gone
PENDING_ALERT = 900.0  # seconds: an older pending receipt needs attention (status --pending-age)


def write(data_dir: Path, snapshot: dict[str, Any]) -> None:
    path = data_dir / HEALTH_NAME
    temporary = path.with_name(f".{HEALTH_NAME}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(snapshot, out, sort_keys=True)
    os.replace(temporary, path)


def read(data_dir: Path, now: float | None = None) -> dict[str, Any] | None:
    """The live snapshot, or None when no agent runs on this data_dir (or it stopped writing)."""
    now = time.time() if now is None else now
    try:
        snapshot = json.loads((data_dir / HEALTH_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(snapshot, dict) or not _alive(snapshot.get("pid")):
        return None
    if now - float(snapshot.get("updated_at") or 0) > STALE_AFTER:
        return None
    return snapshot


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # runs as another user (boniq) than this status command
    return True


def attention(
    summary: dict[str, Any],
    live: dict[str, Any] | None,
    *,
    pending_age: float = PENDING_ALERT,
    now: float | None = None,
) -> list[str]:
    """What a person should look at; empty when the till is healthy."""
    now = time.time() if now is None else now
    reasons = []
    if live is None:
        reasons.append("the agent is not running")
    if summary.get("outbox_dead"):
        reasons.append(
            f"{summary['outbox_dead']} dead-lettered receipt(s): `boniq-agent outbox list --state dead`"
        )
    if summary.get("claims_unsure"):
        reasons.append(f"{summary['claims_unsure']} claim(s) closed unsure")
    oldest = summary.get("oldest_pending_at")
    if oldest and now - oldest > pending_age:
        reasons.append(
            f"a receipt has waited {now - oldest:.0f} s for upload (over {pending_age:.0f} s)"
        )
    if live is not None:
        if live["pos"].get("last_error"):
            reasons.append(f"POS failing: {live['pos']['last_error']}")
        if live["cloud"].get("auth_failing"):
            reasons.append("the cloud refuses the store token")
        elif live["cloud"].get("last_error"):
            reasons.append(f"cloud failing: {live['cloud']['last_error']}")
        for scanner in live.get("scanners", []):
            if scanner.get("connected") is False:
                reasons.append(f"scanner {scanner['name']} is not connected")
    return reasons
