"""Webhook consumers as `getWebhookConsumers` resolves them for one workplace (WSDL
`WebhookConsumer`, reference/mplus-webhooks.md §4): where the till posts its events, which events
it posts and waits for, and which scanned codes it sends at all.

Parsing is tolerant: the spelling of `eventName` (`scanCode`, `SCAN-CODE`, `WEBHOOK-EVENT-SCAN-CODE`)
and of `codeType` (`CODE-TYPE-QRCODE`, `qrcode`) is not documented, so both are compared in a
normalised form. A missing `enabled` or `blocking` of an event reads as false, a missing text as
empty; the consumer's own `enabled` (required by the WSDL) reads as true when absent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from agent.kassa import soap

_NOT_ALNUM = re.compile(r"[^0-9a-z]")


def recommended_pattern(url_hosts: Sequence[str] = ("boniq.nl", "app.boniq.nl")) -> str:
    """One trigger pattern for a BONIQ code, its link and an e-mail QR code, that holds whether
    the till matches it against the whole code or searches it (the trailing `.*`). `[@]`, not
    `@`: doctor's output masks anything that looks like an e-mail address."""
    hosts = "|".join(re.escape(h) for h in url_hosts) or r"boniq\.nl"
    return rf"^([Bb][Qq]1|https://({hosts})/|mailto:|[^\s]+[@]).*"


def event_key(name: str) -> str:
    """`scanCode`, `SCAN_CODE`, `WEBHOOK-EVENT-SCAN-CODE` → `scancode`."""
    return _NOT_ALNUM.sub("", name.lower()).removeprefix("webhookevent")


def code_type_key(name: str) -> str:
    """`CODE-TYPE-QRCODE`, `qrcode`, `SCAN-CODE-TYPE-BARCODE` → `qrcode`, `barcode`; `` for any."""
    return _NOT_ALNUM.sub("", name.lower()).removeprefix("scan").removeprefix("codetype")


@dataclass(frozen=True)
class ConsumerEvent:
    name: str
    enabled: bool
    blocking: bool


@dataclass(frozen=True)
class TriggerPattern:
    code_type: str
    pattern: str
    reject: bool


@dataclass(frozen=True)
class WebhookConsumer:
    consumer_id: str
    application: str
    subscription_id: str
    endpoint_url: str
    enabled: bool
    events: tuple[ConsumerEvent, ...]
    patterns: tuple[TriggerPattern, ...]

    def event(self, name: str) -> ConsumerEvent | None:
        key = event_key(name)
        return next((e for e in self.events if event_key(e.name) == key), None)


def _flag(element: Element, name: str) -> bool:
    return (soap.text(element, name) or "").lower() in ("true", "1")


def _raw(element: Element, name: str) -> str:
    """Unstripped: a regex's spaces are part of it."""
    found = soap.child(element, name)
    return (found.text or "") if found is not None else ""


def parse_consumer(element: Element) -> WebhookConsumer:
    events = tuple(
        ConsumerEvent(soap.text(e, "eventName") or "", _flag(e, "enabled"), _flag(e, "blocking"))
        for e in soap.descendants(element, "webhookConsumerEvent", having="eventName")
    )
    patterns = tuple(
        TriggerPattern(soap.text(p, "codeType") or "", _raw(p, "pattern"), _flag(p, "reject"))
        for p in soap.descendants(element, "webhookConsumerTriggerPattern", having="pattern")
    )
    enabled = soap.text(element, "enabled")
    return WebhookConsumer(
        consumer_id=soap.text(element, "webhookConsumerId") or "",
        application=soap.text(element, "applicationName") or "",
        subscription_id=soap.text(element, "subscriptionId") or "",
        endpoint_url=soap.text(element, "endpointUrl") or "",
        enabled=enabled is None or enabled.lower() in ("true", "1"),
        events=events,
        patterns=patterns,
    )
