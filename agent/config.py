"""The configuration file (keys: the README's configuration table): its sections as models, loading and validating it.

Every problem is reported at once as `FILE:LINE: key.path: message` (`agent.config_yaml` finds
the line); secrets and the files the config names are resolved and checked by
`agent.credentials`. The names other modules import from here stay here.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agent.codes import URL_HOSTS
from agent.config_yaml import compose, describe, key_lines, line_of, model_keys
from agent.credentials import (
    CLOUD_CREDENTIAL,
    CLOUD_TOKEN,
    KASSA_CREDENTIAL,
    KASSA_SECRET,
    UNIT_CREDENTIALS,
    WEBHOOK_CREDENTIAL,
    WEBHOOK_KEY,
    SecretSpec,
    check_files,
    credential_sources,
    env_credential_path,
    open_mode_warning,
    read_secret_file,
    readable_by_others,
    section_of,
    transport_problems,
)
from agent.errors import ConfigError
from agent.logs import get_logger, register_secret

__all__ = [
    "CLOUD_CREDENTIAL",
    "KASSA_CREDENTIAL",
    "LISTEN_HINT",
    "UNIT_CREDENTIALS",
    "WEBHOOK_CREDENTIAL",
    "Config",
    "credential_sources",
    "load",
    "parse",
    "readable_by_others",
]

log = get_logger(__name__)

MIN_WEBHOOK_KEY = 16
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
    cashier_message: str = Field(
        default="BONIQ-code gekoppeld: de bon gaat naar de app", min_length=1, max_length=200
    )
    customer_message: str = Field(
        default="BONIQ: uw bon komt in de app", min_length=1, max_length=200
    )
    second_code_message: str = Field(
        default="Deze verkoop heeft al een BONIQ-code; de tweede code is niet gekoppeld",
        min_length=1,
        max_length=200,
    )
    recent_sale_message: str = Field(
        default="BONIQ-code niet gekoppeld: er is net een verkoop "
        "afgerond. Hoort de code bij de klant die nu afrekent, scan"
        " hem dan opnieuw",
        min_length=1,
        max_length=200,
    )
    previous_sale_message: str = Field(
        default="Deze BONIQ-code hoort bij de vorige verkoop; deze verkoop is niet gekoppeld",
        min_length=1,
        max_length=200,
    )


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


MAX_CODE_LENGTH = 512
"""Longest scanner line taken as a code; serial scanners may set `max_length`, others use this."""


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
    max_length: int = Field(default=MAX_CODE_LENGTH, ge=16, le=65536)


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


SCANNERS = (SerialScanner, HidScanner, WebcamScanner, StdinScanner)
ScannerConfig = Annotated[
    SerialScanner | HidScanner | WebcamScanner | StdinScanner, Field(discriminator="type")
]


class MatchingSection(_Section):
    claim_ttl: float = Field(default=30.0, gt=0, le=3600)
    late_scan_window: float = Field(default=0.0, ge=0, le=600)
    clock_skew: float = Field(default=2.0, ge=0, le=60)
    dedupe_window: float = Field(default=5.0, ge=0, le=60)
    recent_sale_guard: float = Field(default=10.0, ge=0, le=600)


class CodesSection(_Section):
    url_hosts: list[str] = Field(default_factory=lambda: list(URL_HOSTS))


class MetricsSection(_Section):
    listen: str = "127.0.0.1:9464"

    @field_validator("listen", mode="before")
    @classmethod
    def _host_port(cls, value: Any) -> Any:
        text = value if isinstance(value, str) else ""
        host, colon, port = text.rpartition(":")
        if text == "" and isinstance(value, str):
            return value
        if (
            not colon
            or not host.strip("[]")
            or not port.isdigit()
            or not 0 < int(port) < 65536
            or any(c.isspace() for c in text)
        ):
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
                "cashier_pin",
                "listen {listen} is reachable from the network: set cashier.pin "
                "(4 or more characters), or listen on 127.0.0.1",
                {"listen": self.listen},
            )
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
            raise ConfigError(
                f"{self.where(WEBHOOK_KEY.key)}: the key has {len(key)} characters;"
                f" give the subscription a Secret Key of {MIN_WEBHOOK_KEY} or more"
            )
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
        return env_credential_path(name)

    def _secret(self, spec: SecretSpec) -> str:
        section = section_of(self, spec.section)
        inline, path = getattr(section, spec.inline), getattr(section, spec.file)
        if inline is not None:
            value = inline.get_secret_value()
        else:
            source = path or self.credential_path(spec.credential)
            if source is None:
                raise ConfigError(
                    f"{self.where(spec.key)}: not set: give {spec.file_key}, or "
                    f"the systemd credential {spec.credential}"
                    f"{self._credential_hint(spec.credential)}"
                )
            key = spec.file_key if path else f"{spec.key} (credential {spec.credential})"
            value = read_secret_file(source, self.where(key))
        register_secret(value)
        return str(value)

    def _credential_hint(self, name: str) -> str:
        if self._credentials is not None:
            where = self._credentials.get(name)
            return f" ({where} does not exist)" if where else ""
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        return (
            f" ({directory}/{name} does not exist)"
            if directory
            else " (no $CREDENTIALS_DIRECTORY: outside the unit give --credentials-dir)"
        )


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


def parse(
    text: str,
    *,
    name: str = "config.yaml",
    source: Path | None = None,
    credentials: dict[str, Path] | None = None,
) -> Config:
    node, data = compose(text, name)
    lines, duplicates = key_lines(node, name)
    if duplicates:
        raise ConfigError(duplicates)
    if node is None or not isinstance(data, dict):
        raise ConfigError(
            f"{name}:1: (top): the file must be a mapping of sections (store, kassa, cloud, …)"
        )
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            describe(exc, node, name, partial(model_keys, Config, SCANNERS))
        ) from None
    config._name, config._lines, config._credentials = name, lines, credentials
    problems, warnings = check_files(config)
    problems += transport_problems(config)
    if source is not None and (config.kassa.secret or config.cloud.token):
        mode = readable_by_others(source)
        if mode:
            key = "kassa.secret" if config.kassa.secret else "cloud.token"
            warnings.append(open_mode_warning(config.where(key), source, mode, "an inline secret"))
    if problems:
        raise ConfigError(sorted(problems, key=line_of))
    config._warnings = warnings
    return config
