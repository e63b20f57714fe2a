"""Customer codes: compact BONIQ codes, their URL form, and e-mail addresses.

A compact code is `BQ1` + 16 token characters + 1 check character from Crockford base32. The
check character is Luhn mod 32 over the token, so any single mistyped or misread character and
most swaps of neighbours are caught before a claim is made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from agent.errors import CodeRejected

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PREFIX = "BQ1"
TOKEN_LENGTH = 16
MAX_INPUT_BYTES = 256
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_SEPARATORS = re.compile(r"[\s-]+")
_EMAIL = re.compile(
    r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
URL_HOSTS = ("boniq.nl", "app.boniq.nl")
"""Hosts of the links a BONIQ app shows as a QR code (`codes.url_hosts` in the config)."""


@dataclass(frozen=True)
class CustomerCode:
    """A customer to deliver to: `kind` is `boniq_code` or `email`, `value` is normalised."""

    kind: str
    value: str


def luhn32_check(token: str) -> str:
    """The Luhn mod 32 check character of a token in the Crockford alphabet."""
    total = 0
    for position, char in enumerate(reversed(token)):
        addend = _VALUE[char] * (2 if position % 2 == 0 else 1)
        total += addend // 32 + addend % 32
    return ALPHABET[(32 - total % 32) % 32]


def make_code(token: str) -> str:
    """A full compact code for a 16-character token (the simulators and tests use it)."""
    token = token.upper().translate(_ALIASES)
    if len(token) != TOKEN_LENGTH or any(c not in _VALUE for c in token):
        raise ValueError("a token is 16 Crockford base32 characters")
    return PREFIX + token + luhn32_check(token)


def _compact(text: str) -> str | None:
    candidate = _SEPARATORS.sub("", text).upper()
    if not candidate.startswith(PREFIX):
        return None
    body = candidate[len(PREFIX) :].translate(_ALIASES)
    if len(body) != TOKEN_LENGTH + 1 or any(c not in _VALUE for c in body):
        return None
    token, check = body[:TOKEN_LENGTH], body[TOKEN_LENGTH]
    return PREFIX + body if luhn32_check(token) == check else None


def _from_url(text: str, url_hosts: Iterable[str]) -> str | None:
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unbalanced `[` in the host
        return None
    if parts.scheme.lower() != "https" or (parts.hostname or "") not in {
        h.lower() for h in url_hosts
    }:
        return None
    path = unquote(parts.path)
    if not path.lower().startswith("/c/"):
        return None
    return _compact(path[3:].strip("/"))


def _email(text: str) -> str | None:
    """Decode first (`mailto:` percent-escapes), then check: what is validated is what is stored."""
    if text.lower().startswith("mailto:"):
        try:
            text = unquote(text[7:].split("?", 1)[0], errors="strict")
        except UnicodeDecodeError:
            raise CodeRejected("an e-mail address with a broken %-escape") from None
    if not text.isprintable():
        raise CodeRejected("control or text-direction characters in an e-mail address")
    if len(text) > 254 or not _EMAIL.match(text):
        return None
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}"


def _trimmed(raw: str) -> str:
    """`raw` without the whitespace and control characters a scanner adds around a code; inside,
    an e-mail address keeps them, so that they are refused rather than silently dropped."""
    start, end = 0, len(raw)
    while start < end and (raw[start].isspace() or not raw[start].isprintable()):
        start += 1
    while end > start and (raw[end - 1].isspace() or not raw[end - 1].isprintable()):
        end -= 1
    return raw[start:end]


def parse(raw: str | bytes, *, url_hosts: Iterable[str] = URL_HOSTS) -> CustomerCode:
    """Normalise scanner or keyboard input into a customer code, or raise CodeRejected.

    The reason in CodeRejected is short and safe to log (it never repeats the input)."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_INPUT_BYTES:
            raise CodeRejected(f"input longer than {MAX_INPUT_BYTES} bytes")
        raw = raw.decode("utf-8", errors="replace")
    if len(raw.encode("utf-8", errors="replace")) > MAX_INPUT_BYTES:
        raise CodeRejected(f"input longer than {MAX_INPUT_BYTES} bytes")
    text = "".join(c for c in raw if c.isprintable()).strip()
    if not text:
        raise CodeRejected("empty input")
    if "://" in text:
        code = _from_url(text, url_hosts)
        if code:
            return CustomerCode("boniq_code", code)
        raise CodeRejected("not a BONIQ link (unknown host, path or check character)")
    if "@" in text:
        email = _email(_trimmed(raw))
        if email:
            return CustomerCode("email", email)
        raise CodeRejected("not a valid e-mail address")
    code = _compact(text)
    if code:
        return CustomerCode("boniq_code", code)
    if text.isdigit():
        raise CodeRejected("looks like a product barcode, not a BONIQ code")
    if _SEPARATORS.sub("", text).upper().startswith(PREFIX):
        raise CodeRejected("BONIQ code with a wrong length or check character")
    raise CodeRejected("not a BONIQ code or e-mail address")
