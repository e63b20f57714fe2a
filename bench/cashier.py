"""Cashier screen: how fast the page's two calls answer, and how soon it can show "delivered".

    python bench/cashier.py [--claims 5000] [--requests 300] [--sales 20] [--poll 1.0]

The daemon (agent.daemon.Daemon) runs in this process against both simulators (in-process,
127.0.0.1) with its cashier screen on a free loopback port; every figure goes over real HTTP.

1. GET /api/outcomes with --claims claims already in the store (half at this till): p50/p95 of a
   full answer (200) and of the answer the page gets most of the time (304, If-None-Match).
2. POST /api/claim with a fresh address each time: p50/p95 until "accepted" (durable claim).
3. Per sale: a claim through the page, the agent's poll after it, the sale booked at a random
   moment within one poll interval, then /api/outcomes every 10 ms until the newest entry is
   `delivered`: p50/p95/max. The page itself polls every 500 ms, which adds up to that much.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import logs
from agent.config import Config
from agent.daemon import Daemon
from agent.demo import CashierPage
from agent.queue.store import NewClaim
from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator

TILL = 2


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values) * 1000:.1f} ms, p95 {pct(values, 0.95) * 1000:.1f} ms,"
        f" max {max(values) * 1000:.1f} ms (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--claims", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--sales", type=int, default=20)
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args()
    logs.setup("error")
    with (
        tempfile.TemporaryDirectory() as tmp,
        KassaSimulator(seed=7) as kassa,
        CloudSimulator("t") as cloud,
    ):
        daemon = Daemon(
            Config.model_validate(
                {
                    "store": {"merchant_id": "m", "branch": kassa.branch, "workplace": TILL},
                    "kassa": {
                        "url": kassa.url,
                        "ident": kassa.ident,
                        "secret": kassa.secret,
                        "poll_interval": args.poll,
                    },
                    "cloud": {"url": cloud.url, "token": "t"},
                    "data_dir": tmp,
                    "metrics": {"listen": ""},
                    "cashier": {"listen": "127.0.0.1:0"},
                    "matching": {
                        "claim_ttl": 3600,
                        "recent_sale_guard": 0,
                    },  # customers back to back
                }
            ),
            sources=[],
        )
        old = time.time() - 7200
        for n in range(args.claims):  # history: closed long ago, half of it at another till
            daemon.store.add_claim(
                NewClaim(
                    f"c-{n}", "email", f"old{n}@example.nl", TILL + n % 2, "serial", old + n, None
                ),
                dedupe_window=5.0,
            )
        daemon.store.expire_claims(
            scanned_before=time.time(), reserved_before=time.time(), now=time.time()
        )
        daemon.start()
        try:
            page = CashierPage(f"http://127.0.0.1:{daemon.cashier_server.port}/")
            url = f"{page.url}api/outcomes"
            full, cached = [], []
            etag = page.http.get(url, timeout=5).headers["ETag"]
            for _ in range(args.requests):
                t = time.perf_counter()
                page.http.get(url, timeout=5)
                full.append(time.perf_counter() - t)
                t = time.perf_counter()
                page.http.get(url, headers={"If-None-Match": etag}, timeout=5)
                cached.append(time.perf_counter() - t)
            print(
                f"GET /api/outcomes 200 with {args.claims} claims stored: {ms(full)}"
                f"; slowest was request #{full.index(max(full))}"
            )
            print(f"GET /api/outcomes 304: {ms(cached)}")

            accepted = []
            for n in range(args.requests):
                t = time.perf_counter()
                answer = page.claim(f"bench{n}@example.nl")
                accepted.append(time.perf_counter() - t)
                assert answer["outcome"] == "accepted", answer
            print(f"POST /api/claim until accepted: {ms(accepted)}")
            daemon.store.expire_claims(
                scanned_before=time.time() + 1, reserved_before=time.time() + 1, now=time.time()
            )

            shown = []
            for n in range(args.sales):
                address = f"sale{n}@example.nl"
                page.claim(address)
                while any(
                    c.customer == address and c.fence_marker is None
                    for c in daemon.store.pending_claims()
                ):
                    time.sleep(0.01)
                time.sleep(random.uniform(0, args.poll))
                kassa.book_sale(TILL, after=4)
                t = time.perf_counter()
                while page.outcomes()[0]["outcome"] != "delivered":
                    time.sleep(0.01)
                shown.append(time.perf_counter() - t)
            print(f"sale booked → /api/outcomes says delivered (poll {args.poll} s): {ms(shown)}")
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
