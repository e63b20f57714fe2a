"""Customer codes: SPEC §4 vectors, every single-character mutation, URL and e-mail forms."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import codes
from agent.errors import CodeRejected

VALID = [
    "BQ100000000000000000",
    "BQ17K3M9QW4RT8ZP2C56",
    "BQ1ABCDEFGHJKMNPQRSK",
    "BQ1M9S346Q3D25VT4F56",
]
ALIASES = {"0": "O", "1": "IL"}


@pytest.mark.parametrize("code", VALID)
def test_spec_examples_are_accepted(code):
    assert codes.parse(code) == codes.CustomerCode("boniq_code", code)


@pytest.mark.parametrize("code", VALID)
def test_every_single_character_change_is_rejected(code):
    mutations = 0
    for position in range(len(code)):
        for replacement in codes.ALPHABET + "BQ":
            if replacement == code[position] or replacement in ALIASES.get(code[position], ""):
                continue
            mutated = code[:position] + replacement + code[position + 1 :]
            with pytest.raises(CodeRejected):
                codes.parse(mutated)
            mutations += 1
    assert mutations > 20 * 30


@pytest.mark.parametrize(
    "typed",
    [
        "bq17k3m9qw4rt8zp2c56",
        "BQ1-7K3M-9QW4-RT8Z-P2C56",
        " BQ1 7K3M 9QW4 RT8Z P2C56\r\n",
        "BQ17K3M9QW4RT8ZP2C56".replace("0", "O"),
    ],
)
def test_normalisation_of_case_separators_and_whitespace(typed):
    assert codes.parse(typed).value == "BQ17K3M9QW4RT8ZP2C56"


def test_crockford_aliases_read_as_digits():
    assert codes.parse("BQ1OOOOOOOOOOOOOOOOO").value == "BQ100000000000000000"


def test_url_form_on_a_configured_host():
    parsed = codes.parse("https://app.boniq.nl/c/BQ1M9S346Q3D25VT4F56", url_hosts=["app.boniq.nl"])
    assert parsed.value == "BQ1M9S346Q3D25VT4F56"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/c/BQ1M9S346Q3D25VT4F56",
        "http://boniq.nl/c/BQ1M9S346Q3D25VT4F56",
        "https://boniq.nl/x/BQ1M9S346Q3D25VT4F56",
        "https://boniq.nl/c/BQ1M9S346Q3D25VT4F57",
    ],
)
def test_url_form_rejects_other_hosts_schemes_paths_and_bad_checks(url):
    with pytest.raises(CodeRejected):
        codes.parse(url)


def test_email_and_mailto_give_an_email_customer():
    assert codes.parse("Jan.Jansen@Example.NL") == codes.CustomerCode(
        "email", "Jan.Jansen@example.nl"
    )
    assert codes.parse("mailto:piet@shop.nl?subject=x").value == "piet@shop.nl"


@pytest.mark.parametrize(
    "garbage",
    [
        "8710400011111",
        "",
        "   ",
        "hello",
        "jan@",
        "@shop.nl",
        "BQ1234",
        "x" * 300,
        "BQ17K3M9QW4RT8ZP2C56" * 20,
        "\x00\x1b[2J",
        "ünïcode@例え",
    ],
)
def test_garbage_is_rejected_with_a_short_reason_that_does_not_repeat_the_input(garbage):
    with pytest.raises(CodeRejected) as info:
        codes.parse(garbage)
    assert len(str(info.value)) < 80
    assert garbage.strip() == "" or garbage not in str(info.value)


def test_non_utf8_bytes_are_rejected_not_raised():
    with pytest.raises(CodeRejected):
        codes.parse(b"\xff\xfe\x00BQ1")


def test_make_code_round_trips():
    code = codes.make_code("7K3M9QW4RT8ZP2C5")
    assert code == "BQ17K3M9QW4RT8ZP2C56"


@given(st.text(max_size=400))
def test_parse_never_raises_anything_but_code_rejected(text):
    try:
        parsed = codes.parse(text)
    except CodeRejected:
        return
    assert parsed.kind in {"boniq_code", "email"}
