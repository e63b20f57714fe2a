"""`cashier:` in the configuration: on loopback by default, a PIN required anywhere else."""

from __future__ import annotations

import subprocess
import sys

import pytest
from agent_harness import ROOT

from agent import config

BASE = """\
store: {merchant_id: demo-merchant, branch: 1, workplace: 2}
kassa: {url: 'http://127.0.0.1:18083/', ident: my-ident, secret: my-secret}
cloud: {url: 'https://ingest.boniq.example/', token: my-token}
"""


def check_config(tmp_path, cashier: str) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(BASE + cashier)
    path.chmod(0o600)
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:9465", "192.168.1.20:9465", "[::]:9465", "till-2.shop.lan:9465"]
)
def test_check_config_refuses_a_lan_address_without_a_pin(tmp_path, listen):
    result = check_config(tmp_path, f"cashier:\n  listen: '{listen}'\n")
    assert result.returncode == 78
    assert (
        f"config.yaml:4: cashier: listen {listen} is reachable from the network: set "
        "cashier.pin" in result.stderr
    )


def test_check_config_takes_a_lan_address_with_a_pin(tmp_path):
    result = check_config(tmp_path, "cashier: {listen: '0.0.0.0:9465', pin: '4821'}\n")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("listen", ["127.0.0.1:9465", "localhost:9465", "[::1]:9465", ""])
def test_loopback_or_disabled_needs_no_pin(tmp_path, listen):
    assert check_config(tmp_path, f"cashier: {{listen: '{listen}'}}\n").returncode == 0


def test_the_defaults_are_loopback_and_dutch():
    section = config.parse(BASE).cashier
    assert (section.listen, section.pin, section.language) == ("127.0.0.1:9465", None, "nl")


def test_a_short_pin_or_an_unknown_language_is_refused(tmp_path):
    result = check_config(tmp_path, "cashier: {pin: '12', language: de}\n")
    assert result.returncode == 78
    assert "cashier.pin" in result.stderr and "cashier.language" in result.stderr
