"""What a webhook request must look like: the JSON body (size and depth), its envelope, the
event's name in the path. Every problem is a `Refused` with the documented error code; nothing
here touches the store (docs/webhooks.md "Requests refused")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeGuard

from agent.errors import WebhookRefused
from agent.queue.sessions import EventKey, SessionEvent

MAX_DEPTH = 16
SESSION_EVENTS = frozenset(
    {
        "startSession",
        "scanCode",
        "addSessionLine",
        "updateSessionLine",
        "removeSessionLine",
        "pauseSession",
        "resumeSession",
        "selectRelation",
        "startPayment",
        "cancelPayment",
        "mergeSession",
        "cancelSession",
        "completeSession",
        "creditSession",
    }
)


Refused = WebhookRefused


@dataclass(frozen=True)
class Envelope:
    """A checked request: the session event the store takes, and the body it came in."""

    session: SessionEvent
    body: dict[str, Any]


def event_name(path: str) -> str:
    name = path.split("?", 1)[0].rstrip("/").rpartition("/")[2]
    return name if name.isascii() and name.isalnum() and len(name) <= 64 else ""


def parse_json(body: bytes) -> dict[str, Any]:
    if depth(body) > MAX_DEPTH:
        raise Refused("INVALID_JSON", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused("INVALID_JSON", "the body is not JSON") from None
    if not isinstance(value, dict):
        raise Refused("INVALID_DATA", "the body is not a JSON object")
    return value


def depth(body: bytes) -> int:
    """How deep `[`/`{` nest outside strings: checked before parsing, in one pass."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def envelope(event: str, body: dict[str, Any]) -> Envelope:
    sender, session, meta = body.get("sender"), body.get("session"), body.get("event")
    if not isinstance(sender, dict) or not isinstance(session, dict):
        raise Refused("INVALID_DATA", "sender and session objects are required")
    foreign = sorted(k for k in body if k in SESSION_EVENTS and k != event)
    if foreign:  # the path is not signed: a body signed for one event, posted to another
        raise Refused("INVALID_DATA", f"a {event} request carries a {foreign[0]} object")
    branch, workplace = sender.get("branchNumber"), sender.get("workplaceNumber")
    if not _is_int(branch) or not _is_int(workplace):
        raise Refused("INVALID_DATA", "sender.branchNumber and workplaceNumber must be integers")
    session_id = session.get("sessionId")
    if (
        not isinstance(session_id, str)
        or len(session_id) > 100
        or (not session_id and event == "scanCode")
    ):
        raise Refused("INVALID_DATA", "session.sessionId must be a string")
    instance = sender.get("instanceId")
    counter = meta.get("eventCounter") if isinstance(meta, dict) else None
    key = (
        EventKey(instance, counter, event, session_id)
        if isinstance(instance, str) and _is_int(counter)
        else None
    )
    line_ids = _line_ids(session, body.get(event))
    return Envelope(SessionEvent(event, session_id, branch, workplace, line_ids, key), body)


def _line_ids(session: dict[str, Any], details: Any) -> tuple[str, ...]:
    """Every `lineId` in the session's lines and in the event's own object."""
    found: list[str] = []
    stack: list[Any] = [session.get("lines"), details]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            line_id = item.get("lineId")
            if isinstance(line_id, str) and 0 < len(line_id) <= 100:
                found.append(line_id)
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(item)
    return tuple(dict.fromkeys(found))


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
