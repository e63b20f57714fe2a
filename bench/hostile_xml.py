"""Peak memory of parsing hostile POS answers, each shape in a fresh interpreter.

    python bench/hostile_xml.py [--size BYTES] [--old]

Shapes (each `--size` bytes, default the client's answer cap): deep nesting, dense empty
elements, one element with very many attributes, one huge text node, and a real getReceipts
batch (100 receipts with lines from the simulator). Reported: peak RSS (VmHWM, reset after imports
and building the body) minus the RSS at that point, and what the parse ended in. `--old` parses
with plain defusedxml.fromstring (the parser before the element and depth counting).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from agent.kassa import soap
from agent.kassa.client import MAX_ANSWER
shape, size, old = sys.argv[2], int(sys.argv[3]) or MAX_ANSWER, sys.argv[4] == "1"
head = b'<?xml version="1.0"?><E:Envelope xmlns:E="http://schemas.xmlsoap.org/soap/envelope/"><E:Body><r>'
tail = b'</r></E:Body></E:Envelope>'
room = size - len(head) - len(tail)
if shape == "deep":
    n = room // 7
    body = head + b"<a>" * n + b"</a>" * n + tail
elif shape == "dense":
    body = head + b"<a/>" * (room // 4) + tail
elif shape == "attributes":
    n = room // 12
    body = head + b"<a " + b" ".join(b'a%07d=""' % i for i in range(n)) + b"/>" + tail
elif shape == "text":
    body = head + b"<a>" + b"x" * (room - 7) + b"</a>" + tail
else:
    body = open(sys.argv[5], "rb").read()
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024
import gc; gc.collect()
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # VmHWM := VmRSS: the peak of building the body does not count
base = rss("VmRSS")
started = time.monotonic()
try:
    if old:
        from defusedxml.ElementTree import fromstring
        fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    else:
        soap.parse_xml(body)
    outcome = "parsed"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {str(exc)[:90]}"
print(json.dumps({"shape": shape, "bytes": len(body), "peak_mb": rss("VmHWM") - base,
                  "seconds": round(time.monotonic() - started, 2), "outcome": outcome}))
"""


def real_batch(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import requests

    from agent.kassa import soap
    from agent.sim.kassa import KassaSimulator

    sim = KassaSimulator()
    url = sim.start()
    for _ in range(100):
        sim.book_sale(1)
    request = {
        "request": {
            "syncMarker": 0,
            "syncMarkerLimit": 100,
            "branchNumbers": [1],
            "articlePluNumbers": {},
            "articleBarcodes": {},
            "includeLineList": True,
        }
    }
    path.write_bytes(
        requests.post(
            url,
            params={"ident": sim.ident, "secret": sim.secret},
            data=soap.request_envelope("getReceipts", request),
            headers={"SOAPAction": "getReceipts"},
            timeout=10,
        ).content
    )
    sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--old", action="store_true")
    args = parser.parse_args()
    batch = Path("/tmp/boniq-bench-batch.xml")
    real_batch(batch)
    for shape in ("batch", "deep", "dense", "attributes", "text"):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(ROOT),
                shape,
                str(args.size),
                "1" if args.old else "0",
                str(batch),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        print(out.stdout.strip() or out.stderr.strip()[-300:])
    batch.unlink()


if __name__ == "__main__":
    main()
