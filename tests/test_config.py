"""Configuration: the example validates, errors point at FILE:LINE, secrets from files/credentials."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config
from agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = """\
store:
  merchant_id: demo-merchant
  branch: 1
  workplace: 2
kassa:
  url: http://127.0.0.1:18083/
  ident: my-ident
  secret: my-secret
cloud:
  url: https://ingest.boniq.example/
  token: my-token
"""


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_wrong_type_reports_its_line_and_exits_78(tmp_path):
    text = MINIMAL.replace("  workplace: 2", "  workplace: two")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 78
    assert f"{path}:4: store.workplace:" in result.stderr


def test_every_problem_is_reported_with_its_own_line():
    text = MINIMAL.replace("  branch: 1", "  branch: -1").replace(
        "  ident: my-ident", "  idnet: my-ident"
    )
    with pytest.raises(ConfigError) as info:
        config.parse(text)
    problems = info.value.problems
    assert "config.yaml:3: store.branch: Input should be greater than or equal to 0" in problems
    assert any(
        p.startswith("config.yaml:7: kassa.idnet: unknown key; did you mean 'ident'")
        for p in problems
    )
    assert any(p.startswith("config.yaml:5: kassa.ident: Field required") for p in problems)


def test_scanner_errors_name_the_list_index():
    text = MINIMAL + "scanners:\n  - type: serial\n    device: /dev/ttyACM0\n  - type: laser\n"
    with pytest.raises(ConfigError) as info:
        config.parse(text)
    assert info.value.problems == [
        "config.yaml:15: scanners[1].type: must be one of serial, hid, webcam, stdin"
    ]


def test_yaml_syntax_error_gives_a_line():
    with pytest.raises(ConfigError) as info:
        config.parse(MINIMAL + "matching: [unclosed\n")
    assert info.value.problems[0].startswith("config.yaml:13: syntax:")


def test_url_with_credentials_in_query_is_refused():
    with pytest.raises(ConfigError) as info:
        config.parse(MINIMAL.replace("18083/", "18083/?secret=abc"))
    assert "kassa.url" in str(info.value)


def test_secret_file_is_read_and_an_open_mode_warned_at_its_line(tmp_path):
    secret = tmp_path / "kassa-secret"
    secret.write_text("s3cr3t-from-file\n")
    secret.chmod(0o644)
    cfg = config.parse(MINIMAL.replace("  secret: my-secret", f"  secret_file: {secret}"))
    assert cfg.kassa_secret() == "s3cr3t-from-file"
    [warning] = cfg.warnings
    assert warning.startswith(f"config.yaml:8: kassa.secret_file: warning: {secret} ")
    assert "readable by every user (mode 0644)" in warning and "chmod 600" not in warning
    secret.chmod(0o640)  # root:boniq 0640 is the advice: the agent's user still reads it
    assert (
        config.parse(MINIMAL.replace("  secret: my-secret", f"  secret_file: {secret}")).warnings
        == []
    )


def test_systemd_credentials_directory_supplies_missing_secrets(tmp_path, monkeypatch):
    (tmp_path / "kassa-secret").write_text("cred-secret")
    (tmp_path / "cloud-token").write_text("cred-token")
    for name in ("kassa-secret", "cloud-token"):
        os.chmod(tmp_path / name, 0o600)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = config.parse(
        MINIMAL.replace("  secret: my-secret\n", "").replace("  token: my-token\n", "")
    )
    assert (cfg.kassa_secret(), cfg.cloud_token()) == ("cred-secret", "cred-token")


def test_missing_secret_is_a_config_error(monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = config.parse(MINIMAL.replace("  token: my-token\n", ""))
    with pytest.raises(ConfigError, match=r"cloud\.token: not set"):
        cfg.cloud_token()


def test_defaults_follow_the_spec():
    cfg = config.parse(MINIMAL)
    assert cfg.matching.claim_ttl == 30 and cfg.matching.late_scan_window == 0
    assert cfg.metrics.listen == "127.0.0.1:9464"
    assert cfg.kassa.poll_interval == 1.0


def test_a_webhook_key_too_short_to_keep_strangers_out_is_refused():
    from agent.config import parse

    config = parse(
        "store: {merchant_id: m, branch: 1, workplace: 2}\n"
        "kassa: {url: 'http://127.0.0.1:1/', ident: i, secret: s,"
        " webhooks: {subscription_id: shop, key: ''}}\n"
        "cloud: {url: 'http://127.0.0.1:2/', token: t}\n"
    )
    with pytest.raises(ConfigError) as caught:
        config.webhook_key()
    assert "config.yaml:2: kassa.webhooks.key:" in str(caught.value)
    assert "16 or more" in str(caught.value)
