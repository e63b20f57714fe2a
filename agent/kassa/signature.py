"""The HMAC signature of MplusKASSA webhooks (`X-Mplus-Signature`), both ways.

The signature is Base64 of HMAC-SHA256 over the exact body bytes (request and reply alike). What
is not settled (docs/webhooks.md) is how the back office's secret key becomes the
HMAC key: the Base64-decoded bytes of the key as typed, or the key's UTF-8 text. `key_encoding`
chooses; `auto` tries both, so a shop works whichever it is, and the receiver logs once which
one matched so the setting can be pinned.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Literal

KeyEncoding = Literal["auto", "base64", "text"]
HEADER = "X-Mplus-Signature"


@dataclass(frozen=True)
class Key:
    """One way of reading the secret key: `form` is "base64" or "text"."""

    form: Literal["base64", "text"]
    secret: bytes = field(repr=False)


def keys(secret: str, encoding: KeyEncoding = "auto") -> tuple[Key, ...]:
    """The HMAC keys `secret` may stand for under `encoding`, most likely first.

    A key that is not valid Base64 has only its text form, even under `base64`: the back office
    would not have produced it, and refusing every request over it helps nobody."""
    text = Key("text", secret.encode("utf-8"))
    decoded = _b64(secret)
    if encoding == "text" or decoded is None:
        return (text,)
    if encoding == "base64":
        return (Key("base64", decoded),)
    return (Key("base64", decoded), text)


def sign(key: Key, body: bytes) -> str:
    return base64.b64encode(hmac.new(key.secret, body, hashlib.sha256).digest()).decode("ascii")


def verify(signature: str, body: bytes, candidates: tuple[Key, ...]) -> Key | None:
    """The key whose signature over `body` equals `signature`, compared in constant time."""
    given = signature.strip().encode("ascii", "replace")
    match = None
    for key in candidates:
        if hmac.compare_digest(sign(key, body).encode("ascii"), given):
            match = match or key
    return match


def _b64(text: str) -> bytes | None:
    try:
        decoded = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded or None
