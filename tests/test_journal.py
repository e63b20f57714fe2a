"""journald's native protocol, received on a datagram socket the test binds in place of
/run/systemd/journal/socket."""

from __future__ import annotations

import array
import fcntl
import io
import logging
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import journal, logs
from agent.logs import correlation, fields, get_logger


def parse(data: bytes) -> dict[str, str]:
    """The journal's reading of one datagram: `KEY=value` lines and length-prefixed values."""
    entry, pos = {}, 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        line = data[pos:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            pos = end + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[end + 1 : end + 9])
            value = data[end + 9 : end + 9 + size]
            assert data[end + 9 + size : end + 10 + size] == b"\n"
            pos = end + 10 + size
        entry[key.decode()] = value.decode()
    return entry


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(5)

    def receive(self) -> dict[str, str]:
        fds = array.array("i")
        data, ancillary, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if fds:  # an entry too large for one datagram comes as a memfd
            seals = fcntl.fcntl(fds[0], fcntl.F_GET_SEALS)
            assert seals & fcntl.F_SEAL_WRITE, "journald refuses a memfd that is not sealed"
            with os.fdopen(fds[0], "rb") as memfd:  # journald maps it from offset 0
                memfd.seek(0)
                data = memfd.read()
        return parse(data)


@pytest.fixture
def journal_socket(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sock")
    yield j
    j.sock.close()


@pytest.fixture
def log_to(journal_socket: Journal) -> Iterator[logging.Logger]:
    stderr = io.StringIO()
    handler = journal.JournalHandler(stderr, socket_path=str(journal_socket.path))
    handler.addFilter(logs._CorrelationFilter())
    logger = get_logger("agent.test_journal")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    logger.removeHandler(handler)
    handler.close()


def test_an_entry_carries_priority_cid_event_and_the_logfmt_fields(
    journal_socket: Journal, log_to: logging.Logger
) -> None:
    with correlation("c-5f3a9e"):
        log_to.warning(
            "claim stored", extra=fields(source="serial", workplace=2, **{"pos-marker": 41})
        )
    entry = journal_socket.receive()
    assert entry["PRIORITY"] == "4"
    assert entry["BONIQ_CID"] == "c-5f3a9e"
    assert entry["BONIQ_EVENT"] == "claim stored"
    assert entry["BONIQ_SOURCE"] == "serial"
    assert entry["BONIQ_WORKPLACE"] == "2"
    assert entry["BONIQ_POS_MARKER"] == "41"
    assert entry["SYSLOG_IDENTIFIER"] == "boniq-agent"
    assert entry["MESSAGE"].startswith("claim stored source=serial workplace=2")
    assert not entry["MESSAGE"].startswith("<")


def test_secrets_and_codes_are_redacted_in_every_field(
    journal_socket: Journal, log_to: logging.Logger
) -> None:
    logs.register_secret("s3cr3t-value")
    log_to.info(
        "poll failed",
        extra=fields(
            url="https://pos/api?secret=hunter22",
            error="auth with s3cr3t-value",
            customer="jan.jansen@example.com",
        ),
    )
    entry = journal_socket.receive()
    text = "\n".join(entry.values())
    for leaked in ("hunter22", "s3cr3t-value", "jan.jansen"):
        assert leaked not in text
    assert entry["BONIQ_URL"] == "https://pos/api?secret=[REDACTED]"
    assert entry["BONIQ_CUSTOMER"] == "j***@example.com"


def test_a_traceback_travels_as_one_multiline_message(
    journal_socket: Journal, log_to: logging.Logger
) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log_to.exception("uploader crashed")
    entry = journal_socket.receive()
    assert entry["PRIORITY"] == "3"
    assert entry["MESSAGE"].splitlines()[0].startswith("uploader crashed")
    assert "RuntimeError: boom" in entry["MESSAGE"]


def test_an_entry_larger_than_a_datagram_arrives_through_a_memfd(
    journal_socket: Journal, log_to: logging.Logger
) -> None:
    big = "x" * 300_000  # over the AF_UNIX datagram limit (net.core.wmem_default ~ 212 KiB)
    log_to.info("large entry", extra=fields(payload=big))
    entry = journal_socket.receive()
    assert entry["BONIQ_PAYLOAD"] == big


def test_without_a_journal_socket_the_line_goes_to_stderr(tmp_path: Path) -> None:
    stderr = io.StringIO()
    handler = journal.JournalHandler(stderr, socket_path=str(tmp_path / "absent.sock"))
    logger = logging.getLogger("boniq.test_journal_fallback")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("claim stored", extra=fields(source="serial"))
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert stderr.getvalue() == "<6>claim stored source=serial logger=boniq.test_journal_fallback\n"


def test_setup_uses_the_journal_only_when_journal_stream_names_stderr(
    tmp_path: Path, journal_socket: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "SOCKET_PATH", str(journal_socket.path))
    with open(tmp_path / "stderr", "w+") as stderr, open(tmp_path / "other", "w") as other:
        st = os.fstat(other.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        try:
            assert not isinstance(logs.setup("info", stream=stderr), journal.JournalHandler)
            st = os.fstat(stderr.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
            assert isinstance(logs.setup("info", stream=stderr), journal.JournalHandler)
            get_logger("agent").info("boniq-agent started", extra=fields(sources=1))
            assert journal_socket.receive()["BONIQ_SOURCES"] == "1"
        finally:
            monkeypatch.delenv("JOURNAL_STREAM")
            logs.setup("info")
        stderr.seek(0)
        assert stderr.read() == ""
