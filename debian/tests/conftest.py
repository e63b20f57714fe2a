"""Tests of the built .deb on this machine (root, Debian 12): `.ci/check-deb` runs them as their own
CI step, after the test suite. BONIQ_DEB=path reuses a built package; otherwise `./dev deb` builds
one, once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # agent_harness


@pytest.fixture(scope="session")
def deb() -> Path:
    given = os.environ.get("BONIQ_DEB")
    if given:
        return Path(given).resolve()
    subprocess.run([str(ROOT / "dev"), "deb"], check=True, timeout=1800)
    built = sorted((ROOT / "dist").glob("boniq-agent_*.deb"))
    assert len(built) == 1, built
    return built[0]
