"""doctor's signed test event (webhook mode): a `scanCode` to the running agent's receiver, as
the till sends it, whose signed answer must say `recognized: false` (the code is no customer's,
so nothing is stored)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime

from agent.config import Config
from agent.doctor import Check
from agent.errors import AgentError
from agent.http import HttpError, Transport
from agent.kassa import signature
from agent.listener import parse_listen

SELF_TEST_CODE = "BONIQ-DOCTOR-CHECK"  # not a customer code: the agent answers, stores nothing


def self_test(config: Config, transport: Transport | None = None) -> Check:
    """A signed scanCode to the running agent's receiver, as the till sends it: the agent must
    answer 200, signed with the same key, `recognized: false` (the code is no customer's)."""
    hooks = config.kassa.webhooks
    assert hooks is not None
    try:
        key = config.webhook_key()
    except AgentError as exc:
        return Check("webhook test", False, f"not sent: {exc}", "give kassa.webhooks.key_file")
    url = _self_test_url(hooks.listen)
    body = _self_test_body(config)
    keys = signature.keys(key, hooks.key_encoding)
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-Mplus-Subscription-Id": hooks.subscription_id,
        signature.HEADER: signature.sign(keys[0], body),
    }
    transport = transport or Transport(timeout=5.0, max_bytes=64 * 1024)
    try:
        answer = transport.request("POST", url, data=body, headers=headers)
    except HttpError as exc:
        return Check(
            "webhook test",
            False,
            f"no answer from {hooks.listen}: {exc}",
            "start the agent (systemctl start boniq-agent) and check kassa.webhooks."
            "listen; the till gets no answer either",
        )
    return _self_test_answer(answer.status, answer.headers, answer.body, keys, hooks.listen)


def _self_test_url(listen: str) -> str:
    """The receiver's URL on loopback (a listener on every address is reached there too)."""
    host, port = parse_listen(listen, key="kassa.webhooks.listen")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/doctor/scanCode"


def _self_test_body(config: Config) -> bytes:
    """A blocking scanCode of the test code in a new, empty session, as the till sends it."""
    return json.dumps(
        {
            "event": {
                "eventBlocking": True,
                "eventTimestamp": datetime.now().astimezone().isoformat(),
            },
            "sender": {
                "branchNumber": config.store.branch,
                "workplaceNumber": config.store.workplace,
                "instanceId": "boniq-doctor",
            },
            "session": {"sessionId": str(uuid.uuid4()), "lines": []},
            "scanCode": {"scannedCode": SELF_TEST_CODE, "codeType": "qrcode"},
        }
    ).encode()


def _self_test_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    keys: tuple[signature.Key, ...],
    listen: str,
) -> Check:
    fix = "another program may listen there: check kassa.webhooks.listen and `ss -ltnp`"
    if status != 200:
        return Check("webhook test", False, f"{listen} answered HTTP {status}", fix)
    if signature.verify(headers.get(signature.HEADER, ""), body, keys) is None:
        return Check("webhook test", False, f"{listen} answered without a valid signature", fix)
    try:
        recognized = json.loads(body)["scanCode"]["recognized"]
    except (ValueError, KeyError, TypeError):
        return Check("webhook test", False, f"{listen} answered something else than scanCode", fix)
    if recognized is not False:
        return Check(
            "webhook test",
            False,
            "the agent recognized a test code as a customer's",
            "report this: the test code must never be a customer code",
        )
    return Check(
        "webhook test",
        True,
        f"a signed scanCode to {listen} got a signed answer (recognized: false, nothing stored)",
    )
