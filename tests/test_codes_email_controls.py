"""E-mail customers: percent-decoding comes first, then validation, so no control, C1 or
text-direction character reaches a claim, a log line or the cloud."""

from __future__ import annotations

import pytest

from agent import codes
from agent.errors import CodeRejected

HOSTILE_MAILTO = [
    "mailto:%1Bc%00%7F@example.nl",  # ESC, NUL, DEL
    "mailto:piet%E2%80%AE@example.nl",  # U+202E right-to-left override
    "mailto:pi%08et@example.nl",  # backspace
    "mailto:piet%C2%9B@example.nl",  # C1 CSI
    "mailto:piet%E2%81%A6@example.nl",  # U+2066 isolate
    "mailto:piet%E2%80%8B@example.nl",  # zero-width space
    "mailto:piet%0A@example.nl",  # a line break in a log line
    "mailto:piet%FF@example.nl",  # not UTF-8
]


@pytest.mark.parametrize("raw", HOSTILE_MAILTO)
def test_a_decoded_mailto_with_control_characters_is_refused(raw: str) -> None:
    with pytest.raises(CodeRejected) as caught:
        codes.parse(raw)
    assert str(caught.value).isprintable() and "@" not in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    ["pi\u202eet@example.nl", "pi\x08et@example.nl", "pi\x1bet@example.nl", "pi\x9bet@example.nl"],
)
def test_control_characters_inside_a_typed_address_are_refused_not_dropped(raw: str) -> None:
    with pytest.raises(CodeRejected, match="control"):
        codes.parse(raw)


def test_what_a_scanner_adds_around_an_address_is_still_trimmed() -> None:
    assert codes.parse("\x02piet@example.nl\r\n").value == "piet@example.nl"
    assert codes.parse(b" mailto:piet@Example.NL?subject=hi\x03").value == "piet@example.nl"


def test_a_percent_encoded_address_is_decoded_then_validated() -> None:
    assert codes.parse("mailto:piet%2Bbon@Example.NL").value == "piet+bon@example.nl"
    assert codes.parse("MAILTO:j%C3%BCrgen@example.de").value == "jürgen@example.de"
