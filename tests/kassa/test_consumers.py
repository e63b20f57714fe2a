"""Webhook consumers are read tolerantly: the spelling of event names and code types is not
documented, and a server may leave optional parts out."""

from __future__ import annotations

from xml.etree.ElementTree import Element

from agent.kassa import soap
from agent.kassa.consumers import code_type_key, event_key, parse_consumer


def consumer_element(content: dict[str, object]) -> Element:
    body = soap.response_envelope(
        "GetWebhookConsumersResponse", {"webhookConsumerList": {"webhookConsumer": [content]}}
    )
    return next(soap.descendants(soap.body_element(body), "webhookConsumer", having="endpointUrl"))


def test_event_names_and_code_types_match_in_any_spelling() -> None:
    assert {
        event_key(n) for n in ("scanCode", "SCAN-CODE", "WEBHOOK-EVENT-SCAN-CODE", "scan_code")
    } == {"scancode"}
    assert {code_type_key(n) for n in ("CODE-TYPE-QRCODE", "qrcode", "QRCODE")} == {"qrcode"}
    assert code_type_key("SCAN-CODE-TYPE-BARCODE") == "barcode"
    assert code_type_key("") == ""


def test_a_consumer_reads_with_its_events_and_patterns() -> None:
    element = consumer_element(
        {
            "webhookConsumerId": "c-1",
            "applicationName": "BONIQ",
            "subscriptionId": "shop",
            "endpointUrl": " http://127.0.0.1:18090/mplus ",
            "webhookConsumerEventList": {
                "webhookConsumerEvent": [
                    {"eventName": "WEBHOOK-EVENT-SCAN-CODE", "blocking": "1", "enabled": "true"},
                    {"eventName": "completeSession", "blocking": False},
                ]
            },
            "webhookConsumerTriggerPatternList": {
                "webhookConsumerTriggerPattern": [
                    {"codeType": "CODE-TYPE-QRCODE", "pattern": " BQ1.* "},
                    {"codeType": "", "pattern": "[0-9]+", "reject": True},
                ]
            },
        }
    )
    consumer = parse_consumer(element)
    assert consumer.endpoint_url == "http://127.0.0.1:18090/mplus"
    assert consumer.enabled  # absent: not held against it
    scan = consumer.event("scanCode")
    assert scan is not None and scan.enabled and scan.blocking
    complete = consumer.event("COMPLETE-SESSION")
    assert complete is not None and not complete.enabled and not complete.blocking
    assert consumer.event("cancelSession") is None
    assert [(p.pattern, p.reject) for p in consumer.patterns] == [
        (" BQ1.* ", False),
        ("[0-9]+", True),
    ]


def test_a_disabled_consumer_reads_as_disabled() -> None:
    consumer = parse_consumer(consumer_element({"endpointUrl": "http://x/", "enabled": "false"}))
    assert not consumer.enabled and consumer.events == () and consumer.subscription_id == ""
