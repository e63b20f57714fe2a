"""`boniq-agent demo`, the README's first command: the whole flow with no hardware or network."""

import subprocess
import sys

from agent_harness import ROOT


def demo(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "demo", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_scripted_demo_delivers_every_claimed_sale_and_nothing_else():
    result = demo()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "POS receipts booked: 6; delivered to customers: 5; unclaimed sales uploaded: 0" in out
    assert "REJECTED (looks like a product barcode" in out
    assert "credit receipt   4 till 2" in out and "CASH+PIN  → bram.dekker@example.nl" in out
    assert out.count("[till-sequence]") == 3 and out.count("[credit-link]") == 1
    assert out.count("[pos-session]") == 1  # the customer whose code the till's scanner read
    assert "customer display: BONIQ: uw bon komt in de app" in out
    assert "cashier screen (http://127.0.0.1:" in out and "Geaccepteerd b***@example.nl" in out
    assert "agent: the cashier screen shows it delivered" in out


def test_interactive_demo_takes_typed_codes():
    result = demo("--interactive", stdin="BQ17K3M9QW4RT8ZP2C56\nnot a code\n\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("receipt delivered") == 1
    assert "REJECTED" in result.stdout and "→ BQ17K3M9QW4RT8ZP2C56" in result.stdout
    assert "Cashier screen: http://127.0.0.1:" in result.stdout
