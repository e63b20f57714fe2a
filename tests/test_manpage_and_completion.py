"""The man page and bash completion the Debian package installs know every command of the CLI."""

import argparse
import subprocess
import sys
from pathlib import Path

from agent.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
MANPAGE = ROOT / "debian" / "boniq-agent.1"
COMPLETION = ROOT / "debian" / "boniq-agent.bash-completion"


def top_level_commands() -> set[str]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("no subcommands")


def test_the_man_page_describes_every_command() -> None:
    described = {
        line.split()[1]
        for line in MANPAGE.read_text().splitlines()
        if line.startswith((".B ", ".BI ")) and len(line.split()) > 1
    }
    described = {word.strip('"').split("\\")[0] for word in described}
    assert top_level_commands() <= described


def test_bash_completion_offers_every_command_and_the_outbox_actions(tmp_path: Path) -> None:
    shim = tmp_path / "boniq-agent"  # the command as the package puts it on PATH
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m agent.cli "$@"\n')
    shim.chmod(0o755)
    script = (
        f"PATH={tmp_path}:$PATH; source {COMPLETION}; "
        'COMP_WORDS=(boniq-agent ""); COMP_CWORD=1; _boniq_agent; echo "${COMPREPLY[*]}"; '
        'COMP_WORDS=(boniq-agent outbox ""); COMP_CWORD=2; _boniq_agent; echo "${COMPREPLY[*]}"; '
        'COMP_WORDS=(boniq-agent outbox list --s); COMP_CWORD=3; _boniq_agent; echo "${COMPREPLY[*]}"'
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    commands, actions, options = done.stdout.splitlines()
    assert set(commands.split()) == top_level_commands()
    assert set(actions.split()) == {"list", "show", "retry"}
    assert options.split() == ["--state"]
