"""Shared by every test folder: tests/ on sys.path (agent_harness), the receipt validator and
the simulators most tests run against (a folder's conftest.py or a module may define its own)."""

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from agent.queue.store import Store
from agent.sim.cloud import CloudSimulator, format_checker
from agent.sim.kassa import KassaSimulator

sys.path.insert(0, str(Path(__file__).resolve().parent))

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "agent" / "contracts" / "receipt.schema.json"


@pytest.fixture(scope="session")
def receipt_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=format_checker())


def pytest_sessionstart(session):
    from agent_harness import FIGURES

    FIGURES.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter):
    from agent_harness import FIGURES

    if FIGURES.exists():
        terminalreporter.section("reliability figures")
        for line in FIGURES.read_text().splitlines():
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True, scope="session")
def _no_credentials_of_this_machine(tmp_path_factory):
    """check-config and doctor fall back to the unit's LoadCredential= sources in /etc/boniq-agent;
    an empty $CREDENTIALS_DIRECTORY keeps the tests from depending on what this machine has there."""
    previous = os.environ.get("CREDENTIALS_DIRECTORY")
    os.environ["CREDENTIALS_DIRECTORY"] = str(tmp_path_factory.mktemp("no-credentials"))
    yield
    if previous is None:
        os.environ.pop("CREDENTIALS_DIRECTORY", None)
    else:
        os.environ["CREDENTIALS_DIRECTORY"] = previous


@pytest.fixture
def sim_seed() -> int | None:
    """The kassa fixture's random sales: a module or folder overrides this to fix them."""
    return None


@pytest.fixture
def cloud_seed() -> int | None:
    """The cloud fixture's random faults: a module or folder overrides this to fix them."""
    return None


@pytest.fixture
def kassa(sim_seed: int | None) -> Iterator[KassaSimulator]:
    """A MplusKASSA simulator on 127.0.0.1 with the demo credentials."""
    with KassaSimulator(seed=sim_seed) as sim:
        yield sim


@pytest.fixture
def cloud(cloud_seed: int | None) -> Iterator[CloudSimulator]:
    """A BONIQ cloud simulator on 127.0.0.1 taking `demo-token`."""
    with CloudSimulator("demo-token", seed=cloud_seed) as sim:
        yield sim


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real Store in tmp_path/data."""
    with Store.open(tmp_path / "data") as opened:
        yield opened
