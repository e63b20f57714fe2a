"""check-config names every mistake at its line: YAML slips, duplicate keys, the files the config
refers to (secrets, CA bundles), and a secret given twice. Runs the real command."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.yaml"
BASE = """\
store:
  merchant_id: demo-merchant
  branch: 1
  workplace: 2
kassa:
  url: http://127.0.0.1:18083/
  ident: my-ident
cloud:
  url: https://ingest.boniq.example/
"""
as_root = pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")


def check_config(path: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "check-config", "--config", str(path), *options],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def secret_file(folder: Path, name: str, text: str = "s3cr3t-value\n", mode: int = 0o600) -> Path:
    path = folder / name
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    folder = tmp_path / "credentials"
    folder.mkdir()
    secret_file(folder, "kassa-secret")
    secret_file(folder, "cloud-token")
    return folder


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path


# -- the example -------------------------------------------------------------------------------


def test_the_example_ships_no_inline_secret():
    example = config.parse(EXAMPLE.read_text())
    assert example.kassa.secret is None and example.cloud.token is None
    assert not re.search(r"^\s*(secret|token):", EXAMPLE.read_text(), re.MULTILINE)


def test_the_example_passes_with_the_credentials_of_the_unit(credentials):
    result = check_config(EXAMPLE, "--credentials-dir", str(credentials))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{EXAMPLE}: OK")


def test_without_credentials_check_config_says_which_secret_is_missing(tmp_path):
    result = check_config(EXAMPLE, "--credentials-dir", str(tmp_path))
    assert result.returncode == 78
    lines = EXAMPLE.read_text().splitlines()
    kassa, cloud = lines.index("kassa:") + 1, lines.index("cloud:") + 1
    assert (
        f"{EXAMPLE}:{kassa}: kassa.secret: not set: give kassa.secret_file, or the systemd "
        f"credential kassa-secret ({tmp_path}/kassa-secret does not exist)" in result.stderr
    )
    assert f"{EXAMPLE}:{cloud}: cloud.token: not set" in result.stderr


# -- YAML at the right line -----------------------------------------------------------------


@pytest.mark.parametrize(
    "broken, line, message",
    [
        (BASE.replace("  branch: 1", "  branch 1"), 3, "a key without ':'"),
        (
            BASE.replace("merchant_id: demo-merchant", "merchant_id: 'demo-merchant"),
            2,
            "a quote opened here is never closed",
        ),
    ],
)
def test_a_yaml_slip_is_reported_at_its_own_line(tmp_path, credentials, broken, line, message):
    path = write(tmp_path, broken)
    result = check_config(path, "--credentials-dir", str(credentials))
    assert result.returncode == 78
    assert result.stderr.startswith(f"{path}:{line}: syntax: {message}")


def test_a_duplicate_section_is_an_error_not_last_one_wins(tmp_path, credentials):
    path = write(tmp_path, BASE + "store:\n  merchant_id: other\n  branch: 7\n  workplace: 2\n")
    result = check_config(path, "--credentials-dir", str(credentials))
    assert result.returncode == 78
    assert f"{path}:10: store: duplicate key (first given on line 1)" in result.stderr


def test_a_key_given_twice_in_a_flow_mapping_is_an_error():
    with pytest.raises(config.ConfigError) as info:
        config.parse(BASE + "metrics: {listen: '127.0.0.1:1', listen: ''}\n")
    assert info.value.problems == [
        "config.yaml:10: metrics.listen: duplicate key (first given on line 10); give each key once"
    ]


@pytest.mark.parametrize("listen", ["':9464'", "9464", "'127.0.0.1'", "'localhost:99999'"])
def test_a_wrong_listen_address_says_host_port(tmp_path, credentials, listen):
    path = write(tmp_path, BASE + f"metrics:\n  listen: {listen}\n")
    result = check_config(path, "--credentials-dir", str(credentials))
    assert result.returncode == 78
    assert result.stderr.strip() == (
        f"{path}:11: metrics.listen: must be HOST:PORT, e.g. 127.0.0.1:9464 (or empty to disable)"
    )


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "[::1]:9464", "localhost:1", ""])
def test_good_listen_addresses_pass(listen):
    assert config.parse(BASE + f"metrics:\n  listen: '{listen}'\n").metrics.listen == listen


# -- referenced files --------------------------------------------------------------------------


def test_a_missing_secret_file_is_named_by_its_key_and_line(tmp_path, credentials):
    path = write(
        tmp_path,
        BASE.replace("  ident: my-ident\n", f"  ident: my-ident\n  secret_file: {tmp_path}/nope\n"),
    )
    empty_dir = tmp_path / "none"
    empty_dir.mkdir()
    (empty_dir / "cloud-token").write_text("t0ken")
    result = check_config(path, "--credentials-dir", str(empty_dir))
    assert result.returncode == 78
    assert result.stderr.strip() == f"{path}:8: kassa.secret_file: {tmp_path}/nope does not exist"


@pytest.mark.parametrize("content, message", [("\n  \n", "is empty"), (None, "cannot read")])
def test_an_empty_or_unreadable_token_file_is_an_error(tmp_path, credentials, content, message):
    token = tmp_path / "token"
    if content is None:
        token.mkdir()  # a directory cannot be read as a file, also by root
    else:
        secret_file(tmp_path, "token", content)
    path = write(tmp_path, BASE + f"  token_file: {token}\n")
    (credentials / "cloud-token").unlink()
    result = check_config(path, "--credentials-dir", str(credentials))
    assert result.returncode == 78
    assert result.stderr.startswith(f"{path}:10: cloud.token_file: ")
    assert message in result.stderr


@as_root
def test_a_secret_file_the_agent_may_not_read_is_an_error(tmp_path, credentials):
    secret = secret_file(tmp_path, "secret", mode=0o000)
    path = write(
        tmp_path,
        BASE.replace("  ident: my-ident\n", f"  ident: my-ident\n  secret_file: {secret}\n"),
    )
    (credentials / "kassa-secret").unlink()
    result = check_config(path, "--credentials-dir", str(credentials))
    assert result.returncode == 78
    assert f"{path}:8: kassa.secret_file: cannot read {secret}: Permission denied" in result.stderr


def test_a_world_readable_secret_file_is_a_warning_with_a_fix_the_agent_survives(
    tmp_path, credentials
):
    secret = secret_file(tmp_path, "secret", mode=0o644)
    path = write(
        tmp_path,
        BASE.replace("  ident: my-ident\n", f"  ident: my-ident\n  secret_file: {secret}\n"),
    )
    (credentials / "kassa-secret").unlink()
    result = check_config(path, "--credentials-dir", str(credentials))
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"{path}:8: kassa.secret_file: warning: {secret} ")
    assert "chmod 0640" in result.stderr and "chmod 600" not in result.stderr


def test_a_world_readable_config_with_an_inline_secret_is_not_told_chmod_600(tmp_path, credentials):
    path = write(tmp_path, BASE.replace("  ident: my-ident\n", "  ident: my-ident\n  secret: s3\n"))
    path.chmod(0o644)
    (credentials / "kassa-secret").unlink()
    result = check_config(path, "--credentials-dir", str(credentials))
    assert result.returncode == 0
    assert result.stderr.startswith(
        f"{path}:8: kassa.secret: warning: {path} holds an inline secret"
    )
    assert "chown root:boniq" in result.stderr and "chmod 600" not in result.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("not a certificate\n", "holds no PEM certificate"),
    ],
)
def test_a_ca_bundle_that_cannot_work_is_an_error_at_its_line(
    tmp_path, credentials, content, message
):
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_text(content)
    path = write(
        tmp_path, BASE.replace("  ident: my-ident\n", f"  ident: my-ident\n  ca_bundle: {bundle}\n")
    )
    result = check_config(path, "--credentials-dir", str(credentials))
    assert result.returncode == 78
    assert result.stderr.strip() == f"{path}:8: kassa.ca_bundle: {bundle} {message}" + (
        " (-----BEGIN CERTIFICATE-----)" if "PEM" in message else ""
    )


# -- one source per secret -----------------------------------------------------------------------


def test_inline_secret_and_secret_file_is_an_error_naming_both_lines(tmp_path, credentials):
    secret = secret_file(tmp_path, "secret")
    path = write(
        tmp_path,
        BASE.replace(
            "  ident: my-ident\n", f"  ident: my-ident\n  secret: inline\n  secret_file: {secret}\n"
        ),
    )
    (credentials / "kassa-secret").unlink()
    result = check_config(path, "--credentials-dir", str(credentials))
    assert result.returncode == 78
    assert result.stderr.strip() == (
        f"{path}:8: kassa.secret: the secret is given twice: kassa.secret here and "
        f"kassa.secret_file on line 9; keep one"
    )


def test_inline_token_and_a_credential_is_an_error_naming_both(tmp_path, credentials):
    path = write(tmp_path, BASE + "  token: inline-token\n")
    result = check_config(path, "--credentials-dir", str(credentials))
    assert result.returncode == 78
    assert (
        f"{path}:10: cloud.token: the secret is given twice: cloud.token here and the "
        f"systemd credential cloud-token ({credentials}/cloud-token); keep one; to keep it "
        f"in the config, reset LoadCredential= in a drop-in"
    ) in result.stderr
