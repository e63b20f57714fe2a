"""A source's device state reaches the `boniq_agent_scanner_up` gauge: 1 while open, 0 while gone."""

import threading

from agent.metrics import Metrics
from agent.scanner import base


def test_open_and_lost_devices_set_the_scanner_up_gauge() -> None:
    metrics = Metrics()
    base.on_state_change(metrics.scanner_up)
    stop = threading.Event()
    sessions = iter(["absent", "open", "unplugged"])
    seen: list[bool] = []
    series = b'boniq_agent_scanner_up{source="serial:/dev/x"} 1.0'

    def session(opened) -> None:
        kind = next(sessions, "stop")
        if kind == "open":
            opened()
            seen.append(series in metrics.exposition())
            raise OSError("device unplugged")
        if kind == "stop":
            stop.set()
            return
        seen.append(series in metrics.exposition())
        raise FileNotFoundError("/dev/x")

    try:
        base.keep_running("serial:/dev/x", session, stop)
    finally:
        base.on_state_change(None)
    assert seen == [False, True, False]  # absent, open, after the unplug
    assert b'boniq_agent_scanner_up{source="serial:/dev/x"} 0.0' in metrics.exposition()
