"""The command tests' config: a store in tmp_path/data, and a POS and a cloud nobody answers
(port 9), since these commands read and change only the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.queue.store import Store


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"""\
store: {{merchant_id: demo-merchant, branch: 1, workplace: 2}}
kassa: {{url: 'http://127.0.0.1:9/', ident: i, secret: demo-secret}}
cloud: {{url: 'http://127.0.0.1:9/', token: demo-token}}
data_dir: {tmp_path / "data"}
""")
    path.chmod(0o600)
    with Store.open(tmp_path / "data"):
        pass
    return path
