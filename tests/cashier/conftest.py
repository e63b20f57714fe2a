"""The cashier screen served by a real daemon, the simulators it polls and uploads to, and a
headless Chromium driven through chromedriver (Debian's `chromium`, `chromium-driver`); the
helpers the tests call are in cashier_page.py."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import BACK_TO_BACK, Agent, free_port
from cashier_page import TILL, make_daemon

from agent.daemon import Daemon
from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def sim_seed() -> int:
    return 16


@pytest.fixture
def agent(tmp_path: Path, kassa: KassaSimulator, cloud: CloudSimulator) -> Iterator[Agent]:
    """`boniq-agent run` as a subprocess with its cashier screen on a free loopback port."""
    port = free_port()
    running = Agent(
        tmp_path,
        kassa.url,
        cloud.url,
        workplace=TILL,
        cashier_listen=f"127.0.0.1:{port}",
        extra=BACK_TO_BACK,
    )
    running.cashier_url = f"http://127.0.0.1:{port}/"
    yield running
    running.close()


@pytest.fixture
def daemon(tmp_path: Path, kassa: KassaSimulator, cloud: CloudSimulator) -> Iterator[Daemon]:
    """A started in-process daemon (poller, uploader, cashier screen)."""
    running = make_daemon(tmp_path, kassa, cloud)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    assert not missing, f"{missing} missing: `./dev test` installs chromium and chromium-driver"
    profile = Path(tempfile.mkdtemp(prefix="boniq-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1024,768",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        "--lang=nl",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
