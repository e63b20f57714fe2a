"""The smaller leaks of issue 11: %-encoded secrets and e-mails, codes glued to other text, and
what a feedback command inherits."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest

from agent import logs
from agent.errors import KassaError
from agent.feedback import Feedback
from agent.kassa import soap
from agent.kassa.client import KassaClient

CODE = "BQ17K3M9QW4RT8ZP2C56"


def test_a_registered_secret_is_redacted_also_percent_encoded() -> None:
    logs.register_secret("p@ss w/rd+1ü")
    text = logs.redact("fault: bad secret=p%40ss%20w%2Frd%2B1%C3%BC; or p%40ss+w%2Frd%2B1%C3%BC")
    assert "p%40ss" not in text and "rd%2B1" not in text


def test_codes_glued_to_other_text_are_masked() -> None:
    for text in (f"id_{CODE}", f"{CODE}x", f"x{CODE}", f"claim={CODE}_2"):
        assert CODE not in logs.redact(text), text
        assert "BQ1…2C56" in logs.redact(text)


def test_a_percent_encoded_email_is_masked() -> None:
    text = logs.redact("HTTP 422: customer jan.jansen%40example.nl unknown")
    assert "jan.jansen" not in text and "%40example.nl" in text


def test_a_pos_fault_echoing_the_encoded_secret_does_not_leak_it() -> None:
    secret, ident = "Zq9!s3cr+t/x", "ident-77"
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            request = conn.recv(65536).decode()
            query = request.split(" ", 2)[1].partition("?")[2]
            echoed = query.partition("secret=")[2].partition("&")[0]  # %-encoded, as received
            body = soap.fault_envelope("Client.Authentication", f"bad credentials: {echoed}")
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )

    threading.Thread(target=answer, daemon=True).start()
    client = KassaClient(f"http://127.0.0.1:{server.getsockname()[1]}/", ident, secret, timeout=5.0)
    with pytest.raises(KassaError) as caught:
        client.get_api_version()
    server.close()
    message = str(caught.value)
    assert "Zq9" not in message and "s3cr" not in message and "bad credentials" in message


def test_a_feedback_command_gets_a_minimal_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    out = tmp_path / "env.txt"
    dump = f"import os; open({str(out)!r}, 'w').write(repr(dict(os.environ)))"
    feedback = Feedback(accepted=f'{sys.executable} -c "{dump}"')
    feedback.accepted()
    assert feedback.wait_idle(10)
    env = eval(out.read_text())  # our own repr
    assert env["BONIQ_FEEDBACK"] == "accepted" and "PATH" in env
    assert not {"CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "HTTPS_PROXY"} & set(env)
