"""Dependency floors exclude the versions with known problems relevant here, and the versions
the tests ran with are pinned in constraints.txt, used by ./dev and the till install."""

from __future__ import annotations

import configparser
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {
    "requests": "2.32.4",  # CVE-2024-47081: .netrc credentials sent to the wrong host
    "urllib3": "2.6",  # CVE-2025-66418/66471: unbounded decompression of answers
}


def install_requires() -> dict[str, Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [
        line.strip() for line in cfg["options"]["install_requires"].splitlines() if line.strip()
    ]
    return {(r := Requirement(line)).name.lower(): r for line in lines}


def test_floors_exclude_known_problems() -> None:
    requires = install_requires()
    for name, floor in FLOORS.items():
        spec = requires[name].specifier
        assert not spec.contains(_just_below(floor)), name
        assert spec.contains(floor), name


def _just_below(version: str) -> str:
    parts = [int(p) for p in version.split(".")]
    index = max(i for i, p in enumerate(parts) if p > 0)
    parts[index] -= 1
    return ".".join(map(str, parts)) + ".99"


def test_the_build_uses_a_current_setuptools() -> None:
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    setuptools = next(Requirement(r) for r in build if r.startswith("setuptools"))
    assert not setuptools.specifier.contains("78.1.0")  # CVE-2025-47273: path traversal


def test_constraints_pin_every_requirement_within_its_range() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    for name, requirement in install_requires().items():
        key = name.replace("_", "-")
        assert key in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[key]), f"{name}=={pins[key]} vs {requirement}"


def test_dev_and_the_till_install_use_the_constraints() -> None:
    assert "-c constraints.txt" in (ROOT / "dev").read_text()
    assert "pip install -c constraints.txt ." in (ROOT / "README.md").read_text()
