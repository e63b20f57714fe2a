"""What the MplusKASSA API returns, as small typed values (amounts in integer cents).

`Receipt.is_paid` means a completed customer receipt: a sale (`RECEIPT-TYPE-RECEIPT`) or a credit
(`RECEIPT-TYPE-CREDIT-RECEIPT`) whose `state` is `RECEIPT-STATE-PAID` or `RECEIPT-STATE-HANDLED`
(settled in full). OUTSTANDING, PARTLY-PAID and OUTSTANDING-CREDIT are not paid; cash inflows,
outflows and payment-method transfers are never paid sales, whatever their state.

Absent `decimalPlaces` is read as 0 (the vendor tutorial sends `quantity 1` meaning one piece).
An `entryTimestamp` without `timezone` is read as Europe/Amsterdam, as the official client does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from xml.etree.ElementTree import Element
from zoneinfo import ZoneInfo

from agent.errors import KassaResponseError
from agent.kassa.soap import child, children, descendants, text

RECEIPT_TYPE_SALE = "RECEIPT-TYPE-RECEIPT"
RECEIPT_TYPE_CREDIT = "RECEIPT-TYPE-CREDIT-RECEIPT"
PAID_STATES = frozenset({"RECEIPT-STATE-PAID", "RECEIPT-STATE-HANDLED"})
POS_ZONE = ZoneInfo("Europe/Amsterdam")
INTEGER = re.compile(r"-?[0-9]{1,18}")  # fits SQLite's 64-bit INTEGER, unlike Python's int()
MAX_DECIMAL_PLACES = 9


@dataclass(frozen=True)
class Line:
    line_id: str | None
    article_number: str
    plu: str | None
    text: str
    quantity: int
    decimal_places: int
    price: int
    discount_type: str | None
    discount_percentage: int | None
    discount_amount: int
    total_incl: int
    total_excl: int | None
    vat_code: int | None
    vat_percentage: int | None
    webhook_line_id: str | None = None  # the line's id in the webhook session that booked it


@dataclass(frozen=True)
class VatGroup:
    """A VAT group: on a receipt with its amounts, from getVatGroupList without them."""

    code: int
    percentage: int
    excl: int = 0
    vat: int = 0
    branch: int | None = None


@dataclass(frozen=True)
class Payment:
    method: str
    description: str | None
    amount: int
    method_type: str | None


@dataclass(frozen=True)
class Workplace:
    number: int
    name: str | None


@dataclass(frozen=True)
class Branch:
    number: int
    name: str | None
    workplaces: tuple[Workplace, ...]


@dataclass(frozen=True)
class Receipt:
    receipt_id: str
    sync_marker: int
    receipt_type: str
    state: str
    branch: int
    workplace: int
    year: int
    number: int
    transaction: str
    barcode: str | None
    credited_receipt_id: str | None
    employee: str | None
    booked_at: datetime
    financial_date: date
    total_incl: int
    total_excl: int
    paid_amount: int
    vat_method: str | None
    change_counter: int
    lines: tuple[Line, ...]
    vat_groups: tuple[VatGroup, ...]
    payments: tuple[Payment, ...]

    @property
    def is_credit(self) -> bool:
        return self.receipt_type == RECEIPT_TYPE_CREDIT

    @property
    def is_sale(self) -> bool:
        return self.receipt_type == RECEIPT_TYPE_SALE

    @property
    def is_paid(self) -> bool:
        return (self.is_sale or self.is_credit) and self.state in PAID_STATES

    @property
    def webhook_line_ids(self) -> tuple[str, ...]:
        """The webhook session line ids its lines carry: the link to the session (webhook
        mode); empty for a receipt booked without webhooks."""
        return tuple(line.webhook_line_id for line in self.lines if line.webhook_line_id)


def _required(element: Element, name: str) -> str:
    value = text(element, name)
    if not value:
        raise KassaResponseError(f"the API sent a {_tag(element)} without {name}")
    return value


def _int(element: Element, name: str, default: int | None = None) -> int:
    value = text(element, name)
    if not value:
        if default is None:
            raise KassaResponseError(f"the API sent a {_tag(element)} without {name}")
        return default
    if not INTEGER.fullmatch(value):
        raise KassaResponseError(f"the API sent a non-integer {name} in a {_tag(element)}")
    return int(value)


def _opt_int(element: Element, name: str) -> int | None:
    return _int(element, name) if text(element, name) else None


def _tag(element: Element) -> str:
    return element.tag.rpartition("}")[2]


def _part(element: Element, name: str) -> Element:
    found = child(element, name)
    if found is None:
        raise KassaResponseError(f"the API sent a {_tag(element)} without {name}")
    return found


def parse_date(element: Element) -> date:
    try:
        return date(_int(element, "year"), _int(element, "mon"), _int(element, "day"))
    except ValueError:
        raise KassaResponseError("the API sent an impossible date") from None


def parse_datetime(element: Element) -> datetime:
    """SoapMplusDateTime; `timezone` is the UTC offset in minutes (DST included)."""
    offset = _opt_int(element, "timezone")
    try:
        naive = datetime(  # noqa: DTZ001 - the zone is attached below
            _int(element, "year"),
            _int(element, "mon"),
            _int(element, "day"),
            _int(element, "hour", 0),
            _int(element, "min", 0),
            _int(element, "sec", 0),
        )
        zone = POS_ZONE if offset is None else timezone(timedelta(minutes=offset))
    except (ValueError, OverflowError):
        raise KassaResponseError("the API sent an impossible timestamp") from None
    return naive.replace(tzinfo=zone)


def parse_line(element: Element) -> Line:
    data = child(element, "data")
    if data is None:
        raise KassaResponseError("the API sent a receipt line without data")
    places = _int(data, "decimalPlaces", 0)
    if not 0 <= places <= MAX_DECIMAL_PLACES:
        raise KassaResponseError("the API sent a receipt line with impossible decimalPlaces")
    return Line(
        line_id=text(element, "lineId"),
        article_number=_required(element, "articleNumber"),
        plu=text(element, "pluNumber") or None,
        text=text(element, "text") or "",
        quantity=_int(data, "quantity"),
        decimal_places=places,
        price=_int(data, "price", 0),
        discount_type=text(data, "discountType"),
        discount_percentage=_opt_int(data, "discountPercentage"),
        discount_amount=_int(data, "discountAmount", 0),
        total_incl=_int(data, "totalInclAmount"),
        total_excl=_opt_int(data, "totalExclAmount"),
        vat_code=_opt_int(data, "vatCode"),
        vat_percentage=_opt_int(data, "vatPercentage"),
        webhook_line_id=_webhook_line_id(element),
    )


def _webhook_line_id(line: Element) -> str | None:
    webhook = child(line, "webhookData")
    return (text(webhook, "webhookLineId") or None) if webhook is not None else None


def parse_vat_group(element: Element) -> VatGroup:
    return VatGroup(
        code=_int(element, "vatCode"),
        percentage=_int(element, "vatPercentage"),
        excl=_int(element, "exclAmount", 0),
        vat=_int(element, "vatAmount", 0),
        branch=_opt_int(element, "branchNumber"),
    )


def parse_payment(element: Element) -> Payment:
    return Payment(
        method=_required(element, "method"),
        description=text(element, "description") or None,
        amount=_int(element, "amount"),
        method_type=text(element, "paymentMethodType") or None,
    )


def _items(element: Element, wrapper: str, item: str) -> list[Element]:
    found = child(element, wrapper)
    return list(children(found, item)) if found is not None else []


def parse_receipt(element: Element) -> Receipt:
    number = child(element, "receiptNumber")
    financial = parse_date(_part(element, "financialDate"))
    workplace = _int(element, "workplaceNumber")
    branch = _int(element, "entryBranchNumber", 0) or _int(element, "financialBranchNumber")
    year = _int(number, "year", financial.year) if number is not None else financial.year
    seq = _int(number, "number", 0) if number is not None else 0
    return Receipt(
        receipt_id=_required(element, "receiptId"),
        sync_marker=_int(element, "syncMarker", 0),
        receipt_type=_required(element, "receiptType"),
        state=text(element, "state") or "",
        branch=branch,
        workplace=workplace,
        year=year,
        number=seq,
        transaction=text(element, "transactionString") or f"{branch}.{workplace}.{year}.{seq:06d}",
        barcode=text(element, "receiptBarcode") or None,
        credited_receipt_id=text(element, "creditedReceiptId") or None,
        employee=text(element, "employeeName") or None,
        booked_at=parse_datetime(_part(element, "entryTimestamp")),
        financial_date=financial,
        total_incl=_int(element, "totalInclAmount"),
        total_excl=_int(element, "totalExclAmount"),
        paid_amount=_int(element, "paidAmount", 0),
        vat_method=text(element, "vatMethod"),
        change_counter=_int(element, "changeCounter", 0),
        lines=tuple(parse_line(e) for e in _items(element, "lineList", "line")),
        vat_groups=tuple(parse_vat_group(e) for e in _items(element, "vatGroupList", "vatGroup")),
        payments=tuple(parse_payment(e) for e in _items(element, "paymentList", "payment")),
    )


def parse_branch(element: Element) -> Branch:
    workplaces = tuple(
        Workplace(number=_int(w, "workplaceNumber"), name=text(w, "workplaceName") or None)
        for w in descendants(element, "workplace", having="workplaceNumber")
    )
    return Branch(
        number=_int(element, "branchNumber"),
        name=text(element, "branchName") or None,
        workplaces=workplaces,
    )
