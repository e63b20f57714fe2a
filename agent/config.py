"""Loading and validating the configuration file (SPEC §7), and resolving secrets.

Every problem is reported at once as `FILE:LINE: key.path: message`, found by walking pydantic's
error location through the YAML node tree, so store IT is sent to the line that is wrong.
Secrets come inline, from a `*_file`, or from `$CREDENTIALS_DIRECTORY` (systemd LoadCredential=).
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from agent.errors import ConfigError
from agent.http import cleartext
from agent.logs import fields, get_logger, register_secret

log = get_logger(__name__)

KASSA_CREDENTIAL = "kassa-secret"
CLOUD_CREDENTIAL = "cloud-token"


_PROXY = r"^https?://[^\s/?#]+/?$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSection(_Section):
    merchant_id: str = Field(min_length=1, max_length=128)
    branch: int = Field(ge=0)
    workplace: int = Field(ge=0)
    name: str | None = None


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
    listen: str = Field(default="127.0.0.1:9464", pattern=r"^$|^\[?[0-9A-Za-z.:-]+\]?:\d{1,5}$")


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

    def kassa_secret(self) -> str:
        return _resolve_secret(self.kassa.secret, self.kassa.secret_file, KASSA_CREDENTIAL,
                               "kassa.secret")

    def cloud_token(self) -> str:
        return _resolve_secret(self.cloud.token, self.cloud.token_file, CLOUD_CREDENTIAL,
                               "cloud.token")

    def scanner_workplace(self, scanner: Any) -> int:
        return scanner.workplace if scanner.workplace is not None else self.store.workplace


def _resolve_secret(inline: SecretStr | None, path: Path | None, credential: str, key: str) -> str:
    if inline is not None:
        value = inline.get_secret_value()
    else:
        path = path or _credential_path(credential)
        if path is None:
            raise ConfigError(f"{key}: not set (give {key}, {key.split('.')[1]}_file, or the "
                              f"systemd credential {credential})")
        value = _read_secret_file(path, key)
    register_secret(value)
    return value


def _credential_path(name: str) -> Path | None:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / name).is_file():
        return Path(directory) / name
    return None


def _read_secret_file(path: Path, key: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    warn_if_readable_by_others(path, what=key)
    if not value:
        raise ConfigError(f"{key}: {path} is empty")
    return value


def warn_if_readable_by_others(path: Path, *, what: str) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWOTH):
        log.warning("a file holding a secret is readable by other users; chmod 600 it",
                    extra=fields(path=str(path), holds=what, mode=oct(mode & 0o777)))
        return True
    return False


def load(path: Path | str) -> Config:
    """Read and validate a config file; raise ConfigError with every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse(text, name=str(path), source=path)


def parse(text: str, *, name: str = "config.yaml", source: Path | None = None) -> Config:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(_syntax_problem(exc, text, name)) from None
    except RecursionError:
        raise ConfigError(f"{name}:1: syntax: lists or mappings nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}:1: (top): the file must be a mapping of sections (store, kassa, cloud, …)")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, node, name)) from None
    problems = _transport_problems(config, node, name)
    if problems:
        raise ConfigError(problems)
    if source is not None and (config.kassa.secret or config.cloud.token):
        warn_if_readable_by_others(source, what="inline secret")
    return config


def _transport_problems(config: Config, root: yaml.Node, name: str) -> list[str]:
    """Clear-text URLs and CA bundles that cannot be read, at the line that names them."""
    problems = []

    def problem(keys: tuple[str, ...], message: str) -> None:
        problems.append(f"{name}:{_locate(root, keys)[1]}: {'.'.join(keys)}: {message}")

    if cleartext(config.kassa.url) and not config.kassa.allow_http:
        problem(("kassa", "url"), "http:// sends the POS secret and customer data in clear; use "
                "https://, or set kassa.allow_http: true for a POS API on the shop LAN")
    if cleartext(config.cloud.url):
        problem(("cloud", "url"), "must be https:// (http:// only for a loopback test cloud)")
    for section, bundle in (("kassa", config.kassa.ca_bundle), ("cloud", config.cloud.ca_bundle)):
        if bundle is None:
            continue
        try:
            with bundle.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            problem((section, "ca_bundle"), f"cannot read {bundle}: {exc.strerror or exc}")
    return problems


def _syntax_problem(exc: yaml.YAMLError, text: str, name: str) -> str:
    """One `FILE:LINE: syntax: message` line, also for errors of the reader (bad characters)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        line = mark.line + 1
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
    else:
        line = 1
    message = getattr(exc, "problem", None) or str(exc).splitlines()[0]
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
        elif error["type"] == "union_tag_invalid":
            keys.append("type")
            message = "must be one of serial, hid, webcam, stdin"
        problems.append(f"{name}:{line}: {'.'.join(keys) or '(top)'}: {message}")
    return sorted(set(problems), key=lambda p: int(p.split(":")[1]))


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
