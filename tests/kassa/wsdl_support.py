"""The official MplusKASSA WSDL's schema, and a loopback proxy that records SOAP traffic.

The WSDL is reference data outside the project (`../shared/reference/mplusqapi.wsdl`, or the
path in BONIQ_MPLUS_WSDL); tests that need it are skipped, saying why, where it is absent.
Its `<types>` schema imports the SOAP encoding schema, which cannot be fetched offline: the import
is dropped and `SOAP-ENC:base64` read as `xsd:base64Binary` (see mplusqapi.NOTICE.md).
"""

from __future__ import annotations

import http.client
import os
import threading
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import pytest

lxml_etree = pytest.importorskip(
    "lxml.etree", reason="lxml (the `test` extra) validates the WSDL schema"
)

ROOT = Path(__file__).resolve().parents[2]
WSDL_ENV = "BONIQ_MPLUS_WSDL"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
MPLUS_NS = "urn:mplusqapi"


def wsdl_path() -> Path:
    given = os.environ.get(WSDL_ENV)
    return Path(given) if given else ROOT.parent / "shared" / "reference" / "mplusqapi.wsdl"


def require_wsdl() -> Path:
    path = wsdl_path()
    if not path.is_file():
        pytest.skip(
            f"the official MplusKASSA WSDL is not at {path} (reference data kept outside "
            f"the project; set {WSDL_ENV} to its path to run the conformance tests)"
        )
    return path


@dataclass(frozen=True)
class Wsdl:
    schema: Any  # lxml.etree.XMLSchema
    inputs: dict[str, str]  # operation -> element of its request
    outputs: dict[str, str]  # operation -> element of its response

    def problems(self, body_element: Any) -> list[str]:
        """Schema violations of one SOAP body element; [] when it is valid."""
        if self.schema.validate(body_element):
            return []
        return [f"{e.path}: {e.message}" for e in self.schema.error_log]


@cache
def load_wsdl(path: Path) -> Wsdl:
    tree = lxml_etree.parse(str(path))
    root = tree.getroot()
    schema = root.find(f"{{{WSDL_NS}}}types/{{{XSD_NS}}}schema")
    if schema is None:
        raise AssertionError(f"{path} has no <types>/<schema>")
    for imported in schema.findall(f"{{{XSD_NS}}}import"):
        schema.remove(imported)
    for element in schema.iter():
        for attribute in ("type", "base"):
            if element.get(attribute) == "SOAP-ENC:base64":
                element.set(attribute, "xsd:base64Binary")
    compiled = lxml_etree.XMLSchema(lxml_etree.fromstring(lxml_etree.tostring(schema)))
    return Wsdl(compiled, *_operation_elements(root))


def _operation_elements(root: Any) -> tuple[dict[str, str], dict[str, str]]:
    messages = {
        m.get("name"): m.find(f"{{{WSDL_NS}}}part").get("element").rpartition(":")[2]
        for m in root.iterfind(f"{{{WSDL_NS}}}message")
    }
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for operation in root.iterfind(f"{{{WSDL_NS}}}portType/{{{WSDL_NS}}}operation"):
        name = operation.get("name")
        for kind, table in (("input", inputs), ("output", outputs)):
            found = operation.find(f"{{{WSDL_NS}}}{kind}")
            if found is not None:
                table[name] = messages[found.get("message").rpartition(":")[2]]
    return inputs, outputs


def body_of(envelope: bytes) -> Any:
    """The element inside a SOAP 1.1 `Envelope/Body` (lxml), checking the envelope on the way."""
    root = lxml_etree.fromstring(envelope, lxml_etree.XMLParser(resolve_entities=False))
    assert root.tag == f"{{{SOAP_ENV_NS}}}Envelope", root.tag
    body = root.find(f"{{{SOAP_ENV_NS}}}Body")
    assert body is not None and len(body) == 1, "a SOAP body holds exactly one element"
    return body[0]


def local(tag: str) -> str:
    return tag.rpartition("}")[2]


# -- a recording proxy ------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    operation: str  # the local name of the request's body element
    request: bytes
    status: int
    response: bytes


@dataclass
class Recording:
    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)

    def take(self) -> list[Exchange]:
        with self.lock:
            taken, self.exchanges = self.exchanges, []
        return taken


class RecordingProxy:
    """Real HTTP between the client and the simulator, every SOAP exchange kept byte for byte."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.recording = Recording()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.upstream.path or '/'}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def forward(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        connection = http.client.HTTPConnection(
            self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=10
        )
        try:
            connection.request("POST", path, body, headers)
            answer = connection.getresponse()
            data = answer.read()
            content_type = answer.getheader("Content-Type", "text/xml")
        finally:
            connection.close()
        self.recording.add(Exchange(local(body_of(body).tag), body, answer.status, data))
        return answer.status, data, content_type


class _ProxyHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request line holds the secret."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() in ("content-type", "soapaction", "x-request-id")
        }
        status, data, content_type = self.server.proxy.forward(  # type: ignore[attr-defined]
            self.path, headers, body
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
