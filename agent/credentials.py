"""Secrets and the files the configuration names: where each secret comes from, and the
checks made when the config is loaded.

Secrets come inline, from a `*_file`, or from `$CREDENTIALS_DIRECTORY` (systemd LoadCredential=):
exactly one source each. Files the config names (secrets, CA bundles) are checked when it is
loaded, so a missing or unreadable one is a configuration error (exit 78) at its own line.
"""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config_yaml import line_of
from agent.errors import ConfigError
from agent.http import cleartext

if TYPE_CHECKING:
    from agent.config import Config

KASSA_CREDENTIAL = "kassa-secret"
CLOUD_CREDENTIAL = "cloud-token"
WEBHOOK_CREDENTIAL = "webhook-key"
# The unit's LoadCredential= sources (systemd/boniq-agent.service): where check-config and doctor
# look for the credentials when they run outside the service.
UNIT_CREDENTIALS = {
    KASSA_CREDENTIAL: Path("/etc/boniq-agent/kassa-secret"),
    CLOUD_CREDENTIAL: Path("/etc/boniq-agent/cloud-token"),
}


class SecretSpec:
    def __init__(self, section: str, inline: str, file: str, credential: str) -> None:
        self.section, self.inline, self.file, self.credential = section, inline, file, credential
        self.key, self.file_key = f"{section}.{inline}", f"{section}.{file}"


KASSA_SECRET = SecretSpec("kassa", "secret", "secret_file", KASSA_CREDENTIAL)
CLOUD_TOKEN = SecretSpec("cloud", "token", "token_file", CLOUD_CREDENTIAL)
WEBHOOK_KEY = SecretSpec("kassa.webhooks", "key", "key_file", WEBHOOK_CREDENTIAL)


def section_of(config: Config, dotted: str) -> Any:
    section: Any = config
    for name in dotted.split("."):
        section = getattr(section, name)
    return section


def credential_sources(directory: Path | str | None = None) -> dict[str, Path]:
    """Where check-config and doctor find the systemd credentials: `--credentials-dir`, else
    $CREDENTIALS_DIRECTORY, else the unit's LoadCredential= sources."""
    base = directory or os.environ.get("CREDENTIALS_DIRECTORY")
    if base:
        return {name: Path(base) / name for name in (*UNIT_CREDENTIALS, WEBHOOK_CREDENTIAL)}
    return dict(UNIT_CREDENTIALS)


def env_credential_path(name: str) -> Path | None:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / name).is_file():
        return Path(directory) / name
    return None


def read_secret_file(path: Path, where: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{where}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{where}: cannot read {path}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}"
        ) from None
    if not value:
        raise ConfigError(f"{where}: {path} is empty")
    return value


def readable_by_others(path: Path) -> str | None:
    """The mode, as `0644`, when users other than owner and group may read or write the file."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return f"{mode & 0o777:04o}" if mode & (stat.S_IROTH | stat.S_IWOTH) else None


def open_mode_warning(where: str, path: Path, mode: str, what: str) -> str:
    """The fix keeps the file readable by the agent's user: `chmod 600` on a root-owned config
    would lock the agent (user boniq) out of it."""
    return (
        f"{where}: warning: {path} holds {what} and is readable by every user (mode {mode});"
        f" `chown root:boniq {path} && chmod 0640 {path}`, or move the secret into a systemd"
        f" credential (LoadCredential=)"
    )


def transport_problems(config: Config) -> list[str]:
    """Clear-text URLs, at the line that names them (CA bundles: `check_files`)."""
    problems = []
    if cleartext(config.kassa.url) and not config.kassa.allow_http:
        problems.append(
            f"{config.where('kassa.url')}: http:// sends the POS secret and customer"
            " data in clear; use https://, or set kassa.allow_http: true for a POS"
            " API on the shop LAN"
        )
    if cleartext(config.cloud.url):
        problems.append(
            f"{config.where('cloud.url')}: must be https:// (http:// only for a"
            " loopback test cloud)"
        )
    return problems


def check_files(config: Config) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    warnings: list[str] = []
    for spec in (KASSA_SECRET, CLOUD_TOKEN):
        _check_secret_sources(config, spec, problems, warnings)
    if config.kassa.webhooks is not None:
        _check_secret_sources(config, WEBHOOK_KEY, problems, warnings)
        warnings += _webhook_listen_warnings(config)
    for section in ("kassa", "cloud"):
        bundle = getattr(config, section).ca_bundle
        if bundle is not None:
            problem = _ca_bundle_problem(bundle)
            if problem:
                problems.append(f"{config.where(section + '.ca_bundle')}: {problem}")
    return problems, warnings


def _check_secret_sources(
    config: Config, spec: SecretSpec, problems: list[str], warnings: list[str]
) -> None:
    section = section_of(config, spec.section)
    given: list[tuple[str, str]] = []  # (key as named to the user, where)
    if getattr(section, spec.inline) is not None:
        given.append((spec.key, config.where(spec.key)))
    file = getattr(section, spec.file)
    if file is not None:
        given.append((spec.file_key, config.where(spec.file_key)))
        _check_secret_file(file, config.where(spec.file_key), problems, warnings)
    credential = config.credential_path(spec.credential)
    if credential is not None and not (file is not None and _same_file(file, credential)):
        named = f"the systemd credential {spec.credential} ({credential})"
        given.append((named, ""))
        if len(given) == 1:
            where = config.where(f"{spec.key} (credential {spec.credential})")
            _check_secret_file(credential, where, problems, warnings)
    if len(given) > 1:
        (first, where), rest = given[0], given[1:]
        others = " and ".join(f"{key} on line {line_of(at)}" if at else key for key, at in rest)
        hint = (
            "; to keep it in the config, reset LoadCredential= in a drop-in"
            if not rest[-1][1]
            else ""
        )
        problems.append(
            f"{where}: the secret is given twice: {first} here and {others}; keep one{hint}"
        )


def _webhook_listen_warnings(config: Config) -> list[str]:
    from agent.cashier.access import is_loopback_listen

    assert config.kassa.webhooks is not None
    listen = config.kassa.webhooks.listen
    if is_loopback_listen(listen):
        return []
    return [
        (
            f"{config.where('kassa.webhooks.listen')}: warning: {listen} is reachable from the"
            " shop network; only signed requests are accepted, but keep it on 127.0.0.1 unless"
            " the till's webhooks come from another machine"
        )
    ]


def _check_secret_file(path: Path, where: str, problems: list[str], warnings: list[str]) -> None:
    try:
        read_secret_file(path, where)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return
    mode = readable_by_others(path)
    if mode:
        warnings.append(open_mode_warning(where, path, mode, "a secret"))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _ca_bundle_problem(path: Path) -> str | None:
    """Why requests could not use the bundle (None when it can): checked at load, because at
    run time it is a TLS error on every request, retried forever."""
    if path.is_dir():
        return None if os.access(path, os.R_OK | os.X_OK) else f"cannot read the directory {path}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if not data.strip():
        return f"{path} is empty"
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except (ssl.SSLError, ValueError):
        return f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    return None
