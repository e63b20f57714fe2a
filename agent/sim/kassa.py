"""A loopback MplusKASSA API: real HTTP, SOAP 1.1 in the shapes of reference/mplus-api.md §8.

It books realistic Dutch sales (21 %, 9 % and 0 % VAT, discounts, weighed articles with
decimalPlaces 3, PIN + cash split payments, credit receipts) on several workplaces of one branch,
answers wrong credentials with a `Client.Authentication` fault on HTTP 500 and injects faults on
request: latency, Server faults, dropped connections, hangs and hostile answers.

Sales are built so that they reconcile the way a till does: line totals sum to the receipt's
incl. total, VAT groups sum to incl − excl, payments sum to incl. A credit receipt negates every
quantity and amount of the receipt it credits (the sign convention is unverified, §3.6).

The POS clock can run off the real one (`clock_offset`, and `timezone_field` for the ways the
official PHP clients read `SoapMplusDateTime.timezone`); a receipt can be booked at a given POS
time, become visible late under the syncMarker it was given at booking (a till that replicates
late), be a cash inflow, unpaid or partly paid, or belong to another branch.

What getWebhookConsumers answers is set with `webhook_consumers=` or `POST /_sim/webhook-consumers
{"consumers": [{"endpoint_url": …, "subscription_id": …}]}` (`agent/sim/consumers.py`) and read
with `GET /_sim/webhook-consumers`.

Control endpoints for other processes (JSON): `POST /_sim/book {"workplace": 2, "after": 3,
"delay": 0, "type": "RECEIPT-TYPE-RECEIPT", "state": "RECEIPT-STATE-PAID", "branch": 1}`,
`POST /_sim/credit {"receipt_id": …, "after": 3}`, `POST /_sim/settle {"receipt_id": …}`,
`POST /_sim/clock {"offset": -5, "timezone": "zero"}`, `POST /_sim/faults {"hang": true, …}`,
`GET /_sim/faults`, `GET /_sim/receipts`; with a till player attached (`agent.sim.till`), its
`POST /_sim/session/…`, `POST /_sim/till/…` and `GET /_sim/screen` endpoints.
"""

from __future__ import annotations

import hmac
import json
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qs, urlsplit
from xml.etree.ElementTree import Element

from agent.errors import KassaError
from agent.kassa.receipt import POS_ZONE
from agent.kassa.soap import (
    body_element,
    child,
    children,
    fault_envelope,
    local_name,
    response_envelope,
    text,
)
from agent.sim.consumers import SimConsumer

if TYPE_CHECKING:
    from agent.sim.till import Till

VAT_CODES = {21: 1, 9: 2, 0: 3}
PAYMENT_METHODS = {
    "PIN": ("Pinbetaling", "PAYMENT-METHOD-TYPE-EFT"),
    "CASH": ("Contant", "PAYMENT-METHOD-TYPE-PAYMENT"),
    "CREDITCARD": ("Creditcard", "PAYMENT-METHOD-TYPE-EFT"),
}
RECEIPT_TYPES = (
    "RECEIPT-TYPE-RECEIPT",
    "RECEIPT-TYPE-CREDIT-RECEIPT",
    "RECEIPT-TYPE-CASH-INFLOW",
    "RECEIPT-TYPE-CASH-OUTFLOW",
    "RECEIPT-TYPE-PAYMENT-METHOD-TRANSFER",
)
RECEIPT_STATES = (
    "RECEIPT-STATE-OUTSTANDING",
    "RECEIPT-STATE-PARTLY-PAID",
    "RECEIPT-STATE-PAID",
    "RECEIPT-STATE-HANDLED",
    "RECEIPT-STATE-OUTSTANDING-CREDIT",
)
COUNTRY_CODE = 528  # ISO 3166 numeric, the Netherlands: `countryCode` is a number in the WSDL
RESPONSE_ELEMENTS = {
    "getApiVersion": "getApiVersionResponse",
    "getCurrentSyncMarkers": "getCurrentSyncMarkersResponse",
    "getCurrentSyncMarkersV2": "GetCurrentSyncMarkersV2Response",
    "getReceipts": "GetReceiptsResponse",
    "getReceipt": "GetReceiptResponse",
    "getBranches": "getBranchesResponse",
    "getPaymentMethods": "GetPaymentMethodsResponse",
    "getVatGroupList": "getVatGroupListResponse",
    "getWebhookConsumers": "GetWebhookConsumersResponse",
}
"""Each call's response element as the WSDL's `<message>` names it: the case differs per call."""
EMPLOYEES = ((7, "Sanne"), (3, "Daan"), (12, "Fatima"), (5, "Joost"))
_MAX_CONTROL_BODY = 1_000_000
_POLL = 0.02
_TRICKLE_MAX = 20.0


@dataclass(frozen=True)
class SimLine:
    """One article on a sale. `price` is incl. VAT per unit (per kg when decimal_places is 3)."""

    article: int
    text: str
    price: int
    vat: int
    quantity: int = 1
    decimal_places: int = 0
    discount_pct: int = 0
    plu: str | None = None


CATALOGUE: tuple[SimLine, ...] = (
    SimLine(1001, "Cappuccino", 350, 9),
    SimLine(2040, "Appeltaart", 450, 9),
    SimLine(2101, "Volkorenbrood heel", 289, 9),
    SimLine(2210, "Jong belegen kaas", 1290, 9, decimal_places=3),
    SimLine(2230, "Bananen", 199, 9, decimal_places=3),
    SimLine(2300, "Verse jus d'orange 1 L", 349, 9),
    SimLine(3001, "T-shirt zwart M", 1995, 21, plu="TS-M-BLK"),
    SimLine(3120, "AA-batterijen 4 stuks", 599, 21),
    SimLine(3300, "Rioja Crianza 75 cl", 899, 21),
    SimLine(3410, "Paraplu", 1499, 21),
    SimLine(4001, "Postzegels 10 stuks", 1010, 0),
    SimLine(4100, "Cadeaubon", 2500, 0),
)


@dataclass
class Faults:
    """Fault injection, safe to change from any thread at any time.

    `huge_body` is a size in bytes (True means 50 MB); `http_status` (e.g. 502) answers with a
    proxy's plain-text error page. These replace the normal answer to every SOAP call while set.
    """

    latency: float = 0.0
    server_fault_rate: float = 0.0
    drop_rate: float = 0.0
    hang: bool = False
    huge_body: int = 0
    entity_bomb: bool = False
    external_entity: bool = False
    trickle: bool = False
    http_status: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def update(self, values: Mapping[str, Any]) -> None:
        unknown = set(values) - set(self._names())
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        with self._lock:
            for name, value in values.items():
                default = getattr(Faults, name)
                if isinstance(default, bool):
                    setattr(self, name, bool(value))
                elif name == "huge_body":
                    setattr(self, name, 50_000_000 if value is True else int(value))
                elif name == "http_status":
                    setattr(self, name, int(value))
                else:
                    setattr(self, name, float(value))

    def reset(self) -> None:
        self.update({name: getattr(Faults, name) for name in self._names()})

    def snapshot(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._names()}

    @classmethod
    def _names(cls) -> list[str]:
        return [f.name for f in fields(cls) if not f.name.startswith("_")]


@dataclass(frozen=True)
class _Line:
    line_id: str
    spec: SimLine
    quantity: int
    discount: int
    total: int
    total_excl: int
    webhook_line_id: str | None = None  # the till session's lineId (`webhookData`)


@dataclass(frozen=True)
class _Receipt:
    receipt_id: str
    sync_marker: int
    workplace: int
    number: int
    at: datetime
    employee: tuple[int, str]
    lines: tuple[_Line, ...]
    vat: tuple[tuple[int, int, int], ...]
    payments: tuple[tuple[str, int], ...]
    credited_receipt_id: str | None = None
    receipt_type: str = "RECEIPT-TYPE-RECEIPT"
    state: str = "RECEIPT-STATE-PAID"
    branch: int | None = None  # None: the simulator's branch
    visible_at: float = 0.0  # real time from which the API shows it (late replication)

    @property
    def total_incl(self) -> int:
        return sum(line.total for line in self.lines)

    @property
    def total_excl(self) -> int:
        return sum(excl for _, excl, _ in self.vat)


def _round_div(numerator: int, denominator: int) -> int:
    """Half away from zero, as a till rounds cents."""
    magnitude = (abs(numerator) * 2 + denominator) // (2 * denominator)
    return -magnitude if numerator < 0 else magnitude


def _excl(incl: int, rate: int) -> int:
    return _round_div(incl * 100, 100 + rate)


def _price_line(spec: SimLine, line_id: str) -> _Line:
    gross = _round_div(spec.price * spec.quantity, 10**spec.decimal_places)
    discount = _round_div(gross * spec.discount_pct, 100)
    total = gross - discount
    return _Line(line_id, spec, spec.quantity, discount, total, _excl(total, spec.vat))


def _vat_groups(lines: Sequence[_Line]) -> tuple[tuple[int, int, int], ...]:
    """(rate, excl, vat) per rate, VAT computed once over the group's incl. total."""
    incl: dict[int, int] = {}
    for line in lines:
        incl[line.spec.vat] = incl.get(line.spec.vat, 0) + line.total
    groups = []
    for rate in sorted(incl):
        vat = _round_div(incl[rate] * rate, 100 + rate)
        groups.append((rate, incl[rate] - vat, vat))
    return tuple(groups)


def _as_line(value: SimLine | Mapping[str, Any]) -> SimLine:
    line = value if isinstance(value, SimLine) else SimLine(**value)
    if line.vat not in VAT_CODES:
        raise ValueError(f"VAT rate {line.vat} is not a Dutch rate (21, 9, 0)")
    if line.quantity <= 0 or line.price < 0 or not 0 <= line.discount_pct <= 100:
        raise ValueError("a sale line needs a positive quantity, a price and a discount of 0-100 %")
    return line


def _check_enum(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} is one of {', '.join(allowed)} (the WSDL's values)")


def sale_total(lines: Sequence[SimLine | Mapping[str, Any]]) -> int:
    """What a sale of these lines comes to (incl. VAT, cents): to split a payment in advance."""
    return sum(_price_line(_as_line(line), "").total for line in lines)


def _resolve_payments(total: int, payments: Sequence[Any]) -> tuple[tuple[str, int], ...]:
    """`["PIN"]`, `[("CASH", 1000), "PIN"]`: one entry without an amount takes the remainder."""
    pairs = [(p, None) if isinstance(p, str) else (p[0], p[1]) for p in payments]
    if any(method not in PAYMENT_METHODS for method, _ in pairs):
        raise ValueError(f"payment methods are {sorted(PAYMENT_METHODS)}")
    fixed = sum(amount for _, amount in pairs if amount is not None)
    open_slots = [i for i, (_, amount) in enumerate(pairs) if amount is None]
    if len(open_slots) > 1:
        raise ValueError("at most one payment may take the remainder")
    if open_slots:
        pairs[open_slots[0]] = (pairs[open_slots[0]][0], total - fixed)
    elif fixed != total:
        raise ValueError(f"payments sum to {fixed}, the sale to {total}")
    return tuple((method, int(amount or 0)) for method, amount in pairs)


class KassaSimulator:
    def __init__(
        self,
        ident: str = "demo-ident",
        secret: str = "demo-secret",
        branch: int = 1,
        workplaces: Sequence[int] = (1, 2, 3, 4),
        seed: int | None = None,
        *,
        vat_percentage_scale: int = 1,
        webhook_consumers: Sequence[SimConsumer | Mapping[str, Any]] = (),
    ) -> None:
        self.ident = ident
        self.secret = secret
        self.branch = branch
        self.workplaces = tuple(workplaces)
        self.vat_percentage_scale = vat_percentage_scale
        self.faults = Faults()
        self.webhook_consumers = [SimConsumer.of(c) for c in webhook_consumers]
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._receipts: dict[str, _Receipt] = {}
        self._numbers: dict[tuple[int, int], int] = {}
        self._marker = 18_000
        self.clock_offset = 0.0  # the POS clock minus the real clock, seconds
        self.timezone_field = "offset"  # offset | zero | negated: how SoapMplusDateTime says it
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.till: Till | None = None  # the till-session player (agent.sim.till) attached

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        if self._server is None:
            self._stopping.clear()
            server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
            server.daemon_threads = True
            server.block_on_close = False
            server.sim = self  # type: ignore[attr-defined]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL},
                name="kassa-sim",
                daemon=True,
            )
            self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def stop(self) -> None:
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- booking -----------------------------------------------------------------------------

    def book_sale(
        self,
        workplace: int,
        *,
        lines: Sequence[SimLine | Mapping[str, Any]] | None = None,
        payments: list[Any] | None = None,
        at: datetime | None = None,
        after: float | None = None,
        delay: float = 0.0,
        receipt_type: str = "RECEIPT-TYPE-RECEIPT",
        state: str = "RECEIPT-STATE-PAID",
        branch: int | None = None,
        webhook_line_ids: Sequence[str | None] | None = None,
    ) -> str:
        """Book a sale at `workplace`; random realistic content unless given.

        `at` is the booking time on the POS clock (default: now on the POS clock); `after`
        books it that many seconds from now instead (a payment that completes a moment later).
        `delay`: the API shows it only that many seconds from now, under the syncMarker it got
        now (a till that replicates late). `receipt_type`, `state` and `branch` make cash
        inflows, unpaid or partly paid sales and other branches' receipts.
        `webhook_line_ids`: per given line, the till session's lineId its `webhookData` carries
        (a sale played through webhooks, `agent.sim.till`); None for a line without one."""
        if workplace not in self.workplaces:
            raise ValueError(f"workplace {workplace} is not one of {list(self.workplaces)}")
        _check_enum("type", receipt_type, RECEIPT_TYPES)
        _check_enum("state", state, RECEIPT_STATES)
        with self._lock:
            specs = [_as_line(x) for x in lines] if lines else self._random_lines()
            priced = tuple(_price_line(spec, self._uuid()) for spec in specs)
            if webhook_line_ids is not None:
                if len(webhook_line_ids) != len(priced):
                    raise ValueError("one webhook line id (or None) per line")
                priced = tuple(
                    replace(line, webhook_line_id=hook)
                    for line, hook in zip(priced, webhook_line_ids, strict=True)
                )
            total = sum(line.total for line in priced)
            paid = _resolve_payments(total, payments) if payments else self._random_payments(total)
            if after is not None:
                at = self.pos_now() + timedelta(seconds=after)
            return self._store(
                workplace,
                priced,
                _vat_groups(priced),
                paid,
                at,
                None,
                receipt_type=receipt_type,
                state=state,
                branch=branch,
                visible_at=time.time() + delay,
            )

    def book_credit(
        self,
        original_receipt_id: str,
        *,
        at: datetime | None = None,
        after: float | None = None,
    ) -> str:
        """Credit a whole receipt: same articles and payment methods, every amount negated."""
        if after is not None:
            at = self.pos_now() + timedelta(seconds=after)
        with self._lock:
            original = self._receipts.get(original_receipt_id)
            if original is None or original.credited_receipt_id is not None:
                raise KeyError(f"no sale receipt {original_receipt_id}")
            lines = tuple(
                _Line(
                    self._uuid(),
                    x.spec,
                    -x.quantity,
                    -x.discount,
                    -x.total,
                    -x.total_excl,
                )
                for x in original.lines
            )
            vat = tuple((rate, -excl, -v) for rate, excl, v in original.vat)
            payments = tuple((method, -amount) for method, amount in original.payments)
            return self._store(
                original.workplace,
                lines,
                vat,
                payments,
                at,
                original.receipt_id,
                receipt_type="RECEIPT-TYPE-CREDIT-RECEIPT",
            )

    def receipts(self) -> list[dict[str, Any]]:
        """Summaries of every booked receipt, oldest first."""
        with self._lock:
            return [
                self._summary(r)
                for r in sorted(self._receipts.values(), key=lambda r: r.sync_marker)
            ]

    def pos_now(self) -> datetime:
        """Now on the POS clock."""
        return datetime.now(POS_ZONE) + timedelta(seconds=self.clock_offset)

    def settle(self, receipt_id: str, state: str = "RECEIPT-STATE-PAID") -> None:
        """The POS changes a receipt's state (a partly paid sale paid in full, …): it comes
        back under a new syncMarker."""
        _check_enum("state", state, RECEIPT_STATES)
        with self._lock:
            self._marker += 1
            self._receipts[receipt_id] = replace(
                self._receipts[receipt_id], state=state, sync_marker=self._marker
            )

    @property
    def marker(self) -> int:
        """The highest syncMarker the POS has given out."""
        with self._lock:
            return self._marker

    def _store(
        self,
        workplace: int,
        lines: tuple[_Line, ...],
        vat: tuple[tuple[int, int, int], ...],
        payments: tuple[tuple[str, int], ...],
        at: datetime | None,
        credited: str | None,
        **extra: Any,
    ) -> str:
        if at is None:
            moment = self.pos_now()
        elif at.tzinfo is None:
            moment = at.replace(tzinfo=POS_ZONE)
        else:
            moment = at.astimezone(POS_ZONE)
        key = (workplace, moment.year)
        self._numbers[key] = self._numbers.get(key, 0) + 1
        self._marker += 1
        receipt = _Receipt(
            receipt_id=self._uuid(),
            sync_marker=self._marker,
            workplace=workplace,
            number=self._numbers[key],
            at=moment.replace(microsecond=0),
            employee=self._rng.choice(EMPLOYEES),
            lines=lines,
            vat=vat,
            payments=payments,
            credited_receipt_id=credited,
            **extra,
        )
        self._receipts[receipt.receipt_id] = receipt
        return receipt.receipt_id

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _random_lines(self) -> list[SimLine]:
        chosen = []
        for spec in self._rng.sample(CATALOGUE, self._rng.randint(1, 6)):
            weighed = spec.decimal_places == 3
            quantity = (
                self._rng.randint(120, 1800) if weighed else self._rng.choice((1, 1, 1, 2, 3))
            )
            discount = self._rng.choice((0,) * 6 + (10, 25))
            chosen.append(replace(spec, quantity=quantity, discount_pct=discount))
        return chosen

    def _random_payments(self, total: int) -> tuple[tuple[str, int], ...]:
        style = self._rng.random()
        if style < 0.25 and total > 1000:
            cash = self._rng.randrange(500, total, 500)
            return (("CASH", cash), ("PIN", total - cash))
        if style < 0.45:
            return (("CASH", total),)
        if style < 0.55:
            return (("CREDITCARD", total),)
        return (("PIN", total),)

    # -- SOAP answers --------------------------------------------------------------------------

    def answer(self, operation: str, request: Element) -> tuple[str, dict[str, Any]]:
        handlers: dict[str, Callable[[Element], dict[str, Any]]] = {
            "getApiVersion": self._api_version,
            "getCurrentSyncMarkers": self._sync_markers,
            "getCurrentSyncMarkersV2": self._sync_markers,
            "getReceipts": self._get_receipts,
            "getReceipt": self._get_receipt,
            "getBranches": self._branches,
            "getPaymentMethods": self._payment_methods,
            "getVatGroupList": self._vat_group_list,
            "getWebhookConsumers": self._webhook_consumers,
        }
        handler = handlers.get(operation)
        if handler is None:
            raise LookupError(operation)
        return RESPONSE_ELEMENTS[operation], handler(request)

    def _api_version(self, _: Element) -> dict[str, Any]:
        return {
            "majorNumber": 67,
            "minorNumber": 1,
            "revisionNumber": 3,
            "serverDateTime": self._datetime_xml(self.pos_now()),
            "inDebugMode": False,
            "isSlaveApi": False,
            "slaveApiType": "NO-SLAVE-API",
        }

    def _sync_markers(self, call: Element) -> dict[str, Any]:
        """V2: the receipt's and order's markers (every one is optional there); V1: every
        marker the WSDL requires of it."""
        with self._lock:
            receipt = self._marker
        if local_name(call.tag) == "getCurrentSyncMarkersV2":
            return {"receiptSyncMarker": receipt, "orderSyncMarker": 0}
        return {
            "articleSyncMarker": 0,
            "relationSyncMarker": 0,
            "employeeSyncMarker": 0,
            "invoiceSyncMarker": 0,
            "receiptSyncMarker": receipt,
            "orderSyncMarker": 0,
        }

    def _get_receipts(self, call: Element) -> dict[str, Any]:
        request = child(call, "request")
        if request is None:
            raise ValueError("getReceipts needs a request")
        since = int(text(request, "syncMarker") or 0)
        limit = int(text(request, "syncMarkerLimit") or 1000)
        branches = {int((e.text or "").strip()) for e in children(request, "branchNumbers")}
        with_lines = (text(request, "includeLineList") or "").lower() in ("true", "1")
        now = time.time()
        with self._lock:
            found = sorted(
                (
                    r
                    for r in self._receipts.values()
                    if r.sync_marker >= since
                    and r.visible_at <= now
                    and (
                        not branches or (self.branch if r.branch is None else r.branch) in branches
                    )
                ),
                key=lambda r: r.sync_marker,
            )
        return {
            "receiptList": {"receipt": [self._receipt_xml(r, with_lines) for r in found[:limit]]}
        }

    def _get_receipt(self, call: Element) -> dict[str, Any]:
        with self._lock:
            receipt = self._receipts.get(text(call, "receiptId") or "")
        if receipt is None:
            return {"result": "GET-RECEIPT-RESULT-NOT-FOUND"}
        return {
            "result": "GET-RECEIPT-RESULT-OK",
            "receipt": self._receipt_xml(receipt, True),
        }

    def _branches(self, _: Element) -> dict[str, Any]:
        workplaces = [
            {
                "workplaceNumber": n,
                "workplaceName": f"Kassa {n}",
                "isMobile": False,
                "workplaceType": "STANDARD",
            }
            for n in self.workplaces
        ]
        branch = {
            "branchNumber": self.branch,
            "branchName": "Winkel Utrecht Centrum",
            "abbreviation": "UTC",
            "workplaces": {"workplace": workplaces},
            "countryCode": COUNTRY_CODE,
            "countryIso3": "NLD",
            "countryName": "Nederland",
        }
        return {"branches": {"branch": [branch]}}

    def _payment_methods(self, _: Element) -> dict[str, Any]:
        methods = [
            {
                "method": code,
                "description": desc,
                "buttonText": desc,
                "allowNegativeAmount": True,
                "active": True,
                "type": kind,
            }
            for code, (desc, kind) in PAYMENT_METHODS.items()
        ]
        return {"paymentMethodList": {"paymentMethod": methods}}

    def _vat_group_list(self, _: Element) -> dict[str, Any]:
        groups = [
            {
                "branchNumber": self.branch,
                "countryCode": COUNTRY_CODE,
                "countryIso3": "NLD",
                "vatCode": code,
                "vatPercentage": rate * self.vat_percentage_scale,
            }
            for rate, code in VAT_CODES.items()
        ]
        return {"vatGroup": groups}

    def _webhook_consumers(self, call: Element) -> dict[str, Any]:
        request = child(call, "request")
        key = child(request, "workplace") if request is not None else None
        if key is None:
            raise ValueError("getWebhookConsumers needs request/workplace")
        branch = int(text(key, "branchNumber") or 0)
        workplace = int(text(key, "workplaceNumber") or 0)
        consumers = [
            c.xml(branch, workplace)
            for c in list(self.webhook_consumers)
            if branch == self.branch and c.resolved_for(workplace)
        ]
        return {"webhookConsumerList": {"webhookConsumer": consumers}}

    def _receipt_xml(self, r: _Receipt, with_lines: bool) -> dict[str, Any]:
        scale = self.vat_percentage_scale
        branch = self.branch if r.branch is None else r.branch
        receipt: dict[str, Any] = {
            "receiptId": r.receipt_id,
            "transactionString": f"{branch}.{r.workplace}.{r.at.year}.{r.number:06d}",
            "syncMarker": r.sync_marker,
            "receiptNumber": {
                "branchNumber": branch,
                "workplaceNumber": r.workplace,
                "year": r.at.year,
                "number": r.number,
            },
            "receiptBarcode": f"{branch:02d}{r.workplace:02d}{r.at.year}{r.number:05d}",
            "receiptType": r.receipt_type,
            "employeeNumber": r.employee[0],
            "employeeName": r.employee[1],
            "entryTimestamp": self._datetime_xml(r.at),
            "financialDate": {"day": r.at.day, "mon": r.at.month, "year": r.at.year},
            "financialBranchNumber": branch,
            "workplaceNumber": r.workplace,
            "entryBranchNumber": branch,
            "totalInclAmount": r.total_incl,
            "totalExclAmount": r.total_excl,
            "vatMethod": "VAT-METHOD-INCLUSIVE",
            "vatGroupList": {
                "vatGroup": [
                    {
                        "vatCode": VAT_CODES[rate],
                        "vatPercentage": rate * scale,
                        "exclAmount": excl,
                        "vatAmount": vat,
                    }
                    for rate, excl, vat in r.vat
                ]
            },
            "changeCounter": 1,
            "paidAmount": sum(amount for _, amount in r.payments),
            "state": r.state,
            "lineList": {"line": [self._line_xml(x) for x in r.lines]} if with_lines else None,
            "paymentList": {
                "payment": [
                    {
                        "paymentId": self._payment_id(r, i),
                        "branchNumber": self.branch,
                        "workplaceNumber": r.workplace,
                        "employeeNumber": r.employee[0],
                        "method": method,
                        "description": PAYMENT_METHODS[method][0],
                        "amount": amount,
                        "paymentMethodType": PAYMENT_METHODS[method][1],
                    }
                    for i, (method, amount) in enumerate(r.payments)
                ]
            },
            "creditedReceiptId": r.credited_receipt_id,
        }
        return receipt

    def _datetime_xml(self, moment: datetime) -> dict[str, Any]:
        """SoapMplusDateTime in WSDL order; `timezone_field` plays the PHP clients' readings."""
        offset = moment.utcoffset()
        minutes = int(offset.total_seconds() // 60) if offset is not None else 0
        zone = {"offset": minutes, "zero": 0, "negated": -minutes}[self.timezone_field]
        return {
            "sec": moment.second,
            "min": moment.minute,
            "hour": moment.hour,
            "day": moment.day,
            "mon": moment.month,
            "year": moment.year,
            "isdst": bool(moment.dst()),
            "timezone": zone,
        }

    @staticmethod
    def _payment_id(r: _Receipt, index: int) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{r.receipt_id}/{index}"))

    def _line_xml(self, x: _Line) -> dict[str, Any]:
        spec = x.spec
        discounted = x.discount != 0
        return {
            "lineId": x.line_id,
            "articleNumber": spec.article,
            "pluNumber": spec.plu,
            "text": spec.text,
            "data": {
                "quantity": x.quantity,
                "decimalPlaces": spec.decimal_places,
                "price": spec.price,
                "priceExcl": _excl(spec.price, spec.vat),
                "vatCode": VAT_CODES[spec.vat],
                "vatPercentage": spec.vat * self.vat_percentage_scale,
                "siUnit": "KILOGRAM" if spec.decimal_places == 3 else None,
                "discountType": "DISCOUNT-TYPE-CUSTOMER-DISCOUNT"
                if discounted
                else "DISCOUNT-TYPE-NONE",
                "discountPercentage": spec.discount_pct if discounted else None,
                "discountAmount": x.discount if discounted else None,
                "totalInclAmount": x.total,
                "totalExclAmount": x.total_excl,
                "priceType": "PRICE-TYPE-ARTICLE",
            },
            "webhookData": {"webhookLineId": x.webhook_line_id} if x.webhook_line_id else None,
        }

    def _summary(self, r: _Receipt) -> dict[str, Any]:
        return {
            "receipt_id": r.receipt_id,
            "sync_marker": r.sync_marker,
            "branch": self.branch if r.branch is None else r.branch,
            "workplace": r.workplace,
            "number": r.number,
            "type": r.receipt_type,
            "state": r.state,
            "kind": "credit" if r.credited_receipt_id else "sale",
            "credited_receipt_id": r.credited_receipt_id,
            "booked_at": r.at.isoformat(),
            "total_incl": r.total_incl,
            "payments": [{"method": m, "amount": a} for m, a in r.payments],
        }

    # -- used by the request handler -------------------------------------------------------------

    def authorised(self, query: str) -> bool:
        params = parse_qs(query)
        ident = (params.get("ident") or [""])[0]
        secret = (params.get("secret") or [""])[0]
        return hmac.compare_digest(ident.encode(), self.ident.encode()) & hmac.compare_digest(
            secret.encode(), self.secret.encode()
        )

    def wait_while_hanging(self) -> None:
        while self.faults.hang and not self._stopping.is_set():
            time.sleep(_POLL)

    def still_trickling(self) -> bool:
        return self.faults.trickle and not self._stopping.is_set()

    def roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate


_BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b']>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<SOAP-ENV:Body><lolz>&lol9;</lolz></SOAP-ENV:Body></SOAP-ENV:Envelope>"
)
_EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<SOAP-ENV:Body><r>&xxe;</r></SOAP-ENV:Body></SOAP-ENV:Envelope>"
)
_ENVELOPE_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<SOAP-ENV:Envelope '
    b'xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns="urn:mplusqapi"><SOAP-ENV:Body>'
)


class _Handler(BaseHTTPRequestHandler):
    server_version = "gSOAP/2.8"
    sys_version = ""
    timeout = 10

    @property
    def sim(self) -> KassaSimulator:
        sim: KassaSimulator = self.server.sim  # type: ignore[attr-defined]
        return sim

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request line holds the secret."""

    # -- routing -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/_sim/receipts":
            self._json(200, self.sim.receipts())
        elif path == "/_sim/webhook-consumers":
            self._json(200, [asdict(c) for c in self.sim.webhook_consumers])
        elif path == "/_sim/faults":
            self._json(200, self.sim.faults.snapshot())
        elif self.sim.till is not None and (view := self.sim.till.view(path)) is not None:
            self._json(200, view)
        else:
            self._send(405, b"", "text/plain")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        if parts.path.startswith("/_sim/"):
            self._control(parts.path)
        else:
            self._soap(parts.query)

    # -- control endpoints -----------------------------------------------------------------------

    def _control(self, path: str) -> None:
        actions: dict[str, Callable[[dict[str, Any]], Any]] = {
            "/_sim/book": self._book,
            "/_sim/credit": lambda data: {
                "receipt_id": self.sim.book_credit(
                    str(data.get("receipt_id")), after=_number(data.get("after"))
                )
            },
            "/_sim/settle": lambda data: self.sim.settle(
                str(data.get("receipt_id")), str(data.get("state", "RECEIPT-STATE-PAID"))
            ),
            "/_sim/clock": self._set_clock,
            "/_sim/faults": self._set_faults,
            "/_sim/webhook-consumers": self._set_webhook_consumers,
        }
        action = actions.get(path)
        if action is None and self.sim.till is not None:
            action = self.sim.till.control(path)
        if action is None:
            self._json(404, {"error": f"no control endpoint {path}"})
            return
        try:
            data = json.loads(self._body(_MAX_CONTROL_BODY) or b"{}")
            if not isinstance(data, dict):
                raise TypeError("expected a JSON object")
            self._json(200, action(data))
        except KeyError as exc:
            self._json(404, {"error": str(exc).strip("'\"")})
        except (ValueError, TypeError) as exc:
            self._json(400, {"error": str(exc)})

    def _book(self, data: dict[str, Any]) -> dict[str, str]:
        workplace = int(data.get("workplace", self.sim.workplaces[0]))
        payments = [p if isinstance(p, str) else tuple(p) for p in data.get("payments") or []]
        at = data.get("at")
        receipt_id = self.sim.book_sale(
            workplace,
            lines=data.get("lines"),
            payments=payments or None,
            at=datetime.fromisoformat(at) if at else None,
            after=_number(data.get("after")),
            delay=float(data.get("delay", 0.0)),
            receipt_type=str(data.get("type", "RECEIPT-TYPE-RECEIPT")),
            state=str(data.get("state", "RECEIPT-STATE-PAID")),
            branch=None if data.get("branch") is None else int(data["branch"]),
        )
        return {"receipt_id": receipt_id}

    def _set_clock(self, data: dict[str, Any]) -> dict[str, Any]:
        """`{"offset": seconds}` sets the POS clock against the real one; `{"timezone": "zero"}`
        writes the timezone field as 0 (or `negated`, or `offset`, the default)."""
        if "offset" in data:
            self.sim.clock_offset = float(data["offset"])
        if "timezone" in data:
            if data["timezone"] not in ("offset", "zero", "negated"):
                raise ValueError("timezone is offset, zero or negated")
            self.sim.timezone_field = str(data["timezone"])
        return {"offset": self.sim.clock_offset, "timezone": self.sim.timezone_field}

    def _set_webhook_consumers(self, data: dict[str, Any]) -> dict[str, Any]:
        """`{"consumers": [{"endpoint_url": …, "subscription_id": …, …}]}` replaces them all."""
        consumers = data.get("consumers")
        if not isinstance(consumers, list):
            raise TypeError('expected {"consumers": [...]}')
        self.sim.webhook_consumers = [SimConsumer.of(c) for c in consumers]
        return {"consumers": len(self.sim.webhook_consumers)}

    def _set_faults(self, data: dict[str, Any]) -> dict[str, Any]:
        self.sim.faults.update(data)
        return self.sim.faults.snapshot()

    # -- SOAP ------------------------------------------------------------------------------------

    def _soap(self, query: str) -> None:
        body = self._body(10_000_000)
        faults = self.sim.faults
        if faults.hang:
            self.sim.wait_while_hanging()
            return
        if self.sim.roll(faults.drop_rate):
            return
        if faults.latency > 0:
            time.sleep(faults.latency)
        if not self.sim.authorised(query):
            self._fault("Client.Authentication", "Invalid ident or secret")
        elif self.sim.roll(faults.server_fault_rate):
            self._fault("Server", "Internal error, please try again later")
        elif not self._hostile():
            self._dispatch(body)

    def _dispatch(self, body: bytes) -> None:
        try:
            call = body_element(body)
            element, content = self.sim.answer(local_name(call.tag), call)
        except KassaError:
            self._fault("Client", "Malformed request")
        except LookupError as exc:
            self._fault("Client", f"Unknown operation {exc}")
        except ValueError as exc:
            self._fault("Client", f"Invalid request: {exc}")
        else:
            self._send(200, response_envelope(element, content))

    def _hostile(self) -> bool:
        faults = self.sim.faults
        if faults.entity_bomb:
            self._send(200, _BILLION_LAUGHS)
        elif faults.external_entity:
            self._send(200, _EXTERNAL_ENTITY)
        elif faults.huge_body:
            self._stream(None, _padding(faults.huge_body))
        elif faults.trickle:
            self._stream(None, _trickle(self.sim))
        elif faults.http_status:
            self._send(
                faults.http_status,
                b"<html><body>Bad Gateway</body></html>",
                "text/html",
            )
        else:
            return False
        return True

    # -- plumbing --------------------------------------------------------------------------------

    def _body(self, limit: int) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _fault(self, code: str, message: str) -> None:
        self._send(500, fault_envelope(code, message))

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _send(
        self, status: int, body: bytes, content_type: str = "text/xml; charset=utf-8"
    ) -> None:
        self._stream(len(body), iter((body,)), status, content_type)

    def _stream(
        self,
        length: int | None,
        chunks: Iterator[bytes],
        status: int = 200,
        content_type: str = "text/xml; charset=utf-8",
    ) -> None:
        """Send `chunks`; without a length the body runs until the connection closes."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.send_header("Mplus-Service-Version", "67.1.3")
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _padding(size: int) -> Iterator[bytes]:
    block = b" " * 1_048_576
    yield _ENVELOPE_HEAD
    remaining = size - len(_ENVELOPE_HEAD)
    while remaining > 0:
        yield block[: min(remaining, len(block))]
        remaining -= len(block)


def _trickle(sim: KassaSimulator) -> Iterator[bytes]:
    """A byte now and then, until the fault is cleared, the sim stops or _TRICKLE_MAX passes."""
    yield _ENVELOPE_HEAD
    until = time.monotonic() + _TRICKLE_MAX
    while sim.still_trickling() and time.monotonic() < until:
        time.sleep(_POLL)
        yield b" "


def serve_forever_cli(
    port: int,
    ident: str,
    secret: str,
    auto_sales_per_minute: float = 0.0,
    webhook: Mapping[str, Any] | None = None,
) -> None:
    """`boniq-agent sim kassa`: serve until SIGINT/SIGTERM, optionally booking sales by itself.

    `webhook`: keyword arguments of `agent.sim.till.Till` (webhook_url, key, subscription_id,
    …): a till player plays sessions to that URL through the `/_sim/session/…` endpoints."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    sim = KassaSimulator(ident=ident, secret=secret)
    if webhook:
        from agent.sim.till import Till

        Till(sim=sim, **webhook)
    url = sim.start(port)
    print(
        f"MplusKASSA simulator on {url} (branch {sim.branch}, workplaces "
        f"{', '.join(map(str, sim.workplaces))}); book a sale: POST {url}_sim/book "
        '{"workplace": 2}',
        flush=True,
    )
    if sim.till is not None:
        print(
            f"till sessions to {sim.till.webhook_url}/EVENT: POST {url}_sim/session/start "
            f'{{"workplace": 2}}, screen: GET {url}_sim/screen',
            flush=True,
        )
    rng = random.Random()
    try:
        while not stop.is_set():
            if auto_sales_per_minute <= 0:
                stop.wait(3600)
            elif not stop.wait(rng.expovariate(auto_sales_per_minute / 60.0)):
                sim.book_sale(rng.choice(sim.workplaces))
    finally:
        sim.stop()
