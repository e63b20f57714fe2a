"""Process hardening at the start of `boniq-agent run`.

A core dump of the agent holds the POS secret, the cloud token and customers' e-mail addresses
(a watchdog SIGABRT wrote a 60 MB core). The unit sets `LimitCORE=0`; `forbid_core_dumps` also
covers a start outside systemd: the process becomes non-dumpable (no core file, no ptrace attach
by the same user, /proc/PID/mem and environ unreadable to others). `keep_private` puts the
database (personal data) back to mode 0600.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import stat
import sys
from pathlib import Path

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
    log.warning(
        "cannot make the process non-dumpable; a core dump could hold secrets",
        extra=fields(errno=error),
    )
    return False


def keep_private(data_dir: Path) -> list[Path]:
    """The database and its WAL/SHM files back to 0600 if someone opened them up (a copy, a
    restore, an old version); each file fixed is named in a warning. Returns those files."""
    fixed = []
    for name in ("boniq-agent.db", "boniq-agent.db-wal", "boniq-agent.db-shm"):
        path = Path(data_dir) / name
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                os.chmod(path, 0o600)
                fixed.append(path)
                log.warning(
                    "database file was readable by other users; made it 0600",
                    extra=fields(path=str(path), was=oct(mode)),
                )
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning(
                "cannot check the database file's mode",
                extra=fields(path=str(path), error=exc.strerror or str(exc)),
            )
    return fixed
