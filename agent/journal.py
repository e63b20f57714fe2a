"""Log entries over journald's native protocol, so support can filter by field.

    journalctl -u boniq-agent BONIQ_CID=c-5f3a9e          one customer's sale, start to end
    journalctl -u boniq-agent BONIQ_EVENT='claim stored'   every entry of one kind

Used only when `$JOURNAL_STREAM` says stderr is the journal (systemd sets it for the unit);
anywhere else the agent keeps its `<N>message k=v` stderr lines. The protocol
(systemd.io/JOURNAL_NATIVE_PROTOCOL) is one datagram per entry to /run/systemd/journal/socket:
`KEY=value\\n` per field, or `KEY\\n<64-bit LE length>value\\n` for a value with a newline; an
entry too large for a datagram goes in a sealed memfd passed with SCM_RIGHTS. Every value passes
the same redaction as the stderr line; an entry the journal does not take is written to stderr.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import socket
import struct
from typing import TextIO

from agent import logs

SOCKET_PATH = "/run/systemd/journal/socket"
IDENTIFIER = "boniq-agent"
_FIELD_NAME = re.compile(r"[^A-Z0-9_]")


def stderr_is_journal(stream: TextIO) -> bool:
    """True when `$JOURNAL_STREAM` (`DEVICE:INODE`) names the file behind `stream`."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def field_name(key: str) -> str:
    """A logfmt key as a journal field: `BONIQ_` + upper case, letters, digits and `_` only."""
    return ("BONIQ_" + _FIELD_NAME.sub("_", key.upper()))[:64]


def encode(entry: dict[str, str]) -> bytes:
    out = bytearray()
    for key, value in entry.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends each record as one journal entry; `fallback` (stderr) gets what cannot be sent."""

    def __init__(self, fallback: TextIO, socket_path: str | None = None) -> None:
        super().__init__()
        self.socket_path = socket_path or SOCKET_PATH
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._fallback = logging.StreamHandler(fallback)
        self._fallback.setFormatter(logs.LogfmtFormatter())
        self._text = logs.LogfmtFormatter(terminal=False)

    def entry(self, record: logging.LogRecord) -> dict[str, str]:
        message = "\n".join(
            line[line.index(">") + 1 :] for line in self._text.format(record).splitlines()
        )
        entry = {
            "MESSAGE": message,
            "PRIORITY": str(logs.priority(record.levelno)),
            "SYSLOG_IDENTIFIER": IDENTIFIER,
            "BONIQ_EVENT": logs.redact(str(record.msg)),
            "BONIQ_LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName,
        }
        cid = getattr(record, "cid", None)
        if cid:
            entry["BONIQ_CID"] = str(cid)
        for key, value in getattr(record, "fields", {}).items():
            name = field_name(key)
            if name not in entry:
                entry[name] = logs.redact("" if value is None else str(value))
        return entry

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(encode(self.entry(record)))
        except OSError:
            self._fallback.handle(record)
        except Exception:  # noqa: BLE001 - logging.Handler's contract: report, never raise
            self.handleError(record)

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendto(data, self.socket_path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):  # too large for a datagram
                raise
            fd = os.memfd_create("boniq-journal", os.MFD_ALLOW_SEALING)
            try:
                os.write(fd, data)
                _seal(fd)
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
                self._sock.sendmsg([b""], rights, 0, self.socket_path)
            finally:
                os.close(fd)

    def close(self) -> None:
        self._sock.close()
        super().close()


def _seal(fd: int) -> None:
    """journald accepts a memfd only once it is sealed against change."""
    fcntl.fcntl(
        fd,
        fcntl.F_ADD_SEALS,
        fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE,
    )
