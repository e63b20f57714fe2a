"""doctor's webhook lines (when `kassa.webhooks` is set): does MplusKASSA post to this agent?

From `getWebhookConsumers` for the configured workplace: a consumer whose endpoint points at
`kassa.webhooks.listen` (host and port; any base path, the till appends the event name), its
subscription id, `scanCode` and `completeSession` enabled and blocking, and whether its trigger
patterns would send BONIQ codes at all. How the till applies a pattern is not documented (regex
dialect, whole code or part of it, which scans count as QR codes): each pattern is read as a Python
regex, tried with `re.fullmatch` and with `re.search`, for code types QR code and barcode, and a
code that gets through under only some of these readings is named with the ones it fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agent.codes import make_code
from agent.config import Config, WebhooksSection
from agent.doctor import Check
from agent.errors import KassaError
from agent.kassa.consumers import (
    TriggerPattern,
    WebhookConsumer,
    code_type_key,
    recommended_pattern,
)

if TYPE_CHECKING:
    from agent.kassa.client import KassaClient

MAX_PATTERN = 1000
SETUP = "Beheer → Instellingen → Webhooks"
CODE_TYPES = ("qrcode", "barcode")
Matcher = Callable[[str, str], "re.Match[str] | None"]
MATCHERS: tuple[tuple[str, Matcher], ...] = (
    ("matches the whole code", re.fullmatch),
    ("searches the code", re.search),
)
_LOOPBACK_NAMES = {"127.0.0.1", "localhost"}
_ANY_HOST = {"", "0.0.0.0", "::"}


@dataclass(frozen=True)
class Sample:
    form: str  # shown: the code itself would be masked in doctor's output
    code: str
    required: bool  # not sent: FAIL (else WARN)


def samples(url_hosts: Sequence[str]) -> list[Sample]:
    """One code of each form a customer's QR code can hold (SPEC §4)."""
    letters, digits = make_code("7K3M9QW4RT8ZP2C5"), make_code("0000000000000000")
    host = url_hosts[0] if url_hosts else "boniq.nl"
    return [
        Sample("a BONIQ code", letters, True),
        Sample("a BONIQ code of digits only", digits, True),
        Sample("a BONIQ link", f"https://{host}/c/{letters}", False),
        Sample("an e-mail QR code (mailto:)", "mailto:klant@example.nl", False),
        Sample("a bare e-mail address", "klant@example.nl", False),
    ]


def checks(client: KassaClient, config: Config) -> Iterator[Check]:
    """The webhook lines, none without `kassa.webhooks`; they stop at the first missing consumer."""
    hooks = config.kassa.webhooks
    if hooks is None:
        return
    found = _our_consumer(client, config, hooks)
    if isinstance(found, Check):
        yield found
        return
    yield from _consumer_checks(found, config, hooks)


def _where(config: Config) -> str:
    return f"workplace {config.store.workplace} of branch {config.store.branch}"


def _our_consumer(
    client: KassaClient, config: Config, hooks: WebhooksSection
) -> WebhookConsumer | Check:
    """The workplace's consumer that posts to this agent (the configured subscription id first),
    or the failing check that says why there is none."""
    branch, workplace = config.store.branch, config.store.workplace
    try:
        consumers = client.get_webhook_consumers(branch, workplace)
    except KassaError as exc:
        return Check(
            "webhooks",
            False,
            f"cannot read getWebhookConsumers: {exc}",
            "the webhook module must be licensed and the API user allowed to read webhook"
            " consumers; without them remove kassa.webhooks (polling needs none)",
        )
    if not consumers:
        return Check(
            "webhooks",
            False,
            f"no webhook consumer for {_where(config)}",
            f"add one in {SETUP}: endpoint URL http://{hooks.listen}/mplus, subscription id"
            f" {hooks.subscription_id}, the key, events scanCode and completeSession"
            " (blocking); README: webhook mode",
        )
    ours = [c for c in consumers if points_at(c.endpoint_url, hooks.listen)]
    if not ours:
        return _none_ours(consumers, _where(config), hooks.listen)
    return next((c for c in ours if c.subscription_id == hooks.subscription_id), ours[0])


def _none_ours(consumers: Sequence[WebhookConsumer], where: str, listen: str) -> Check:
    found = "; ".join(f"{_name(c)} → {_shown(c.endpoint_url)}" for c in consumers)
    return Check(
        "webhook URL",
        False,
        f"no consumer for {where} points at this agent ({listen}); found: {found}",
        f"set the endpoint URL in {SETUP} to http://{listen}/mplus (any base"
        " path: the till appends the event name) or kassa.webhooks.listen to it",
    )


def _consumer_checks(
    consumer: WebhookConsumer, config: Config, hooks: WebhooksSection
) -> Iterator[Check]:
    """How the consumer that points at this agent is set up: URL, id, events, patterns."""
    yield _url_check(consumer, hooks.listen)
    if not consumer.enabled:
        yield Check(
            "webhooks",
            False,
            f"{_name(consumer)} is disabled for {_where(config)}",
            f"enable it in {SETUP} for this workplace (or its branch)",
        )
    yield _subscription(consumer, hooks)
    yield _event(
        consumer,
        "scanCode",
        "the till does not wait for the agent: it looks the code"
        " up as an article and the cashier sees no BONIQ message",
    )
    yield _event(
        consumer,
        "completeSession",
        "the till does not wait for it and no retry is"
        " documented: a lost event leaves the sale to the next poll",
    )
    yield from _cancel_check(consumer)
    hosts = config.codes.url_hosts
    yield patterns_check(consumer.patterns, samples(hosts), recommended_pattern(hosts))


def _url_check(consumer: WebhookConsumer, listen: str) -> Check:
    shown = _shown(consumer.endpoint_url)
    if urlsplit(consumer.endpoint_url.strip()).scheme == "https":
        return Check(
            "webhook URL",
            False,
            f"{_name(consumer)}: {shown} points at this agent"
            f" ({listen}) but with https: the agent's listener speaks plain HTTP",
            f"make it http://{listen}{urlsplit(shown).path}",
        )
    return Check("webhook URL", True, f"{_name(consumer)}: {shown} points at this agent ({listen})")


def _cancel_check(consumer: WebhookConsumer) -> Iterator[Check]:
    """A warning only: without cancelSession a claim outlives its cancelled sale."""
    cancel = consumer.event("cancelSession")
    if cancel is None or not cancel.enabled:
        yield Check(
            "cancelSession",
            True,
            "not enabled: a cancelled sale's code keeps its claim until claim_ttl",
            f"tick cancelSession in {SETUP}",
            warn=True,
        )


def points_at(url: str, listen: str) -> bool:
    """Whether an endpoint URL reaches `host:port` (`[::1]:18090` too); any path."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host, _, listen_port = listen.rpartition(":")
    host = host.strip("[]").lower()
    if not listen_port.isdigit() or port != int(listen_port):
        return False
    name = parts.hostname.lower()
    return host in _ANY_HOST or name == host or {name, host} <= _LOOPBACK_NAMES


def _name(consumer: WebhookConsumer) -> str:
    return consumer.application or consumer.consumer_id or "a consumer"


def _shown(url: str) -> str:
    """The endpoint without query or user info (a back office may put a token there)."""
    try:
        parts = urlsplit(url.strip())
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "an unreadable URL"
    return f"{parts.scheme}://{netloc}{parts.path}" if netloc else repr(url[:80])


def _subscription(consumer: WebhookConsumer, hooks: WebhooksSection) -> Check:
    if consumer.subscription_id == hooks.subscription_id:
        return Check("webhook id", True, f"subscription id {hooks.subscription_id!r} as configured")
    return Check(
        "webhook id",
        False,
        f"subscription id {consumer.subscription_id!r} in MplusKASSA,"
        f" {hooks.subscription_id!r} in kassa.webhooks.subscription_id: the agent refuses"
        " every event (INVALID_SUBSCRIPTION_ID)",
        "make them equal, in the back office or in the config",
    )


def _event(consumer: WebhookConsumer, name: str, why: str) -> Check:
    event = consumer.event(name)
    if event is None or not event.enabled:
        return Check(name, False, "not enabled", f"tick {name} in {SETUP} and set it to blocking")
    if not event.blocking:
        return Check(
            name, False, f"enabled but not blocking: {why}", f"set {name} to blocking in {SETUP}"
        )
    return Check(name, True, "enabled and blocking")


# -- trigger patterns ---------------------------------------------------------------------------


def patterns_check(
    patterns: Sequence[TriggerPattern], codes: Sequence[Sample], recommended: str
) -> Check:
    fix = (
        f"use the trigger pattern {recommended} for code types QR code and barcode in {SETUP}"
        " (it holds whether the till matches the whole code or searches it); no reject pattern"
        " may match a BONIQ code"
    )
    if not patterns:
        return Check(
            "scan patterns",
            True,
            "no trigger pattern: the till presumably sends every"
            " scan, articles too, to the agent and waits for each answer",
            fix,
            warn=True,
        )
    refused, doubtful = _pattern_findings(patterns, codes)
    if refused:
        return Check("scan patterns", False, "; ".join(_unique(refused + doubtful)), fix)
    if doubtful:
        return Check("scan patterns", True, "; ".join(_unique(doubtful)), fix, warn=True)
    return Check(
        "scan patterns",
        True,
        f"BONIQ codes, links and e-mail QR codes are sent"
        f" ({len(patterns)} pattern{'s' if len(patterns) != 1 else ''}, tried as Python"
        " regex with re.fullmatch and re.search, as QR code and barcode)",
    )


def _pattern_findings(
    patterns: Sequence[TriggerPattern], codes: Sequence[Sample]
) -> tuple[list[str], list[str]]:
    """(refused, doubtful): required codes no reading sends; invalid patterns, optional codes no
    reading sends and codes sent under only some readings."""
    refused: list[str] = []
    doubtful = [
        f"{p.pattern[:60]!r} is not a valid regex ({why})"
        for p in patterns
        if (why := _invalid(p.pattern))
    ]
    for sample in codes:
        failing = _failing_readings(patterns, sample.code)
        if failing == _all_readings():
            (refused if sample.required else doubtful).append(f"{sample.form} would not be sent")
        elif len(failing) * 2 > len(CODE_TYPES) * len(MATCHERS):
            passing = _all_readings() - failing
            doubtful.append(f"{sample.form} is sent only if the till {_readings(passing)}")
        elif failing:
            doubtful.append(f"{sample.form} is not sent if the till {_readings(failing)}")
    return refused, doubtful


def _failing_readings(patterns: Sequence[TriggerPattern], code: str) -> set[tuple[str, str]]:
    """The (code type, match) readings of the patterns under which `code` is not sent."""
    return {
        (code_type, how)
        for code_type in CODE_TYPES
        for how, match in MATCHERS
        if not sends(patterns, code, code_type, match)
    }


def _all_readings() -> set[tuple[str, str]]:
    return {(code_type, how) for code_type in CODE_TYPES for how, _ in MATCHERS}


def _readings(readings: set[tuple[str, str]]) -> str:
    """Some of the till's possible readings of a pattern, as briefly as they can be said."""
    for code_type in CODE_TYPES:
        if readings == {(code_type, how) for how, _ in MATCHERS}:
            return f"reports the scan as {code_type}"
    for how, match in MATCHERS:
        if readings == {(code_type, how) for code_type in CODE_TYPES}:
            return f"{how} (re.{match.__name__})"
    names = {how: f"{how} (re.{match.__name__})" for how, match in MATCHERS}
    return " or ".join(
        f"{names[how]} and reports the scan as {code_type}" for code_type, how in sorted(readings)
    )


def sends(
    patterns: Sequence[TriggerPattern], code: str, code_type: str, match: Matcher = re.fullmatch
) -> bool:
    """Whether the till would post `code` as `scanCode`: no reject pattern of its type matches,
    and an accepting pattern of its type does, if there is any accepting pattern at all."""
    applicable = [p for p in patterns if code_type_key(p.code_type) in ("", code_type)]
    if any(p.reject and _matches(p.pattern, code, match) for p in applicable):
        return False
    if not any(not p.reject for p in patterns):
        return True
    return any(not p.reject and _matches(p.pattern, code, match) for p in applicable)


def _matches(pattern: str, code: str, match: Matcher) -> bool:
    return _invalid(pattern) is None and match(pattern, code) is not None


def _invalid(pattern: str) -> str | None:
    if len(pattern) > MAX_PATTERN:
        return f"over {MAX_PATTERN} characters"
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
