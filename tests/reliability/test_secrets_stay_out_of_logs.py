"""No secret, token, e-mail address or full customer code in any log line or command output.

One run of the real daemon at debug level with distinctive credentials, customers scanned as
BONIQ codes, BONIQ links and e-mail addresses, and every error that carries a URL, a server answer
or a traceback provoked on purpose: wrong POS credentials, POS server faults, dropped connections,
proxy error pages, hostile XML, cloud connection resets, 500s, 422s and 401s. Then `status`,
`outbox list/show`, `scan`, `check-config` and `doctor` run against the same configuration.
Masked forms (`j***@example.nl`, `BQ1…2C56`) are what support gets instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests
from agent_harness import ROOT, Agent, customer_code, report_figure, wait_until
from store_fault_support import count_lines

from agent.logs import mask_code
from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator

IDENT = "IdentQx7Wm2Lp"
SECRET = "KassaSecret-9Fv3Zr8Tq"
TOKEN = "CloudToken-Hx4Nw7Pc2"
EMAILS = (
    "janneke.visser.7731@example.nl",
    "pieter.devries.4410@voorbeeld.nl",
    "kassa.klant.5528@winkel.example",
)
KASSA_FAULTS = (
    {"server_fault_rate": 1.0},
    {"entity_bomb": True},
    {"drop_rate": 1.0},
    {"external_entity": True},
    {"http_status": 502},
)  # each unlike the one before


@pytest.fixture
def kassa() -> Iterator[KassaSimulator]:
    with KassaSimulator(IDENT, SECRET, seed=43) as sim:
        yield sim


@pytest.fixture
def cloud() -> Iterator[CloudSimulator]:
    with CloudSimulator(TOKEN) as sim:
        yield sim


@pytest.fixture
def agent(tmp_path, kassa, cloud) -> Iterator[Agent]:
    running = Agent(
        tmp_path,
        kassa.url,
        cloud.url,
        ident=IDENT,
        secret=SECRET,
        token=TOKEN,
        scanner_workplaces=(1, 2, 3, 4),
        extra="log_level: debug\n",
    )
    yield running
    running.close()


def cli(agent: Agent, *args: str) -> str:
    command = [sys.executable, "-m", "agent.cli", *args, "--config", str(agent.config)]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    return f"$ boniq-agent {args[0]} -> {result.returncode}\n{result.stdout}{result.stderr}"


def forbidden(codes: list[str]) -> list[str]:
    """What must never be readable: credentials, e-mail local parts, the hidden middle of codes."""
    return [
        IDENT,
        SECRET,
        TOKEN,
        *(e.split("@")[0] for e in EMAILS),
        *(code[3:-4] for code in codes),
    ]


def serve(agent: Agent, kassa: KassaSimulator, till: int, customer: str) -> str:
    agent.scan(customer, workplace=till)
    stored = customer.split("/")[-1].removeprefix("mailto:")
    wait_until(lambda: agent.claim_fenced(stored), what="the claim stored and fenced")
    return kassa.book_sale(till, after=4)


def provoke_pos_errors(agent: Agent, kassa: KassaSimulator, codes: list[str]) -> None:
    kassa.secret = "SomeOtherSecret-000"
    agent.start()
    agent.wait_ready()
    wait_until(lambda: "POS poll failed" in agent.log_text(), what="the refused credentials")
    kassa.secret = SECRET
    for n, fault in enumerate(KASSA_FAULTS, start=2):
        kassa.faults.reset()
        kassa.faults.update(fault)
        codes.append(customer_code(91_000 + n))
        agent.scan(codes[-1], workplace=3)  # a stored scan wakes the poller
        wait_until(
            lambda n=n: count_lines(agent.log_text(), "POS poll failed") >= n,
            what=f"the POS poll to fail with {fault}",
        )
    kassa.faults.reset()


def provoke_cloud_errors(
    agent: Agent, kassa: KassaSimulator, cloud: CloudSimulator, codes: list[str]
) -> None:
    codes.append(customer_code(92_000))
    cloud.faults.update(reset_rate=1.0)
    serve(agent, kassa, 1, f"https://boniq.nl/c/{codes[-1]}")
    wait_until(lambda: "receipt upload failed" in agent.log_text(), what="a reset upload")
    cloud.faults.update(reset_rate=0.0)
    wait_until(lambda: agent.summary()["outbox_delivered"] == 1, what="the first receipt")

    cloud.faults.update(force_status=500)
    serve(agent, kassa, 2, EMAILS[0])
    wait_until(lambda: count_lines(agent.log_text(), "receipt upload failed") >= 2, what="a 500")
    cloud.faults.update(force_status=422)
    wait_until(lambda: agent.summary()["outbox_dead"] == 1, what="the 422 dead letter")

    cloud.faults.update(force_status=None, token_valid=False)
    serve(agent, kassa, 4, f"mailto:{EMAILS[1]}")
    wait_until(lambda: "refuses the agent's token" in agent.log_text(), what="the 401")


def command_outputs(agent: Agent, kassa: KassaSimulator) -> list[str]:
    outputs = [
        cli(agent, "status"),
        cli(agent, "status", "--json"),
        cli(agent, "outbox", "list"),
        cli(agent, "check-config"),
        cli(agent, "doctor"),
        cli(agent, "scan", EMAILS[2], "--workplace", "1"),
    ]
    with agent.store() as store:
        ids = [item.id for item in store.outbox()]
    outputs += [cli(agent, "outbox", "show", str(item_id)) for item_id in ids]
    kassa.secret = "SomeOtherSecret-000"
    outputs.append(cli(agent, "doctor"))
    outputs.append(requests.get(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=5).text)
    return outputs


@pytest.mark.slow
def test_no_secret_email_or_code_reaches_a_log_line_or_a_command_output(agent, kassa, cloud):
    codes: list[str] = []
    provoke_pos_errors(agent, kassa, codes)
    codes.append(customer_code(90_001))
    agent.scan(codes[-1][:-1] + ("0" if codes[-1][-1] != "0" else "1"), workplace=2)  # misread
    provoke_cloud_errors(agent, kassa, cloud, codes)
    outputs = command_outputs(agent, kassa)
    assert agent.terminate() == 0

    log = agent.log_text()
    for sentence in (
        "POS poll failed",
        "receipt upload failed",
        "dead-lettered",
        "refuses the agent's token",
        "scan rejected",
        "credentials refused",
    ):
        assert sentence in log + "".join(outputs), f"{sentence!r} was never provoked"
    assert "j***@example.nl" in log and mask_code(codes[-1]) in log
    text = "\n".join([log, *outputs])
    (agent.folder / "everything-checked.txt").write_text(text)
    found = {
        value: len(re.findall(re.escape(value), text, re.IGNORECASE)) for value in forbidden(codes)
    }
    leaks = {value: n for value, n in found.items() if n}
    assert not leaks, "\n".join(
        line for line in text.splitlines() if any(v.lower() in line.lower() for v in leaks)
    )
    report_figure(
        "secrets",
        lines_checked=len(text.splitlines()),
        values_checked=len(found),
        commands=len(outputs) - 1,
        secrets_found=sum(found.values()),
    )
