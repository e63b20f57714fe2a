"""Shared by the store-fault tests: a feedback recorder, log-line counting (the simulators are
the kassa and cloud fixtures of tests/conftest.py)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path


class FeedbackRecorder:
    """A feedback command that appends its kind (accepted/rejected/delivered) to a file."""

    def __init__(self, folder: Path) -> None:
        self.file = folder / "feedback.log"
        self.script = folder / "feedback.sh"
        self.script.write_text(f'#!/bin/sh\necho "$BONIQ_FEEDBACK" >> "{self.file}"\n')
        self.script.chmod(0o755)

    def config(self) -> str:
        command = str(self.script)
        return (
            f"feedback: {{accepted: '{command}', rejected: '{command}', delivered: '{command}'}}\n"
        )

    def counts(self) -> Counter[str]:
        return Counter(self.file.read_text().split()) if self.file.exists() else Counter()


def count_lines(log: str, sentence: str) -> int:
    return sum(1 for line in log.splitlines() if sentence in line)


def tracebacks(log: str) -> int:
    return len(re.findall(r"^(<\d>)?Traceback \(most recent call last\)", log, re.MULTILINE))
