"""What the configuration lets travel in clear, and a CA bundle that must exist: refused at
check-config time with FILE:LINE, not at the first request."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_config import MINIMAL, cli

from agent import config
from agent.errors import ConfigError
from agent.http import cleartext


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.parse(text)
    return caught.value.problems


@pytest.mark.parametrize(
    ("url", "clear"),
    [
        ("http://127.0.0.1:18083/", False),
        ("http://127.9.9.9/", False),
        ("http://[::1]:80/", False),
        ("http://localhost:8080/", False),
        ("https://pos.shop.lan/", False),
        ("http://192.168.1.20:8080/", True),
        ("http://pos.shop.lan/", True),
        ("HTTP://10.0.0.1/", True),
        ("http://127.0.0.1.evil.nl/", True),
        ("http://localhost.evil.nl/", True),
    ],
)
def test_cleartext_is_http_to_anything_but_loopback(url: str, clear: bool) -> None:
    assert cleartext(url) is clear


def test_http_to_a_lan_pos_is_refused_without_allow_http() -> None:
    text = MINIMAL.replace("http://127.0.0.1:18083/", "http://192.168.1.20:8080/")
    [problem] = problems(text)
    assert problem.startswith("config.yaml:6: kassa.url: http:// sends the POS secret")
    assert "kassa.allow_http: true" in problem
    allowed = config.parse(
        text.replace("  ident: my-ident", "  ident: my-ident\n  allow_http: true")
    )
    assert allowed.kassa.allow_http


def test_http_to_the_cloud_is_refused_except_on_loopback() -> None:
    [problem] = problems(
        MINIMAL.replace("https://ingest.boniq.example/", "http://ingest.boniq.example/")
    )
    assert problem.startswith("config.yaml:10: cloud.url: must be https://")
    config.parse(MINIMAL.replace("https://ingest.boniq.example/", "http://127.0.0.1:8443/"))


def test_allow_http_does_not_open_the_cloud() -> None:
    text = MINIMAL.replace("  ident: my-ident", "  ident: my-ident\n  allow_http: true")
    assert problems(text.replace("https://ingest", "http://ingest"))[0].startswith(
        "config.yaml:11: cloud.url"
    )


def test_a_missing_ca_bundle_fails_check_config_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        MINIMAL.replace(
            "  token: my-token", f"  token: my-token\n  ca_bundle: {tmp_path}/nowhere.pem"
        )
    )
    path.chmod(0o600)
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 78
    assert f"{path}:12: cloud.ca_bundle: {tmp_path}/nowhere.pem does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_proxy_keys_are_explicit() -> None:
    text = MINIMAL.replace("  token: my-token", "  token: my-token\n  proxy: http://10.0.0.5:3128")
    assert config.parse(text).cloud.proxy == "http://10.0.0.5:3128"
    [problem] = problems(text.replace("http://10.0.0.5:3128", "'http://u:p@x/?q'"))
    assert problem.startswith("config.yaml:12: cloud.proxy:")


def test_the_daemon_warns_at_start_when_the_pos_api_is_in_clear(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agent.daemon import Daemon

    text = (
        MINIMAL.replace("http://127.0.0.1:18083/", "http://192.168.1.20:8080/").replace(
            "  ident: my-ident", "  ident: my-ident\n  allow_http: true"
        )
        + f"data_dir: {tmp_path}\n"
    )
    caplog.set_level(logging.WARNING)
    daemon = Daemon(config.parse(text), sources=[])
    try:
        assert "travel in clear" in caplog.text
    finally:
        daemon.store.close()
