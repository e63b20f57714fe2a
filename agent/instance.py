"""One agent per data_dir: an advisory lock (flock) on `data_dir/agent.lock`, held for the life of
`boniq-agent run`. Two agents on one store would poll and upload twice and fight over claims.

The kernel drops the lock when the process dies (even by SIGKILL), so a stale file never blocks
a start. Read-only commands (status, outbox list) do not take it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from agent.errors import AgentRunning, StoreError

LOCK_NAME = "agent.lock"


class InstanceLock:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd, self.path = fd, path

    @classmethod
    def acquire(cls, data_dir: Path) -> InstanceLock:
        """Take the lock or raise AgentRunning naming the PID that holds it."""
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = data_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AgentRunning(
                f"another boniq-agent (PID {holder}) runs on {data_dir}; stop it "
                f"first (systemctl stop boniq-agent)"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock; the file stays (another may hold it)
            self._fd = -1
