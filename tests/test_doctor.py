"""`boniq-agent doctor`: one OK/FAIL line per check, the fix under each FAIL, exit 1 on any FAIL."""

import http.server
import socket
import subprocess
import sys
import threading

import pytest
from agent_harness import ROOT, Agent, free_port

from agent import doctor as doctor_module
from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator


@pytest.fixture
def sims():
    with KassaSimulator(workplaces=(1, 2)) as kassa, CloudSimulator("demo-token") as cloud:
        yield kassa, cloud


def doctor(config):
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "doctor", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def lines(result):
    return {
        line.split()[1]: line
        for line in result.stdout.splitlines()
        if line.startswith(("OK", "FAIL"))
    }


def test_a_healthy_till_is_all_ok(tmp_path, sims):
    kassa, cloud = sims
    agent = Agent(tmp_path, kassa.url, cloud.url)
    try:
        result = doctor(agent.config)
    finally:
        agent.close()
    assert result.returncode == 0, result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert result.stdout.rstrip().endswith(" OK, 0 FAIL")
    assert {"config", "database", "disk", "scanner", "POS", "cloud"} <= set(lines(result))


def test_each_problem_is_named_with_its_fix(tmp_path, sims):
    kassa, cloud = sims
    agent = Agent(
        tmp_path, kassa.url, cloud.url, secret="wrong-Secret-77", token="wrong-token", workplace=9
    )
    agent.close()  # the scanner's pty is gone: an unplugged scanner
    result = doctor(agent.config)
    found = lines(result)
    assert result.returncode == 1
    assert found["POS"].startswith("FAIL") and "credentials refused" in found["POS"]
    assert found["cloud"].startswith("FAIL") and "token refused" in found["cloud"]
    assert found["scanner"].startswith("FAIL") and "is not there" in found["scanner"]
    assert result.stdout.count("fix:") >= 3
    assert "wrong-Secret-77" not in result.stdout + result.stderr


def test_a_workplace_the_pos_does_not_know_is_reported(tmp_path, sims):
    kassa, cloud = sims
    agent = Agent(tmp_path, kassa.url, cloud.url, workplace=9)
    try:
        result = doctor(agent.config)
    finally:
        agent.close()
    branch = [line for line in result.stdout.splitlines() if "POS branch" in line]
    assert branch and branch[0].startswith("FAIL") and "workplace 9" in branch[0]


# -- store IT's credential install, causes, and no silent skips -------------------------------------


def doctor_with(config, *options):
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "doctor", "--config", str(config), *options],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def without_inline_secrets(agent):
    text = agent.config.read_text()
    text = text.replace(" secret: demo-secret,", "").replace(" token: demo-token,", "")
    agent.config.write_text(text)
    return agent.config


def credentials_dir(folder, secret="demo-secret", token="demo-token"):
    folder.mkdir()
    for name, value in (("kassa-secret", secret), ("cloud-token", token)):
        (folder / name).write_text(value)
        (folder / name).chmod(0o600)
    return folder


def test_a_credential_install_is_checked_with_credentials_dir(tmp_path, sims):
    kassa, cloud = sims
    agent = Agent(tmp_path, kassa.url, cloud.url)
    try:
        config = without_inline_secrets(agent)
        result = doctor_with(config, "--credentials-dir", str(credentials_dir(tmp_path / "creds")))
    finally:
        agent.close()
    found = lines(result)
    assert found["POS"].startswith("OK") and found["cloud"].startswith("OK"), result.stdout
    assert result.returncode == 0


def test_a_check_that_cannot_run_is_a_fail_line_saying_why(tmp_path, sims):
    kassa, cloud = sims
    agent = Agent(tmp_path, kassa.url, cloud.url)
    try:
        config = without_inline_secrets(agent)
        result = doctor_with(config, "--credentials-dir", str(tmp_path / "nothing-here"))
    finally:
        agent.close()
    found = lines(result)
    assert result.returncode == 1
    assert found["POS"] == "FAIL  POS API        not checked: its secret is not available (above)"
    assert found["cloud"] == "FAIL  cloud          not checked: its secret is not available (above)"
    assert "kassa.secret: not set" in found["kassa"]


def test_an_invalid_config_lists_every_check_it_skipped(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("store: {merchant_id: m, branch: one, workplace: 1}\n")
    result = doctor_with(config)
    skipped = [line for line in result.stdout.splitlines() if "not checked" in line]
    assert result.returncode == 1 and len(skipped) == 5
    assert result.stdout.rstrip().endswith("0 OK, 6 FAIL")


def test_an_unexpected_exception_in_a_check_is_one_fail_line(tmp_path, sims, capsys, monkeypatch):
    kassa, cloud = sims
    agent = Agent(tmp_path, kassa.url, cloud.url)

    def broken(data_dir):
        raise RuntimeError("statvfs went away")

    monkeypatch.setattr(doctor_module, "_disk", broken)
    try:
        status = doctor_module.run(str(agent.config))
    finally:
        agent.close()
    out = capsys.readouterr().out
    assert status == 1 and "Traceback" not in out
    disk = [line for line in out.splitlines() if line.startswith("FAIL  disk")]
    assert disk == [
        "FAIL  disk           check failed unexpectedly: RuntimeError: statvfs went away"
    ]
    assert "OK    cloud" in out  # the checks after it still ran


class _Other(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_error(404)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def other_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Other)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_a_404_from_another_server_is_a_wrong_url_not_refused_credentials(tmp_path, other_server):
    agent = Agent(tmp_path, other_server, other_server)
    try:
        result = doctor(agent.config)
    finally:
        agent.close()
    found = lines(result)
    assert "wrong URL" in found["POS"] and "credentials refused" not in found["POS"]
    assert "wrong URL" in found["cloud"]


def test_a_refused_connection_is_named(tmp_path, sims):
    kassa, _ = sims
    agent = Agent(tmp_path, kassa.url, f"http://127.0.0.1:{free_port()}/")
    try:
        result = doctor(agent.config)
    finally:
        agent.close()
    assert "connection refused" in lines(result)["cloud"]


def test_the_disk_line_states_its_threshold(tmp_path, sims):
    kassa, cloud = sims
    agent = Agent(tmp_path, kassa.url, cloud.url)
    try:
        result = doctor(agent.config)
    finally:
        agent.close()
    assert "(needs at least 200 MiB)" in lines(result)["disk"]


def test_lines_stream_while_a_slow_endpoint_is_still_waited_for(tmp_path, sims):
    """The cloud trickles its headers and never finishes while the test holds the connection:
    the lines of the checks before it must already be out."""
    kassa, _ = sims
    slow = socket.create_server(("127.0.0.1", 0))
    slow.settimeout(30)
    agent = Agent(tmp_path, kassa.url, f"http://127.0.0.1:{slow.getsockname()[1]}/")
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "doctor", "--config", str(agent.config)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    held = threading.Event()

    def trickle():
        connection, _ = slow.accept()
        with connection:
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            for _ in range(90):  # 45 s at most, and under http.client's limit of 100 headers
                if held.wait(0.5):
                    break
                connection.sendall(b"X-Wait: 1\r\n")
            held.set()  # before the connection closes and the doctor can go on

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        first = process.stdout.readline()
        assert first.startswith("OK    config")
        assert not held.is_set(), "the lines came only after the cloud check finished"
    finally:
        held.set()
        thread.join(10)
        process.kill()
        process.wait(10)
        slow.close()
        agent.close()


def test_an_unreachable_pos_names_the_cause(tmp_path, sims):
    _, cloud = sims
    agent = Agent(tmp_path, f"http://127.0.0.1:{free_port()}/", cloud.url)
    try:
        result = doctor(agent.config)
    finally:
        agent.close()
    assert "not reachable: connection refused" in lines(result)["POS"]
