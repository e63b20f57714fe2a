"""A simulated shop day: who gets which receipt, counted per customer behaviour.

In process: the real matcher, poller and SQLite store, with a simulated clock and POS (no HTTP).
Four tills serve customers one after another; each customer rings up (15–60 s), pays (4–15 s,
the sale books when the payment completes) and leaves; the next steps up 2–10 s later. The POS
books in whole seconds on its own clock, answers a poll after its latency, and shows 2 % of
receipts 2–8 s late under the syncMarker they got at booking. The agent polls every second and
at once after every scan, as the daemon does.

Behaviours (share of customers):
  on time        shows the code when the cashier announces the total: from 3 s before the
                 payment starts to 1 s into it (45 %)
  no app         pays without BONIQ (25 %)
  double read    on time, and the phone is read again 0.5–3 s after the sale (6 %)
  late scan      shows the code 1–6 s after the sale booked (5 %)
  early scan     shows the code while the previous customer is still paying: the previous
                 customer scanned too ("behind app") or has no BONIQ ("behind no app") (2 %)
  walk-away      shows the code, then leaves without buying (the sale is voided) (2 %)
  return         returns an earlier purchase and shows the code; the original was theirs in 80 %
                 of cases, bought without BONIQ in 20 % (5 %)
  slow POS       on time, while the POS API answers in 0.4 s (one part of the day) (5 %)
  skewed clock   on time, while the POS clock is 5 s behind the till's (one part of the day) (5 %)

Outcome per customer with the app: delivered (their own receipt reached them), wrong (they got
someone else's receipt: what must never happen), lost (their own receipt did not reach them),
unsure (a claim of theirs closed unsure: support can assign it).

Webhook mode (`--mode webhook`, and the second table by default): the same day, but the code is
read by the till's own scanner inside the POS session, and the agent's real webhook receiver gets
signed `scanCode` and session events (in process, no HTTP). The till keeps one open session: a
customer's first article starts it, or a scan between customers does (the next customer's
articles then land in it). A walk-away's session is cancelled (the sale is voided). An early scan
is the cashier scanning the next customer's phone, held out early, into the current session.
Receipts carry their session's line ids.

    python bench/queue.py [--customers 10000] [--guard 10] [--ttl 30] [--early 2]
                          [--mode both|polling|webhook] [--sweep]   (this module: bench/shopday.py)
"""

from __future__ import annotations

import argparse
import base64
import heapq
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from agent import codes, logs
from agent import config as agent_config
from agent.config import MatchingSection
from agent.kassa import signature, webhooks
from agent.kassa.client import ReceiptBatch
from agent.kassa.poller import Poller
from agent.kassa.receipt import Line, Receipt
from agent.metrics import ScanOutcome
from agent.queue.claims import Close
from agent.queue.store import NewClaim, Store

TILLS = (1, 2, 3, 4)
MIX = (
    ("on time", 45),
    ("no app", 25),
    ("double read", 6),
    ("late scan", 5),
    ("early scan", 2),
    ("walk-away", 2),
    ("return", 5),
    ("slow POS", 5),
    ("skewed clock", 5),
)


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Pos:
    """A POS with its own clock and latency: books receipts, answers getReceipts."""

    clock: Clock
    rng: random.Random
    offset: float = 0.0
    latency: float = 0.005
    marker: int = 1000
    receipts: list[tuple[float, Receipt]] = field(default_factory=list)  # (visible at, receipt)
    by_id: dict[str, Receipt] = field(default_factory=dict)

    def book(
        self, till: int, *, credit_of: str | None = None, line_ids: tuple[str, ...] = ()
    ) -> str:
        self.marker += 1
        rid = f"r{self.marker}"
        booked = datetime.fromtimestamp(int(self.clock.now + self.offset), tz=UTC)
        kind = "RECEIPT-TYPE-CREDIT-RECEIPT" if credit_of else "RECEIPT-TYPE-RECEIPT"
        lines = tuple(
            Line(
                None,
                "1001",
                None,
                "Cappuccino",
                1,
                0,
                350,
                None,
                None,
                0,
                350,
                321,
                2,
                9,
                webhook_line_id=line,
            )
            for line in line_ids
        )
        receipt = Receipt(
            rid,
            self.marker,
            kind,
            "RECEIPT-STATE-PAID",
            1,
            till,
            2027,
            self.marker,
            f"1.{till}.{self.marker}",
            None,
            credit_of,
            None,
            booked,
            date(2027, 1, 1),
            1000,
            826,
            1000,
            None,
            1,
            lines,
            (),
            (),
        )
        late = self.rng.uniform(2, 8) if self.rng.random() < 0.02 else 0.0
        self.receipts.append((self.clock.now + late, receipt))
        self.by_id[rid] = receipt
        return rid

    # -- the client's calls the poller makes --------------------------------------------------

    def fetch_receipts(self, branch: int, since: int, limit: int) -> ReceiptBatch:
        self.clock.now += self.latency
        snapshot = self.clock.now - self.latency / 2
        found = sorted(
            (r for at, r in self.receipts if at <= snapshot and r.sync_marker >= since),
            key=lambda r: r.sync_marker,
        )
        self.receipts = [
            (at, r)
            for at, r in self.receipts
            if r.sync_marker >= self.marker - 500 or at > snapshot
        ]  # old ones no poll asks for again
        return ReceiptBatch(found[:limit], [])

    def get_current_sync_markers(self) -> dict[str, int]:
        return {"receipt": self.marker}

    def get_payment_methods(self) -> dict[str, str]:
        return {}

    def get_vat_groups(self) -> list:
        return []

    def get_server_time(self) -> datetime:
        return datetime.fromtimestamp(int(self.clock.now + self.offset), tz=UTC)

    def get_receipt(self, receipt_id: str) -> Receipt | None:
        return self.by_id.get(receipt_id)


@dataclass
class Customer:
    n: int
    behaviour: str
    code: str | None
    owns: str | None = None  # the receipt that is theirs (their sale, or their return's credit)
    detail: str = ""
    original: str | None = None  # a return: the sale it credits


class Day:
    def __init__(self, customers: int, rules: MatchingSection, seed: int, folder: Path) -> None:
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.pos = Pos(self.clock, self.rng)
        self.store = Store.open(folder)
        self.rules = rules
        self.poller = Poller(
            self.pos, self.store, merchant_id="bench", branch=1, matching=rules, clock=self.clock
        )
        self.total = customers
        self.mix = MIX
        self.customers: list[Customer] = []
        self.events: list[tuple[float, int, str, tuple]] = []
        self.seq = 0
        self.history: list[tuple[str, str]] = []  # (code, receipt) of app customers' sales
        self.earlier = [self.pos.book(9) for _ in range(customers // 10)]  # bought another day
        self.paying: dict[int, Customer] = {}  # till → the customer now paying

    def at(self, when: float, what: str, *args: object) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, what, args))

    def run(self) -> list[Customer]:
        self.poller.poll_once()
        for till in TILLS:
            self.at(self.clock.now + self.rng.uniform(0, 20), "arrive", till, self._customer())
        next_poll = self.clock.now + 1.0
        while self.events:
            when = self.events[0][0]
            if next_poll <= when:
                self.clock.now = max(self.clock.now, next_poll)
                self.poller.poll_once()
                next_poll = self.clock.now + 1.0
                continue
            _, _, what, args = heapq.heappop(self.events)
            self.clock.now = max(self.clock.now, when)
            getattr(self, "_" + what)(*args)
        for _ in range(200):  # let everything settle
            self.clock.now += 1.0
            self.poller.poll_once()
        return self.customers

    # -- the shop ---------------------------------------------------------------------------------

    def _customer(self) -> Customer | None:
        if len(self.customers) >= self.total:
            return None
        behaviour = self.rng.choices([b for b, _ in self.mix], [w for _, w in self.mix])[0]
        code = (
            None
            if behaviour == "no app"
            else codes.make_code("".join(self.rng.choice(codes.ALPHABET) for _ in range(16)))
        )
        customer = Customer(len(self.customers), behaviour, code)
        if behaviour == "return":
            if self.history and self.rng.random() < 0.8:
                customer.detail = "own sale"
                customer.code, customer.original = self.rng.choice(self.history)
            else:
                customer.detail = "sale without BONIQ"
        self.customers.append(customer)
        return customer

    def _condition(self, n: int) -> None:
        """Parts of the day with a slow POS or a POS clock 5 s behind (measured at refresh)."""
        part = n * 20 // max(self.total, 1)
        self.pos.latency = 0.4 if part in (5, 6, 13) else 0.005
        offset = -5.0 if part in (9, 10, 17) else 0.0
        if offset != self.pos.offset:
            self.pos.offset = offset
            self.poller.reference._measured_at = None  # the next poll measures it

    def _arrive(self, till: int, customer: Customer | None) -> None:
        if customer is not None:
            self._condition(customer.n)
            pay_at = self.clock.now + self.rng.uniform(15, 60)
            if customer.behaviour in SCAN_WHILE_PAYING:
                self.at(pay_at + self.rng.uniform(-3, 1), "scan", till, customer)
            self.at(pay_at, "pay", till, customer)

    def _pay(self, till: int, customer: Customer) -> None:
        duration = self.rng.uniform(4, 15)
        booked_at = self.clock.now + duration
        b = customer.behaviour
        if b == "double read":
            self.at(booked_at + self.rng.uniform(0.5, 3), "scan", till, customer)
        if b == "late scan":
            self.at(booked_at + self.rng.uniform(1, 6), "scan", till, customer)
        nxt = self._customer()
        if nxt is not None and nxt.behaviour == "early scan":
            nxt.detail = "behind app" if b in SCAN_WHILE_PAYING else "behind no app"
            self.at(self.clock.now + self.rng.uniform(0, duration), "scan", till, nxt)
        if b == "walk-away":
            self.at(self.clock.now + self.rng.uniform(5, 20), "arrive", till, nxt)
            return
        self.at(booked_at, "book", till, customer)
        self.at(booked_at + self.rng.uniform(2, 10), "arrive", till, nxt)

    def _book(self, till: int, customer: Customer) -> None:
        original = customer.original
        if customer.behaviour == "return" and original is None:
            original = self.earlier.pop()  # bought earlier without BONIQ
        customer.owns = self.pos.book(till, credit_of=original)
        if customer.code and customer.behaviour != "return":
            self.history.append((customer.code, customer.owns))

    def _scan(self, till: int, customer: Customer) -> None:
        if customer.code is None:
            return
        self.store.add_claim(
            NewClaim(
                f"c-{customer.n}",
                "boniq_code",
                customer.code,
                till,
                "bench",
                self.clock.now,
                self.store.get_cursor(),
            ),
            dedupe_window=self.rules.dedupe_window,
            rescan_guard=self.rules.recent_sale_guard,
        )
        self.clock.now += 0.002
        self.poller.poll_once()  # the daemon wakes the poller on every scan


WEBHOOK_KEY = base64.b64encode(b"bench-key-" * 3).decode()


class _Quiet:
    """The receiver's reports: the bench counts outcomes from the store instead."""

    def webhook_scan(self, workplace: int, outcome: ScanOutcome) -> None:
        pass

    def closed(self, closes: list[Close]) -> None:
        pass

    def session_done(self) -> None:
        pass


class WebhookDay(Day):
    """The same shop day with the till's own scanner: signed webhooks to the real receiver."""

    def __init__(self, customers: int, rules: MatchingSection, seed: int, folder: Path) -> None:
        super().__init__(customers, rules, seed, folder)
        config = agent_config.parse(
            "store: {merchant_id: bench, branch: 1, workplace: 1}\n"
            "kassa: {url: 'http://127.0.0.1:1/', ident: i, secret: s,"
            f" webhooks: {{subscription_id: bench, key: '{WEBHOOK_KEY}'}}}}\n"
            "cloud: {url: 'http://127.0.0.1:2/', token: t}\n"
            f"matching: {json.dumps(rules.model_dump())}\n"
        )
        self.receiver = webhooks.Receiver(
            config, self.store, lambda: WEBHOOK_KEY, _Quiet(), clock=self.clock
        )
        self.key = signature.keys(WEBHOOK_KEY)[0]
        self.open: dict[int, str] = {}  # till → its open session
        self.lines: dict[str, tuple[str, ...]] = {}
        self.counter = 0

    def _send(self, event: str, till: int, session: str, **details: object) -> dict:
        self.counter += 1
        lines = [
            {
                "lineId": line,
                "articleNumber": 1001,
                "priceIncl": 3.5,
                "quantity": 1,
                "text": "Cappuccino",
            }
            for line in self.lines.get(session, ())
        ]
        body = json.dumps(
            {
                "event": {
                    "eventBlocking": event == "scanCode",
                    "eventCounter": self.counter,
                    "eventTimestamp": datetime.fromtimestamp(self.clock.now, UTC).isoformat(),
                },
                "sender": {"branchNumber": 1, "workplaceNumber": till, "instanceId": "bench"},
                "session": {"sessionId": session, "lines": lines},
                **details,
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Mplus-Subscription-Id": "bench",
            signature.HEADER: signature.sign(self.key, body),
        }
        reply, _ = self.receiver.handle(f"/mplus/{event}", headers, body)
        return reply.body

    def _session(self, till: int) -> str:
        """The till's open session, or a new one (a scan between customers starts one)."""
        if till not in self.open:
            self.open[till] = str(uuid.UUID(int=self.rng.getrandbits(128)))
            self._send("startSession", till, self.open[till])
        return self.open[till]

    def _arrive(self, till: int, customer: Customer | None) -> None:
        if customer is not None:
            session = self._session(till)
            self.lines[session] = self.lines.get(session, ()) + tuple(
                str(uuid.UUID(int=self.rng.getrandbits(128))) for _ in range(2)
            )
            self._send("addSessionLine", till, session)
        super()._arrive(till, customer)

    def _pay(self, till: int, customer: Customer) -> None:
        self._send("startPayment", till, self._session(till))
        super()._pay(till, customer)
        if customer.behaviour == "walk-away":  # voided once they are gone, after their scan
            self.at(self.clock.now + 1.5, "cancel", till)

    def _cancel(self, till: int) -> None:
        self._send("cancelSession", till, self.open.pop(till))

    def _book(self, till: int, customer: Customer) -> None:
        session = self.open.pop(till)
        original = customer.original
        if customer.behaviour == "return" and original is None:
            original = self.earlier.pop()
        customer.owns = self.pos.book(
            till, credit_of=original, line_ids=self.lines.pop(session, ())
        )
        if customer.code and customer.behaviour != "return":
            self.history.append((customer.code, customer.owns))
        self._send("completeSession", till, session, completeSession={})
        self.poller.poll_once()  # completeSession wakes the poller

    def _scan(self, till: int, customer: Customer) -> None:
        if customer.code is None:
            return
        webhooks.new_correlation_id = lambda prefix="c": f"c-{customer.n}"
        self._send(
            "scanCode",
            till,
            self._session(till),
            scanCode={"scannedCode": customer.code, "codeType": "qrcode"},
        )


SCAN_WHILE_PAYING = frozenset(
    {"on time", "double read", "slow POS", "skewed clock", "walk-away", "return"}
)


def outcomes(customers: list[Customer], store: Store) -> dict[str, Counter]:
    """Per behaviour. A receipt that went to the wrong person counts against the customer whose
    claim took it (a credit that followed it: against the same customer)."""
    owner = {c.owns: c.code for c in customers if c.owns}
    items = store.outbox(limit=10**7)
    claims = {c.id: c for c in store.claims(limit=10**7)}
    taker: dict[str, int] = {}  # receipt → the customer (n) whose claim took it
    for item in sorted(items, key=lambda i: i.id):
        if item.claim_id is not None:
            taker[item.receipt_id] = int(claims[item.claim_id].correlation_id[2:])
    received: dict[str, set[str]] = defaultdict(set)  # code → receipts delivered to it
    wrong_by: Counter = Counter()
    for item in items:
        received[item.customer or ""].add(item.receipt_id)
        credited = store_credited(item)
        n = taker.get(item.receipt_id, taker.get(credited or "", -1))
        if owner.get(item.receipt_id) != item.customer:
            wrong_by[n] += 1
    reasons: dict[int, Counter] = defaultdict(Counter)  # customer → why their claims closed unsure
    for c in store.claims("unsure", limit=10**7):
        reasons[int(c.correlation_id[2:])][c.reason] += 1
    table: dict[str, Counter] = defaultdict(Counter)
    for c in customers:
        if c.code is None:
            continue
        row = table[f"{c.behaviour} ({c.detail})" if c.detail else c.behaviour]
        row["customers"] += 1
        row["wrong"] += wrong_by.get(c.n, 0) > 0
        if c.owns:
            mine = c.owns in received.get(c.code, set())
            row["delivered"] += mine
            row["lost"] += not mine
        row["unsure"] += c.n in reasons
        for reason in reasons.get(c.n, {}):
            row["why " + reason] += 1
    return table


def store_credited(item: object) -> str | None:
    """The receipt a credit in the outbox credits (from its payload)."""
    import json

    body = json.loads(item.body)
    return body.get("credits_receipt_id")


def run_day(
    customers: int, rules: MatchingSection, seed: int, early: float = 2.0, mode: str = "polling"
) -> tuple[dict[str, Counter], float]:
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").exists() else None) as d:
        day = (WebhookDay if mode == "webhook" else Day)(customers, rules, seed, Path(d))
        day.mix = tuple((b, early if b == "early scan" else w) for b, w in MIX)
        started = time.perf_counter()
        result = day.run()
        table = outcomes(result, day.store)
        day.store.close()
        return table, time.perf_counter() - started


def print_table(table: dict[str, Counter], title: str) -> None:
    print(f"\n{title}")
    print(
        f"{'behaviour':<30} {'customers':>9} {'delivered':>9} {'wrong':>6} {'lost':>6} "
        f"{'unsure':>6}"
    )
    total: Counter = Counter()
    for name in sorted(table):
        row = table[name]
        total.update(row)
        why = ", ".join(f"{k[4:]} {v}" for k, v in sorted(row.items()) if k.startswith("why "))
        print(
            f"{name:<30} {row['customers']:>9} {row['delivered']:>9} {row['wrong']:>6} "
            f"{row['lost']:>6} {row['unsure']:>6}  {why}"
        )
    n = max(total["customers"], 1)
    print(
        f"{'whole day':<30} {total['customers']:>9} {total['delivered']:>9} {total['wrong']:>6}"
        f" {total['lost']:>6} {total['unsure']:>6}   wrong {total['wrong'] / n:.2%},"
        f" lost {total['lost'] / n:.2%}"
    )


def main() -> int:
    logs.setup("error")  # the agent's own lines (claims closed unsure, …) are not the report
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--guard", type=float, default=MatchingSection().recent_sale_guard)
    parser.add_argument("--ttl", type=float, default=MatchingSection().claim_ttl)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--early", type=float, default=2.0, help="share of early scans, in percent (default 2)"
    )
    parser.add_argument("--mode", choices=("both", "polling", "webhook"), default="both")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="several recent_sale_guard and claim_ttl values (fewer customers)",
    )
    args = parser.parse_args()
    if args.sweep:
        print("recent_sale_guard claim_ttl  wrong  lost  (on time: lost)  walk-away wrong")
        for guard in (5, 10, 20):
            for ttl in (30, 45, 60, 90, 120):
                table, _ = run_day(
                    args.customers,
                    MatchingSection(recent_sale_guard=guard, claim_ttl=ttl),
                    args.seed,
                )
                total = sum(table.values(), Counter())
                on_time = table.get("on time", Counter())
                walk = table.get("walk-away", Counter())
                print(
                    f"{guard:>17} {ttl:>9} {total['wrong']:>6} {total['lost']:>5}"
                    f"  ({on_time['lost']}/{on_time['customers']})"
                    f"  {walk['wrong']}/{walk['customers']}"
                )
        return 0
    rules = MatchingSection(recent_sale_guard=args.guard, claim_ttl=args.ttl)
    modes = ("polling", "webhook") if args.mode == "both" else (args.mode,)
    for mode in modes:
        table, seconds = run_day(args.customers, rules, args.seed, args.early, mode)
        print_table(
            table,
            f"{mode} mode, {args.customers} customers on {len(TILLS)} tills, "
            f"recent_sale_guard {args.guard:g} s, claim_ttl {args.ttl:g} s "
            f"({seconds:.1f} s to simulate)",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
