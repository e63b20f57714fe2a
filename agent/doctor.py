"""`boniq-agent doctor`: one line per check, OK or FAIL with the fix, for store IT and support.

Checks never change anything: the store is opened read-only, the POS API is asked read-only
questions, the cloud only for /v1/health.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urljoin

from agent import __version__
from agent.config import Config, load
from agent.errors import AgentError, ConfigError, KassaRejected
from agent.http import HttpError, Transport
from agent.logs import redact
from agent.queue.store import DB_NAME

MIN_FREE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'OK  ' if self.ok else 'FAIL'}  {self.name:<14} {self.detail}"
        return text if self.ok or not self.fix else f"{text}\n      fix: {self.fix}"


def run(config_path: str) -> int:
    checks = list(checks_for(config_path))
    for check in checks:
        print(redact(check.line()))
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} OK, {len(failed)} FAIL")
    return 1 if failed else 0


def checks_for(config_path: str) -> Iterator[Check]:
    try:
        config = load(config_path)
    except ConfigError as exc:
        yield Check("config", False, "; ".join(exc.problems),
                    "edit the lines named above; `boniq-agent check-config` re-checks")
        return
    yield Check("config", True, f"{config_path} is valid")
    secrets = _secrets(config)
    yield from secrets
    yield _store(config.data_dir)
    yield _disk(config.data_dir)
    for scanner in config.scanners:
        yield _scanner(scanner)
    if all(c.ok for c in secrets):
        yield from _kassa(config)
        yield _cloud(config)


def _guard(name: str, func: Callable[[], Check], fix: str) -> Check:
    try:
        return func()
    except AgentError as exc:
        return Check(name, False, str(exc), fix)


def _secrets(config: Config) -> list[Check]:
    fix = "set it inline, in a 0600 *_file, or as a systemd credential (LoadCredential=)"
    return [
        _guard("kassa secret", lambda: (config.kassa_secret(), Check("kassa secret", True, "set"))[1], fix),
        _guard("cloud token", lambda: (config.cloud_token(), Check("cloud token", True, "set"))[1], fix),
    ]


def _store(data_dir: Path) -> Check:
    path = data_dir / DB_NAME
    if not path.exists():
        writable = os.access(data_dir if data_dir.exists() else data_dir.parent, os.W_OK)
        return Check("database", writable, f"{path} does not exist yet; the agent creates it",
                     f"create {data_dir} writable by the agent's user (systemd: StateDirectory=)")
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
    "recovered file in place. The agent never deletes or moves the store by itself.")


def _disk(data_dir: Path) -> Check:
    probe = data_dir if data_dir.exists() else data_dir.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        return Check("disk", False, f"cannot read free space of {probe}: {exc.strerror}")
    detail = f"{free // (1024 * 1024)} MiB free at {probe}"
    return Check("disk", free >= MIN_FREE_BYTES, detail,
                 "free space on that filesystem: pending receipts wait in the store meanwhile")


def _scanner(scanner) -> Check:  # noqa: ANN001 - any scanner config model
    name = f"scanner {scanner.type}"
    if scanner.type == "stdin":
        return Check(name, True, "reads standard input")
    if scanner.type == "webcam":
        if find_spec("cv2") is None:
            return Check(name, False, "OpenCV is not installed",
                         "pip install 'boniq-agent[webcam]' in the agent's venv")
        if scanner.device.isdigit():
            return Check(name, os.path.exists(f"/dev/video{scanner.device}"),
                         f"camera index {scanner.device}", "plug the camera in; check `ls /dev/video*`")
    device = Path(scanner.device)
    if not device.exists():
        return Check(name, False, f"{device} is not there",
                     "plug the scanner in; list candidates with `ls -l /dev/serial/by-id "
                     "/dev/input/by-id`; the agent picks it up by itself once present")
    mode = os.R_OK | (os.W_OK if scanner.type == "serial" else 0)
    if not os.access(device, mode):
        return Check(name, False, f"{device} is not readable by this user",
                     "install systemd/70-boniq-scanner.rules with the scanner's VID:PID "
                     "(`udevadm info -q property {device}`), then `udevadm trigger`")
    return Check(name, True, f"{device} present and readable")


def _kassa(config: Config) -> Iterator[Check]:
    from agent.kassa.client import KassaClient

    client = KassaClient(config.kassa.url, config.kassa.ident, config.kassa_secret(),
                         timeout=min(config.kassa.timeout, 10.0),
                         verify=str(config.kassa.ca_bundle) if config.kassa.ca_bundle else True,
                         proxy=config.kassa.proxy)
    try:
        version = client.get_api_version()
    except KassaRejected as exc:
        yield Check("POS API", False, f"credentials refused: {exc}",
                    "check kassa.ident and the secret with MplusKASSA")
        return
    except AgentError as exc:
        yield Check("POS API", False, f"not reachable: {exc}",
                    f"check kassa.url ({redact(config.kassa.url)}), the network, and that the API is up")
        return
    yield Check("POS API", True, f"reachable, credentials accepted (API {version})")
    yield _guard("POS branch", lambda: _branch(client, config),
                 "check store.branch and store.workplace against MplusKASSA")


def _branch(client, config: Config) -> Check:  # noqa: ANN001
    branches = client.get_branches()
    numbers = {b.number: b for b in branches}
    branch = numbers.get(config.store.branch)
    if branch is None:
        return Check("POS branch", False, f"branch {config.store.branch} unknown; known: "
                     f"{sorted(numbers)}", "set store.branch to one of those")
    workplaces = {w.number for w in branch.workplaces}
    if workplaces and config.store.workplace not in workplaces:
        return Check("POS branch", False, f"workplace {config.store.workplace} not in branch "
                     f"{branch.number} ({sorted(workplaces)})", "set store.workplace to this till")
    return Check("POS branch", True, f"branch {config.store.branch} exists "
                 f"(workplace {config.store.workplace})")


def _cloud(config: Config) -> Check:
    url = urljoin(config.cloud.url.rstrip("/") + "/", "v1/health")
    transport = Transport(timeout=min(config.cloud.timeout, 10.0), max_bytes=64 * 1024,
                          ca_bundle=config.cloud.ca_bundle, proxy=config.cloud.proxy,
                          truncate=True)
    try:
        response = transport.request("GET", url, headers={
            "Authorization": f"Bearer {config.cloud_token()}",
            "User-Agent": f"boniq-agent/{__version__}"})
    except HttpError as exc:
        return Check("cloud", False, f"not reachable: {exc.label}: {exc}",
                     f"check cloud.url ({config.cloud.url}), DNS, proxy and TLS (cloud.ca_bundle)")
    finally:
        transport.close()
    if response.status in (401, 403):
        return Check("cloud", False, f"token refused (HTTP {response.status})",
                     "put the current store token in place; receipts wait meanwhile")
    if response.status != 200:
        return Check("cloud", False, f"health answered HTTP {response.status}",
                     "the cloud has trouble; receipts wait in the outbox meanwhile")
    return Check("cloud", True, "reachable, token accepted")
