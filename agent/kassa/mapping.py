"""A booked MplusKASSA receipt → the BONIQ receipt payload (contracts/receipt.schema.json).

Amounts are passed on as the POS gives them, signs included (a credit receipt carries negative
quantities and amounts); nothing is recomputed except `totals.vat` = incl − excl, which the
receipt does not state on its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from agent.kassa.receipt import Line, Payment, Receipt, VatGroup

SCHEMA = "boniq.receipt/1"
_PERCENT_SCALE_LIMIT = 100


def idempotency_key(merchant_id: str, receipt_id: str) -> str:
    return hashlib.sha256(f"{SCHEMA}|{merchant_id}|{receipt_id}".encode()).hexdigest()


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes the outbox stores and uploads."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def detect_vat_scale(vat_groups: Iterable[VatGroup]) -> int:
    """The divisor of `vatPercentage`: 1 when 21 % arrives as `21`, 100 when it arrives as `2100`.

    No VAT rate reaches 100 %, so any percentage above 100 means hundredths.
    """
    highest = max((abs(g.percentage) for g in vat_groups), default=0)
    return 100 if highest > _PERCENT_SCALE_LIMIT else 1


def decimal_string(value: int, places: int) -> str:
    """`530, 3` → `"0.530"`; `-2, 0` → `"-2"` (digits after the point kept)."""
    return format(Decimal(value).scaleb(-places), "f")


def rate_string(percentage: int, vat_scale: int) -> str:
    """`2100, 100` → `"21"`; `950, 100` → `"9.5"`."""
    return format((Decimal(percentage) / vat_scale).normalize(), "f")


def rfc3339(moment: datetime) -> str:
    if moment.utcoffset() is None:
        raise ValueError("a timestamp without a UTC offset cannot be sent")
    return moment.isoformat(timespec="seconds")


def to_payload(
    receipt: Receipt,
    *,
    merchant_id: str,
    customer: dict[str, str],
    scanned_at: datetime | None,
    payment_methods: Mapping[str, str],
    vat_scale: int,
    agent_version: str,
    host: str | None,
    store_name: str | None = None,
    match: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The cloud payload (contracts/receipt.schema.json); `match` says which evidence carried it."""
    if not (receipt.is_sale or receipt.is_credit):
        raise ValueError(f"{receipt.receipt_type} is not a customer receipt")
    return {
        "schema": SCHEMA,
        "idempotency_key": idempotency_key(merchant_id, receipt.receipt_id),
        "merchant_id": merchant_id,
        "store": {"branch": receipt.branch, "workplace": receipt.workplace, "name": store_name},
        "customer": dict(customer),
        "pos": _pos(receipt),
        "kind": "credit" if receipt.is_credit else "sale",
        "credits_receipt_id": receipt.credited_receipt_id if receipt.is_credit else None,
        "issued_at": rfc3339(receipt.booked_at),
        "financial_date": receipt.financial_date.isoformat(),
        "currency": "EUR",
        "lines": [_line(line, receipt.vat_groups, vat_scale) for line in receipt.lines],
        "vat": [_vat(g, vat_scale) for g in receipt.vat_groups],
        "payments": [_payment(p, payment_methods) for p in receipt.payments],
        "totals": _totals(receipt),
        "scanned_at": rfc3339(scanned_at) if scanned_at is not None else None,
        **({"match": dict(match)} if match is not None else {}),
        "agent": {"version": agent_version, "host": host},
    }


def _pos(receipt: Receipt) -> dict[str, Any]:
    return {
        "system": "mpluskassa",
        "receipt_id": receipt.receipt_id,
        "transaction": receipt.transaction,
        "number": {
            "branch": receipt.branch,
            "workplace": receipt.workplace,
            "year": receipt.year,
            "number": receipt.number,
        },
        "barcode": receipt.barcode,
        "employee": receipt.employee,
    }


def _vat(group: VatGroup, vat_scale: int) -> dict[str, Any]:
    return {
        "code": group.code,
        "rate": rate_string(group.percentage, vat_scale),
        "excl": group.excl,
        "vat": group.vat,
    }


def _payment(payment: Payment, payment_methods: Mapping[str, str]) -> dict[str, Any]:
    return {
        "method": payment.method,
        "description": payment_methods.get(payment.method) or payment.description,
        "amount": payment.amount,
    }


def _totals(receipt: Receipt) -> dict[str, int]:
    """`vat` = incl − excl: the one figure computed here, the receipt does not state it."""
    return {
        "incl": receipt.total_incl,
        "excl": receipt.total_excl,
        "vat": receipt.total_incl - receipt.total_excl,
    }


def _line(line: Line, groups: tuple[VatGroup, ...], vat_scale: int) -> dict[str, Any]:
    return {
        "article_number": line.article_number,
        "plu": line.plu,
        "description": line.text,
        "quantity": decimal_string(line.quantity, line.decimal_places),
        "unit_price": line.price,
        "discount": line.discount_amount,
        "total": line.total_incl,
        "vat_rate": rate_string(_line_percentage(line, groups), vat_scale),
        "vat_code": line.vat_code,
    }


def _line_percentage(line: Line, groups: tuple[VatGroup, ...]) -> int:
    """The line's own percentage, else its VAT code's group on the receipt, else 0."""
    if line.vat_percentage is not None:
        return line.vat_percentage
    return next((g.percentage for g in groups if g.code == line.vat_code), 0)
