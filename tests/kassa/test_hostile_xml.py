"""POS answers shaped to cost memory: refused while parsing, with a clear error, in bounded RSS."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from agent_harness import ROOT, report_figure

from agent.errors import KassaResponseError
from agent.kassa import soap
from agent.kassa.client import MAX_ANSWER

HEAD = b'<?xml version="1.0"?><E:Envelope xmlns:E="http://schemas.xmlsoap.org/soap/envelope/"><E:Body><r>'
TAIL = b"</r></E:Body></E:Envelope>"


def shaped(shape: str, size: int) -> bytes:
    room = size - len(HEAD) - len(TAIL)
    if shape == "deep":
        return HEAD + b"<a>" * (room // 7) + b"</a>" * (room // 7) + TAIL
    if shape == "dense":
        return HEAD + b"<a/>" * (room // 4) + TAIL
    if shape == "attributes":
        return HEAD + b"<a " + b" ".join(b'a%07d=""' % i for i in range(room // 12)) + b"/>" + TAIL
    return HEAD + b"<a>" + b"x" * (room - 7) + b"</a>" + TAIL


@pytest.mark.parametrize(
    ("shape", "says"),
    [
        ("deep", "nested over 32 deep"),
        ("dense", "over 200000 elements"),
        ("attributes", "a tag or text over"),
        ("text", "a tag or text over"),
    ],
)
def test_a_hostile_shape_is_refused_with_a_clear_error(shape: str, says: str) -> None:
    with pytest.raises(KassaResponseError, match=says) as caught:
        soap.parse_xml(shaped(shape, 2_000_000))
    assert "kassa.batch" in str(caught.value)


def test_many_elements_with_attributes_count_against_the_limit() -> None:
    body = HEAD + b'<a x="1" y="2" z="3"/>' * 60_000 + TAIL  # 60,000 elements, 240,000 counted
    with pytest.raises(KassaResponseError, match="elements"):
        soap.parse_xml(body)


PEAK = r"""
import json, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests")
from kassa.test_hostile_xml import shaped
from agent.kassa import soap
body = shaped(sys.argv[2], int(sys.argv[3]))
import gc; gc.collect()
open("/proc/self/clear_refs", "w").write("5")
rss = lambda f: next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(f))
base = rss("VmRSS")
try:
    soap.parse_xml(body)
    outcome = "parsed"
except Exception as exc:
    outcome = type(exc).__name__
print(json.dumps({"peak_mb": (rss("VmHWM") - base) / 1024, "outcome": outcome}))
"""


@pytest.mark.parametrize("shape", ["deep", "dense", "attributes", "text"])
def test_a_hostile_answer_at_the_size_cap_costs_under_100_mb(shape: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PEAK, str(ROOT), shape, str(MAX_ANSWER)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout)
    report_figure(
        f"hostile xml {shape}",
        bytes=MAX_ANSWER,
        peak_mb=round(result["peak_mb"], 1),
        outcome=result["outcome"],
    )
    assert result["outcome"] == "KassaResponseError"
    assert result["peak_mb"] + MAX_ANSWER / 2**20 < 100  # the parse, and the answer itself


def test_a_real_batch_still_parses() -> None:
    receipt = {
        "receiptId": "r",
        "syncMarker": 1,
        "lineList": {
            "line": [{"articleNumber": n, "text": "Appeltaart", "quantity": 1} for n in range(40)]
        },
    }
    body = soap.response_envelope(
        "getReceiptsResponse", {"receiptList": {"receipt": [receipt] * 100}}
    )
    found = list(
        soap.descendants(soap.parse_response(body, "getReceipts"), "receipt", having="receiptId")
    )
    assert len(found) == 100
