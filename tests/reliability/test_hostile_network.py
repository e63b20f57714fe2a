"""The real daemon attacked from the shop network, by a hostile cloud, and read after a crash:
idle connections by the thousand on the metrics port, escape sequences in a cloud error, a core
dump. Each ends with the next customer's receipt delivered."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from agent_harness import ROOT, Agent, customer_code, report_figure, wait_until

from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator

CODE = customer_code(1111)
UNIT = ROOT / "systemd" / "boniq-agent.service"
MEMORY_MAX_KIB = 384 * 1024
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x9b1m\u202egnp.exe\x08\x7f\x00"
RAW = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def serve_customer(agent: Agent, kassa: KassaSimulator, code: str, delivered: Any) -> str:
    before = delivered()
    agent.scan(code)
    wait_until(lambda: agent.claim_fenced(code), what="the customer's claim, fenced")
    receipt = kassa.book_sale(agent.workplace, after=4)
    wait_until(lambda: delivered() > before, timeout=30, what="the customer's receipt")
    return receipt


@pytest.fixture
def shop() -> Iterator[tuple[KassaSimulator, CloudSimulator]]:
    with KassaSimulator(seed=7) as kassa, CloudSimulator("demo-token") as cloud:
        yield kassa, cloud


def test_the_unit_forbids_core_files() -> None:
    assert "LimitCORE=0" in UNIT.read_text().splitlines()


def _core_files() -> set[Path]:
    return {p for p in ROOT.iterdir() if p.name.startswith("core")}


def test_a_daemon_killed_by_the_watchdog_leaves_no_core_file(tmp_path: Path, shop) -> None:
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if "|" in pattern or "/" in pattern or not pattern.startswith("core"):
        pytest.skip(f"core files are not written to the working directory here ({pattern!r})")
    kassa, cloud = shop
    agent = Agent(tmp_path, kassa.url, cloud.url)
    existing = _core_files()
    try:
        agent.start()
        agent.wait_ready()
        pid = agent.process.pid
        soft, hard = resource.prlimit(pid, resource.RLIMIT_CORE)
        assert soft == 0
        if hard == 0:
            pytest.skip("core files are off for every process here (hard RLIMIT_CORE 0)")
        # undo the soft limit as a careless drop-in (LimitCORE=infinity) would: prctl must hold
        resource.prlimit(pid, resource.RLIMIT_CORE, (hard, hard))
        agent.process.send_signal(signal.SIGABRT)  # what the systemd watchdog sends
        agent.process.wait(20)
        cores = _core_files() - existing
        sizes = [p.stat().st_size for p in cores]
        for core in cores:
            core.unlink()
        report_figure("watchdog abort core file", files=len(cores), bytes=sum(sizes))
        assert agent.process.returncode == -signal.SIGABRT
        assert not cores
    finally:
        agent.close()


def test_core_dumps_are_forbidden_in_the_process_itself() -> None:
    probe = (
        "import ctypes; from agent import hardening; ok = hardening.forbid_core_dumps(); "
        "print(ok, ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"
    )  # 3 = PR_GET_DUMPABLE
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=True,
    )
    assert out.stdout.split() == ["True", "0"]


class HostileCloud:
    """Answers every upload with 422 and an error text full of terminal control sequences."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"error": HOSTILE, "details": [HOSTILE]}).encode()
                self.send_response(422)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.rejected = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_escape_sequences_from_the_cloud_reach_no_log_terminal_or_status(tmp_path: Path) -> None:
    cloud = HostileCloud()
    with KassaSimulator(seed=9) as kassa:
        agent = Agent(tmp_path, kassa.url, cloud.url)
        try:
            agent.start()
            agent.wait_ready()
            agent.scan(CODE)
            wait_until(lambda: agent.claim_fenced(CODE), what="the claim, fenced")
            kassa.book_sale(agent.workplace, after=4)
            wait_until(
                lambda: agent.summary()["outbox_dead"] == 1,
                timeout=30,
                what="the receipt dead-lettered with the hostile reason",
            )
            with agent.store() as store:
                assert "\x1b" in (store.outbox("dead", limit=1)[0].last_error or "")  # stored as is
            statuses = [m for m in agent.messages(1.5) if m.startswith("STATUS=")]
            shown = {
                "log": agent.log_text(),
                "status": _cli(agent, "status"),
                "outbox list": _cli(agent, "outbox", "list"),
                "outbox show": _cli(agent, "outbox", "show", "1"),
                "STATUS=": "\n".join(statuses),
            }
            assert statuses and "\\x1b" in shown["STATUS="]
            assert "\\x1b" in shown["log"] and "\\x1b" in shown["status"]
            raw = {where: RAW.findall(text) for where, text in shown.items()}
            report_figure(
                "hostile cloud text", **{k.replace(" ", "_"): len(v) for k, v in raw.items()}
            )
            assert raw == {where: [] for where in shown}
            assert agent.terminate() == 0
        finally:
            agent.close()
            cloud.close()


def _cli(agent: Agent, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args, "--config", str(agent.config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode in (0, 1), result.stderr  # status: 1 = a dead letter needs attention
    return result.stdout + result.stderr


def _open_idle(port: int, count: int) -> list[socket.socket]:
    """`count` connections that never send a byte (non-blocking connects: a full backlog does not
    stall the test)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", port))
        assert code in (0, errno.EINPROGRESS, errno.EAGAIN), os.strerror(code)
        socks.append(sock)
    return socks


def test_2000_idle_connections_to_the_metrics_port_stop_no_receipt(tmp_path: Path, shop) -> None:
    kassa, cloud = shop
    agent = Agent(tmp_path, kassa.url, cloud.url)
    idle: list[socket.socket] = []
    try:
        agent.start()
        agent.wait_ready()
        pid = agent.process.pid
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, 1024))  # systemd's default soft limit
        livez = f"http://127.0.0.1:{agent.metrics_port}/livez"
        assert requests.get(livez, timeout=5).status_code == 200
        before = proc_status(pid)
        idle = _open_idle(agent.metrics_port, 2000)
        time.sleep(1.0)  # let the agent accept (and shed) them
        during = proc_status(pid)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        receipt = serve_customer(agent, kassa, CODE, cloud.count)
        assert [p["pos"]["receipt_id"] for p in cloud.receipts()] == [receipt]
        rss = int(proc_status(pid)["VmRSS"].split()[0])
        for sock in idle:
            sock.close()
        idle = []
        started = time.monotonic()
        answer = requests.get(livez, timeout=5)
        livez_s = time.monotonic() - started
        report_figure(
            "metrics 2000 idle connections",
            threads_before=before["Threads"],
            threads_during=during["Threads"],
            fds_during=fds,
            rss_mib=rss // 1024,
            livez_after_s=round(livez_s, 3),
            receipt_delivered=1,
        )
        assert answer.status_code == 200
        assert rss < MEMORY_MAX_KIB
        assert int(during["Threads"]) < int(before["Threads"]) + 100
        assert fds < 1024 - 100
        assert "Traceback" not in agent.log_text()
        assert agent.terminate() == 0
    finally:
        for sock in idle:
            sock.close()
        agent.close()


def test_a_database_opened_up_to_others_is_made_private_again(tmp_path: Path, shop) -> None:
    from agent.queue.store import DB_NAME, Store

    kassa, cloud = shop
    data = tmp_path / "data"
    Store.open(data).close()
    (data / DB_NAME).chmod(0o644)  # a restore from a backup, a copy with cp
    agent = Agent(tmp_path, kassa.url, cloud.url, data_dir=data)
    try:
        agent.start()
        agent.wait_ready()
        assert (data / DB_NAME).stat().st_mode & 0o777 == 0o600
        assert "made it 0600" in agent.log_text()
        assert agent.terminate() == 0
    finally:
        agent.close()


class HostilePos:
    """Forwards the daemon's SOAP calls to the simulator, but answers the next `hostile`
    getReceipts calls with memory-hungry XML."""

    def __init__(self, target: str, answers: list[bytes]) -> None:
        self.hostile = list(answers)
        self.served_hostile = 0
        pos = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                operation = self.headers.get("SOAPAction", "")
                if operation == "getReceipts" and pos.hostile:
                    content = pos.hostile.pop(0)
                    pos.served_hostile += 1
                else:
                    content = requests.post(
                        target + self.path.lstrip("/"),
                        data=body,
                        timeout=10,
                        headers={"SOAPAction": operation},
                    ).content
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                try:
                    self.wfile.write(content)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_hostile_pos_answers_cost_bounded_memory_and_the_poller_goes_on(
    tmp_path: Path, shop
) -> None:
    from kassa.test_hostile_xml import shaped

    from agent.kassa.client import MAX_ANSWER

    kassa, cloud = shop
    shapes = ["dense", "deep", "attributes", "text"]
    pos = HostilePos(kassa.url, [])
    agent = Agent(tmp_path, pos.url, cloud.url)
    try:
        agent.start()
        agent.wait_ready()
        time.sleep(0.5)  # a few good polls first: the baseline
        base_mib = int(proc_status(agent.process.pid)["VmHWM"].split()[0]) // 1024
        pos.hostile.extend(shaped(shape, MAX_ANSWER - 1000) for shape in shapes)
        wait_until(
            lambda: (
                pos.served_hostile == len(shapes) and "POS poll works again" in agent.log_text()
            ),
            timeout=30,
            what="every hostile answer, then a good poll",
        )
        refused = agent.log_text().count("refused an oversized answer")  # a repeat is not logged
        status = proc_status(agent.process.pid)
        peak_mib = int(status["VmHWM"].split()[0]) // 1024
        receipt = serve_customer(agent, kassa, CODE, cloud.count)
        assert [p["pos"]["receipt_id"] for p in cloud.receipts()] == [receipt]
        report_figure(
            "hostile pos answers",
            shapes=len(shapes),
            bytes_each=MAX_ANSWER - 1000,
            log_lines=refused,
            daemon_rss_before_mib=base_mib,
            daemon_peak_rss_mib=peak_mib,
            receipt_delivered=1,
        )
        assert refused >= len(set(shapes)) - 1
        assert peak_mib - base_mib < 100
        assert "Traceback" not in agent.log_text()
        assert agent.terminate() == 0
    finally:
        agent.close()
        pos.close()
