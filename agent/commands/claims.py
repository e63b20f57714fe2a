"""`boniq-agent scan` and `boniq-agent claims list|show|assign`: claims made and settled by hand."""

from __future__ import annotations

import argparse
import sys
import time

from agent import logs
from agent.commands import EXIT_FAIL, EXIT_OK, load_config
from agent.errors import CodeRejected


def cmd_scan(args: argparse.Namespace) -> int:
    from agent import codes
    from agent.intake import claim_for
    from agent.queue.store import Store

    cfg = load_config(args)
    try:
        code = codes.parse(args.code, url_hosts=cfg.codes.url_hosts)
    except CodeRejected as exc:
        print(f"rejected: {exc}", file=sys.stderr)
        return EXIT_FAIL
    workplace = args.workplace if args.workplace is not None else cfg.store.workplace
    with Store.open(cfg.data_dir) as store:
        result = claim_for(store, cfg, code, workplace=workplace, source="manual", at=time.time())
    state = "already waiting" if result.duplicate else "accepted"
    from agent.audit import manual_action

    manual_action(
        "manual action: claim added by hand (scan)",
        outcome=state,
        workplace=workplace,
        customer=logs.mask_code(code.value),
        claim=result.claim.id,
        cid=result.claim.correlation_id,
    )
    print(
        f"{state}: {logs.mask_code(code.value)} waits for the next sale at workplace "
        f"{workplace} (claim #{result.claim.id}, cid={result.claim.correlation_id})"
    )
    return EXIT_OK


def cmd_claims(args: argparse.Namespace) -> int:
    from agent import support
    from agent.queue.store import Store

    cfg = load_config(args)
    readonly = args.claims_command != "assign"
    with Store.open(cfg.data_dir, readonly=readonly) as store:
        if args.claims_command == "list":
            print(support.list_claims(store, args.state, args.limit, args.json))
        elif args.claims_command == "show":
            print(support.show_claim(store, cfg, args.id))
        else:
            print(support.assign(store, cfg, args.claim, args.receipt))
    return EXIT_OK
