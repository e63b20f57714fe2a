"""Loading and validating the configuration file (SPEC §7), and resolving secrets.

Every problem is reported at once as `FILE:LINE: key.path: message`, found by walking pydantic's
error location through the YAML node tree, so store IT is sent to the line that is wrong.
Secrets come inline, from a `*_file`, or from `$CREDENTIALS_DIRECTORY` (systemd LoadCredential=):
exactly one source each. Files the config names (secrets, CA bundles) are checked when it is
loaded, so a missing or unreadable one is a configuration error (exit 78) at its own line.
"""

from __future__ import annotations

import difflib
import os
import ssl
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from agent.errors import ConfigError
from agent.http import cleartext
from agent.logs import get_logger, register_secret

log = get_logger(__name__)

KASSA_CREDENTIAL = "kassa-secret"
CLOUD_CREDENTIAL = "cloud-token"
WEBHOOK_CREDENTIAL = "webhook-key"
MIN_WEBHOOK_KEY = 16
# The unit's LoadCredential= sources (systemd/boniq-agent.service): where check-config and doctor
# look for the credentials when they run outside the service.
UNIT_CREDENTIALS = {KASSA_CREDENTIAL: Path("/etc/boniq-agent/kassa-secret"),
                    CLOUD_CREDENTIAL: Path("/etc/boniq-agent/cloud-token")}
LISTEN_HINT = "must be HOST:PORT, e.g. 127.0.0.1:9464 (or empty to disable)"


_PROXY = r"^https?://[^\s/?#]+/?$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSection(_Section):
    merchant_id: str = Field(min_length=1, max_length=128)
    branch: int = Field(ge=0)
    workplace: int = Field(ge=0)
    name: str | None = None


class WebhooksSection(_Section):
    """MplusKASSA webhook mode (docs/webhooks.md): the till's own scanner posts
    `scanCode` and the session events to this listener."""

    listen: str = Field(default="127.0.0.1:18090", pattern=r"^\[?[0-9A-Za-z.:-]+\]?:\d{1,5}$")
    subscription_id: str = Field(min_length=1, max_length=200)
    key: SecretStr | None = None
    key_file: Path | None = None
    key_encoding: Literal["auto", "base64", "text"] = "auto"
    cashier_message: str = Field(default="BONIQ-code gekoppeld: de bon gaat naar de app",
                                 min_length=1, max_length=200)
    customer_message: str = Field(default="BONIQ: uw bon komt in de app",
                                  min_length=1, max_length=200)
    second_code_message: str = Field(default="Deze verkoop heeft al een BONIQ-code; "
                                     "de tweede code is niet gekoppeld", min_length=1,
                                     max_length=200)
    recent_sale_message: str = Field(default="BONIQ-code niet gekoppeld: er is net een verkoop "
                                     "afgerond. Hoort de code bij de klant die nu afrekent, scan"
                                     " hem dan opnieuw", min_length=1, max_length=200)
    previous_sale_message: str = Field(default="Deze BONIQ-code hoort bij de vorige verkoop; "
                                       "deze verkoop is niet gekoppeld", min_length=1,
                                       max_length=200)


class KassaSection(_Section):
    url: str = Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    ident: str = Field(min_length=1)
    secret: SecretStr | None = None
    secret_file: Path | None = None
    poll_interval: float = Field(default=1.0, gt=0, le=300)
    timeout: float = Field(default=10.0, gt=0, le=300)
    batch: int = Field(default=100, ge=1, le=1000)
    ca_bundle: Path | None = None
    allow_http: bool = False
    proxy: str | None = Field(default=None, pattern=_PROXY)
    webhooks: WebhooksSection | None = None


class CloudSection(_Section):
    url: str = Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    token: SecretStr | None = None
    token_file: Path | None = None
    timeout: float = Field(default=10.0, gt=0, le=300)
    workers: int = Field(default=4, ge=1, le=32)
    ca_bundle: Path | None = None
    retry_base: float = Field(default=1.0, gt=0, le=3600)
    retry_max: float = Field(default=300.0, gt=0, le=86400)
    proxy: str | None = Field(default=None, pattern=_PROXY)


class _Scanner(_Section):
    device: str | None = None
    workplace: int | None = Field(default=None, ge=0)


class SerialScanner(_Scanner):
    type: Literal["serial"]
    device: str
    baudrate: int = Field(default=9600, ge=50, le=4_000_000)
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
    line_ending: Literal["cr", "lf", "crlf", "any"] = "any"
    aim_prefix: bool = False
    max_length: int = Field(default=512, ge=16, le=65536)


class HidScanner(_Scanner):
    type: Literal["hid"]
    device: str
    layout: Literal["us", "uk", "de", "fr"] = "us"
    grab: bool = True
    gap_ms: int = Field(default=50, ge=5, le=5000)


class WebcamScanner(_Scanner):
    type: Literal["webcam"]
    device: str = "0"
    decoder: Literal["zxing", "pyzbar"] = "zxing"
    repeat_after: float = Field(default=2.0, ge=0)
    fps: float | None = Field(default=None, gt=0)

    @field_validator("device", mode="before")
    @classmethod
    def _index_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class StdinScanner(_Scanner):
    type: Literal["stdin"]


ScannerConfig = Annotated[
    Union[SerialScanner, HidScanner, WebcamScanner, StdinScanner], Field(discriminator="type")
]


class MatchingSection(_Section):
    claim_ttl: float = Field(default=30.0, gt=0, le=3600)
    late_scan_window: float = Field(default=0.0, ge=0, le=600)
    clock_skew: float = Field(default=2.0, ge=0, le=60)
    dedupe_window: float = Field(default=5.0, ge=0, le=60)
    recent_sale_guard: float = Field(default=10.0, ge=0, le=600)


class CodesSection(_Section):
    url_hosts: list[str] = Field(default_factory=lambda: ["boniq.nl", "app.boniq.nl"])


class MetricsSection(_Section):
    listen: str = "127.0.0.1:9464"

    @field_validator("listen", mode="before")
    @classmethod
    def _host_port(cls, value: Any) -> Any:
        text = value if isinstance(value, str) else ""
        host, colon, port = text.rpartition(":")
        if text == "" and isinstance(value, str):
            return value
        if (not colon or not host.strip("[]") or not port.isdigit()
                or not 0 < int(port) < 65536 or any(c.isspace() for c in text)):
            raise ValueError(LISTEN_HINT)
        return value


class CashierSection(_Section):
    listen: str = Field(default="127.0.0.1:9465", pattern=r"^$|^\[?[0-9A-Za-z.:-]+\]?:\d{1,5}$")
    pin: SecretStr | None = Field(default=None, min_length=4, max_length=64)
    language: Literal["nl", "en"] = "nl"

    @model_validator(mode="after")
    def _pin_off_loopback(self) -> CashierSection:
        from agent.cashier.access import is_loopback_listen

        if self.listen.strip() and self.pin is None and not is_loopback_listen(self.listen):
            raise PydanticCustomError(
                "cashier_pin", "listen {listen} is reachable from the network: set cashier.pin "
                "(4 or more characters), or listen on 127.0.0.1", {"listen": self.listen})
        return self


class FeedbackSection(_Section):
    accepted: str | None = None
    rejected: str | None = None
    delivered: str | None = None


class Config(_Section):
    store: StoreSection
    kassa: KassaSection
    cloud: CloudSection
    scanners: list[ScannerConfig] = Field(default_factory=list)
    data_dir: Path = Path("/var/lib/boniq-agent")
    matching: MatchingSection = MatchingSection()
    codes: CodesSection = CodesSection()
    metrics: MetricsSection = MetricsSection()
    feedback: FeedbackSection = FeedbackSection()
    cashier: CashierSection = CashierSection()
    retention_days: int = Field(default=90, ge=1, le=3650)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    _name: str = PrivateAttr(default="")
    _lines: dict[str, int] = PrivateAttr(default_factory=dict)
    _credentials: dict[str, Path] | None = PrivateAttr(default=None)
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """`FILE:LINE: key: message` for what works but should be fixed (a readable secret)."""
        return list(self._warnings)

    def kassa_secret(self) -> str:
        return self._secret(KASSA_SECRET)

    def cloud_token(self) -> str:
        return self._secret(CLOUD_TOKEN)

    def webhook_key(self) -> str:
        """The webhook subscription's secret key, as typed in the back office; a short one
        (an empty key would let anyone sign) is a configuration error."""
        key = self._secret(WEBHOOK_KEY)
        if len(key) < MIN_WEBHOOK_KEY:
            raise ConfigError(f"{self.where(WEBHOOK_KEY.key)}: the key has {len(key)} characters;"
                              f" give the subscription a Secret Key of {MIN_WEBHOOK_KEY} or more")
        return key

    def scanner_workplace(self, scanner: Any) -> int:
        return scanner.workplace if scanner.workplace is not None else self.store.workplace

    def where(self, key: str) -> str:
        """`FILE:LINE: key` of a key (or of its nearest parent that is in the file)."""
        path = key
        while path and path not in self._lines:
            path = path.rpartition(".")[0]
        line = self._lines.get(path, 1)
        return f"{self._name}:{line}: {key}" if self._name else key

    def credential_path(self, name: str) -> Path | None:
        """The systemd credential's file, when there is one: $CREDENTIALS_DIRECTORY, or the
        sources given to `load(credentials=…)` (check-config and doctor outside the unit)."""
        if self._credentials is not None:
            path = self._credentials.get(name)
            return path if path is not None and os.path.lexists(path) else None
        return _credential_path(name)

    def _secret(self, spec: "_SecretSpec") -> str:
        section = _section(self, spec.section)
        inline, path = getattr(section, spec.inline), getattr(section, spec.file)
        if inline is not None:
            value = inline.get_secret_value()
        else:
            source = path or self.credential_path(spec.credential)
            if source is None:
                raise ConfigError(f"{self.where(spec.key)}: not set: give {spec.file_key}, or "
                                  f"the systemd credential {spec.credential}"
                                  f"{self._credential_hint(spec.credential)}")
            key = spec.file_key if path else f"{spec.key} (credential {spec.credential})"
            value = _read_secret_file(source, self.where(key))
        register_secret(value)
        return value

    def _credential_hint(self, name: str) -> str:
        if self._credentials is not None:
            where = self._credentials.get(name)
            return f" ({where} does not exist)" if where else ""
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        return (f" ({directory}/{name} does not exist)" if directory
                else " (no $CREDENTIALS_DIRECTORY: outside the unit give --credentials-dir)")


class _SecretSpec:
    def __init__(self, section: str, inline: str, file: str, credential: str) -> None:
        self.section, self.inline, self.file, self.credential = section, inline, file, credential
        self.key, self.file_key = f"{section}.{inline}", f"{section}.{file}"


KASSA_SECRET = _SecretSpec("kassa", "secret", "secret_file", KASSA_CREDENTIAL)
CLOUD_TOKEN = _SecretSpec("cloud", "token", "token_file", CLOUD_CREDENTIAL)
WEBHOOK_KEY = _SecretSpec("kassa.webhooks", "key", "key_file", WEBHOOK_CREDENTIAL)


def _section(config: Config, dotted: str) -> Any:
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


def _credential_path(name: str) -> Path | None:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / name).is_file():
        return Path(directory) / name
    return None


def _read_secret_file(path: Path, where: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{where}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: "
                          f"{getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None
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


def _open_mode_warning(where: str, path: Path, mode: str, what: str) -> str:
    """The fix keeps the file readable by the agent's user: `chmod 600` on a root-owned config
    would lock the agent (user boniq) out of it."""
    return (f"{where}: warning: {path} holds {what} and is readable by every user (mode {mode});"
            f" `chown root:boniq {path} && chmod 0640 {path}`, or move the secret into a systemd"
            f" credential (LoadCredential=)")


def load(path: Path | str, *, credentials: dict[str, Path] | None = None) -> Config:
    """Read and validate a config file; raise ConfigError with every problem found.

    `credentials`: where the systemd credentials are (see `credential_sources`); by default
    only $CREDENTIALS_DIRECTORY, as in the unit."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse(text, name=str(path), source=path, credentials=credentials)


def parse(text: str, *, name: str = "config.yaml", source: Path | None = None,
          credentials: dict[str, Path] | None = None) -> Config:
    node, data = _compose(text, name)
    lines, duplicates = _key_lines(node, name)
    if duplicates:
        raise ConfigError(duplicates)
    if not isinstance(data, dict):
        raise ConfigError(f"{name}:1: (top): the file must be a mapping of sections (store, kassa, cloud, …)")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, node, name)) from None
    config._name, config._lines, config._credentials = name, lines, credentials
    problems, warnings = _check_files(config)
    problems += _transport_problems(config)
    if source is not None and (config.kassa.secret or config.cloud.token):
        mode = readable_by_others(source)
        if mode:
            key = "kassa.secret" if config.kassa.secret else "cloud.token"
            warnings.append(_open_mode_warning(config.where(key), source, mode, "an inline secret"))
    if problems:
        raise ConfigError(sorted(problems, key=_line_of))
    config._warnings = warnings
    return config


def _transport_problems(config: Config) -> list[str]:
    """Clear-text URLs, at the line that names them (CA bundles: `_check_files`)."""
    problems = []
    if cleartext(config.kassa.url) and not config.kassa.allow_http:
        problems.append(f"{config.where('kassa.url')}: http:// sends the POS secret and customer"
                        " data in clear; use https://, or set kassa.allow_http: true for a POS"
                        " API on the shop LAN")
    if cleartext(config.cloud.url):
        problems.append(f"{config.where('cloud.url')}: must be https:// (http:// only for a"
                        " loopback test cloud)")
    return problems


def _compose(text: str, name: str) -> tuple[yaml.Node | None, Any]:
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # the reader already refuses control characters here
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    except yaml.YAMLError as exc:
        raise ConfigError(_syntax_problem(exc, text, name)) from None
    except RecursionError:
        raise ConfigError(f"{name}:1: syntax: lists or mappings nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _key_lines(root: yaml.Node | None, name: str) -> tuple[dict[str, int], list[str]]:
    """The line of every key path (`kassa.secret_file`, `scanners[0].device`), and a problem
    for each key given twice in one mapping (YAML would keep the last one silently)."""
    lines: dict[str, int] = {}
    duplicates: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[str, yaml.Node]] = [("", root)] if root is not None else []
    while stack:
        path, node = stack.pop()
        if id(node) in seen:  # an alias: walked once (a "billion laughs" file stays linear)
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault(f"{path}[{i}]", item.start_mark.line + 1)
                stack.append((f"{path}[{i}]", item))
        elif isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                    continue
                child = f"{path}.{key.value}" if path else key.value
                line = key.start_mark.line + 1
                if key.value in keys:
                    duplicates.append(f"{name}:{line}: {child}: duplicate key (first given on "
                                      f"line {lines[child]}); give each key once")
                    continue
                keys.add(key.value)
                lines[child] = line
                stack.append((child, value))
    return lines, sorted(duplicates, key=_line_of)


def _line_of(problem: str) -> int:
    parts = problem.split(":")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _check_files(config: Config) -> tuple[list[str], list[str]]:
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


def _check_secret_sources(config: Config, spec: _SecretSpec, problems: list[str],
                          warnings: list[str]) -> None:
    section = _section(config, spec.section)
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
        others = " and ".join(f"{key} on line {_line_of(at)}" if at else key for key, at in rest)
        hint = ("; to keep it in the config, reset LoadCredential= in a drop-in"
                if not rest[-1][1] else "")
        problems.append(f"{where}: the secret is given twice: {first} here and {others};"
                        f" keep one{hint}")


def _webhook_listen_warnings(config: Config) -> list[str]:
    from agent.cashier.access import is_loopback_listen

    assert config.kassa.webhooks is not None
    listen = config.kassa.webhooks.listen
    if is_loopback_listen(listen):
        return []
    return [f"{config.where('kassa.webhooks.listen')}: warning: {listen} is reachable from the"
            " shop network; only signed requests are accepted, but keep it on 127.0.0.1 unless"
            " the till's webhooks come from another machine"]


def _check_secret_file(path: Path, where: str, problems: list[str], warnings: list[str]) -> None:
    try:
        _read_secret_file(path, where)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return
    mode = readable_by_others(path)
    if mode:
        warnings.append(_open_mode_warning(where, path, mode, "a secret"))


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


def _syntax_problem(exc: yaml.YAMLError, text: str, name: str) -> str:
    """One `FILE:LINE: syntax: message` line, also for errors of the reader (bad characters).

    A scanner error is reported where the token began (the key without ':', the quote never
    closed), not where the scanner gave up, which is often lines later."""
    mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    context = getattr(exc, "context", None) or ""
    if isinstance(exc, yaml.scanner.ScannerError) and context_mark is not None:
        mark = context_mark
    if mark is not None:
        line = mark.line + 1
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
    else:
        line = 1
    message = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is context_mark and context.startswith("while scanning a simple key"):
        message = "a key without ':' (write KEY: VALUE)"
    elif mark is context_mark and context.startswith("while scanning a quoted scalar"):
        message = "a quote opened here is never closed"
    elif mark is context_mark and context:
        message = f"{context}: {message}"
    return f"{name}:{line}: syntax: {' '.join(message.split())}"


def _describe(exc: ValidationError, root: yaml.Node, name: str) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        keys, line = _locate(root, error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = _unknown_key_message(keys)
        elif error["type"] == "string_pattern_mismatch" and keys and keys[-1] == "url":
            message = "must be an http:// or https:// URL (no query: credentials go in ident/secret)"
        elif error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        elif error["type"] == "union_tag_invalid":
            keys.append("type")
            message = "must be one of serial, hid, webcam, stdin"
        problems.append(f"{name}:{line}: {'.'.join(keys) or '(top)'}: {message}")
    return sorted(set(problems), key=_line_of)


def _locate(root: yaml.Node, loc: Sequence[Any]) -> tuple[list[str], int]:
    """Follow a pydantic location through the YAML tree: the dotted path and its line."""
    node, keys, line = root, [], root.start_mark.line + 1
    for part in loc:
        child = _child(node, part)
        if child is None:
            if not _is_union_tag(node, part):
                keys.append(str(part))  # a missing key: named, at its parent's line
            continue
        key_node, node = child
        keys.append(f"[{part}]" if isinstance(part, int) else str(part))
        line = (key_node or node).start_mark.line + 1
    return [k for k in _join_indices(keys)], line


def _is_union_tag(node: yaml.Node, part: Any) -> bool:
    if not isinstance(node, yaml.MappingNode):
        return False
    return any(k.value == "type" and getattr(v, "value", None) == part for k, v in node.value)


def _child(node: yaml.Node, part: Any) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return None, node.value[part]
    return None


def _join_indices(keys: list[str]) -> list[str]:
    out: list[str] = []
    for key in keys:
        if key.startswith("[") and out:
            out[-1] += key
        else:
            out.append(key)
    return out


def _unknown_key_message(keys: list[str]) -> str:
    known = _known_keys(keys[:-1])
    guess = difflib.get_close_matches(keys[-1] if keys else "", known, n=1)
    hint = f"; did you mean '{guess[0]}'?" if guess else ""
    return f"unknown key{hint}"


def _known_keys(parent: list[str]) -> list[str]:
    model: Any = Config
    for key in parent:
        field = model.model_fields.get(key.split("[")[0]) if hasattr(model, "model_fields") else None
        annotation = getattr(field, "annotation", None)
        if annotation is None or not hasattr(annotation, "model_fields"):
            return _all_scanner_keys() if key.startswith("scanners") else []
        model = annotation
    return list(model.model_fields)


def _all_scanner_keys() -> list[str]:
    keys: set[str] = set()
    for model in (SerialScanner, HidScanner, WebcamScanner, StdinScanner):
        keys.update(model.model_fields)
    return sorted(keys)
