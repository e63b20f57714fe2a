"""A running MplusKASSA simulator on 127.0.0.1 and a client with short timeouts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest

from agent.kassa.client import KassaClient
from agent.sim.kassa import KassaSimulator

IDENT = "ident-7Qx41"
SECRET = "s3cret-Zp9w-K2"
SCHEMA_PATH = (
    Path(__file__).resolve().parents[2] / "agent" / "contracts" / "receipt.schema.json"
)
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)


def _format_checker() -> jsonschema.FormatChecker:
    """The draft's checker, with `date-time` enforced even without rfc3339-validator installed."""
    checker = jsonschema.FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def is_rfc3339(value: object) -> bool:
        if not isinstance(value, str):
            return True
        return (
            bool(_RFC3339.match(value))
            and datetime.fromisoformat(value).tzinfo is not None
        )

    return checker


@pytest.fixture(scope="session")
def receipt_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=_format_checker())


@pytest.fixture(scope="module")
def sim() -> Iterator[KassaSimulator]:
    with KassaSimulator(
        ident=IDENT, secret=SECRET, workplaces=(1, 2, 3, 4), seed=4711
    ) as running:
        yield running


@pytest.fixture()
def clean_sim(sim: KassaSimulator) -> Iterator[KassaSimulator]:
    sim.faults.reset()
    yield sim
    sim.faults.reset()


@pytest.fixture()
def client(clean_sim: KassaSimulator) -> Iterator[KassaClient]:
    kassa = KassaClient(
        clean_sim.url, IDENT, SECRET, timeout=(0.5, 0.5), max_response_bytes=1_000_000
    )
    yield kassa
    kassa.close()
