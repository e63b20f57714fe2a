"""`boniq-agent doctor`: one line per check, OK or FAIL with the fix, for store IT and support.

Checks never change anything: the store is opened read-only, the POS API is asked read-only
questions, the cloud only for /v1/health.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from agent import __version__
from agent.config import Config, credential_sources, load
from agent.errors import AgentError, ConfigError, KassaRejected
from agent.http import HttpError, Transport
from agent.logs import redact
from agent.probe import probe
from agent.queue.store import DB_NAME

if TYPE_CHECKING:
    from agent.kassa.client import KassaClient

MIN_FREE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warn: bool = False

    def line(self) -> str:
        mark = "FAIL" if not self.ok else "WARN" if self.warn else "OK  "
        text = f"{mark}  {self.name:<14} {self.detail}"
        return (
            text
            if (self.ok and not self.warn) or not self.fix
            else f"{text}\n      fix: {self.fix}"
        )


_UNEXPECTED_FIX = "this is a bug in the agent: send this output to support"


def run(config_path: str, credentials_dir: str | None = None) -> int:
    """Print each check as it finishes (a hung endpoint must not hide the lines before it)."""
    passed = failed = 0
    for check in checks_for(config_path, credentials_dir):
        print(redact(check.line()), flush=True)
        passed, failed = (passed + 1, failed) if check.ok else (passed, failed + 1)
    print(f"{passed} OK, {failed} FAIL", flush=True)
    return 1 if failed else 0


def checks_for(config_path: str, credentials_dir: str | None = None) -> Iterator[Check]:
    try:
        config = load(config_path, credentials=credential_sources(credentials_dir))
    except ConfigError as exc:
        yield Check(
            "config",
            False,
            "; ".join(exc.problems),
            "edit the lines named above; `boniq-agent check-config` re-checks",
        )
        for name in ("database", "disk", "scanners", "POS API", "cloud"):
            yield Check(name, False, "not checked: the configuration is invalid (above)")
        return
    except Exception as exc:  # noqa: BLE001 - doctor reports, it never dies with a traceback
        yield _unexpected("config", exc)
        return
    yield Check("config", True, f"{config_path} is valid")
    for warning in config.warnings:
        yield Check("config", True, warning, "see the line named", warn=True)
    stages: list[tuple[str, Callable[[], Iterable[Check]]]] = [
        ("secrets", lambda: _secrets(config)),
        ("database", lambda: [_store(config.data_dir)]),
        ("disk", lambda: [_disk(config.data_dir)]),
        *[(f"scanner {s.type}", lambda s=s: [_scanner(s)]) for s in config.scanners],
        ("POS API", lambda: _kassa(config)),
        ("cloud", lambda: [_cloud(config)]),
    ]
    for name, stage in stages:
        try:
            yield from stage()
        except Exception as exc:  # noqa: BLE001
            yield _unexpected(name, exc)


def _unexpected(name: str, exc: Exception) -> Check:
    return Check(
        name,
        False,
        f"check failed unexpectedly: {type(exc).__name__}: {redact(str(exc))[:300]}",
        _UNEXPECTED_FIX,
    )


def _guard(name: str, func: Callable[[], Check], fix: str) -> Check:
    try:
        return func()
    except AgentError as exc:
        return Check(name, False, str(exc), fix)


def _secrets(config: Config) -> list[Check]:
    fix = (
        "give it in a *_file (mode 0640, root:boniq) or as a systemd credential "
        "(LoadCredential=; outside the unit: --credentials-dir DIR)"
    )
    return [
        _guard(
            "kassa secret",
            lambda: (config.kassa_secret(), Check("kassa secret", True, "set"))[1],
            fix,
        ),
        _guard(
            "cloud token", lambda: (config.cloud_token(), Check("cloud token", True, "set"))[1], fix
        ),
    ]


def _secret_missing(config: Config, get: Callable[[], str]) -> str | None:
    try:
        get()
    except AgentError:
        return "not checked: its secret is not available (above)"
    return None


def _store(data_dir: Path) -> Check:
    path = data_dir / DB_NAME
    if not path.exists():
        where = data_dir if data_dir.exists() else data_dir.parent
        fix = f"create {data_dir} writable by the agent's user (systemd: StateDirectory=)"
        if not os.access(where, os.W_OK | os.X_OK):
            return Check("database", False, f"{where} is not writable by {_user()}", fix)
        return Check("database", True, f"{path} does not exist yet; the agent creates it")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        result = " ".join(conn.execute("PRAGMA quick_check(1)").fetchone()[0].split())
        conn.close()
    except sqlite3.Error as exc:
        result = str(exc)
    if result == "ok":
        return Check("database", True, f"{path} passes quick_check")
    return Check("database", False, f"{path}: {result}", _CORRUPT_FIX.format(path=path))


_CORRUPT_FIX = (
    "stop the agent (systemctl stop boniq-agent); copy {path}* aside for support; then "
    "`sqlite3 {path} .recover | sqlite3 {path}.recovered` and, after checking it, move the "
    "recovered file in place. The agent never deletes or moves the store by itself."
)


def _disk(data_dir: Path) -> Check:
    probe = data_dir if data_dir.exists() else data_dir.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        return Check("disk", False, f"cannot read free space of {probe}: {exc.strerror}")
    detail = (
        f"{free // (1024 * 1024)} MiB free at {probe} (needs at least "
        f"{MIN_FREE_BYTES // (1024 * 1024)} MiB)"
    )
    return Check(
        "disk",
        free >= MIN_FREE_BYTES,
        detail,
        "free space on that filesystem: pending receipts wait in the store meanwhile",
    )


def _scanner(scanner: Any) -> Check:  # any scanner config model
    name = f"scanner {scanner.type}"
    if scanner.type == "stdin":
        return Check(name, True, "reads standard input")
    if scanner.type == "webcam":
        if find_spec("cv2") is None:
            return Check(
                name,
                False,
                "OpenCV is not installed",
                "pip install 'boniq-agent[webcam]' in the agent's venv",
            )
        if scanner.device.isdigit():
            return Check(
                name,
                os.path.exists(f"/dev/video{scanner.device}"),
                f"camera index {scanner.device}",
                "plug the camera in; check `ls /dev/video*`",
            )
    device = Path(scanner.device)
    if not device.exists():
        return Check(
            name,
            False,
            f"{device} is not there",
            "plug the scanner in; list candidates with `ls -l /dev/serial/by-id "
            "/dev/input/by-id`; the agent picks it up by itself once present",
        )
    mode = os.R_OK | (os.W_OK if scanner.type == "serial" else 0)
    if not os.access(device, mode):
        return Check(
            name,
            False,
            f"{device} is not readable by this user",
            "install systemd/70-boniq-scanner.rules with the scanner's VID:PID "
            f"(`udevadm info -q property {device}`), then `udevadm trigger`",
        )
    return Check(name, True, f"{device} present and readable")


def _kassa(config: Config) -> Iterator[Check]:
    """The POS API answers with these credentials and knows the branch; then the webhook lines."""
    missing = _secret_missing(config, config.kassa_secret)
    if missing:
        yield Check("POS API", False, missing)
        return
    client = _kassa_client(config)
    try:
        version = client.get_api_version()
    except AgentError as exc:
        yield _kassa_failure(config, exc)
        return
    yield Check("POS API", True, f"reachable, credentials accepted (API {version})")
    yield _guard(
        "POS branch",
        lambda: _branch(client, config),
        "check store.branch and store.workplace against MplusKASSA",
    )
    if config.kassa.webhooks is not None:
        from agent import doctor_selftest, doctor_webhooks

        yield from doctor_webhooks.checks(client, config)
        yield doctor_selftest.self_test(config)


def _kassa_client(config: Config) -> KassaClient:
    from agent.kassa.client import KassaClient

    return KassaClient(
        config.kassa.url,
        config.kassa.ident,
        config.kassa_secret(),
        timeout=min(config.kassa.timeout, 10.0),
        verify=str(config.kassa.ca_bundle) if config.kassa.ca_bundle else True,
        proxy=config.kassa.proxy,
    )


def _kassa_failure(config: Config, exc: AgentError) -> Check:
    """Why getApiVersion failed: credentials refused, another server at the URL, or no answer."""
    if isinstance(exc, KassaRejected):
        if "check kassa.url" not in str(exc):  # not a SOAP fault or 401/403: another server
            return Check(
                "POS API",
                False,
                f"credentials refused: {exc}",
                "check kassa.ident and the secret with MplusKASSA",
            )
        return Check(
            "POS API",
            False,
            f"wrong URL: an HTTP server answers, but not the MplusKASSA API ({exc})",
            "check kassa.url with MplusKASSA (host, port, path)",
        )
    cause = probe(config.kassa.url, config.kassa.ca_bundle)
    return Check(
        "POS API",
        False,
        f"not reachable: {cause + ': ' if cause else ''}{exc}",
        f"check kassa.url ({redact(config.kassa.url)}), the network, and that the API is up",
    )


def _branch(client: KassaClient, config: Config) -> Check:
    branches = client.get_branches()
    numbers = {b.number: b for b in branches}
    branch = numbers.get(config.store.branch)
    if branch is None:
        return Check(
            "POS branch",
            False,
            f"branch {config.store.branch} unknown; known: {sorted(numbers)}",
            "set store.branch to one of those",
        )
    workplaces = {w.number for w in branch.workplaces}
    if workplaces and config.store.workplace not in workplaces:
        return Check(
            "POS branch",
            False,
            f"workplace {config.store.workplace} not in branch "
            f"{branch.number} ({sorted(workplaces)})",
            "set store.workplace to this till",
        )
    return Check(
        "POS branch",
        True,
        f"branch {config.store.branch} exists (workplace {config.store.workplace})",
    )


def _cloud(config: Config) -> Check:
    """GET /v1/health with the store token: the cloud is reachable and accepts the token."""
    missing = _secret_missing(config, config.cloud_token)
    if missing:
        return Check("cloud", False, missing)
    url = urljoin(config.cloud.url.rstrip("/") + "/", "v1/health")
    try:
        status = _cloud_health(config, url)
    except HttpError as exc:
        cause = probe(url, config.cloud.ca_bundle) or f"{exc.label}: {exc}"
        return Check(
            "cloud",
            False,
            f"not reachable: {cause}",
            f"check cloud.url ({config.cloud.url}), DNS, proxy and TLS (cloud.ca_bundle)",
        )
    return _cloud_answer(config, status)


def _cloud_health(config: Config, url: str) -> int:
    """The HTTP status of /v1/health, asked once with the cloud section's deadline and TLS."""
    transport = Transport(
        timeout=min(config.cloud.timeout, 10.0),
        max_bytes=64 * 1024,
        ca_bundle=config.cloud.ca_bundle,
        proxy=config.cloud.proxy,
        truncate=True,
    )
    try:
        response = transport.request(
            "GET",
            url,
            headers={
                "Authorization": f"Bearer {config.cloud_token()}",
                "User-Agent": f"boniq-agent/{__version__}",
            },
        )
    finally:
        transport.close()
    return response.status


def _cloud_answer(config: Config, status: int) -> Check:
    if status in (401, 403):
        return Check(
            "cloud",
            False,
            f"token refused (HTTP {status})",
            "put the current store token in place; receipts wait meanwhile",
        )
    if status == 404:
        return Check(
            "cloud",
            False,
            "wrong URL: an HTTP server answers, but has no /v1/health",
            f"check cloud.url ({config.cloud.url})",
        )
    if status != 200:
        return Check(
            "cloud",
            False,
            f"health answered HTTP {status}",
            "the cloud has trouble; receipts wait in the outbox meanwhile",
        )
    return Check("cloud", True, "reachable, token accepted")


def _user() -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(os.geteuid()).pw_name}"
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"
