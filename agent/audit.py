"""Manual actions (`scan`, `outbox retry`) leave a line in the journal next to the agent's own.

The command runs in store IT's terminal, so its stderr is not the journal: the line goes to
journald's native socket (`systemd.journal-fields(7)`), tagged `SYSLOG_IDENTIFIER=boniq-agent`
and, for root, `OBJECT_SYSTEMD_UNIT=boniq-agent.service`, which `journalctl -u boniq-agent`
shows. Outside systemd the socket is absent and only the stderr line is written.
"""

from __future__ import annotations

import getpass
import os
import socket
from typing import Any

from agent.logs import fields, get_logger, redact

log = get_logger(__name__)

SOCKET = "/run/systemd/journal/socket"
UNIT = "boniq-agent.service"


def manual_action(message: str, **values: Any) -> None:
    """Log `message` with `values` (already masked) on stderr and into the journal."""
    values = {**values, "by": _who()}
    log.info(message, extra=fields(**values))
    text = redact(" ".join([message, *(f"{k}={_quoted(v)}" for k, v in values.items())]))
    entry = [
        f"MESSAGE={text}",
        "PRIORITY=5",
        "SYSLOG_IDENTIFIER=boniq-agent",
        "BONIQ_MANUAL_ACTION=1",
    ]
    if os.geteuid() == 0:
        entry.append(f"OBJECT_SYSTEMD_UNIT={UNIT}")
    _send("\n".join(entry) + "\n")


def _send(datagram: str) -> bool:
    path = os.environ.get("BONIQ_JOURNAL_SOCKET", SOCKET)  # the variable is for tests
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)
            sock.sendto(datagram.encode(), path)
    except OSError:
        return False
    return True


def _quoted(value: Any) -> str:
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return f'"{text}"' if " " in text or not text else text


def _who() -> str:
    user = os.environ.get("SUDO_USER")
    try:
        me = getpass.getuser()
    except (KeyError, OSError):
        me = str(os.getuid())
    return f"{user} (sudo)" if user else me
