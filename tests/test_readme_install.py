"""README's "Install on a till" installs every Debian package the agent needs before pip runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Install on a till", 1)[1].split("\n## ", 1)[0]


def test_the_install_steps_apt_get_what_dev_installs_before_pip():
    packages = re.search(r"^APT_PACKAGES=\(([^)]*)\)", (ROOT / "dev").read_text(), re.MULTILINE)[1]
    steps = install_section()
    apt = re.search(r"^sudo apt-get install (?!\./)(.+)$", steps, re.MULTILINE)  # not the .deb
    assert apt, "no `sudo apt-get install` step"
    assert {*packages.split(), "python3-venv"} <= set(apt[1].split())
    assert steps.index(apt[0]) < steps.index("python3 -m venv")
