"""Support reads the logs: no secret, token, e-mail or BONIQ code in clear, tracebacks included."""

import io
import logging
import socket

import pytest
import requests

from agent import logs


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logs.setup("debug", stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_requests_exception_with_secret_in_url_is_redacted(captured):
    url = f"http://127.0.0.1:{closed_port()}/?ident=shop-ident-42&secret=SuperSecret99"
    log = logs.get_logger("agent.test")
    try:
        requests.post(url, timeout=2)
    except requests.RequestException as exc:
        log.exception("POS call failed: %s", exc)
    text = captured.getvalue()
    assert "Max retries exceeded" in text or "Connection refused" in text
    assert "SuperSecret99" not in text and "shop-ident-42" not in text
    assert "secret=[REDACTED]" in text
    assert all(line.startswith("<") for line in text.splitlines())


def test_registered_secret_is_redacted_anywhere(captured):
    logs.register_secret("tok_live_abcdef")
    logs.get_logger("agent.test").warning("header was Bearer tok_live_abcdef and tok_live_abcdef")
    assert "tok_live_abcdef" not in captured.getvalue()


def test_emails_and_codes_are_masked_in_messages_and_fields(captured):
    log = logs.get_logger("agent.test")
    with logs.correlation("c-1234"):
        log.info("claim for jan.jansen@example.com", extra=logs.fields(code="BQ17K3M9QW4RT8ZP2C56"))
    line = captured.getvalue()
    assert "jan.jansen@" not in line and "BQ17K3M9QW4RT8ZP2C56" not in line
    assert "j***@example.com" in line and "code=BQ1…2C56" in line and "cid=c-1234" in line
    assert line.startswith("<6>claim for")


def test_levels_map_to_journald_priorities(captured):
    log = logs.get_logger("agent.test")
    log.error("e")
    log.warning("w")
    log.debug("d")
    assert [line[:3] for line in captured.getvalue().splitlines()] == ["<3>", "<4>", "<7>"]


def test_logfmt_values_with_spaces_are_quoted(captured):
    logs.get_logger("agent").info("x", extra=logs.fields(reason='a "b" c'))
    assert 'reason="a \\"b\\" c"' in captured.getvalue()


def test_emails_without_a_dot_in_the_domain_are_masked_too(captured):
    logs.get_logger("agent.test").warning('422: {"details": ["jan@localhost is not valid"]}')
    assert "jan@" not in captured.getvalue() and "j***@localhost" in captured.getvalue()
