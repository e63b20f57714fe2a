"""Key positions (evdev KEY_* codes) → characters, per scanner keyboard-country setting.

A HID wedge scanner types each character with the keys of the layout it is set to, so the table must
match the scanner's setting, not the till's desktop layout. Each entry is (plain, shift, altgr); an
empty string means the level types nothing. Dead keys type their spacing character; the space a
scanner sends after a dead key is swallowed by the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

from evdev import ecodes as e

Levels = tuple[str, str, str]


@dataclass(frozen=True)
class Keymap:
    keys: dict[int, Levels]
    dead: frozenset[int] = frozenset()


_KEYPAD_CHARS = {f"KP{n}": str(n) for n in range(10)} | {
    "KPMINUS": "-", "KPPLUS": "+", "KPASTERISK": "*", "KPSLASH": "/", "KPDOT": ".", "SPACE": " ",
}  # fmt: skip


def _keys(names: str) -> list[int]:
    return [getattr(e, f"KEY_{name}") for name in names.split()]


_ROW_KEYS = {
    "digits": _keys("1 2 3 4 5 6 7 8 9 0"),
    "top": _keys("Q W E R T Y U I O P"),
    "home": _keys("A S D F G H J K L"),
    "bottom": _keys("Z X C V B N M"),
}


def _letters(top: str, home: str, bottom: str) -> dict[int, Levels]:
    keys: dict[int, Levels] = {}
    for row, chars in (("top", top), ("home", home), ("bottom", bottom)):
        for code, char in zip(_ROW_KEYS[row], chars, strict=False):
            keys[code] = (char, char.upper(), "")
    return keys


def _pairs(codes: list[int], plain: str, shift: str, altgr: str = "") -> dict[int, Levels]:
    levels = zip(plain, shift, altgr.ljust(len(codes)), strict=True)
    return {
        code: (p.strip(), s.strip(), a.strip())
        for code, (p, s, a) in zip(codes, levels, strict=True)
    }


def _build(*parts: dict[int, Levels], dead: tuple[int, ...] = ()) -> Keymap:
    keys: dict[int, Levels] = {
        getattr(e, f"KEY_{name}"): (char, char, "") for name, char in _KEYPAD_CHARS.items()
    }
    for part in parts:
        keys.update(part)
    return Keymap(keys, frozenset(dead))


_PUNCT = _keys(
    "MINUS EQUAL LEFTBRACE RIGHTBRACE SEMICOLON APOSTROPHE GRAVE BACKSLASH COMMA DOT SLASH 102ND"
)

US = _build(
    _letters("qwertyuiop", "asdfghjkl", "zxcvbnm"),
    _pairs(_ROW_KEYS["digits"], "1234567890", "!@#$%^&*()"),
    _pairs(_PUNCT, "-=[];'`\\,./\\", '_+{}:"~|<>?|'),
)

UK = _build(
    _letters("qwertyuiop", "asdfghjkl", "zxcvbnm"),
    _pairs(_ROW_KEYS["digits"], "1234567890", '!"£$%^&*()', "   €      "),
    _pairs(_PUNCT, "-=[];'`#,./\\", "_+{}:@¬~<>?|", "      ¦     "),
)

DE = _build(
    _letters("qwertzuiop", "asdfghjkl", "yxcvbnm"),
    _pairs(_ROW_KEYS["digits"], "1234567890", '!"§$%&/()=', " ²³   {[]}"),
    _pairs(_PUNCT, "ß´ü+öä^#,.-<", "?`Ü*ÖÄ°';:_>", "\\  ~       |"),
    {e.KEY_Q: ("q", "Q", "@"), e.KEY_E: ("e", "E", "€"), e.KEY_M: ("m", "M", "µ")},
    dead=(e.KEY_EQUAL, e.KEY_GRAVE),
)

FR = _build(
    _letters("azertyuiop", "qsdfghjkl", "wxcvbn"),
    _pairs(_ROW_KEYS["digits"], "&é\"'(-è_çà", "1234567890", " ~#{[|`\\^@"),
    _pairs(
        _keys(
            "MINUS EQUAL LEFTBRACE RIGHTBRACE APOSTROPHE GRAVE BACKSLASH M COMMA DOT SLASH 102ND"
        ),
        ")=^$ù²*,;:!<",
        "°+¨£% µ?./§>",
        "]} ¤        ",
    ),
    {e.KEY_SEMICOLON: ("m", "M", ""), e.KEY_E: ("e", "E", "€")},
    dead=(e.KEY_LEFTBRACE,),
)

LAYOUTS: dict[str, Keymap] = {"us": US, "uk": UK, "gb": UK, "de": DE, "fr": FR}


def keymap(layout: str) -> Keymap:
    try:
        return LAYOUTS[layout.lower()]
    except KeyError:
        raise ValueError(f"unknown keyboard layout {layout!r}; known: us, uk, de, fr") from None
