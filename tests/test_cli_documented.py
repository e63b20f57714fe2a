"""Every command of the CLI is in README.md and answers --help (sqlite-utils' rule)."""

import argparse
from pathlib import Path

import pytest

from agent.cli import build_parser, main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = (*prefix, name)
                nested = list(commands(sub, path))
                yield from nested or [path]


ALL = list(commands(build_parser()))


def test_the_pinned_commands_exist():
    names = {" ".join(c) for c in ALL}
    assert {"run", "check-config", "doctor", "status", "outbox list", "outbox show",
            "outbox retry", "scan", "demo", "sim kassa", "sim cloud"} <= names


@pytest.mark.parametrize("command", ALL, ids=" ".join)
def test_command_is_documented_in_readme(command):
    assert f"boniq-agent {' '.join(command)}" in README


@pytest.mark.parametrize("command", ALL, ids=" ".join)
def test_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: boniq-agent" in capsys.readouterr().out
