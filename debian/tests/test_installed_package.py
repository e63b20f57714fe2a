"""The .deb as store IT meets it: its contents, lintian, `apt-get install` on this machine (no
running systemd), the installed command, an upgrade under a running agent, remove and purge.

The tests run in file order and share one installation; the last one purges it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import Agent, customer_code, wait_until

from agent import __version__
from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="installing a Debian package needs root"),
]

VENV = Path("/opt/boniq-agent")
ETC = Path("/etc/boniq-agent")
STATE = Path("/var/lib/boniq-agent")
COMMAND = "/usr/bin/boniq-agent"
INSTALLED = {
    "/usr/bin/boniq-agent", "/opt/boniq-agent/bin/boniq-agent",
    "/lib/systemd/system/boniq-agent.service", "/usr/lib/sysusers.d/boniq-agent.conf",
    "/usr/lib/tmpfiles.d/boniq-agent.conf", "/lib/udev/rules.d/70-boniq-scanner.rules",
    "/usr/lib/modules-load.d/boniq-agent.conf", "/etc/boniq-agent/config.yaml",
    "/usr/share/man/man1/boniq-agent.1.gz",
    "/usr/share/bash-completion/completions/boniq-agent",
    "/usr/share/boniq-agent/prometheus/alerts.yml",
    "/usr/share/boniq-agent/prometheus/alerts_test.yml",
    "/usr/share/boniq-agent/grafana/boniq-agent.json",
}
ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive",
       "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def run(*argv: str | Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=kwargs.pop(
        "env", ENV), timeout=kwargs.pop("timeout", 600), **kwargs)
    if check:
        assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def installed_version() -> str | None:
    done = run("dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", "boniq-agent", check=False)
    status, _, version = done.stdout.partition(" ")
    return version if done.returncode == 0 and status == "installed" else None


def newer_build(deb: Path, folder: Path, version: str) -> Path:
    """The same package under a higher version: what an upgrade to the next release runs."""
    tree = folder / "tree"
    run("dpkg-deb", "-R", deb, tree)
    control = tree / "DEBIAN" / "control"
    control.write_text("".join(f"Version: {version}\n" if line.startswith("Version:") else line
                               for line in control.read_text().splitlines(keepends=True)))
    out = folder / f"boniq-agent_{version}_amd64.deb"
    run("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", tree, out)  # fast to pack
    return out


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[subprocess.CompletedProcess]:
    if installed_version() is not None or Path(ETC).exists():
        run("dpkg", "--purge", "boniq-agent")
    done = run("apt-get", "install", "-y", f"{deb}")
    yield done
    if installed_version() is not None:
        run("dpkg", "--purge", "boniq-agent")


def test_the_package_holds_the_command_unit_companions_and_monitoring(deb: Path) -> None:
    info = run("dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends").stdout
    assert f"Version: {__version__}" in info
    assert "Architecture: amd64" in info  # evdev (and pydantic-core) are compiled
    assert "python3.11" in info
    listing = run("dpkg-deb", "-c", deb).stdout
    paths = {"/" + line.split()[5].removeprefix("./").rstrip("/") for line in listing.splitlines()}
    missing = {p for p in INSTALLED if p not in paths}
    assert not missing
    assert not any("__pycache__" in p or p.endswith("/bin/pip") for p in paths)
    assert any(p.startswith("/opt/boniq-agent/lib/python3.11/site-packages/evdev/_input.cpython")
               for p in paths)
    conffiles = run("dpkg-deb", "-I", deb, "conffiles").stdout.split()
    assert conffiles == ["/etc/boniq-agent/config.yaml"]


def test_lintian_reports_nothing(deb: Path) -> None:
    done = run("lintian", "--pedantic", "--fail-on", "error,warning", deb, check=False)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if line.startswith(("E:", "W:", "I:", "P:"))]
    assert done.returncode == 0 and not complaints, "\n".join(complaints) or done.stderr


def test_install_enables_but_does_not_start_without_credentials(
        installed: subprocess.CompletedProcess) -> None:
    assert "NOT started" in installed.stdout
    assert f"{ETC}/kassa-secret" in installed.stdout
    assert installed_version() == __version__
    user = pwd.getpwnam("boniq")
    assert user.pw_dir == str(STATE) and grp.getgrgid(user.pw_gid).gr_name == "boniq"
    st = STATE.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, 0o700)
    wants = Path("/etc/systemd/system/multi-user.target.wants/boniq-agent.service")
    assert wants.is_symlink()  # enabled offline by deb-systemd-helper
    for path in INSTALLED:
        assert Path(path).exists(), path


def test_the_command_on_path_runs_and_checks_the_installed_config(installed, tmp_path) -> None:
    assert shutil.which("boniq-agent", path=ENV["PATH"]) == COMMAND
    assert run(COMMAND, "--version").stdout.strip() == f"boniq-agent {__version__}"
    assert "check-config" in run(COMMAND, "--help").stdout
    config = (ETC / "config.yaml").read_text()
    assert "my-secret" not in config and "my-token" not in config
    refused = run(COMMAND, "check-config", check=False)
    assert refused.returncode == 78 and "kassa-secret" in refused.stderr
    credentials = tmp_path / "credentials"  # what systemd's LoadCredential= hands the agent
    credentials.mkdir()
    for name in ("kassa-secret", "cloud-token"):
        (credentials / name).write_text("s3cret-from-systemd\n")
        (credentials / name).chmod(0o600)
    ok = run(COMMAND, "check-config", env={**ENV, "CREDENTIALS_DIRECTORY": str(credentials)})
    assert ok.stdout.startswith(f"{ETC}/config.yaml: OK")


def test_systemd_analyze_verifies_the_installed_unit(installed) -> None:
    done = run("systemd-analyze", "verify", "boniq-agent.service",
               env={**ENV, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"})
    assert done.stderr == ""


def test_bash_completion_completes_the_installed_commands(installed) -> None:
    script = ('source /usr/share/bash-completion/completions/boniq-agent; '
              'COMP_WORDS=(boniq-agent ""); COMP_CWORD=1; _boniq_agent; echo "${COMPREPLY[*]}"; '
              'COMP_WORDS=(boniq-agent outbox ""); COMP_CWORD=2; _boniq_agent; echo "${COMPREPLY[*]}"')
    commands, actions = run("bash", "-c", script).stdout.splitlines()
    assert {"run", "check-config", "doctor", "status", "outbox", "scan"} <= set(commands.split())
    assert set(actions.split()) == {"list", "show", "retry"}


class InstalledAgent(Agent):
    """The harness's agent, but `boniq-agent run` from the installed package."""

    def start(self, env: dict[str, str] | None = None) -> None:
        environment = {**ENV, "NOTIFY_SOCKET": str(self.notify_path), **(env or {})}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [COMMAND, "run", "--config", str(self.config)], cwd="/", env=environment,
                stdout=log, stderr=log)


def rows(data_dir: Path) -> tuple[list[tuple], list[tuple]]:
    conn = sqlite3.connect(f"file:{data_dir / 'boniq-agent.db'}?mode=ro", uri=True)
    try:
        claims = conn.execute("SELECT id, customer, workplace, state FROM claims ORDER BY id").fetchall()
        outbox = conn.execute("SELECT id, receipt_id, state FROM outbox ORDER BY id").fetchall()
    finally:
        conn.close()
    return claims, outbox


def test_upgrade_under_a_running_agent_loses_no_claim_and_no_receipt(
        installed, deb: Path, tmp_path: Path) -> None:
    conffile = ETC / "config.yaml"
    conffile.write_text(conffile.read_text() + "# edited by store IT\n")
    with KassaSimulator(seed=41) as kassa, CloudSimulator("demo-token") as cloud:
        cloud.faults.update(down=True)  # receipts wait in the outbox
        agent = InstalledAgent(tmp_path, kassa.url, cloud.url, scanner_workplaces=(2, 3),
                               extra="matching: {claim_ttl: 600}\n")  # waits out the upgrade
        try:
            agent.start()
            agent.wait_ready()
            paid, waiting = customer_code(4101), customer_code(4102)
            agent.scan(paid, workplace=2)
            wait_until(lambda: agent.claim_fenced(paid), what="the first claim")
            paid_receipt = kassa.book_sale(2, after=4)  # the payment completes 4 s on
            agent.scan(waiting, workplace=3)
            wait_until(lambda: agent.claim_fenced(waiting), what="the second claim")
            wait_until(lambda: agent.summary()["outbox_pending"] == 1, what="a pending receipt")
            before = rows(agent.data_dir)

            newer = newer_build(deb, tmp_path, f"{__version__}+upgrade1")
            upgrade = run("dpkg", "-i", newer)
            assert installed_version() == f"{__version__}+upgrade1"
            assert "# edited by store IT" in conffile.read_text()  # the local edit is kept
            assert agent.process is not None and agent.process.poll() is None, upgrade.stdout

            # What systemd does after postinst's restart request: SIGTERM, then the new code.
            assert agent.terminate() == 0
            assert rows(agent.data_dir) == before
            agent.drain_notify()
            cloud.faults.update(down=False)
            agent.start()
            agent.wait_ready()
            waiting_receipt = kassa.book_sale(3, after=4)
            wait_until(lambda: cloud.count() >= 2, timeout=60, what="both receipts in the cloud")
            assert agent.terminate() == 0
        finally:
            agent.close()
        delivered = {p["pos"]["receipt_id"]: p["customer"]["boniq_code"] for p in cloud.receipts()}
        assert delivered == {paid_receipt: paid, waiting_receipt: waiting}
        assert set(Counter(cloud.stored_keys()).values()) == {1}


def test_remove_keeps_config_and_state_purge_removes_them(installed) -> None:
    files = set(run("dpkg-query", "-L", "boniq-agent").stdout.split())
    (ETC / "kassa-secret").write_text("s3cret\n")
    (STATE / "boniq-agent.db").write_bytes(b"")
    run("apt-get", "remove", "-y", "boniq-agent")
    assert not VENV.exists() and not Path(COMMAND).exists()
    assert (ETC / "config.yaml").exists() and (ETC / "kassa-secret").exists()
    assert (STATE / "boniq-agent.db").exists()
    run("apt-get", "purge", "-y", "boniq-agent")
    assert installed_version() is None
    ours = ("/opt/boniq-agent", "/etc/boniq-agent", "/var/lib/boniq-agent",
            "/usr/share/boniq-agent", "/usr/share/doc/boniq-agent")
    left = sorted(p for p in files | {str(ETC), str(STATE)} if os.path.lexists(p)
                  and (not os.path.isdir(p) or p.startswith(ours)))  # shared folders stay
    assert left == []
    assert not Path("/etc/systemd/system/multi-user.target.wants/boniq-agent.service").exists()


SYSTEMD_TOOLS = ("systemctl", "deb-systemd-helper", "deb-systemd-invoke", "systemd-sysusers",
                 "systemd-tmpfiles", "udevadm")


@pytest.fixture
def without_systemd_tools() -> Iterator[None]:
    """A till image without systemd's tools: each moved aside with dpkg-divert, then restored."""
    diverted = []
    try:
        for name in SYSTEMD_TOOLS:
            for folder in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
                path = Path(folder) / name
                if path.exists() and not path.is_symlink() and path.resolve() == path:
                    run("dpkg-divert", "--local", "--rename", "--divert", f"{path}.boniq-test",
                        "--add", path)
                    diverted.append(path)
        yield
    finally:
        for path in diverted:
            run("dpkg-divert", "--local", "--rename", "--remove", path, check=False)


def test_maintainer_scripts_work_without_any_systemd_tool(deb: Path, without_systemd_tools) -> None:
    if installed_version() is not None:
        run("dpkg", "--purge", "boniq-agent")
    for name in SYSTEMD_TOOLS:
        assert shutil.which(name, path=ENV["PATH"]) is None, name
    if run("getent", "passwd", "boniq", check=False).returncode == 0:
        run("userdel", "boniq")  # so that postinst creates it again, with adduser this time
    try:
        done = run("dpkg", "-i", deb)
        assert "NOT started" in done.stdout
        assert pwd.getpwnam("boniq").pw_dir == str(STATE)
        assert stat.S_IMODE(STATE.stat().st_mode) == 0o700
        assert run(COMMAND, "--version").stdout.strip() == f"boniq-agent {__version__}"
        run("dpkg", "--purge", "boniq-agent")
        assert not ETC.exists() and not STATE.exists() and not VENV.exists()
    finally:
        if installed_version() is not None:
            run("dpkg", "--purge", "boniq-agent", check=False)


STUB = """#!/bin/sh
# systemctl stand-in for debian/tests: records each call; the unit counts as enabled, not active.
echo "$*" >> /run/boniq-test-systemctl.log
for arg; do
    case "$arg" in is-enabled) echo enabled; exit 0 ;; is-active) exit 3 ;; esac
done
exit 0
"""


@pytest.fixture
def systemd_as_seen_by_scripts() -> Iterator[Path]:
    """A running systemd as maintainer scripts detect it (/run/systemd/system), with systemctl
    replaced by a stub that records what the scripts ask of it. The host's PID 1 is not systemd.
    A container's policy-rc.d (exit 101: start nothing) is moved aside meanwhile."""
    marker, log = Path("/run/systemd/system"), Path("/run/boniq-test-systemctl.log")
    if marker.exists():
        pytest.skip("a real systemd runs here; the stub would not be the one asked")
    policy = Path("/usr/sbin/policy-rc.d")
    policy_aside = policy.with_name("policy-rc.d.boniq-test")
    systemctl = Path(shutil.which("systemctl", path=ENV["PATH"]) or "/usr/bin/systemctl")
    run("dpkg-divert", "--local", "--rename", "--divert", f"{systemctl}.boniq-test", "--add",
        systemctl)
    try:
        if policy.exists():
            policy.rename(policy_aside)
        systemctl.write_text(STUB)
        systemctl.chmod(0o755)
        marker.mkdir(parents=True)
        log.write_text("")
        yield log
    finally:
        shutil.rmtree(marker, ignore_errors=True)
        log.unlink(missing_ok=True)
        systemctl.unlink(missing_ok=True)
        run("dpkg-divert", "--local", "--rename", "--remove", systemctl, check=False)
        if policy_aside.exists():
            policy_aside.rename(policy)


def calls(log: Path) -> list[str]:
    """What was asked of systemctl since the last call, options left out: "start UNIT", ..."""
    lines = log.read_text().splitlines()
    log.write_text("")
    return [" ".join(w for w in line.split() if not w.startswith("-")) for line in lines]


def test_with_systemd_postinst_starts_only_when_configured_and_restarts_on_upgrade(
        deb: Path, tmp_path: Path, systemd_as_seen_by_scripts: Path) -> None:
    log = systemd_as_seen_by_scripts
    if installed_version() is not None:
        run("dpkg", "--purge", "boniq-agent")
    try:
        first = run("dpkg", "-i", deb)
        asked = calls(log)
        assert "daemon-reload" in asked
        assert not any(c.startswith(("start", "restart", "try-restart")) for c in asked), asked
        assert "NOT started" in first.stdout

        for name in ("kassa-secret", "cloud-token"):
            (ETC / name).write_text("s3cret\n")
            (ETC / name).chmod(0o600)
        run("dpkg", "-i", newer_build(deb, tmp_path, f"{__version__}+upgrade2"))
        asked = calls(log)
        assert "try-restart boniq-agent.service" in asked, asked
        assert "stop boniq-agent.service" not in asked  # no stop before the unpack

        run("dpkg", "--purge", "boniq-agent")
        calls(log)
        ETC.mkdir()
        for name in ("kassa-secret", "cloud-token"):  # a till image seeded with credentials
            (ETC / name).write_text("s3cret\n")
            (ETC / name).chmod(0o600)
        seeded = run("dpkg", "-i", deb)
        assert "start boniq-agent.service" in calls(log)
        assert "NOT started" not in seeded.stdout

        run("dpkg", "-r", "boniq-agent")
        assert "stop boniq-agent.service" in calls(log)
    finally:
        run("dpkg", "--purge", "boniq-agent", check=False)
        shutil.rmtree(ETC, ignore_errors=True)
