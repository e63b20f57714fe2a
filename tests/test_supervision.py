"""A stage that crashes the same way again and again is logged once with a count, not once per
restart; a configuration fault is handed over instead of being retried."""

import logging
import threading

import pytest

from agent import supervision
from agent.errors import ConfigError


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch):
    monkeypatch.setattr(supervision, "MAX_RESTART_DELAY", 0.0)


def run_guarded(target, **options):
    stop = threading.Event()
    faults = []
    body = supervision.guarded(
        "poller", target, stop, on_config_fault=lambda *f: faults.append(f), **options
    )
    thread = threading.Thread(target=body)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return faults


def test_the_same_crash_25_times_is_one_traceback_and_a_count(caplog):
    calls = []

    def target(stop):
        calls.append(1)
        if len(calls) <= 25:
            raise RuntimeError("the same bug")

    with caplog.at_level(logging.INFO):
        run_guarded(target)
    assert len(calls) == 26
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].getMessage() == "poller crashed; restarting it"
    counts = [
        r.fields["times"] for r in caplog.records if hasattr(r, "fields") and "times" in r.fields
    ]
    assert counts == [10, 25]
    assert len(caplog.records) == 3


def test_a_different_crash_gets_its_own_traceback(caplog):
    errors = iter([RuntimeError("a"), RuntimeError("a"), KeyError("b"), None])

    def target(stop):
        error = next(errors)
        if error:
            raise error

    run_guarded(target)
    assert len([r for r in caplog.records if r.exc_info]) == 2


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("config.yaml:3: kassa.secret_file: /x does not exist"),
        OSError("Could not find a suitable TLS CA certificate bundle, invalid path: /etc/ca.pem"),
        PermissionError(13, "Permission denied", "/etc/boniq-agent/cloud-token"),
    ],
)
def test_a_configuration_fault_is_handed_over_not_retried(error):
    calls = []

    def target(stop):
        calls.append(1)
        raise error

    faults = run_guarded(target, paths=lambda: ["/etc/boniq-agent/cloud-token"])
    assert len(calls) == 1 and len(faults) == 1 and faults[0][0] == "poller"


def test_an_unrelated_os_error_is_retried_not_fatal():
    errors = iter([PermissionError(13, "Permission denied", "/dev/ttyACM0"), None])

    def target(stop):
        error = next(errors)
        if error:
            raise error

    assert run_guarded(target, paths=lambda: ["/etc/ca.pem"]) == []
