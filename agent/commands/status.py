"""`boniq-agent status`: the store's figures and the live agent's health, for people or JSON."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from agent.commands import EXIT_ATTENTION, EXIT_NOT_RUNNING, EXIT_OK, iso, load_config
from agent.printable import printable


def cmd_status(args: argparse.Namespace) -> int:
    from agent import health
    from agent.queue.store import Store
    from agent.support import claim_row

    cfg = load_config(args)
    with Store.open(cfg.data_dir, readonly=True) as store:
        summary = store.summary()
        expired = store.claims("expired", limit=args.limit)
        unsure = store.claims("unsure", limit=args.limit)
    now = time.time()
    live = health.read(cfg.data_dir, now)
    summary["oldest_pending_age_s"] = (
        round(now - summary["oldest_pending_at"], 1) if summary["oldest_pending_at"] else None
    )
    summary["expired_claims"] = [claim_row(c) for c in expired]
    summary["unsure_claims"] = [claim_row(c) for c in unsure]
    summary["agent"] = live
    summary["attention"] = health.attention(summary, live, pending_age=args.pending_age, now=now)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_status(summary, now)
    if live is None:
        return EXIT_NOT_RUNNING
    return EXIT_ATTENTION if summary["attention"] else EXIT_OK


def _ago(ts: float | None, now: float) -> str:
    return f"{iso(ts)} ({now - ts:.0f} s ago)" if ts else "never"


def _live_rows(live: dict[str, Any] | None, now: float) -> list[tuple[str, object]]:
    if live is None:
        return [("agent", "NOT RUNNING (no live agent on this data_dir)")]
    pos, cloud = live["pos"], live["cloud"]
    rows: list[tuple[str, object]] = [
        (
            "agent",
            (
                f"running, PID {live['pid']}, version {live['version']}, "
                f"up {now - live['started_at']:.0f} s"
            ),
        ),
        ("POS", f"FAILING: {pos['last_error']}" if pos["last_error"] else "reachable"),
        ("POS last successful poll", _ago(pos["last_success"], now)),
        (
            "cloud",
            "TOKEN REFUSED"
            if cloud["auth_failing"]
            else f"FAILING: {cloud['last_error']}"
            if cloud["last_error"]
            else "ok",
        ),
        ("cloud last answer", _ago(cloud["last_success"], now)),
    ]
    for scanner in live["scanners"]:
        state = {True: "connected", False: "NOT CONNECTED", None: "unknown"}[scanner["connected"]]
        rows.append((f"scanner {scanner['name']}", state))
    rows.append(
        (
            "scans refused / failed",
            (f"{live['scans']['refused']} / {live['scans']['failed']} since start"),
        )
    )
    return rows


def _print_status(s: dict[str, Any], now: float) -> None:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["claims_unsure_reasons"].items()))
    rows = _live_rows(s["agent"], now) + [
        ("claims waiting for a sale", s["claims_pending"]),
        ("claims delivered", s["claims_delivered"]),
        ("claims expired (no sale)", s["claims_expired"]),
        ("claims closed unsure", f"{s['claims_unsure']}" + (f" ({reasons})" if reasons else "")),
        ("receipts pending upload", s["outbox_pending"]),
        ("receipts dead-lettered", s["outbox_dead"]),
        ("receipts delivered", s["outbox_delivered"]),
        (
            "oldest pending age",
            f"{s['oldest_pending_age_s']} s" if s["oldest_pending_age_s"] is not None else "-",
        ),
        ("last delivery", iso(s["last_delivery_at"]) or "-"),
        ("last error", printable(s["last_error"] or "-")),
        ("POS sync marker", s["cursor"] if s["cursor"] is not None else "-"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for state in ("expired", "unsure"):
        for claim in s[f"{state}_claims"]:
            print(
                f"  {state} claim #{claim['id']} workplace {claim['workplace']} at "
                f"{claim['scanned_at']} {claim['customer']} cid={claim['cid']}"
                + (f" reason={claim['reason']}" if claim["reason"] else "")
            )
    if s["claims_unsure"] or s["claims_expired"]:
        print(
            "  see `boniq-agent claims show ID`; `claims assign ID RECEIPT` once checked with"
            " the customer"
        )
    print("healthy" if not s["attention"] else "NEEDS ATTENTION:")
    for reason in s["attention"]:
        print(f"  - {reason}")
