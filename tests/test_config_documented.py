"""Every configuration key is documented: in README.md's "Configuration" table and in
config.example.yaml (commented out where it has no value to show). The keys are read from the
config models, so a new key without documentation fails here."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from agent.config import SCANNERS, Config

ROOT = Path(__file__).resolve().parents[1]


def model_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    found = []
    for name, field in model.model_fields.items():
        if name == "scanners":
            continue
        options = [field.annotation, *typing.get_args(field.annotation)]
        section = next(
            (o for o in options if isinstance(o, type) and issubclass(o, BaseModel)), None
        )
        found += model_keys(section, f"{prefix}{name}.") if section else [prefix + name]
    return found


def readme_section() -> str:
    return (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]


def readme_keys() -> set[str]:
    """Keys named in the table's first column; `kassa.timeout`, `batch` names kassa.batch."""
    found = set()
    for line in readme_section().splitlines():
        if line.startswith("| `"):
            prefix = ""
            for token in re.findall(r"`([^`]+)`", line.split("|")[1]):
                prefix = token.rsplit(".", 1)[0] + "." if "." in token else prefix
                found.add(token if "." in token else prefix + token)
    return found


def test_every_config_key_has_a_row_in_the_readme():
    missing = [key for key in model_keys(Config) if key not in readme_keys()]
    assert missing == [], f"README.md 'Configuration' lacks {missing}"


def test_every_scanner_key_is_named_in_the_readmes_scanner_row():
    row = next(r for r in readme_section().splitlines() if r.startswith("| `scanners[]`"))
    fields = {f for model in SCANNERS for f in model.model_fields if f != "type"}
    assert sorted(f for f in fields if f"`{f}`" not in row) == []


def test_every_config_key_appears_in_the_example_config():
    example = (ROOT / "config.example.yaml").read_text()
    missing = [
        key
        for key in model_keys(Config)
        if not re.search(rf"(^|[\s#]){re.escape(key.rsplit('.', 1)[-1])}:", example, re.M)
    ]
    assert missing == [], f"config.example.yaml lacks {missing}"
