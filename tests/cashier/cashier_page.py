"""Helpers of the cashier tests: a daemon with its cashier screen, and the page's API as its
script calls it."""

from __future__ import annotations

import re
from pathlib import Path

import requests
from agent_harness import free_port

from agent.config import Config
from agent.daemon import Daemon
from agent.sim.cloud import CloudSimulator
from agent.sim.kassa import KassaSimulator

TILL = 2


def make_daemon(
    tmp_path: Path, kassa: KassaSimulator, cloud: CloudSimulator, **cashier: object
) -> Daemon:
    return Daemon(
        Config.model_validate(
            {
                "store": {"merchant_id": "m", "branch": kassa.branch, "workplace": TILL},
                "kassa": {"url": kassa.url, "ident": kassa.ident, "secret": kassa.secret},
                "cloud": {"url": cloud.url, "token": cloud.token},
                "data_dir": str(tmp_path / "data"),
                "metrics": {"listen": ""},
                "cashier": {"listen": f"127.0.0.1:{free_port()}", **cashier},
            }
        ),
        sources=[],
    )


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
        return self.http.post(
            f"{self.url}api/claim", json={"address": address}, headers=headers or {}, timeout=5
        )
