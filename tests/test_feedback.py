"""Cashier feedback runs real commands without holding up the scan that triggered them."""

from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.feedback import Feedback


def wait_for_file(path: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def reported(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.fields["kind"], r.fields["error"])
        for r in caplog.records
        if r.getMessage() == "feedback command failed"
    ]


def test_each_kind_runs_its_own_command(tmp_path: Path) -> None:
    log_file = tmp_path / "feedback.log"
    append = f"sh -c 'echo \"$BONIQ_FEEDBACK $0\" >> {shlex.quote(str(log_file))}'"
    feedback = Feedback(f"{append} beep-high", f"{append} beep-low", f"{append} blink")
    feedback.accepted()
    assert feedback.wait_idle(10)
    feedback.rejected()
    assert feedback.wait_idle(10)
    feedback.delivered()
    assert feedback.wait_idle(10)
    assert log_file.read_text().splitlines() == [
        "accepted beep-high",
        "rejected beep-low",
        "delivered blink",
    ]


def test_the_caller_is_not_held_up_by_a_slow_command(tmp_path: Path) -> None:
    go, done = tmp_path / "go", tmp_path / "done"
    script = f"while [ ! -e {go} ]; do sleep 0.02; done; touch {done}"
    feedback = Feedback(accepted=f"sh -c {shlex.quote(script)}", timeout=20)
    feedback.accepted()
    go.touch()
    assert wait_for_file(done), "the command ran on after accepted() returned"


def test_a_hanging_command_is_killed_and_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "survived"
    feedback = Feedback(rejected=f"sh -c 'sleep 30; touch {marker}'", timeout=0.3)
    feedback.rejected()
    feedback.rejected()
    assert feedback.wait_idle(10)
    assert not marker.exists()
    assert reported(caplog) == [("rejected", "killed after 0.3 s")]


def test_a_missing_or_failing_command_is_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    feedback = Feedback(accepted=str(tmp_path / "no-such-player"), rejected="false")
    for _ in range(5):
        feedback.accepted()
        feedback.rejected()
    assert feedback.wait_idle(10)
    problems = sorted(reported(caplog))
    assert [kind for kind, _ in problems] == ["accepted", "rejected"]
    assert problems[0][1].startswith("cannot start") and problems[1][1] == "exit status 1"


def test_no_command_configured_means_no_feedback() -> None:
    feedback = Feedback(None, "", "   ")
    feedback.accepted()
    feedback.rejected()
    feedback.delivered()
    assert feedback.wait_idle(0)


def test_a_command_that_cannot_be_split_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"feedback\.delivered"):
        Feedback(delivered="aplay 'unterminated.wav")
