"""`boniq-agent doctor` in webhook mode: what getWebhookConsumers says about this agent, one
OK/WARN/FAIL line per point with the fix, against the real simulator over HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from agent_harness import ROOT, Agent

from agent import codes
from agent.doctor_webhooks import patterns_check, points_at, samples
from agent.kassa.consumers import TriggerPattern, recommended_pattern
from agent.sim.cloud import CloudSimulator
from agent.sim.consumers import SimConsumer
from agent.sim.kassa import KassaSimulator

LISTEN = "127.0.0.1:18091"
SUBSCRIPTION = "boniq-shop-1"
NAMES = (
    "webhooks",
    "webhook URL",
    "webhook id",
    "scanCode",
    "completeSession",
    "cancelSession",
    "scan patterns",
    "webhook test",
)


@pytest.fixture
def sims() -> Iterator[tuple[KassaSimulator, CloudSimulator]]:
    with KassaSimulator(workplaces=(1, 2)) as kassa, CloudSimulator("demo-token") as cloud:
        yield kassa, cloud


@pytest.fixture
def webhook_agent(tmp_path: Path, sims: tuple[KassaSimulator, CloudSimulator]) -> Iterator[Agent]:
    kassa, cloud = sims
    assert cloud.url is not None
    agent = Agent(tmp_path, kassa.url, cloud.url)
    text = agent.config.read_text()
    agent.config.write_text(
        re.sub(
            r"^(kassa: \{.*)\}$",
            rf"\1, webhooks: {{listen: '{LISTEN}', subscription_id: {SUBSCRIPTION},"
            r" key: 'eFc5HrxwLbONJ+EYXrbHB+a9HueYIQzotgKRLRVAfx0='}}",
            text,
            count=1,
            flags=re.MULTILINE,
        )
    )
    assert "webhooks:" in agent.config.read_text()
    try:
        yield agent
    finally:
        agent.close()


def consumer(**changes: Any) -> dict[str, Any]:
    return {
        "endpoint_url": f"http://{LISTEN}/mplus",
        "subscription_id": SUBSCRIPTION,
        "application_name": "BONIQ agent",
        **changes,
    }


def doctor(agent: Agent) -> tuple[int, dict[str, str], str]:
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "doctor", "--config", str(agent.config)],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    found = {}
    lines = result.stdout.splitlines()
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        for name in NAMES:
            if line[6:].startswith(name + " "):
                found[name] = line + ("\n" + after if after.lstrip().startswith("fix:") else "")
    return result.returncode, found, result.stdout


def test_a_consumer_set_up_as_the_readme_says_is_all_ok(
    webhook_agent: Agent, sims: tuple[KassaSimulator, Any]
) -> None:
    sims[0].webhook_consumers = [SimConsumer.of(consumer())]
    webhook_agent.start()
    webhook_agent.wait_ready()
    code, found, out = doctor(webhook_agent)
    assert code == 0, out
    for name in (
        "webhook URL",
        "webhook id",
        "scanCode",
        "completeSession",
        "scan patterns",
        "webhook test",
    ):
        assert found[name].startswith("OK"), found.get(name, out)
    assert f"points at this agent ({LISTEN})" in found["webhook URL"]
    assert "cancelSession" not in found
    assert webhook_agent.summary()["claims_by_state"]["pending"] == 0  # the test stored nothing


def test_the_signed_test_event_says_when_the_agent_does_not_answer(
    webhook_agent: Agent, sims: tuple[KassaSimulator, Any]
) -> None:
    sims[0].webhook_consumers = [SimConsumer.of(consumer())]
    code, found, out = doctor(webhook_agent)  # the agent is not running
    assert code == 1
    assert found["webhook test"].startswith("FAIL") and "no answer from" in found["webhook test"]
    assert "start the agent" in found["webhook test"]


def test_no_consumer_for_the_workplace_is_a_fail_with_the_set_up(
    webhook_agent: Agent, sims: tuple[KassaSimulator, Any]
) -> None:
    sims[0].webhook_consumers = [SimConsumer.of(consumer(workplaces=[1]))]  # the agent is till 2
    code, found, _ = doctor(webhook_agent)
    assert code == 1
    assert (
        found["webhooks"].startswith("FAIL")
        and "no webhook consumer for workplace 2" in found["webhooks"]
    )
    assert f"http://{LISTEN}/mplus" in found["webhooks"] and SUBSCRIPTION in found["webhooks"]


def test_an_endpoint_elsewhere_is_named_without_its_query(
    webhook_agent: Agent, sims: tuple[KassaSimulator, Any]
) -> None:
    sims[0].webhook_consumers = [
        SimConsumer.of(
            consumer(
                endpoint_url="https://pay.example/mplus/webhooks?token=t0ps3cret",
                application_name="Pay.",
            )
        )
    ]
    code, found, out = doctor(webhook_agent)
    assert code == 1
    assert found["webhook URL"].startswith("FAIL")
    assert "Pay. → https://pay.example/mplus/webhooks" in found["webhook URL"]
    assert "t0ps3cret" not in out
    assert "scanCode" not in found  # nothing else is judged on another app's consumer


def test_https_to_the_agent_is_a_fail(
    webhook_agent: Agent, sims: tuple[KassaSimulator, Any]
) -> None:
    sims[0].webhook_consumers = [SimConsumer.of(consumer(endpoint_url=f"https://{LISTEN}/mplus"))]
    code, found, _ = doctor(webhook_agent)
    assert code == 1
    assert found["webhook URL"].startswith("FAIL") and "plain HTTP" in found["webhook URL"]
    assert f"make it http://{LISTEN}/mplus" in found["webhook URL"]


def test_wrong_subscription_id_and_events_not_blocking_are_each_a_fail(
    webhook_agent: Agent, sims: tuple[KassaSimulator, Any]
) -> None:
    events = {
        "scanCode": {"enabled": True, "blocking": False},
        "completeSession": {"enabled": False, "blocking": True},
    }
    sims[0].webhook_consumers = [
        SimConsumer.of(
            consumer(
                subscription_id="shop-old",
                events=events,
                endpoint_url=f"http://{LISTEN}/some/base/path/",
            )
        )
    ]
    code, found, _ = doctor(webhook_agent)
    assert code == 1
    assert found["webhook URL"].startswith("OK")  # any base path
    assert found["webhook id"].startswith("FAIL") and "'shop-old'" in found["webhook id"]
    assert found["scanCode"].startswith("FAIL") and "not blocking" in found["scanCode"]
    assert "set scanCode to blocking" in found["scanCode"]
    assert found["completeSession"].startswith("FAIL") and "not enabled" in found["completeSession"]
    assert found["cancelSession"].startswith("WARN")


def test_a_pattern_that_does_not_send_boniq_codes_is_a_fail(
    webhook_agent: Agent, sims: tuple[KassaSimulator, Any]
) -> None:
    sims[0].webhook_consumers = [
        SimConsumer.of(consumer(patterns=[{"code_type": "CODE-TYPE-BARCODE", "pattern": "25.*"}]))
    ]
    code, found, _ = doctor(webhook_agent)
    assert code == 1
    assert found["scan patterns"].startswith("FAIL")
    assert "a BONIQ code would not be sent" in found["scan patterns"]
    assert recommended_pattern() in found["scan patterns"]  # the fix


def test_the_control_endpoint_sets_the_consumers(sims: tuple[KassaSimulator, Any]) -> None:
    kassa = sims[0]
    answer = requests.post(
        f"{kassa.url}_sim/webhook-consumers", json={"consumers": [consumer()]}, timeout=5
    )
    assert answer.status_code == 200 and answer.json() == {"consumers": 1}
    assert kassa.webhook_consumers[0].subscription_id == SUBSCRIPTION
    bad = requests.post(
        f"{kassa.url}_sim/webhook-consumers", json={"consumers": [{"endpoint_url": "x"}]}, timeout=5
    )
    assert bad.status_code == 400


# -- the pattern and endpoint rules -------------------------------------------------------------

SAMPLES = samples(["boniq.nl"])


def check_of(*patterns: tuple[str, str, bool]) -> Any:
    return patterns_check(
        [TriggerPattern(t, p, r) for t, p, r in patterns], SAMPLES, recommended_pattern()
    )


def test_the_samples_are_codes_the_agent_accepts() -> None:
    kinds = {codes.parse(s.code).kind for s in SAMPLES}
    assert kinds == {"boniq_code", "email"}
    assert [codes.parse(s.code).kind for s in SAMPLES if s.required] == ["boniq_code"] * 2


def test_the_recommended_pattern_sends_every_form_in_every_reading() -> None:
    check = check_of(
        ("CODE-TYPE-QRCODE", recommended_pattern(), False),
        ("CODE-TYPE-BARCODE", recommended_pattern(), False),
    )
    assert check.ok and not check.warn, check.line()


def test_a_prefix_pattern_without_a_trailing_wildcard_holds_only_if_the_till_searches() -> None:
    check = check_of(("", r"^([Bb][Qq]1|https://(app\.)?boniq\.nl/|mailto:|[^@\s]+@)", False))
    assert check.ok and check.warn
    assert (
        "a BONIQ code is not sent if the till matches the whole code (re.fullmatch)" in check.detail
    )


def test_an_unanchored_prefix_works_only_if_the_till_searches() -> None:
    check = check_of(("", "BQ1", False), ("", ".*[@].*", False))
    assert check.ok and check.warn, check.line()
    assert "if the till matches the whole code (re.fullmatch)" in check.detail


def test_a_pattern_for_one_code_type_says_which() -> None:
    check = check_of(("CODE-TYPE-QRCODE", recommended_pattern(), False), ("", ".*[@].*", False))
    assert check.ok and check.warn
    assert "if the till reports the scan as barcode" in check.detail


def test_a_reject_pattern_that_matches_boniq_codes_is_a_fail() -> None:
    check = check_of(("", ".*", False), ("", "^BQ.*", True))
    assert not check.ok and "a BONIQ code would not be sent" in check.detail


def test_only_reject_patterns_for_articles_let_boniq_codes_through() -> None:
    check = check_of(("", "^[0-9]{13}$", True))
    assert check.ok and not check.warn, check.line()


def test_an_unanchored_reject_pattern_for_articles_can_catch_a_code_of_digits() -> None:
    check = check_of(("", "[0-9]{13}", True))
    assert check.ok and check.warn
    assert (
        "a BONIQ code of digits only is not sent if the till searches the code (re.search)"
        in check.detail
    )


def test_links_and_e_mail_refused_are_a_warning_not_a_fail() -> None:
    check = check_of(("", "BQ1[0-9A-Z]{17}", False))
    assert check.ok and check.warn
    assert "a BONIQ link is not sent if the till matches the whole code" in check.detail
    assert "an e-mail QR code (mailto:) would not be sent" in check.detail


def test_a_code_sent_under_one_reading_only_names_that_reading() -> None:
    check = check_of(("CODE-TYPE-BARCODE", "BQ1", False), ("", ".*[@].*", False))
    assert check.ok and check.warn
    assert (
        "a BONIQ code is sent only if the till searches the code (re.search) and reports the"
        " scan as barcode"
    ) in check.detail


def test_a_broken_regex_is_named() -> None:
    check = check_of(("", "BQ1[", False))
    assert not check.ok and "'BQ1[' is not a valid regex" in check.detail


def test_no_pattern_is_a_warning() -> None:
    check = patterns_check([], SAMPLES, recommended_pattern())
    assert check.ok and check.warn and "every scan" in check.detail


@pytest.mark.parametrize(
    ("url", "listen", "expected"),
    [
        ("http://127.0.0.1:18090/mplus", "127.0.0.1:18090", True),
        ("http://127.0.0.1:18090", "127.0.0.1:18090", True),
        ("http://localhost:18090/a/b/", "127.0.0.1:18090", True),
        ("http://192.168.1.20:18090/mplus", "0.0.0.0:18090", True),
        ("http://[::1]:18090/mplus", "[::1]:18090", True),
        ("http://127.0.0.1:18091/mplus", "127.0.0.1:18090", False),
        ("http://192.168.1.20:18090/mplus", "127.0.0.1:18090", False),
        ("https://connector.example/mplus", "127.0.0.1:18090", False),
        ("http://127.0.0.1:99999/", "127.0.0.1:18090", False),
        ("not a url", "127.0.0.1:18090", False),
    ],
)
def test_an_endpoint_points_at_the_listen_address_by_host_and_port(
    url: str, listen: str, expected: bool
) -> None:
    assert points_at(url, listen) is expected
