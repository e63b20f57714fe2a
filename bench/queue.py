"""A simulated shop day: who gets which receipt, per customer behaviour (bench/shopday.py).

    python bench/queue.py [--customers 10000] [--guard 10] [--ttl 30] [--early 2] [--sweep]

This file's name is the standard library's `queue` as well: when another script in this folder
imports `queue` (urllib3 does), this file stands in for the real one.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "queue":
    import importlib.util
    import sysconfig

    _spec = importlib.util.spec_from_file_location(
        "queue", Path(sysconfig.get_paths()["stdlib"]) / "queue.py"
    )
    assert _spec is not None and _spec.loader is not None
    _real = importlib.util.module_from_spec(_spec)
    sys.modules["queue"] = _real
    _spec.loader.exec_module(_real)
else:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from shopday import main

    if __name__ == "__main__":
        sys.exit(main())
