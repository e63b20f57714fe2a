"""SOAP 1.1 for the MplusKASSA API: envelopes, safe parsing, faults as typed errors.

Requests and (for the simulator) responses are built from plain nested values:
a mapping becomes child elements in its order, a list repeats the element, a bool becomes
`true`/`false`, None is left out and an empty mapping gives an empty element (the schema wants
some empty elements, e.g. `articlePluNumbers`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, cast
from xml.etree.ElementTree import Element, ParseError, TreeBuilder, XMLPullParser
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from agent.errors import KassaError, KassaRejected, KassaResponseError, KassaTransient

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
MPLUS_NS = "urn:mplusqapi"

_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FAULT_TEXT_MAX = 200
_CLIENT_FAULTS = ("Client", "VersionMismatch", "MustUnderstand")


def _render(name: str, value: Any, prefix: str) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "".join(_render(name, item, prefix) for item in value)
    tag = f"{prefix}:{name}"
    if isinstance(value, Mapping):
        inner = "".join(_render(key, item, prefix) for key, item in value.items())
        return f"<{tag}>{inner}</{tag}>" if inner else f"<{tag}/>"
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = escape(_UNPRINTABLE.sub("", str(value)))
    return f"<{tag}>{text}</{tag}>"


def _envelope(body: str, *, env_prefix: str, ns_prefix: str | None) -> bytes:
    ns_decl = f' xmlns:{ns_prefix}="{MPLUS_NS}"' if ns_prefix else ""
    text = (
        f'{_XML_DECL}<{env_prefix}:Envelope xmlns:{env_prefix}="{SOAP_ENV_NS}"{ns_decl}>'
        f"<{env_prefix}:Body>{body}</{env_prefix}:Body></{env_prefix}:Envelope>"
    )
    return text.encode("utf-8")


def request_envelope(operation: str, params: Mapping[str, Any] | None = None) -> bytes:
    """`<ns1:operation>…params…</ns1:operation>` in a SOAP 1.1 envelope, as the vendor clients send."""
    return _envelope(
        _render(operation, params or {}, "ns1"), env_prefix="SOAP-ENV", ns_prefix="ns1"
    )


def response_envelope(element: str, content: Mapping[str, Any]) -> bytes:
    """A response the way the gSOAP server writes it (`SOAP-ENV:` and `ns:` prefixes)."""
    return _envelope(_render(element, content, "ns"), env_prefix="SOAP-ENV", ns_prefix="ns")


def fault_envelope(code: str, message: str) -> bytes:
    """A SOAP 1.1 fault; `code` like `Client.Authentication` or `Server`."""
    body = (
        f"<SOAP-ENV:Fault><faultcode>SOAP-ENV:{escape(code)}</faultcode>"
        f"<faultstring>{escape(_UNPRINTABLE.sub('', message))}</faultstring></SOAP-ENV:Fault>"
    )
    return _envelope(body, env_prefix="SOAP-ENV", ns_prefix=None)


def local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def children(element: Element, name: str) -> Iterator[Element]:
    return (c for c in element if local_name(c.tag) == name)


def child(element: Element, name: str) -> Element | None:
    return next(children(element, name), None)


def descendants(element: Element, name: str, *, having: str) -> Iterator[Element]:
    """Elements called `name` anywhere below `element` that have a `having` child.

    Lists come wrapped (`vatGroupList/vatGroup`) or bare; this finds the items either way.
    """
    for item in element.iter():
        if item is not element and local_name(item.tag) == name and child(item, having) is not None:
            yield item


def text(element: Element, name: str) -> str | None:
    found = child(element, name)
    if found is None:
        return None
    return (found.text or "").strip()


MAX_ELEMENTS = 200_000
"""Elements plus attributes in one answer. A getReceipts batch of 100 receipts with 1–6 lines
(the simulator's mix) holds 11,000 elements; with 40 lines each, 67,000 (2.4 MB)."""
MAX_DEPTH = 32
"""Nesting depth; MplusKASSA answers are 9 deep (Envelope/Body/…/line/…)."""
MAX_TOKEN = 256 * 1024
"""Bytes between two parse events: one start tag with a million attributes costs hundreds of MB
inside expat before any count could see it, so a tag (or text) that long is refused unread."""
_FEED = 16 * 1024


def parse_xml(
    body: bytes, *, max_elements: int = MAX_ELEMENTS, max_depth: int = MAX_DEPTH
) -> Element:
    """Parse with DTDs, entities and external references refused, and elements (attributes
    included), depth and token length counted while parsing: a dense, deeply nested or
    attribute-stuffed answer is refused before it costs more than its share of memory."""
    parser = XMLPullParser(
        events=("start", "end"),
        _parser=DefusedXMLParser(
            target=TreeBuilder(), forbid_dtd=True, forbid_entities=True, forbid_external=True
        ),
    )
    try:
        root = _feed_counted(parser, body, max_elements, max_depth)
    except DefusedXmlException as exc:
        raise KassaResponseError(
            f"refused hostile XML from the API ({type(exc).__name__})"
        ) from None
    except (ParseError, ValueError, LookupError) as exc:  # LookupError: unknown encoding
        raise KassaResponseError(f"the API sent malformed XML ({_clean(str(exc))})") from None
    if root is None:
        raise KassaResponseError("the API sent malformed XML (no element found)")
    return root


def _feed_counted(
    parser: XMLPullParser[Element], body: bytes, max_elements: int, max_depth: int
) -> Element | None:
    """The root element (None if there is none), `body` fed in chunks of `_FEED` bytes with the
    element, depth and token budgets checked at every parse event."""
    count = depth = 0
    root: Element | None = None
    since_event = 0
    for offset in range(0, len(body), _FEED):
        chunk = body[offset : offset + _FEED]
        parser.feed(chunk)
        since_event += len(chunk)
        for event, element in cast("Iterator[tuple[str, Element]]", parser.read_events()):
            since_event = 0
            if event == "end":
                depth -= 1
                continue
            root = element if root is None else root
            depth += 1
            count += 1 + len(element.attrib)
            if count > max_elements:
                raise _oversized(f"over {max_elements} elements")
            if depth > max_depth:
                raise _oversized(f"nested over {max_depth} deep")
        if since_event > MAX_TOKEN:
            raise _oversized(f"a tag or text over {MAX_TOKEN} bytes")
    parser.close()
    return root


def _oversized(what: str) -> KassaResponseError:
    return KassaResponseError(
        f"refused an oversized answer from the API ({what}); if receipts are long, lower kassa.batch"
    )


def body_element(body: bytes) -> Element:
    """The first element inside `Envelope/Body` (a response, a request or a `Fault`)."""
    root = parse_xml(body)
    if local_name(root.tag) != "Envelope" or not root.tag.startswith(f"{{{SOAP_ENV_NS}}}"):
        raise KassaResponseError("the API answer is not a SOAP 1.1 envelope")
    soap_body = child(root, "Body")
    content = next(iter(soap_body), None) if soap_body is not None else None
    if content is None:
        raise KassaResponseError("the API answer has an empty SOAP body")
    return content


def parse_response(body: bytes, operation: str) -> Element:
    """The `<operation>Response` element; a SOAP fault raises its typed error."""
    content = body_element(body)
    name = local_name(content.tag)
    if name == "Fault":
        raise fault_error(
            text(content, "faultcode") or "",
            text(content, "faultstring") or "",
            operation,
        )
    if name.lower() != f"{operation}Response".lower():
        raise KassaResponseError(f"expected {operation}Response from the API, got {_clean(name)}")
    return content


def fault_error(code: str, message: str, operation: str) -> KassaError:
    """`Client.*` → KassaRejected (fix it, do not hammer); `Server.*` and the rest → KassaTransient."""
    code = _clean(code.rpartition(":")[2]) or "unknown"
    detail = f"{operation}: {code}: {_clean(message) or 'no reason given'}"
    if code.startswith(_CLIENT_FAULTS):
        return KassaRejected(f"MplusKASSA API refused {detail}")
    return KassaTransient(f"MplusKASSA API failed {detail}")


def _clean(value: str) -> str:
    value = " ".join(_UNPRINTABLE.sub("", value).split())
    return value if len(value) <= _FAULT_TEXT_MAX else value[:_FAULT_TEXT_MAX] + "…"
