"""Log lines for support staff: one line per event on stderr, journald priority prefix, logfmt tail.

    <6>claim stored source=serial workplace=2 code=BQ1…2C56 cid=c-5f3a9e

Use `log.info("claim stored", extra=fields(source="serial"))`. The correlation id of the claim or
receipt in hand is bound with `with correlation(cid):` and added to every line logged inside it.
A filter on the handler redacts secrets (URL query values, bearer tokens, every value registered
with `register_secret`) and masks e-mail addresses and BONIQ codes in the whole line, tracebacks
included, so messages from requests and urllib3 are covered as well as our own.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import secrets as _secrets
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

from agent.printable import printable

_cid: contextvars.ContextVar[str | None] = contextvars.ContextVar("boniq_cid", default=None)
_registered_secrets: set[str] = set()
_OURS = "_boniq"  # marks the root handler `setup` installed, so a second call replaces it

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

_QUERY_SECRET = re.compile(
    r"(?i)\b(secret|ident|token|password|passwd|api[_-]?key|access_token)=([^&\s'\"<>]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_AUTH_HEADER = re.compile(r"(?i)('authorization':\s*')[^']*(')")
# Any address codes.parse accepts (umlauts, `o'neil`, `a!b`); the local part is bounded so a long
# run without `@` costs linear, not quadratic, time.
_EMAIL = re.compile(r"([^\s\"@:;,=<>()\[\]{}])[^\s\"@:;,=<>()\[\]{}]{0,63}@([^\s\"'@<>()\[\],;]+)")
# No \b: `id_BQ1…` and `BQ1…x` are codes glued to other text, masked all the same.
_CODE = re.compile(r"(?i)BQ1[-\s]?(?:[0-9A-Z][-\s]?){13}([0-9A-Z]{4})")
_ENCODED_EMAIL = re.compile(
    r"(?i)([^\s\"@:;,=<>()\[\]{}%&?/])[^\s\"@:;,=<>()\[\]{}&?/]{0,63}%40([^\s\"'@<>()\[\],;&]+)"
)


def fields(**values: Any) -> dict[str, Any]:
    """Structured fields for a log call: `log.info("msg", extra=fields(k=v))`."""
    return {"fields": values}


def new_correlation_id(prefix: str = "c") -> str:
    return f"{prefix}-{_secrets.token_hex(4)}"


def current_correlation_id() -> str | None:
    return _cid.get()


@contextlib.contextmanager
def correlation(cid: str | None) -> Iterator[str | None]:
    token = _cid.set(cid)
    try:
        yield cid
    finally:
        _cid.reset(token)


def register_secret(value: str | None) -> None:
    """Redact this value wherever it appears in a log line (config secrets, tokens), also in
    the %-encoded forms a server echoes from a query string."""
    if value and len(value) >= 4:
        _registered_secrets.update({value, quote(value, safe=""), quote_plus(value, safe="")})


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_code(code: str) -> str:
    """`BQ17K3M9QW4RT8ZP2C56` → `BQ1…2C56`: enough for support to tell codes apart."""
    if "@" in code:
        return mask_email(code)
    return f"{code[:3]}…{code[-4:]}" if len(code) > 8 else "***"


def redact(text: str) -> str:
    for value in sorted(_registered_secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "[REDACTED]")
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}=[REDACTED]", text)
    text = _BEARER.sub(r"\1 [REDACTED]", text)
    text = _AUTH_HEADER.sub(r"\1[REDACTED]\2", text)
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    text = _ENCODED_EMAIL.sub(lambda m: f"{m.group(1)}***%40{m.group(2)}", text)
    return _CODE.sub(lambda m: f"BQ1…{m.group(1).upper()}", text)


def redact_url(url: str) -> str:
    """A URL safe to print: the query's secret values replaced."""
    return redact(url)


def priority(levelno: int) -> int:
    """The syslog priority (journald's PRIORITY) of a logging level."""
    return _PRIORITY.get(levelno, 6)


def _logfmt_value(value: Any) -> str:
    text = "" if value is None else str(value)
    if text == "" or any(c in text for c in ' "=\\') or not text.isprintable():
        return '"' + printable(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    """`<N>message k=v … cid=…`; on a terminal `HH:MM:SS LEVEL message k=v` instead."""

    def __init__(self, *, terminal: bool = False) -> None:
        super().__init__()
        self.terminal = terminal

    def format(self, record: logging.LogRecord) -> str:
        parts = [printable(record.getMessage())]
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={_logfmt_value(value)}")
        cid = getattr(record, "cid", None)
        if cid:
            parts.append(f"cid={cid}")
        if record.levelno >= logging.WARNING or record.name != "boniq":
            parts.append(f"logger={record.name}")
        line = redact(" ".join(parts))
        extra_lines = []
        if record.exc_info:
            extra_lines = [
                printable(x) for x in redact(self.formatException(record.exc_info)).splitlines()
            ]
        if self.terminal:
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            head = f"{stamp} {record.levelname:<7} "
            return "\n".join([head + line] + ["        " + x for x in extra_lines])
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + x for x in [line] + extra_lines)


class _CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "cid"):
            record.cid = _cid.get()
        return True


def setup(level: str = "info", stream: TextIO | None = None) -> logging.Handler:
    """Route every logger to one handler: the journal when stderr is the journal, else stderr."""
    stream = stream or sys.stderr
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
        old.close()
    from agent import journal

    handler: logging.Handler
    if journal.stderr_is_journal(stream):
        handler = journal.JournalHandler(stream)
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(LogfmtFormatter(terminal=_is_terminal(stream)))
    setattr(handler, _OURS, True)
    handler.addFilter(_CorrelationFilter())
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    return handler


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str) -> logging.Logger:
    """Loggers live under `boniq.`; pass `__name__` (`agent.x.y` becomes `boniq.x.y`)."""
    short = name.removeprefix("agent").lstrip(".")
    return logging.getLogger(f"boniq.{short}" if short else "boniq")


class Problem:
    """A recurring failure, logged once per change of message and once when it recovers, so a
    fault that lasts hours leaves two lines rather than one per attempt."""

    def __init__(self, failing: str, recovered: str) -> None:
        self.failing = failing
        self.recovered_message = recovered
        self.count = 0
        self.last: str | None = None

    def failed(
        self, logger: logging.Logger, exc: BaseException, *, level: str = "warning", **extra: Any
    ) -> None:
        self.count += 1
        message = str(exc)
        if message != self.last:
            getattr(logger, level)(
                self.failing, extra=fields(error=type(exc).__name__, reason=message, **extra)
            )
        self.last = message

    def recovered(self, logger: logging.Logger, **extra: Any) -> None:
        if self.count:
            logger.info(self.recovered_message, extra=fields(after_failures=self.count, **extra))
        self.count = 0
        self.last = None
