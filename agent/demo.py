"""`boniq-agent demo`: the whole flow on one machine, no hardware, no network.

Both simulators run in-process on free loopback ports, the real daemon (store, poller, matcher,
uploader) runs against them in a temporary data directory, and scripted customers scan and pay at
till 2. What the cloud stored is printed at the end.
"""

from __future__ import annotations

import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import requests

from agent.config import Config
from agent.daemon import Daemon
from agent.errors import AgentError
from agent.queue.store import Claim
from agent.scanner.base import ScanEvent
from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator, SimLine, sale_total
from agent.sim.till import Till

TILL = 2
WAIT = 20.0
PAYMENT = 4.0  # seconds from the scan to the booked sale: the customer's PIN payment

ANNA = "BQ17K3M9QW4RT8ZP2C56"
BRAM = "bram.dekker@example.nl"
CHRIS = "https://app.boniq.nl/c/BQ1M9S346Q3D25VT4F56"
DANA = "BQ1PX4R7C2NJ8KW3T5H0"
WEBHOOK_KEY = "ZGVtby13ZWJob29rLWtleS1vZi10aGUtc2hvcC0zMmI="  # as the back office shows it
SUBSCRIPTION = "boniq-demo"

BASKET_ANNA = [
    SimLine(3001, "T-shirt zwart M", 1995, 21, plu="TS-M-BLK"),
    SimLine(1001, "Cappuccino", 350, 9, quantity=2),
    SimLine(4001, "Postzegels 10 stuks", 1010, 0),
]
BASKET_BRAM = [
    SimLine(2210, "Jong belegen kaas", 1290, 9, quantity=530, decimal_places=3),
    SimLine(2101, "Volkorenbrood heel", 289, 9, discount_pct=25),
]
BASKET_DANA = [SimLine(2300, "Verse jus d'orange 1 L", 349, 9), SimLine(3410, "Paraplu", 1499, 21)]
BASKET_CHRIS = [
    SimLine(3300, "Rioja Crianza 75 cl", 899, 21, quantity=2),
    SimLine(3120, "AA-batterijen 4 stuks", 599, 21),
]


def _config(kassa: KassaSimulator, cloud: CloudSimulator, data_dir: Path) -> Config:
    return Config.model_validate(
        {
            "store": {
                "merchant_id": "demo-merchant",
                "branch": kassa.branch,
                "workplace": TILL,
                "name": "Demo Winkel Utrecht",
            },
            "kassa": {
                "url": kassa.url,
                "ident": kassa.ident,
                "secret": kassa.secret,
                "poll_interval": 0.25,
                # webhook mode beside the scanners: the till's own scanner (customer 6)
                "webhooks": {
                    "listen": "127.0.0.1:0",
                    "subscription_id": SUBSCRIPTION,
                    "key": WEBHOOK_KEY,
                },
            },
            "cloud": {"url": cloud.url, "token": cloud.token},
            "data_dir": str(data_dir),
            "metrics": {"listen": ""},
            # the scripted customers follow each other within seconds, which a real till cannot:
            # the next code comes within recent_sale_guard of the previous sale
            "matching": {"recent_sale_guard": 0},
            "cashier": {"listen": "127.0.0.1:0"},
        }
    )


class CashierPage:
    """The cashier screen as a browser uses it: the page's CSRF token, then its JSON API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        page = self.http.get(url, timeout=5).text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page)
        if token is None:
            raise AgentError(f"the cashier page at {url} carries no CSRF token")
        self.csrf = token.group(1)

    def claim(self, address: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.http.post(
            f"{self.url}api/claim",
            json={"address": address},
            timeout=5,
            headers={"X-CSRF-Token": self.csrf},
        ).json()
        return answer

    def outcomes(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.http.get(f"{self.url}api/outcomes", timeout=5).json()[
            "entries"
        ]
        return entries


class Demo:
    def __init__(
        self, kassa: KassaSimulator, cloud: CloudSimulator, daemon: Daemon, out: TextIO
    ) -> None:
        self.kassa, self.cloud, self.daemon, self.out = kassa, cloud, daemon, out
        self.unclaimed: set[str] = set()

    @property
    def page_url(self) -> str | None:
        server = self.daemon.cashier_server
        return f"http://127.0.0.1:{server.port}/" if server is not None else None

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def scan(self, text: str, workplace: int = TILL) -> bool:
        outcome = self.daemon.on_scan(ScanEvent(text, "demo", workplace, time.time()))
        if outcome.outcome in ("accepted", "duplicate"):
            self.say(f"   scanner: accepted, the claim is stored ({outcome.outcome})")
            self._cashier_moment(outcome.claim)
            return True
        self.say(f"   scanner: REJECTED ({outcome.reason})")
        return False

    def _cashier_moment(self, claim: Claim | None) -> None:
        """A real cashier takes a moment between the scan and the payment; the agent uses it to
        poll the POS once, which proves every later sale came after the scan."""

        def fenced(claim: Claim) -> bool:
            return not any(
                c.id == claim.id and c.fence_marker is None
                for c in self.daemon.store.pending_claims()
            )

        deadline = time.monotonic() + WAIT
        while claim is not None and not fenced(claim) and time.monotonic() < deadline:
            time.sleep(0.02)

    def page_claim(self, address: str) -> bool:
        """What the cashier screen's button does: an HTTP POST to the page's API."""
        if self.page_url is None:
            self.say("   cashier screen: not running")
            return False
        answer = CashierPage(self.page_url).claim(address)
        self.say(f"   cashier screen ({self.page_url}): {answer['title']} — {answer['detail']}")
        if answer["outcome"] not in ("accepted", "duplicate"):
            return False
        claim = next(c for c in self.daemon.store.pending_claims() if c.customer == address)
        self._cashier_moment(claim)
        return True

    def page_shows(self, outcome: str) -> Callable[[], bool]:
        if self.page_url is None:
            return lambda: False
        page = CashierPage(self.page_url)
        return lambda: any(e["outcome"] == outcome for e in page.outcomes()[:1])

    def wait_for(self, what: str, predicate: Callable[[], bool]) -> bool:
        started = time.monotonic()
        while time.monotonic() - started < WAIT:
            if predicate():
                self.say(f"   agent: {what} ({time.monotonic() - started:.1f} s)")
                return True
            time.sleep(0.05)
        self.say(f"   agent: {what} did NOT happen within {WAIT:.0f} s")
        return False

    def delivered(self, count: int) -> Callable[[], bool]:
        return lambda: self.cloud.count() >= count

    def _seen(self, marker: int) -> bool:
        return (self.daemon.store.get_cursor() or 0) >= marker

    def pay(self, lines: list[SimLine], payments: list[Any], note: str) -> str:
        """The payment completes a few seconds after the code was read (booked 4 s on)."""
        receipt_id = self.kassa.book_sale(TILL, lines=lines, payments=payments, after=PAYMENT)
        self.say(f"   till {TILL}: sale booked — {note}, € {sale_total(lines) / 100:.2f}")
        return receipt_id

    def scripted(self) -> bool:
        """The demo's story, one customer after another; every step runs even after one fails."""
        ok = self.wait_for(
            "connected to the POS", lambda: self.daemon.poller.last_success is not None
        )
        anna_ok, anna_sale = self.app_customer()
        ok &= anna_ok
        ok &= self.email_customer()
        ok &= self.barcode_by_mistake()
        ok &= self.link_customer()
        ok &= self.credit_receipt(anna_sale)
        ok &= self.webhook_customer()
        self.customer_without_boniq()
        return ok

    def app_customer(self) -> tuple[bool, str]:
        """Anna's sale, and whether its receipt reached her app (her return credits it later)."""
        self.say("\n1. Anna shows her BONIQ code in the app")
        ok = self.scan(ANNA)
        anna_sale = self.pay(
            BASKET_ANNA, ["PIN"], "T-shirt, 2 cappuccino, stamps (21/9/0 % VAT), PIN"
        )
        ok &= self.wait_for("receipt delivered to Anna's BONIQ app", self.delivered(1))
        return ok, anna_sale

    def email_customer(self) -> bool:
        self.say("\n2. Bram prefers e-mail; the cashier types his address on the cashier screen")
        ok = self.page_claim(BRAM)
        total = sale_total(BASKET_BRAM)
        self.pay(
            BASKET_BRAM,
            [("CASH", 500), "PIN"],
            f"0.530 kg cheese, bread -25 %; € 5.00 cash + € {(total - 500) / 100:.2f} PIN",
        )
        ok &= self.wait_for("receipt delivered by e-mail to Bram", self.delivered(2))
        ok &= self.wait_for("the cashier screen shows it delivered", self.page_shows("delivered"))
        return ok

    def barcode_by_mistake(self) -> bool:
        """Passes when the agent refuses the article barcode."""
        self.say("\n3. Someone scans a bottle's barcode by mistake")
        return not self.scan("8710400011111")

    def link_customer(self) -> bool:
        self.say("\n4. Chris scans the BONIQ link from a printed card")
        ok = self.scan(CHRIS)
        self.pay(BASKET_CHRIS, ["CREDITCARD"], "2 bottles of wine, batteries, credit card")
        ok &= self.wait_for("receipt delivered to Chris", self.delivered(3))
        return ok

    def credit_receipt(self, original: str) -> bool:
        self.say("\n5. Anna comes back and returns her purchase")
        self.kassa.book_credit(original)
        self.say(f"   till {TILL}: credit receipt booked for Anna's sale (no scan needed)")
        return self.wait_for("credit receipt followed the original to Anna", self.delivered(4))

    def customer_without_boniq(self) -> None:
        """A sale nobody claimed stays in the shop; the report counts it if it was uploaded."""
        self.say("\n7. A customer without BONIQ pays at the till")
        self.unclaimed.add(
            self.pay([SimLine(2040, "Appeltaart", 450, 9)], ["CASH"], "apple pie, cash")
        )
        self.wait_for("the sale seen at the POS", lambda: self._seen(self.kassa.marker))
        self.say("   agent: no claim for this sale, so it stays in the shop")

    def webhook_customer(self) -> bool:
        """Webhook mode: the cashier scans Dana's code with the till's own scanner; MplusKASSA
        posts it to the agent, and the till's screens show the agent's answer."""
        self.say("\n6. Dana's code is scanned with the till's own scanner (MplusKASSA webhooks)")
        server = self.daemon.webhook_server
        if server is None:
            self.say("   webhook receiver: not running")
            return False
        with Till(
            f"http://127.0.0.1:{server.port}/mplus",
            WEBHOOK_KEY,
            SUBSCRIPTION,
            sim=self.kassa,
            workplaces=[TILL],
        ) as till:
            session = till.start_session(TILL)
            for line in BASKET_DANA:
                session.add_line(line)
            entry = session.scan(DANA)
            self.say(f"   till {TILL} screen, cashier: {entry.cashier}")
            self.say(f"   till {TILL} screen, customer display: {entry.customer or '-'}")
            session.start_payment()
            session.complete(["PIN"])
            self.say(
                f"   till {TILL}: session {session.session_id[:8]}… paid and completed,"
                " the agent reads its receipt at once"
            )
        return entry.recognized and self.wait_for(
            "receipt delivered to Dana: its lines carry her session's line ids", self.delivered(5)
        )

    def interactive(self, stdin: TextIO) -> bool:
        self.wait_for("connected to the POS", lambda: self.daemon.poller.last_success is not None)
        if self.page_url:
            self.say(
                f"Cashier screen: {self.page_url} (open it in a browser on this machine; "
                f"an e-mail address given there is paid for at till {TILL} a moment later)"
            )
            stop = threading.Event()
            threading.Thread(target=self._pay_for_page_claims, args=(stop,), daemon=True).start()
        self.say(
            "Type a BONIQ code (e.g. BQ17K3M9QW4RT8ZP2C56) or an e-mail address; "
            "an empty line ends the demo."
        )
        try:
            return self._read_codes(stdin)
        finally:
            if self.page_url:
                stop.set()

    def _pay_for_page_claims(self, stop: threading.Event) -> None:
        paid: set[int] = set()
        while not stop.wait(0.2):
            for claim in self.daemon.store.pending_claims():
                if (
                    claim.source == "cashier"
                    and claim.fence_marker is not None
                    and claim.id not in paid
                ):
                    paid.add(claim.id)
                    self.kassa.book_sale(TILL, after=PAYMENT)

    def _read_codes(self, stdin: TextIO) -> bool:
        while True:
            self.out.write("code> ")
            self.out.flush()
            line = stdin.readline()
            if not line.strip():
                return True
            if self.scan(line.strip()):
                before = self.cloud.count()
                self.kassa.book_sale(TILL, after=PAYMENT)
                self.say(f"   till {TILL}: a random sale is booked")
                self.wait_for("receipt delivered", self.delivered(before + 1))

    def report(self) -> None:
        self.say("\nWhat the BONIQ cloud stored:")
        for payload in self.cloud.receipts():
            customer = next(iter(payload["customer"].values()))
            self.say(
                f" - {payload['kind']:<6} receipt {payload['pos']['number']['number']:>3} "
                f"till {payload['store']['workplace']}  € {payload['totals']['incl'] / 100:>7.2f}"
                f"  VAT € {payload['totals']['vat'] / 100:.2f}  {len(payload['lines'])} line(s)"
                f"  paid {'+'.join(p['method'] for p in payload['payments'])}  → {customer}"
                f"  [{payload.get('match', {}).get('evidence', '?')}]"
            )
        sales = len(self.kassa.receipts())
        stored = self.cloud.count()
        self.say(
            f"\nPOS receipts booked: {sales}; delivered to customers: {stored}; "
            f"unclaimed sales uploaded: {self._unclaimed_uploaded()}"
        )

    def _unclaimed_uploaded(self) -> int:
        return len({p["pos"]["receipt_id"] for p in self.cloud.receipts()} & self.unclaimed)


def run(*, interactive: bool = False, out: TextIO = sys.stdout, stdin: TextIO = sys.stdin) -> int:
    with (
        tempfile.TemporaryDirectory(prefix="boniq-demo-") as tmp,
        KassaSimulator(seed=2026) as kassa,
        CloudSimulator("demo-token") as cloud,
    ):
        daemon = Daemon(_config(kassa, cloud, Path(tmp)), sources=[])
        demo = Demo(kassa, cloud, daemon, out)
        demo.say(
            f"BONIQ agent demo: simulated MplusKASSA at {kassa.url}, simulated BONIQ cloud at "
            f"{cloud.url}\nThe agent runs for till {TILL} of branch {kassa.branch}; "
            f"its store is in {tmp}."
        )
        daemon.start()
        try:
            ok = demo.interactive(stdin) if interactive else demo.scripted()
            demo.report()
        finally:
            daemon.stop_event.set()
            daemon.stop()
        demo.say(
            "\nDemo finished: every claimed sale was delivered."
            if ok
            else "\nDemo finished with problems (see above)."
        )
        return 0 if ok else 1
