"""The simulator's webhook consumers: what its `getWebhookConsumers` answers (WSDL
`WebhookConsumer`, in WSDL order), set by `KassaSimulator(webhook_consumers=…)` or
`POST /_sim/webhook-consumers [{"endpoint_url": …, "subscription_id": …}, …]`.

`events` maps an event name to `{"enabled": …, "blocking": …}`; `patterns` lists
`{"code_type": "CODE-TYPE-QRCODE", "pattern": …, "reject": false}`; `workplaces` (None: all)
limits the workplaces the consumer is resolved for.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.kassa.consumers import recommended_pattern

BOOKING_EVENTS = (
    "startSession",
    "addSessionLine",
    "updateSessionLine",
    "removeSessionLine",
    "startPayment",
    "cancelPayment",
    "cancelSession",
    "creditSession",
)


def _default_events() -> dict[str, dict[str, bool]]:
    events = {name: {"enabled": True, "blocking": False} for name in BOOKING_EVENTS}
    events["scanCode"] = {"enabled": True, "blocking": True}
    events["completeSession"] = {"enabled": True, "blocking": True}
    return events


def _default_patterns() -> list[dict[str, Any]]:
    return [
        {"code_type": kind, "pattern": recommended_pattern(), "reject": False}
        for kind in ("CODE-TYPE-QRCODE", "CODE-TYPE-BARCODE")
    ]


@dataclass(frozen=True)
class SimConsumer:
    """One consumer; the defaults are a BONIQ set-up as the README describes it."""

    endpoint_url: str
    subscription_id: str
    application_name: str = "BONIQ"
    events: Mapping[str, Mapping[str, bool]] = field(default_factory=_default_events)
    patterns: Sequence[Mapping[str, Any]] = field(default_factory=_default_patterns)
    enabled: bool = True
    workplaces: Sequence[int] | None = None
    consumer_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def of(cls, value: SimConsumer | Mapping[str, Any]) -> SimConsumer:
        if isinstance(value, SimConsumer):
            return value
        if not isinstance(value, Mapping):
            raise TypeError("a webhook consumer is a JSON object")
        if not {"endpoint_url", "subscription_id"} <= set(value):
            raise ValueError("a webhook consumer needs endpoint_url and subscription_id")
        known = set(cls.__dataclass_fields__)
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown webhook consumer fields: {sorted(unknown)}")
        consumer = cls(**value)
        for options in consumer.events.values():
            if not isinstance(options, Mapping):
                raise TypeError('each event is {"enabled": …, "blocking": …}')
        for pattern in consumer.patterns:
            if not isinstance(pattern, Mapping) or "pattern" not in pattern:
                raise ValueError('each trigger pattern is {"code_type": …, "pattern": …}')
        return consumer

    def resolved_for(self, workplace: int) -> bool:
        return self.workplaces is None or workplace in self.workplaces

    def xml(self, branch: int, workplace: int) -> dict[str, Any]:
        """`WebhookConsumer` resolved for one workplace, every required element present."""
        return {
            "webhookConsumerId": self.consumer_id,
            "applicationName": self.application_name,
            "subscriptionId": self.subscription_id,
            "endpointUrl": self.endpoint_url,
            "authenticationType": "WEBHOOK-AUTHENTICATION-TYPE-TOKEN",
            "authenticationScope": "",
            "webhookConsumerEventList": {
                "webhookConsumerEvent": [
                    {
                        "eventName": name,
                        "blocking": bool(options.get("blocking", False)),
                        "enabled": bool(options.get("enabled", True)),
                    }
                    for name, options in self.events.items()
                ]
            },
            "webhookConsumerTriggerPatternList": {
                "webhookConsumerTriggerPattern": [
                    {
                        "codeType": str(p.get("code_type", "CODE-TYPE-QRCODE")),
                        "pattern": str(p["pattern"]),
                        "reject": bool(p.get("reject", False)),
                    }
                    for p in self.patterns
                ]
            },
            "webhookConsumerWorkplaceList": {},
            "webhookConsumerPaymentMethodList": {},
            "companyName": "BONIQ",
            "enabled": self.enabled,
            "workplaceKey": {"branchNumber": branch, "workplaceNumber": workplace},
        }
