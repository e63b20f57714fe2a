"""The Prometheus rules pass promtool, and every PromQL expression in the rules and the Grafana
dashboard reads metrics (and labels) that the real daemon exports on its live /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import promql_parser
import pytest
import requests
import yaml
from agent_harness import Agent, customer_code, wait_until
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import _CLAIM_ENDS
from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "grafana" / "boniq-agent.json"
# Labels Prometheus adds to every series of a target (the scrape config sets `branch`).
TARGET_LABELS = {"instance", "job", "branch", "workplace"}
# Series Prometheus makes itself, not the agent.
SYNTHETIC = {"up"}
# Store-derived: a claim state appears once the store holds a claim in it.
KNOWN_VALUES = {("boniq_agent_claims", "state"): {"pending", *_CLAIM_ENDS}}
ALERTS = {
    "BoniqAgentDown",
    "BoniqOutboxBacklogOld",
    "BoniqDeadLetters",
    "BoniqPosPollsFailing",
    "BoniqCloudTokenRefused",
    "BoniqScannerDown",
    "BoniqUnsureClaimsRising",
    "BoniqPosClockOffset",
    "BoniqDataDirDiskFull",
}
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$branch": ".*",
    "$instance": ".*",
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: ./dev setup installs Debian's prometheus package"
    return path


def test_promtool_accepts_the_rules() -> None:
    run = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in run.stdout


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    run = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULE_TESTS.parent,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    tested = {
        t["alertname"]
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in group.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    assert tested == ALERTS


def test_every_alert_tells_support_which_command_to_run() -> None:
    for rule in rules():
        text = rule["annotations"]["description"]
        assert re.search(r"`boniq-agent (doctor|claims|outbox|status|scan)", text), rule["alert"]


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            match = re.fullmatch(r"label_values\((.+), *\w+\)", query["query"])
            assert match, query
            exprs.append(match.group(1))
    return exprs


def expressions() -> list[str]:
    exprs = [r["expr"] for r in rules()] + dashboard_expressions()
    for variable, value in GRAFANA_VARIABLES.items():
        exprs = [e.replace(variable, value) for e in exprs]
    return exprs


def selectors(node: object) -> Iterator[promql_parser.VectorSelector]:
    """Every vector selector in a parsed expression, however deeply nested."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
    elif isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from selectors(node.lhs)
        yield from selectors(node.rhs)
    elif isinstance(node, promql_parser.AggregateExpr):
        yield from selectors(node.expr)
        if node.param is not None:
            yield from selectors(node.param)
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from selectors(arg)
    elif isinstance(
        node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)
    ):
        yield from selectors(node.expr)


def test_the_dashboard_covers_fleet_and_till() -> None:
    text = "\n".join(dashboard_expressions())
    for wanted in (
        "boniq_agent_scans_total",
        "boniq_agent_uploads_total",
        "outbox_items",
        "oldest_pending",
        "pos_poll_errors_total",
        "boniq_agent_claims{",
        'branch=~"$branch"',
        'instance=~"$instance"',
    ):
        assert wanted in text


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, set[str]]]:
    """metric sample name -> label name -> values, from the real daemon's /metrics."""
    folder = tmp_path_factory.mktemp("agent")
    with KassaSimulator(seed=14) as kassa, CloudSimulator("demo-token") as cloud:
        agent = Agent(folder, kassa.url, cloud.url)
        try:
            agent.start()
            agent.wait_ready()
            code = customer_code(14)
            agent.scan(code)  # a pending claim, so the claims gauge has a state
            wait_until(lambda: agent.has_claim(code), what="the claim")
            url = f"http://127.0.0.1:{agent.metrics_port}/metrics"
            wait_until(
                lambda: "boniq_agent_scanner_up{" in requests.get(url, timeout=5).text,
                what="the scanner source to report",
            )
            text = requests.get(url, timeout=5).text
            assert agent.terminate() == 0
        finally:
            agent.close()
    exported: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = exported.setdefault(sample.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    return exported


@pytest.mark.parametrize("expr", expressions())
def test_every_expression_reads_metrics_the_agent_exports(
    expr: str, live_metrics: dict[str, dict[str, set[str]]]
) -> None:
    found = list(selectors(promql_parser.parse(expr)))
    assert found, f"no metric in {expr!r}"
    for selector in found:
        name = selector.name
        if name in SYNTHETIC:
            continue
        assert name in live_metrics, f"{name} (in {expr!r}) is not on the agent's /metrics"
        for matcher in selector.matchers.matchers:
            if matcher.name in TARGET_LABELS:
                continue
            values = live_metrics[name].get(matcher.name)
            assert values is not None, f"{name} has no label {matcher.name!r} (in {expr!r})"
            if str(matcher.op) == "MatchOp.Equal":
                known = values | KNOWN_VALUES.get((name, matcher.name), set())
                assert matcher.value in known, (
                    f"{name}{{{matcher.name}={matcher.value!r}}} never exported"
                )


def test_the_scanner_and_disk_gauges_report_the_running_daemon(
    live_metrics: dict[str, dict[str, set[str]]],
) -> None:
    assert any(
        s.startswith("serial:/dev/") for s in live_metrics["boniq_agent_scanner_up"]["source"]
    )
    assert "boniq_agent_data_dir_free_bytes" in live_metrics
    assert "boniq_agent_pos_clock_tolerance_seconds" in live_metrics
