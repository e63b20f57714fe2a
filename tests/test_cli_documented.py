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
    assert {
        "run",
        "check-config",
        "doctor",
        "status",
        "outbox list",
        "outbox show",
        "outbox retry",
        "scan",
        "demo",
        "sim kassa",
        "sim cloud",
    } <= names


@pytest.mark.parametrize("command", ALL, ids=" ".join)
def test_command_is_documented_in_readme(command):
    assert f"boniq-agent {' '.join(command)}" in README


@pytest.mark.parametrize("command", ALL, ids=" ".join)
def test_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: boniq-agent" in capsys.readouterr().out


def parser_for(command: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in command:
        [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = sub.choices[name]
    return parser


def options(command: tuple[str, ...]) -> list[argparse.Action]:
    return [
        a
        for a in parser_for(command)._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    ]


@pytest.mark.parametrize("command", ALL, ids=" ".join)
def test_every_option_and_argument_has_help(command):
    undocumented = [a.dest for a in options(command) if not a.help or a.help == argparse.SUPPRESS]
    assert undocumented == []


GLOBAL = {"--config", "--verbose"}  # documented once, above the table


@pytest.mark.parametrize("command", ALL, ids=" ".join)
def test_every_option_is_in_the_readme_row_of_its_command(command):
    rows = [
        line
        for line in README.splitlines()
        if line.startswith(f"| `boniq-agent {' '.join(command)}")
    ]
    assert rows, f"no README row for {' '.join(command)}"
    longs = {o for a in options(command) for o in a.option_strings if o.startswith("--")} - GLOBAL
    assert {o for o in longs if not any(o in row for row in rows)} == set()


def test_readme_and_help_list_the_same_exit_statuses():
    import re

    epilog = build_parser().epilog
    documented = README.split("Exit statuses:", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"\b(\d+) ", epilog)) == set(re.findall(r"`(\d+)`", documented))


def test_global_options_are_accepted_before_the_command(tmp_path, capsys):
    missing = tmp_path / "nowhere.yaml"
    assert main(["--config", str(missing), "status"]) == 78
    assert main(["-v", "-c", str(missing), "outbox", "list"]) == 78
    assert capsys.readouterr().err.count(str(missing)) == 2


def test_help_never_breaks_the_default_config_path(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "/etc/boniq-agent/config.yaml" in capsys.readouterr().out
