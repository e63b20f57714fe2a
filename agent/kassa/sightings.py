"""What one poll saw: each receipt not judged before as the matcher's `Seen` and the store's
`Sighting`, and the webhook session each belongs to (webhook mode, docs/webhooks.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.kassa.matcher import Seen
from agent.kassa.receipt import Receipt
from agent.kassa.reference import Reference
from agent.queue.sessions import SessionLink
from agent.queue.store import SeenBefore, Sighting, Store

UNKNOWN_SESSION = "unknown"


def session_links(
    store: Store, receipts: Sequence[Receipt], *, webhooks: bool
) -> dict[str, SessionLink]:
    """The webhook session of each receipt whose lines carry a known session's line ids. A
    receipt with lines of two sessions (merged at the till) is linked to none of them. In
    webhook mode, a receipt with line ids of no known session yet (its completeSession not
    stored yet) is linked to none either, and judged again while the overlap reads it."""
    links = store.sessions_of_lines([line for r in receipts for line in r.webhook_line_ids])
    found = {}
    for receipt in receipts:
        by_id = {
            links[line].session_id: links[line]
            for line in receipt.webhook_line_ids
            if line in links
        }
        if len(by_id) == 1:
            found[receipt.receipt_id] = next(iter(by_id.values()))
        elif by_id:
            found[receipt.receipt_id] = SessionLink("", None, "merged")
        elif webhooks and receipt.webhook_line_ids:
            found[receipt.receipt_id] = SessionLink("", None, UNKNOWN_SESSION)
    return found


def sightings_of(
    receipts: Sequence[Receipt],
    before: Mapping[str, SeenBefore],
    sessions: Mapping[str, SessionLink],
    cursor: int,
    reference: Reference,
    kind: Callable[[Receipt], str],
) -> tuple[list[Seen], list[Sighting]]:
    """Each receipt as the matcher judges it and as the store records it. Its first syncMarker
    is kept (a later change moves no proof); booking times lose the POS clock offset."""
    seen, sightings = [], []
    for receipt in receipts:
        earlier = before.get(receipt.receipt_id)
        marker = earlier.first_marker if earlier and earlier.first_marker else receipt.sync_marker
        late = earlier.late if earlier else receipt.sync_marker <= cursor
        one = Seen(
            receipt,
            marker,
            receipt.booked_at.timestamp() - reference.clock_offset,
            kind(receipt),
            late,
            timed=reference.clock_known,
        )
        seen.append(one)
        link = sessions.get(receipt.receipt_id)
        waiting = link is not None and link.state == UNKNOWN_SESSION
        sightings.append(
            Sighting(
                receipt.receipt_id,
                receipt.workplace,
                one.booked if one.timed else None,
                one.first_marker,
                one.kind,
                done=(receipt.is_paid or one.kind == "other") and not waiting,
                total=receipt.total_incl,
                late=late,
                session=link is not None,
            )
        )
    return seen, sightings


def unreadable_once(
    unreadable: Sequence[Any], before: Mapping[str, SeenBefore]
) -> tuple[list[Any], list[Sighting]]:
    """The unreadable receipts not reported before (the overlap reads them again), and the
    sightings that remember them."""
    new = [
        u
        for u in unreadable
        if u.receipt_id is None
        or u.receipt_id not in before
        or before[u.receipt_id].kind != "unreadable"
    ]
    return new, [
        Sighting(u.receipt_id, u.workplace, None, u.sync_marker or 0, "unreadable")
        for u in new
        if u.receipt_id and u.receipt_id not in before
    ]
