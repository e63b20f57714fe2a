"""The cashier screen served by a real daemon, the simulators it polls and uploads to, and a
headless Chromium driven through chromedriver (Debian's `chromium`, `chromium-driver`)."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from agent_harness import BACK_TO_BACK, Agent, free_port

from agent.config import Config
from agent.daemon import Daemon
from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator

TILL = 2
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def sim_seed() -> int:
    return 16


@pytest.fixture
def agent(tmp_path: Path, kassa: KassaSimulator, cloud: CloudSimulator) -> Iterator[Agent]:
    """`boniq-agent run` as a subprocess with its cashier screen on a free loopback port."""
    port = free_port()
    running = Agent(tmp_path, kassa.url, cloud.url, workplace=TILL,
                    cashier_listen=f"127.0.0.1:{port}", extra=BACK_TO_BACK)
    running.cashier_url = f"http://127.0.0.1:{port}/"
    yield running
    running.close()


def make_daemon(tmp_path: Path, kassa: KassaSimulator, cloud: CloudSimulator,
                **cashier: object) -> Daemon:
    return Daemon(Config.model_validate({
        "store": {"merchant_id": "m", "branch": kassa.branch, "workplace": TILL},
        "kassa": {"url": kassa.url, "ident": kassa.ident, "secret": kassa.secret},
        "cloud": {"url": cloud.url, "token": cloud.token},
        "data_dir": str(tmp_path / "data"),
        "metrics": {"listen": ""},
        "cashier": {"listen": f"127.0.0.1:{free_port()}", **cashier},
    }), sources=[])


@pytest.fixture
def daemon(tmp_path: Path, kassa: KassaSimulator, cloud: CloudSimulator) -> Iterator[Daemon]:
    """A started in-process daemon (poller, uploader, cashier screen)."""
    running = make_daemon(tmp_path, kassa, cloud)
    running.start()
    yield running
    running.stop()


def page_url(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.cashier_server.port}/"


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


class PageClient:
    """The page's API as its script calls it, from a fresh requests session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def csrf(self) -> str:
        return csrf_of(self.http.get(self.url, timeout=5).text)

    def claim(self, address: str, headers: dict[str, str] | None = None) -> requests.Response:
        return self.http.post(f"{self.url}api/claim", json={"address": address},
                              headers=headers or {}, timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    assert not missing, f"{missing} missing: `./dev test` installs chromium and chromium-driver"
    profile = Path(tempfile.mkdtemp(prefix="boniq-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1024,768", "--force-device-scale-factor=1",
                 f"--user-data-dir={profile}", "--lang=nl"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
