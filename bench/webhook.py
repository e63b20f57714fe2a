"""Webhook mode latency: scanCode reply, and completeSession → receipt delivered.

    python bench/webhook.py [--scans 1000] [--sessions 40] [--poll 1.0]
                            [--skip-scans | --skip-delivery]

Part 1, scanCode: the agent's webhook receiver (agent/kassa/webhooks.py) runs in this process on
127.0.0.1 with a real SQLite store in a temporary directory. Each request is a signed scanCode of
a new customer in a new session, so every reply waits for a committed claim; the figure is
request sent → signed reply received and verified. Baseline in the same run: a bare echo handler
on the same server stack (agent/listener.py, the same limits), which reads the body and sends it
back signed. Target (issue 15): scanCode p99 ≤ 50 ms.

Part 2, completeSession → delivered: `boniq-agent run` as a subprocess (the test harness's Agent)
with webhooks on and kassa.poll_interval = --poll, the MplusKASSA simulator's till-session player
posting signed events to it, and the cloud simulator. Per session: startSession, a line, the
customer's scanCode, startPayment, then a pause drawn from one poll interval (the till is not in
step with the poller), then completeSession, which books the receipt; the figure is
completeSession sent → the cloud simulator holds the receipt. Baseline: the poll interval; a
completed session wakes the poller at once, so the figure should not depend on it.
Target (issue 15): completeSession → delivered p95 ≤ 0.5 s with a 1 s poll.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from agent_harness import Agent, customer_code, free_port, wait_until

from agent import config as agent_config
from agent import logs
from agent.kassa import signature, webhooks
from agent.listener import Handler, serve
from agent.metrics import ScanOutcome
from agent.queue.store import Store
from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator
from agent.sim.till import Till

DELIVERY_TARGET_S = 0.5

KEY = base64.b64encode(b"bench-webhook-key-32-bytes-long!").decode()
SIGNING = signature.keys(KEY)[0]


class _Events:
    def webhook_scan(self, workplace: int, outcome: ScanOutcome) -> None:
        pass

    def closed(self, closes: list) -> None:
        pass

    def session_done(self) -> None:
        pass


class _Echo(Handler):
    def do_POST(self) -> None:
        body = self.read_body()
        self.reply(200, body, "application/json", {signature.HEADER: signature.sign(SIGNING, body)})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def scan_body(n: int) -> bytes:
    return json.dumps(
        {
            "event": {
                "eventBlocking": True,
                "eventCounter": n,
                "eventTimestamp": "2026-12-01T10:15:02.481+01:00",
            },
            "sender": {"branchNumber": 1, "workplaceNumber": 2, "instanceId": "bench"},
            "session": {"sessionId": str(uuid.uuid4()), "lines": []},
            "scanCode": {"scannedCode": customer_code(n), "codeType": "qrcode"},
        }
    ).encode()


def round_trip(port: int, body: bytes) -> float:
    headers = {
        "Content-Type": "application/json",
        "X-Mplus-Subscription-Id": "bench",
        signature.HEADER: signature.sign(SIGNING, body),
    }
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("POST", "/mplus/scanCode", body, headers)
    response = connection.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - started
    connection.close()
    if (
        response.status != 200
        or signature.verify(response.getheader(signature.HEADER) or "", data, (SIGNING,)) is None
    ):
        raise SystemExit(f"bad reply: {response.status} {data[:200]!r}")
    return elapsed


def bench_scans(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder, Store.open(folder) as store:
        config = agent_config.parse(
            "store: {merchant_id: bench, branch: 1, workplace: 2}\n"
            "kassa: {url: 'http://127.0.0.1:1/', ident: i, secret: s,"
            f" webhooks: {{listen: '127.0.0.1:0', subscription_id: bench, key: '{KEY}'}}}}\n"
            "cloud: {url: 'http://127.0.0.1:2/', token: t}\n"
        )
        receiver = webhooks.Receiver(config, store, lambda: KEY, _Events())
        agent_server = webhooks.serve_receiver(receiver)
        echo_server = serve("127.0.0.1:0", _Echo, limits=webhooks.LIMITS, name="echo")
        assert agent_server is not None and echo_server is not None
        agent, echo = [], []
        for n in range(count):  # interleaved, so both see the same machine
            body = scan_body(n)
            echo.append(round_trip(echo_server.port, body))
            agent.append(round_trip(agent_server.port, body))
        claims = store.summary()["claims_pending"]
        agent_server.close()
        echo_server.close()
    ms = 1000.0
    print(f"scanCode, {count} requests (each a new claim; {claims} claims stored)")
    for name, values in (("agent receiver", agent), ("bare echo", echo)):
        print(
            f"  {name:<15} p50 {statistics.median(values) * ms:6.2f} ms   "
            f"p99 {percentile(values, 0.99) * ms:6.2f} ms"
        )
    print(
        f"  ratio agent/echo: p50 {statistics.median(agent) / statistics.median(echo):.1f}x, "
        f"p99 {percentile(agent, 0.99) / percentile(echo, 0.99):.1f}x; target p99 <= 50 ms: "
        f"{'met' if percentile(agent, 0.99) <= 0.05 else 'MISSED'}"
    )


def delivery_latencies(sessions: int, poll: float, seed: int) -> list[float]:
    import random

    rng = random.Random(seed)
    samples = []
    with (
        tempfile.TemporaryDirectory() as folder,
        KassaSimulator(seed=seed) as kassa,
        CloudSimulator("demo-token") as cloud,
    ):
        port = free_port()
        agent = Agent(
            Path(folder),
            kassa.url,
            cloud.url,
            poll_interval=poll,
            extra="matching: {recent_sale_guard: 0}\n",  # sessions back to back
            kassa_options=f"webhooks: {{listen: '127.0.0.1:{port}',"
            f" subscription_id: bench, key: '{KEY}'}}",
        )
        try:
            agent.start()
            agent.wait_ready()
            with Till(f"http://127.0.0.1:{port}/mplus", KEY, "bench", sim=kassa) as till:
                for n in range(sessions):
                    session = till.start_session(2)
                    session.add_line(1001)
                    if not session.scan(customer_code(70_000 + n)).recognized:
                        raise SystemExit(f"scan not recognized:\n{agent.log_text()[-3000:]}")
                    session.start_payment()
                    time.sleep(rng.uniform(0.0, poll))
                    started = time.perf_counter()
                    session.complete()
                    wait_until(
                        lambda k=n + 1: cloud.count() >= k, timeout=15, what="the receipt delivered"
                    )
                    samples.append(time.perf_counter() - started)
        finally:
            agent.close()
    return samples


def report_deliveries(samples: list[float], poll: float) -> None:
    p50, p95 = statistics.median(samples), percentile(samples, 0.95)
    print(
        f"completeSession → delivered ({len(samples)} sessions, daemon subprocess,"
        f" poll_interval {poll:g} s)"
    )
    print(f"  p50 {p50:.3f} s   p95 {p95:.3f} s   max {max(samples):.3f} s")
    print(
        f"  ratio p95 / poll interval {p95 / poll:.2f}; target p95 <= {DELIVERY_TARGET_S} s: "
        f"{'met' if p95 <= DELIVERY_TARGET_S else 'MISSED'}"
    )


def main() -> int:
    logs.setup("error")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--skip-scans", action="store_true")
    parser.add_argument("--skip-delivery", action="store_true")
    args = parser.parse_args()
    if not args.skip_scans:
        bench_scans(args.scans)
    if not args.skip_delivery:
        report_deliveries(delivery_latencies(args.sessions, args.poll, seed=1), args.poll)
    return 0


if __name__ == "__main__":
    sys.exit(main())
