"""Process hardening at the start of `boniq-agent run`.

A core dump of the agent holds the POS secret, the cloud token and customers' e-mail addresses
(a watchdog SIGABRT wrote a 60 MB core). The unit sets `LimitCORE=0`; `forbid_core_dumps` also
covers a start outside systemd: the process becomes non-dumpable (no core file, no ptrace attach
by the same user, /proc/PID/mem and environ unreadable to others).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys

from agent.logs import fields, get_logger

log = get_logger(__name__)

PR_SET_DUMPABLE = 4


def forbid_core_dumps() -> bool:
    """True when the kernel took it; a failure (not Linux, a seccomp filter) is only logged."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (OSError, ValueError):
        pass  # the unit's LimitCORE=0 (or a seccomp @resources filter) has the last word anyway
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0:
            return True
        error = ctypes.get_errno()
    except (OSError, AttributeError) as exc:
        error = getattr(exc, "errno", 0) or 0
    log.warning("cannot make the process non-dumpable; a core dump could hold secrets",
                extra=fields(errno=error))
    return False
