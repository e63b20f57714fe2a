"""`boniq-agent outbox list|show|retry`: the receipts waiting for, refused by or delivered to
the cloud, and putting them back in the queue by hand."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from agent import logs
from agent.commands import EXIT_FAIL, EXIT_OK, EXIT_USAGE, iso, load_config
from agent.printable import printable

if TYPE_CHECKING:
    from agent.queue.outbox import OutboxItem
    from agent.queue.store import Store


def cmd_outbox(args: argparse.Namespace) -> int:
    from agent.queue.store import Store

    cfg = load_config(args)
    readonly = args.outbox_command != "retry"
    with Store.open(cfg.data_dir, readonly=readonly) as store:
        if args.outbox_command == "list":
            return _outbox_list(store.outbox(args.state, limit=args.limit), args)
        if args.outbox_command == "show":
            return _outbox_show(store, args.id)
        return _outbox_retry(store, args)


_LIST_HEADER = (
    "ID",
    "STATE",
    "KIND",
    "TRIES",
    "CREATED",
    "NEXT/DELIVERED",
    "RECEIPT",
    "CID",
    "ERROR",
)


def _outbox_list(items: list[OutboxItem], args: argparse.Namespace) -> int:
    rows = _list_rows(items)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no {args.state + ' ' if args.state else ''}outbox items")
        return EXIT_OK
    _print_table(rows)
    return EXIT_OK


def _list_rows(items: list[OutboxItem]) -> list[dict[str, Any]]:
    """The rows as `--json` prints them (times in ISO 8601; the next attempt only if pending)."""
    return [
        {
            "id": i.id,
            "state": i.state,
            "kind": i.kind,
            "attempts": i.attempts,
            "created_at": iso(i.created_at),
            "next_attempt_at": iso(i.next_attempt_at) if i.state == "pending" else None,
            "delivered_at": iso(i.delivered_at),
            "receipt_id": i.receipt_id,
            "correlation_id": i.correlation_id,
            "last_error": i.last_error,
        }
        for i in items
    ]


def _print_table(rows: list[dict[str, Any]]) -> None:
    """Aligned columns, the last error unpadded at the end; text from the store made printable."""
    table: list[tuple[str, ...]] = [_LIST_HEADER] + [
        (
            str(r["id"]),
            r["state"],
            r["kind"],
            str(r["attempts"]),
            r["created_at"] or "-",
            r["delivered_at"] or r["next_attempt_at"] or "-",
            printable(r["receipt_id"]),
            r["correlation_id"],
            printable((r["last_error"] or "-")[:80]),
        )
        for r in rows
    ]
    widths = [max(len(row[n]) for row in table) for n in range(len(_LIST_HEADER) - 1)]
    for row in table:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )


def _find(store: Store, ref: str) -> list[OutboxItem]:
    items = store.find_outbox(ref)
    if not items:
        print(
            f"no outbox item matches {ref!r} (give its ID, the POS receipt id or the cid)",
            file=sys.stderr,
        )
    return items


def _outbox_show(store: Store, ref: str) -> int:
    items = _find(store, ref)
    if not items:
        return EXIT_FAIL
    for item in items:
        payload = json.loads(item.body)
        payload["customer"] = {k: logs.mask_code(v) for k, v in payload["customer"].items()}
        print(
            json.dumps(
                {
                    "id": item.id,
                    "state": item.state,
                    "attempts": item.attempts,
                    "kind": item.kind,
                    "receipt_id": item.receipt_id,
                    "idempotency_key": item.idempotency_key,
                    "correlation_id": item.correlation_id,
                    "next_attempt_at": iso(item.next_attempt_at),
                    "created_at": iso(item.created_at),
                    "delivered_at": iso(item.delivered_at),
                    "cloud_id": item.cloud_id,
                    "last_error": item.last_error,
                    "payload": payload,
                },
                indent=2,
            )
        )
    return EXIT_OK


def _outbox_retry(store: Store, args: argparse.Namespace) -> int:
    from agent.audit import manual_action

    if args.dead:
        count = store.requeue_dead()
        manual_action("manual action: dead letters re-queued", count=count)
        print(f"re-queued {count} dead-lettered receipt(s)")
        return EXIT_OK
    if args.id is None:
        print("give an outbox ID, receipt id or cid, or --dead", file=sys.stderr)
        return EXIT_USAGE
    items = _find(store, args.id)
    if not items:
        return EXIT_FAIL
    requeued = [item for item in items if store.requeue(item.id)]
    for item in requeued:
        manual_action(
            "manual action: outbox item re-queued",
            id=item.id,
            receipt=item.receipt_id,
            cid=item.correlation_id,
        )
        print(f"re-queued outbox item {item.id} (receipt {item.receipt_id})")
    if not requeued:
        print(
            f"outbox item(s) {', '.join(str(i.id) for i in items)} already delivered",
            file=sys.stderr,
        )
        return EXIT_FAIL
    return EXIT_OK
