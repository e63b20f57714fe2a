"""Hostile input at every door of the agent (SPEC §10 "Bad input"): scanner bytes and key events,
customer links, MplusKASSA answers, cloud answers and configuration files. Each ends in a clean
rejection or a typed error (never an exception the agent did not mean), and through the real
daemon each bad input costs one clear log line while the next customer still gets a receipt.

The unit-level fuzzing of tests/test_codes.py, tests/scanner/ and tests/kassa/test_kassa_hostile.py
is not repeated: these tests add what a customer would notice after the garbage (the next scan
still arrives) and the paths those files do not reach (links, the poller, the uploader, config).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

import pytest
import requests
from agent_harness import ROOT, Agent, customer_code, report_figure, wait_until
from evdev import ecodes as e
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import codes, config
from agent.config import MatchingSection
from agent.errors import CodeRejected, ConfigError, KassaError
from agent.kassa import soap
from agent.kassa.client import KassaClient
from agent.kassa.poller import Poller
from agent.queue.store import NewClaim, Store
from agent.queue.uploader import Uploader
from agent.scanner.hid import HidDecoder
from agent.scanner.serial import LineFramer
from agent.sim.cloud import CloudSimulator, canonical, example_receipt
from agent.sim.kassa import KassaSimulator

CODE = customer_code(4242)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SMALL_FUZZ = settings(FUZZ, max_examples=60)


class Stub:
    """An HTTP server on 127.0.0.1 whose answer a test sets: `(status, headers, body)` or a
    callable of (operation, request body) giving one."""

    def __init__(self) -> None:
        self.answer: Any = (200, {}, b"")
        self.served: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                operation = self.headers.get("SOAPAction", "")
                answer = (
                    stub.answer(operation, self.path, body)
                    if callable(stub.answer)
                    else stub.answer
                )
                status, headers, content = answer
                stub.served.append(operation)
                try:
                    self.send_response(status)
                    for name, value in {"Content-Length": str(len(content)), **headers}.items():
                        self.send_header(name, value)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(content)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stub():
    server = Stub()
    yield server
    server.close()


# -- customer links and raw scanner bytes ----------------------------------------------------------

LINK_HOSTS = [
    "boniq.nl",
    "app.boniq.nl",
    "BONIQ.NL",
    "[boniq.nl",
    "boniq.nl]",
    "[::1]",
    "[::1",
    "evil.nl",
    "",
    "boniq.nl:99999",
    "boniq.nl:-1",
    "x@boniq.nl",
    "%62oniq.nl",
    "boniq.nl.",
    "boniq\u3002nl",
    "xn--bniq-sqa.nl",
]
LINK_PATHS = ["/c/", "/C/", "/c//", "/x/", "", "/c/%", "/c/%zz", "/c/%00", "/c/%E2%80%8B", "//c/"]


@st.composite
def links(draw: Callable) -> str:
    scheme = draw(st.sampled_from(["https", "HTTPS", "http", "", "ftp", "javascript"]))
    code = draw(st.one_of(st.just(CODE), st.just(CODE[:-1] + "0"), st.text(max_size=30)))
    tail = draw(st.sampled_from(["", "/", "?x=1", "#frag", "/../c/" + CODE, " ", "\x00", "[", "]"]))
    return f"{scheme}://{draw(st.sampled_from(LINK_HOSTS))}{draw(st.sampled_from(LINK_PATHS))}{code}{tail}"


def parsed_or_rejected(raw: str | bytes) -> codes.CustomerCode | None:
    try:
        return codes.parse(raw)
    except CodeRejected as exc:
        assert len(str(exc)) < 80
        return None


@FUZZ
@given(link=links())
def test_hostile_links_are_rejected_or_give_a_valid_code(link):
    code = parsed_or_rejected(link)
    if code is not None:
        assert code.kind == "boniq_code" and codes.parse(code.value) == code


@FUZZ
@given(garbage=st.binary(max_size=300), where=st.integers(0, 300))
def test_raw_bytes_around_a_code_are_rejected_or_give_a_valid_code(garbage, where):
    raw = garbage[:where] + CODE.encode() + garbage[where:]
    code = parsed_or_rejected(raw)
    if code is not None and code.kind == "boniq_code":
        assert codes.parse(code.value) == code


# -- scanners: after any garbage, the next scan still arrives ---------------------------------------


@FUZZ
@given(
    garbage=st.lists(st.binary(max_size=1500), max_size=6),
    ending=st.sampled_from(["any", "cr", "lf", "crlf"]),
    went_quiet=st.booleans(),
)
def test_after_any_serial_garbage_the_next_scan_arrives(garbage, ending, went_quiet):
    framer = LineFramer(ending, max_length=512)
    for chunk in garbage:
        framer.feed(chunk)
    terminator = b"\n" if ending == "lf" else b"\r\n"
    before = framer.finish() if went_quiet else framer.feed(terminator)
    assert all(len(text) <= 512 for text in before)
    assert framer.feed(CODE.encode() + terminator) == [CODE]


US_DIGITS = {str(n): getattr(e, f"KEY_{n}") for n in range(10)}


def keystrokes(text: str) -> list[tuple[int, int]]:
    """What a HID scanner set to `us` sends for an upper-case alphanumeric code, then Enter."""
    out: list[tuple[int, int]] = []
    for char in text:
        key = US_DIGITS.get(char) or getattr(e, f"KEY_{char}")
        shift = char.isalpha()
        out += (
            [(e.KEY_LEFTSHIFT, 1)] * shift + [(key, 1), (key, 0)] + [(e.KEY_LEFTSHIFT, 0)] * shift
        )
    return out + [(e.KEY_ENTER, 1), (e.KEY_ENTER, 0)]


MODIFIERS = [
    e.KEY_LEFTSHIFT,
    e.KEY_RIGHTSHIFT,
    e.KEY_LEFTCTRL,
    e.KEY_RIGHTALT,
    e.KEY_LEFTALT,
    e.KEY_LEFTMETA,
    e.KEY_CAPSLOCK,
]


@FUZZ
@given(
    events=st.lists(
        st.tuples(
            st.one_of(st.integers(0, 300), st.sampled_from(MODIFIERS)),
            st.integers(-1, 3),
            st.floats(-0.1, 0.2),
        ),
        max_size=150,
    )
)
def test_after_any_key_garbage_the_next_scan_arrives(events):
    """Stuck modifiers too: a key-up lost to an evdev SYN_DROPPED must not spoil later codes."""
    decoder = HidDecoder("us", gap_ms=50, max_length=64)
    at = 1000.0
    for code, value, step in events:
        at += step
        decoder.feed(code, value, at)
    at += 1.0
    texts = []
    for code, value in keystrokes(CODE):
        at += 0.002
        texts += decoder.feed(code, value, at)
    assert texts[-1:] == [CODE]


# -- MplusKASSA answers: to the client and to the poller ---------------------------------------------

OPERATIONS = ("getPaymentMethods", "getVatGroupList", "getCurrentSyncMarkersV2", "getReceipts")
FIELDS = (
    "syncMarker",
    "workplaceNumber",
    "receiptId",
    "receiptType",
    "state",
    "year",
    "mon",
    "day",
    "hour",
    "min",
    "timezone",
    "quantity",
    "decimalPlaces",
    "price",
    "totalInclAmount",
    "totalExclAmount",
    "paidAmount",
    "vatPercentage",
    "vatCode",
    "amount",
    "method",
    "articleNumber",
    "receiptSyncMarker",
    "entryBranchNumber",
    "number",
)
ODD_VALUES = [
    "",
    " ",
    "\u00b2",
    "\u0661\u0662",
    "+5",
    "5_000",
    "1e3",
    "0x1F",
    "NaN",
    "-",
    "--1",
    str(2**63),
    str(-(2**63) - 1),
    "9" * 30,
    "9" * 5000,
    "10000000000000000",
    "-100000000000000000",
    "&amp;&lt;",
    "<![CDATA[7]]>",
    "<x/>",
    "&lol;",
    "\x07",
]
BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(
        b'<!ENTITY %s "%s">' % (bytes([98 + i]), (b"&" + bytes([97 + i]) + b";") * 10)
        for i in range(8)
    )
    + b']><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<SOAP-ENV:Body><r>&i;</r></SOAP-ENV:Body></SOAP-ENV:Envelope>"
)
ENVELOPE_HEAD = (
    b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"'
    b' xmlns:ns="urn:mplusqapi"><SOAP-ENV:Body>'
)
FIXED_HOSTILE = [
    b"",
    b"not xml at all",
    b"<html><body>Bad Gateway</body></html>",
    BOMB,
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
    b'<?xml version="1.0" encoding="bogus-8"?><r/>',
    b"\xef\xbb\xbf\xff\xfe<r/>",
    ENVELOPE_HEAD + b"<a>" * 50_000 + b"</a>" * 50_000 + b"</SOAP-ENV:Body></SOAP-ENV:Envelope>",
    ENVELOPE_HEAD + b" " * 300_000 + b"</SOAP-ENV:Body></SOAP-ENV:Envelope>",
    soap.response_envelope("getReceiptsResponse", {"receiptList": {"receipt": [{"x": 1}] * 3}}),
    soap.fault_envelope("Client.Weird\x00", "\u2028" * 500),
]


def _set_field(xml: str, field: str, value: str, every: bool) -> bytes:
    pattern = re.compile(rf"(<ns:{field}>)[^<]*(</ns:{field}>)")
    return pattern.sub(lambda m: m[1] + value + m[2], xml, count=0 if every else 1).encode()


def _drop_field(xml: str, field: str) -> bytes:
    return re.sub(rf"<ns:{field}>[^<]*</ns:{field}>|<ns:{field}/>", "", xml, count=1).encode()


ODD_VALUE = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.integers(-(10**20), 10**20).map(str),
    st.text(max_size=30).map(escape),
)
MUTATIONS_XML = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(FIELDS), ODD_VALUE, st.booleans()),
    st.tuples(st.just("drop"), st.sampled_from(FIELDS)),
    st.tuples(st.just("cut"), st.integers(0, 20_000)),
    st.tuples(st.just("flip"), st.integers(0, 20_000), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("raw"), st.binary(max_size=2000)),
    st.tuples(st.just("fixed"), st.integers(0, len(FIXED_HOSTILE) - 1)),
)


def spoil(good: bytes, mutation: tuple) -> bytes:
    """One hostile variant of a real answer, described by a MUTATIONS_XML tuple."""
    kind, *args = mutation
    if kind == "set":
        return _set_field(good.decode(), *args)
    if kind == "drop":
        return _drop_field(good.decode(), *args)
    if kind == "cut":
        return good[: args[0] % (len(good) + 1)]
    if kind == "flip":
        spot = args[0] % len(good)
        return good[:spot] + args[1] + good[spot + 1 :]
    return args[0] if kind == "raw" else FIXED_HOSTILE[args[0]]


STATUSES = st.sampled_from([200, 200, 200, 500, 502, 404, 401, 302, 204])
XML_TYPES = st.sampled_from(["text/xml; charset=utf-8", "text/html", "application/json", ""])
KNOWN_POISON = [  # each once took the poller down with an exception that was not a KassaError
    ("getReceipts", ("set", "syncMarker", str(2**70), False)),
    ("getReceipts", ("set", "timezone", str(10**17), False)),
    ("getReceipts", ("set", "decimalPlaces", str(10**9), False)),
    ("getReceipts", ("set", "decimalPlaces", str(-(10**6)), False)),
    ("getReceipts", ("set", "decimalPlaces", str(10**6), True)),
    ("getCurrentSyncMarkersV2", ("set", "receiptSyncMarker", "\u00b2", False)),
    ("getCurrentSyncMarkersV2", ("set", "receiptSyncMarker", str(2**70), False)),
    ("getReceipts", ("raw", b'<?xml version="" encoding="b"?>')),
]


class Answers(dict):
    def __repr__(self) -> str:
        return "<the simulator's answers>"


@pytest.fixture(scope="module")
def kassa_answers():
    """Real answers of the simulator to the poller's four calls, to serve or to spoil."""
    with KassaSimulator(seed=5) as sim:
        for n in range(6):
            sim.book_sale(1 + n % 4)
        calls = {
            "getPaymentMethods": None,
            "getVatGroupList": None,
            "getCurrentSyncMarkersV2": {"request": {"includeReceiptSyncMarker": True}},
            "getReceipts": {
                "request": {
                    "syncMarker": 1,
                    "syncMarkerLimit": 100,
                    "branchNumbers": [1],
                    "includeLineList": True,
                }
            },
        }
        return Answers(
            {
                op: requests.post(
                    sim.url,
                    params={"ident": sim.ident, "secret": sim.secret},
                    data=soap.request_envelope(op, params),
                    headers={"SOAPAction": op},
                    timeout=5,
                ).content
                for op, params in calls.items()
            }
        )


def kassa_client(url: str) -> KassaClient:
    return KassaClient(url, "ident-x", "secret-x", timeout=(1, 1), max_response_bytes=200_000)


@SMALL_FUZZ
@given(mutation=MUTATIONS_XML, status=STATUSES, content_type=XML_TYPES)
def test_the_client_turns_any_answer_into_data_or_a_kassa_error(
    stub, kassa_answers, mutation, status, content_type
):
    stub.answer = (
        status,
        {"Content-Type": content_type},
        spoil(kassa_answers["getReceipts"], mutation),
    )
    client = kassa_client(stub.url)
    calls = [
        client.get_api_version,
        client.get_branches,
        client.get_payment_methods,
        client.get_vat_groups,
        client.get_current_sync_markers,
        lambda: client.get_receipts(1, 1),
        lambda: client.get_receipt("r-1"),
    ]
    try:
        for call in calls:
            try:
                call()
            except KassaError as exc:
                assert len(str(exc)) < 400 and "secret-x" not in str(exc)
    finally:
        client.close()


def poll_once_against(
    stub: Stub, answers: Answers, spoiled: str, hostile: tuple[int, dict[str, str], bytes]
) -> list[Any]:
    """One poll with a customer waiting at every till (so receipts get mapped); the outbox."""
    stub.answer = lambda op, path, body: (
        hostile if op == spoiled else (200, {"Content-Type": "text/xml"}, answers[op])
    )
    client = kassa_client(stub.url)
    with tempfile.TemporaryDirectory() as folder, Store.open(folder) as store:
        for till in (1, 2, 3, 4):
            store.add_claim(
                NewClaim(
                    correlation_id=f"c-{till}",
                    customer_kind="boniq_code",
                    customer=customer_code(till),
                    workplace=till,
                    source="t",
                    scanned_at=1.0,
                    pos_marker=None,
                ),
                dedupe_window=5.0,
            )
        try:
            Poller(
                client,
                store,
                merchant_id="m",
                branch=1,
                matching=MatchingSection.model_construct(claim_ttl=1e12),
            ).poll_once()
        except KassaError:
            pass
        finally:
            client.close()
        return store.outbox(limit=1000)


@pytest.mark.slow
@FUZZ
@given(spoiled=st.sampled_from(OPERATIONS), mutation=MUTATIONS_XML, status=STATUSES)
def test_the_poller_turns_any_answer_into_stored_receipts_or_a_kassa_error(
    stub, kassa_answers, spoiled, mutation, status
):
    hostile = (status, {"Content-Type": "text/xml"}, spoil(kassa_answers[spoiled], mutation))
    for item in poll_once_against(stub, kassa_answers, spoiled, hostile):
        payload = json.loads(item.body)
        assert payload["pos"]["receipt_id"] == item.receipt_id
        assert len(item.body) < 100_000


@pytest.mark.parametrize(("spoiled", "mutation"), KNOWN_POISON)
def test_answers_that_once_crashed_the_poller_are_kassa_errors(
    stub, kassa_answers, spoiled, mutation
):
    """The spoiled (first) receipt is skipped or the poll fails; nothing takes the poller down."""
    hostile = (200, {"Content-Type": "text/xml"}, spoil(kassa_answers[spoiled], mutation))
    first = re.search(rb"<ns:receiptId>([^<]+)<", kassa_answers["getReceipts"])[1].decode()
    stored = poll_once_against(stub, kassa_answers, spoiled, hostile)
    assert first not in [item.receipt_id for item in stored]
    assert all(len(item.body) < 100_000 for item in stored)


# -- cloud answers: every row ends delivered, dead or scheduled for a retry -------------------------


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
CLOUD_BODIES = st.one_of(
    st.binary(max_size=500),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"id": JSON_VALUES, "error": JSON_VALUES, "details": JSON_VALUES}).map(
        lambda v: json.dumps(v).encode()
    ),
    st.sampled_from(
        [
            _nested(40_000),
            _nested(2_000),
            b'{"id": ' + _nested(30_000) + b"}",
            b"x" * 200_000,
            b'{"error": "' + b"\xff" * 70_000 + b'"}',
            b"\x00" * 100,
        ]
    ),
)
RETRY_AFTER = st.one_of(
    st.none(),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40).map(str.strip),
    st.sampled_from(
        [
            "\u00b2",
            "\u00b9\u00b2",
            "-1",
            "1e9",
            "99999999999999999999999",
            "0",
            "Mon, 01 Jan 0001 00:00:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Thu, 01 Jan 1970 00:00:00 -2359",
            "Sun, 99 Foo 2024 99:99:99 XYZ",
        ]
    ),
)


@pytest.mark.slow
@FUZZ
@given(
    status=st.integers(200, 599),
    body=CLOUD_BODIES,
    retry_after=RETRY_AFTER,
    content_type=st.sampled_from(
        [
            "application/json",
            "text/html",
            "",
            "application/json; charset=utf-16",
            "application/octet-stream",
        ]
    ),
)
def test_any_cloud_answer_leaves_the_row_delivered_dead_or_due_again(
    stub, status, body, retry_after, content_type
):
    headers = {"Content-Type": content_type}
    if retry_after:
        headers["Retry-After"] = retry_after
    stub.answer = (status, headers, body)
    with tempfile.TemporaryDirectory() as folder, Store.open(folder) as store:
        payload = example_receipt("r-hostile")
        row = store.enqueue(
            "r-hostile", payload["idempotency_key"], canonical(payload), "c-1", now=1000.0
        )
        with Uploader(store, stub.url, "tok", timeout=(1, 1), workers=1) as uploader:
            uploader.run_once(now=1000.0)
        after = store.get(row.id)
    expected = (
        "delivered" if status in (200, 201) else "dead" if status in (400, 409, 422) else "pending"
    )
    assert (after.state, after.attempts) == (expected, 1)
    if expected == "pending":
        assert after.next_attempt_at > 1000.0 and after.last_error
    if expected == "dead":
        assert after.last_error.startswith(f"HTTP {status}")


# -- configuration files -----------------------------------------------------------------------------

EXAMPLE_LINES = (ROOT / "config.example.yaml").read_text().splitlines(keepends=True)
YAML_JUNK = [
    "[",
    "{",
    "]",
    "}",
    "&a",
    "*a",
    "*b",
    "&a [1, *a]",
    "!!python/object/apply:os.system ['true']",
    "%TAG ! x",
    "---",
    "...",
    "\t",
    "? ",
    "- ",
    "<<: *a",
    "\x00",
    "\ufeff",
    "\u00e9",
    "null",
    "~",
    "-1",
    "1e400",
    "0x10",
    "yes",
    ":",
    "'",
    '"',
    "#",
    "|",
    ">",
    "!!binary x",
    "[" * 300,
    "{a: " * 200,
    "store:",
    "  kassa: 1",
]
MUTATIONS = ("drop", "double", "value", "insert", "indent", "dedent", "cut", "splice")


def mutate(lines: list[str], steps: list[tuple[str, int, str]]) -> str:
    lines = list(lines)
    for kind, index, junk in steps:
        i = index % len(lines)
        line = lines[i]
        key, colon, _ = line.partition(":")
        lines[i : i + 1] = {
            "drop": [],
            "double": [line, line],
            "value": [f"{key}: {junk}\n" if colon else junk + "\n"],
            "insert": [line, junk + "\n"],
            "indent": ["  " + line],
            "dedent": [line.lstrip()],
            "cut": [line[: index % (len(line) + 1)]],
            "splice": [line[: index % (len(line) + 1)] + junk + line[index % (len(line) + 1) :]],
        }[kind]
        lines = lines or ["\n"]
    return "".join(lines)


PROBLEM = re.compile(r"config\.yaml:(\d+): \S[^\n]*: \S[^\n]*")


def assert_config_error_shape(text: str) -> None:
    try:
        config.parse(text)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            match = PROBLEM.fullmatch(problem)
            assert match, f"not FILE:LINE: key: message: {problem!r}"
            assert 1 <= int(match[1]) <= text.count("\n") + 2


@FUZZ
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(MUTATIONS),
            st.integers(0, 10_000),
            st.one_of(st.sampled_from(YAML_JUNK), st.text(max_size=12)),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_a_mutated_example_config_is_valid_or_one_config_error_line_per_problem(steps):
    assert_config_error_shape(mutate(EXAMPLE_LINES, steps))


@pytest.mark.parametrize(
    "text",
    [
        "store: " + "[" * 5000,
        "store: " + "{a: " * 3000,
        "kassa: \x00\n",
        "a: b\n\x85c: d\n",
        "a: &a [x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nstore: [*c, *c, *c]\n",
        "- 1\n- 2\n",
        "",
        (
            "store: {merchant_id: m, branch: 1, workplace: 1}\nkassa: {url: 'http://x/', ident: i}\n"
            "cloud: {url: 'http://y/', token: t}\nscanners: [{type: serial}, {type: usb}, 7]\n"
        ),
    ],
)
def test_pathological_config_files_give_config_errors_with_a_line(text):
    with pytest.raises(ConfigError):
        config.parse(text)
    assert_config_error_shape(text)


# -- the real daemon ------------------------------------------------------------------------------------

SCANNER_GARBAGE = [
    b"\xff\xfe\x80\x81 broken utf-8 \xc3\x28\r\n",
    b"\x1b[2J\x07\x00\x08BQ1\x7f\x1b]0;title\x07\r\n",
    b"X" * 10_000 + b"\r\n",
    b"https://[boniq.nl/c/" + CODE.encode() + b"\r\n",
    b"Y" * 20_000,  # an endless line: no terminator, the scanner goes quiet
]
SCAN_BAD = ("scan rejected", "scan ignored")


def log_lines(agent: Agent, *needles: str) -> list[str]:
    return [line for line in agent.log_text().splitlines() if any(n in line for n in needles)]


def serve(agent: Agent, kassa: KassaSimulator, cloud: CloudSimulator, code: str) -> str:
    delivered = cloud.count()
    agent.scan(code)
    wait_until(lambda: agent.claim_fenced(code), what="the good customer's claim, fenced")
    receipt = kassa.book_sale(agent.workplace, after=4)
    wait_until(lambda: cloud.count() > delivered, what="the good customer's receipt")
    return receipt


@pytest.fixture
def shop(tmp_path):
    with KassaSimulator(seed=31) as kassa, CloudSimulator("demo-token") as cloud:
        yield kassa, cloud


def test_scanner_garbage_costs_one_log_line_each_and_the_next_customer_is_served(tmp_path, shop):
    kassa, cloud = shop
    agent = Agent(tmp_path, kassa.url, cloud.url)
    try:
        agent.start()
        agent.wait_ready()
        for number, garbage in enumerate(SCANNER_GARBAGE, start=1):
            for start in range(0, len(garbage), 4096):
                os.write(agent.master, garbage[start : start + 4096])
            wait_until(
                lambda n=number: len(log_lines(agent, *SCAN_BAD)) >= n,
                what=f"a log line for garbage #{number}",
            )
        time.sleep(0.6)  # the endless line's scanner stays quiet
        receipt = serve(agent, kassa, cloud, CODE)
        assert agent.process.poll() is None
        assert [p["pos"]["receipt_id"] for p in cloud.receipts()] == [receipt]
        assert cloud.receipts()[0]["customer"]["boniq_code"] == CODE
        bad = log_lines(agent, *SCAN_BAD)
        assert len(bad) == len(SCANNER_GARBAGE), "\n".join(bad)
        assert not log_lines(agent, "Traceback", "crashed", "scanner unavailable")
        report_figure(
            "hostile-scanner",
            garbage_inputs=len(SCANNER_GARBAGE),
            log_lines=len(bad),
            daemon_up=True,
            good_customer_delivered=1,
        )
        assert agent.terminate() == 0
    finally:
        agent.close()


POS_BAD = ("POS poll failed", "POS receipt cannot be read")


class KassaProxy(Stub):
    """Forwards the daemon's SOAP calls to the simulator; serves each queued hostile answer to
    one getReceipts call instead."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.hostile: list[tuple[int, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.answer = self._answer

    def _answer(self, operation: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            queued = self.hostile.pop(0) if operation == "getReceipts" and self.hostile else None
        if queued is not None:
            return queued
        real = requests.post(
            self.target + path.lstrip("/"),
            data=body,
            timeout=10,
            headers={"SOAPAction": operation, "Content-Type": "text/xml"},
        )
        return (
            real.status_code,
            {"Content-Type": real.headers.get("Content-Type", "")},
            real.content,
        )

    def serve_once(self, answer: tuple[int, dict[str, str], bytes]) -> None:
        with self.lock:
            self.hostile.append(answer)
        wait_until(lambda: not self.hostile, what="the hostile answer to be fetched")


@pytest.mark.slow
def test_hostile_kassa_answers_cost_one_log_line_each_and_the_next_customer_is_served(
    tmp_path, shop
):
    kassa, cloud = shop
    kassa.book_sale(1)
    proxy = KassaProxy(kassa.url)
    good = requests.post(
        kassa.url,
        params={"ident": kassa.ident, "secret": kassa.secret},
        data=soap.request_envelope(
            "getReceipts",
            {"request": {"syncMarker": 1, "syncMarkerLimit": 100, "branchNumbers": [1]}},
        ),
        headers={"SOAPAction": "getReceipts"},
        timeout=5,
    ).content
    xml = {"Content-Type": "text/xml"}
    answers = [(200, xml, body) for body in FIXED_HOSTILE[1:9]] + [
        (200, xml, _set_field(good.decode(), "syncMarker", str(2**70), False)),
        (200, xml, _set_field(good.decode(), "syncMarker", "\u00b2", False)),
        (200, xml, _set_field(good.decode(), "timezone", str(10**17), False)),
        (200, xml, _drop_field(good.decode(), "receiptType")),
        (200, xml, ENVELOPE_HEAD + b" " * 21_000_000),
        (502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>"),
    ]
    agent = Agent(tmp_path, proxy.url, cloud.url)
    try:
        agent.start()
        agent.wait_ready()
        for number, answer in enumerate(answers, start=1):
            proxy.serve_once(answer)
            wait_until(
                lambda n=number: len(log_lines(agent, *POS_BAD)) >= n,
                what=f"a log line for hostile answer #{number}",
            )
            polls = proxy.served.count("getReceipts")
            wait_until(lambda n=polls: proxy.served.count("getReceipts") > n, what="the next poll")
        polls_before = proxy.served.count("getReceipts")
        kassa.faults.update({"entity_bomb": True})  # a while of nothing but entity bombs
        wait_until(
            lambda: proxy.served.count("getReceipts") >= polls_before + 3,
            timeout=30,
            what="three polls answered with entity bombs",
        )
        kassa.faults.reset()
        bomb_polls = proxy.served.count("getReceipts") - polls_before
        receipt = serve(agent, kassa, cloud, CODE)
        failed = log_lines(agent, *POS_BAD)
        assert agent.process.poll() is None
        assert len(failed) == len(answers) + 1, "\n".join(failed)
        assert not log_lines(agent, "Traceback", "crashed")
        assert [
            (p["pos"]["receipt_id"], p["customer"]["boniq_code"]) for p in cloud.receipts()
        ] == [(receipt, CODE)]
        report_figure(
            "hostile-kassa",
            hostile_answers=len(answers),
            bomb_polls=bomb_polls,
            log_lines=len(failed),
            daemon_up=True,
            good_customer_delivered=1,
        )
        assert agent.terminate() == 0
    finally:
        agent.close()
        proxy.close()
