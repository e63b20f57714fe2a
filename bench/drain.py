"""Backlog drain: N pending outbox rows uploaded to the cloud simulator on loopback.

Prints the uploader's receipts/s, the raw `requests` POST rate (one Session, a plain loop, no
store) against a fresh simulator in the same run as the baseline, and their ratio.
Target: ≥ 200 receipts/s. `--latency` adds a simulated WAN round trip to both runs, which is where
the uploader's worker threads pay off.

    python bench/drain.py [--count 10000] [--workers 4] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import requests

from agent.http import CONNECT_TIMEOUT
from agent.queue.store import Store
from agent.queue.uploader import Uploader
from agent.sim.cloud import CloudSimulator, canonical, example_receipt

TOKEN = "bench-token"
TARGET = 200.0


def baseline_rate(count: int, latency: float) -> float:
    receipts = [example_receipt(str(uuid.uuid4())) for _ in range(count)]
    requests_ = [(r["idempotency_key"], canonical(r)) for r in receipts]
    with CloudSimulator(TOKEN) as sim, requests.Session() as session:
        sim.faults.latency = latency
        url = sim.url + "v1/receipts"
        started = time.perf_counter()
        for key, body in requests_:
            headers = {
                "Authorization": f"Bearer {TOKEN}",
                "Idempotency-Key": key,
                "Content-Type": "application/json",
            }
            session.post(
                url, data=body, headers=headers, timeout=(CONNECT_TIMEOUT, 10)
            ).raise_for_status()
        return count / (time.perf_counter() - started)


def fill(store: Store, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        receipt = example_receipt(str(uuid.uuid4()))
        store.enqueue(
            receipt["pos"]["receipt_id"],
            receipt["idempotency_key"],
            canonical(receipt),
            f"c-{receipt['pos']['receipt_id'][:8]}",
            now=0.0,
        )
    return count / (time.perf_counter() - started)


def drain_rate(count: int, workers: int, latency: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp, CloudSimulator(TOKEN) as sim:
        store = Store.open(Path(tmp))
        enqueue_rate = fill(store, count)
        sim.faults.latency = latency
        with Uploader(store, sim.url, TOKEN, workers=workers) as uploader:
            started = time.perf_counter()
            while uploader.run_once().attempted:
                pass
            elapsed = time.perf_counter() - started
        left = store.summary()["outbox_pending"]
        store.close()
        if left or sim.count() != count:
            raise SystemExit(f"drain incomplete: {left} pending, cloud holds {sim.count()}")
        return count / elapsed, enqueue_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds the simulator waits per answer (a WAN round trip)",
    )
    args = parser.parse_args()
    base = baseline_rate(min(args.count, 3000), args.latency)
    drained, enqueued = drain_rate(args.count, args.workers, args.latency)
    print(f"enqueue (setup, WAL+FULL):    {enqueued:8.0f} rows/s")
    print(f"baseline raw requests loop:   {base:8.0f} POST/s")
    print(
        f"uploader drain ({args.workers} workers):   {drained:8.0f} receipts/s ({args.count} rows)"
    )
    print(f"ratio drain/baseline:         {drained / base:8.2f}")
    print(f"target ≥ {TARGET:.0f} receipts/s:        {'met' if drained >= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
