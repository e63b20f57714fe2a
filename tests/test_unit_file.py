"""The systemd unit, sysusers and udev files keep the operational promises of SPEC §9."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD = ROOT / "systemd"
CHECK = ROOT / ".ci" / "check-systemd"


def _directives(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every directive, repeats kept in order (unit files allow them)."""
    section, found = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for section, key, value in _directives(SYSTEMD / "boniq-agent.service"):
        merged.setdefault(f"{section}.{key}", []).append(value)
    return merged


def _one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(f"Service.{key}", [])
    assert len(values) == 1, f"{key}= set {len(values)} times"
    return values[0]


def test_lifecycle_is_pinned(service: dict[str, list[str]]) -> None:
    assert _one(service, "Type") == "notify"
    assert _one(service, "NotifyAccess") == "main"
    assert _one(service, "Restart") == "on-failure"
    assert "78" in _one(service, "RestartPreventExitStatus").split()
    assert _one(service, "WatchdogSec") == "30"
    assert _one(service, "TimeoutStopSec") == "15"
    assert _one(service, "ExecStart") == (
        "/opt/boniq-agent/bin/boniq-agent run --config /etc/boniq-agent/config.yaml"
    )
    assert service["Install.WantedBy"] == ["multi-user.target"]


def test_reload_sends_sighup_to_the_agent(service: dict[str, list[str]]) -> None:
    assert _one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"


def test_check_config_looks_for_the_credentials_where_the_unit_loads_them(
    service: dict[str, list[str]],
) -> None:
    from agent.config import UNIT_CREDENTIALS

    loaded = dict(v.split(":", 1) for v in service["Service.LoadCredential"])
    assert {name: str(path) for name, path in UNIT_CREDENTIALS.items()} == loaded


def test_state_and_secrets_stay_private(service: dict[str, list[str]]) -> None:
    assert _one(service, "StateDirectory") == "boniq-agent"
    assert _one(service, "StateDirectoryMode") == "0700"
    assert _one(service, "UMask") == "0077"
    assert _one(service, "ConfigurationDirectory") == "boniq-agent"
    credentials = dict(v.split(":", 1) for v in service["Service.LoadCredential"])
    assert credentials == {
        "kassa-secret": "/etc/boniq-agent/kassa-secret",
        "cloud-token": "/etc/boniq-agent/cloud-token",
    }


def test_scanners_are_reachable_without_private_users_or_devices(
    service: dict[str, list[str]],
) -> None:
    assert "Service.PrivateUsers" not in service
    assert "Service.PrivateDevices" not in service
    assert _one(service, "DevicePolicy") == "closed"
    allowed = dict(v.split() for v in service["Service.DeviceAllow"])
    assert allowed == {
        "char-input": "r",
        "char-ttyACM": "rw",
        "char-ttyUSB": "rw",
        "char-video4linux": "rw",
    }
    assert "Service.SupplementaryGroups" not in service, "udev rules grant the scanner, not groups"


def test_runs_as_the_user_sysusers_creates(service: dict[str, list[str]]) -> None:
    entries = [
        line.split()
        for line in (SYSTEMD / "boniq-agent.sysusers").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert [e[:2] for e in entries] == [["u", "boniq"]]
    assert _one(service, "User") == _one(service, "Group") == "boniq"


def _udev_rules() -> list[str]:
    lines = (SYSTEMD / "70-boniq-scanner.rules").read_text().splitlines()
    return [line for line in lines if "idVendor" in line and not line.startswith("#")]


def test_udev_rules_grant_single_scanners_to_boniq() -> None:
    rules = _udev_rules()
    assert rules
    for rule in rules:
        assert re.search(
            r'ATTRS\{idVendor\}=="[0-9a-f]{4}", ATTRS\{idProduct\}=="[0-9a-f]{4}"', rule
        ), rule
        assert 'GROUP="boniq"' in rule and 'MODE="0660"' in rule, rule


def test_udev_rules_keep_modemmanager_off_serial_scanners() -> None:
    serial = [rule for rule in _udev_rules() if 'SUBSYSTEM=="tty"' in rule]
    assert serial
    assert all('ENV{ID_MM_DEVICE_IGNORE}="1"' in rule for rule in serial)


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@needs_systemd_analyze
def test_check_systemd_passes_and_scores_at_most_2() -> None:
    result = subprocess.run([str(CHECK)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    score = float(re.search(r"exposure ([0-9.]+)", result.stdout).group(1))
    assert score <= 2.0


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        (("WatchdogSec=30", "WatchdogSecs=30"), "Unknown key 'WatchdogSecs'"),
        (("\nCapabilityBoundingSet=\n", "\n"), "exceeds 2.0"),
    ],
)
def test_check_systemd_fails_a_broken_unit(
    tmp_path: Path, edit: tuple[str, str], complaint: str
) -> None:
    for source in SYSTEMD.iterdir():
        shutil.copy(source, tmp_path)
    unit = tmp_path / "boniq-agent.service"
    unit.write_text(unit.read_text().replace(*edit))
    result = subprocess.run(
        [str(CHECK)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "UNIT_DIR": str(tmp_path)},
    )
    assert result.returncode != 0
    assert complaint in result.stderr


_MDWE_PROBE = """
import ctypes, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN
    sys.exit(77)
import cv2, zxingcpp, pyzbar.pyzbar
ok, frame = cv2.VideoCapture(sys.argv[1]).read()
zxing = [r.text for r in zxingcpp.read_barcodes(frame)]
print(ok, zxing, [r.data.decode() for r in pyzbar.pyzbar.decode(frame)])
"""


def test_webcam_decoding_survives_memory_deny_write_execute(
    service: dict[str, list[str]], tmp_path: Path
) -> None:
    """The unit sets MemoryDenyWriteExecute=yes; the kernel's PR_SET_MDWE enforces the same rule."""
    cv2 = pytest.importorskip("cv2")
    segno = pytest.importorskip("segno")
    pytest.importorskip("zxingcpp")
    pytest.importorskip("pyzbar.pyzbar")
    assert _one(service, "MemoryDenyWriteExecute") == "yes"
    png = tmp_path / "code.png"
    segno.make("BQ17K3M9QW4RT8ZP2C56", error="m").save(png, scale=8, border=6)
    image = cv2.imread(str(png))
    video = tmp_path / "till.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, image.shape[1::-1])
    writer.write(image)
    writer.release()

    result = subprocess.run(
        [sys.executable, "-c", _MDWE_PROBE, str(video)], capture_output=True, text=True, timeout=60
    )
    if result.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (needs Linux 6.3)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True ['BQ17K3M9QW4RT8ZP2C56'] ['BQ17K3M9QW4RT8ZP2C56']"
