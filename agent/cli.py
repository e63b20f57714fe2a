"""The `boniq-agent` command line. Exit statuses:

    0   success
    1   a check failed (doctor), a code was rejected (scan), an item was not found (outbox)
    2   wrong usage
    65  the store is damaged: see `boniq-agent doctor` (systemd does not restart on this status)
    74  the store cannot be used (locked, unreadable, disk full): see `boniq-agent doctor`
    78  the configuration is invalid (systemd does not restart on this status)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from agent import __version__, logs
from agent.errors import AgentError, CodeRejected, ConfigError, StoreCorrupt, StoreError
from agent.printable import PrintableStream, printable

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CORRUPT, EXIT_STORE, EXIT_CONFIG = 0, 1, 2, 65, 74, 78
DEFAULT_CONFIG = "/etc/boniq-agent/config.yaml"


def _load_config(args: argparse.Namespace):  # noqa: ANN202 - returns agent.config.Config
    from agent import config

    cfg = config.load(args.config)
    logs.setup(cfg.log_level if not getattr(args, "verbose", False) else "debug")
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from agent import daemon, hardening

    hardening.forbid_core_dumps()
    return daemon.run(_load_config(args))


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    cfg.kassa_secret()
    cfg.cloud_token()
    print(f"{args.config}: OK ({len(cfg.scanners)} scanner(s), branch {cfg.store.branch}, "
          f"workplace {cfg.store.workplace})")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent import doctor

    return doctor.run(args.config)


def cmd_status(args: argparse.Namespace) -> int:
    from agent.queue.store import Store
    from agent.support import claim_row

    cfg = _load_config(args)
    with Store.open(cfg.data_dir, readonly=True) as store:
        summary = store.summary()
        expired = store.claims("expired", limit=args.limit)
        unsure = store.claims("unsure", limit=args.limit)
    now = time.time()
    summary["oldest_pending_age_s"] = (
        round(now - summary["oldest_pending_at"], 1) if summary["oldest_pending_at"] else None)
    summary["expired_claims"] = [claim_row(c) for c in expired]
    summary["unsure_claims"] = [claim_row(c) for c in unsure]
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return EXIT_OK
    _print_status(summary)
    return EXIT_OK


def _print_status(s: dict) -> None:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["claims_unsure_reasons"].items()))
    rows = [
        ("claims waiting for a sale", s["claims_pending"]),
        ("claims delivered", s["claims_delivered"]),
        ("claims expired (no sale)", s["claims_expired"]),
        ("claims closed unsure", f"{s['claims_unsure']}" + (f" ({reasons})" if reasons else "")),
        ("receipts pending upload", s["outbox_pending"]),
        ("receipts dead-lettered", s["outbox_dead"]),
        ("receipts delivered", s["outbox_delivered"]),
        ("oldest pending age", f"{s['oldest_pending_age_s']} s" if s["oldest_pending_age_s"] is not None else "-"),
        ("last delivery", _iso(s["last_delivery_at"]) or "-"),
        ("last error", printable(s["last_error"] or "-")),
        ("POS sync marker", s["cursor"] if s["cursor"] is not None else "-"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for state in ("expired", "unsure"):
        for claim in s[f"{state}_claims"]:
            print(f"  {state} claim #{claim['id']} workplace {claim['workplace']} at "
                  f"{claim['scanned_at']} {claim['customer']} cid={claim['cid']}"
                  + (f" reason={claim['reason']}" if claim["reason"] else ""))
    if s["claims_unsure"] or s["claims_expired"]:
        print("  see `boniq-agent claims show ID`; `claims assign ID RECEIPT` once checked with"
              " the customer")


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds") if ts else None


def cmd_outbox(args: argparse.Namespace) -> int:
    from agent.queue.store import Store

    cfg = _load_config(args)
    readonly = args.outbox_command != "retry"
    with Store.open(cfg.data_dir, readonly=readonly) as store:
        if args.outbox_command == "list":
            for item in store.outbox(args.state, limit=args.limit):
                print(f"{item.id:>6}  {item.state:<9} {item.kind:<6} attempts={item.attempts:<3} "
                      f"receipt={printable(item.receipt_id)} cid={item.correlation_id} "
                      f"error={printable((item.last_error or '-')[:80])}")
            return EXIT_OK
        if args.outbox_command == "show":
            return _outbox_show(store, args.id)
        return _outbox_retry(store, args)


def _outbox_show(store, item_id: int) -> int:  # noqa: ANN001
    item = store.get(item_id)
    if item is None:
        print(f"no outbox item {item_id}", file=sys.stderr)
        return EXIT_FAIL
    payload = json.loads(item.body)
    payload["customer"] = {k: logs.mask_code(v) for k, v in payload["customer"].items()}
    print(json.dumps({
        "id": item.id, "state": item.state, "attempts": item.attempts, "kind": item.kind,
        "receipt_id": item.receipt_id, "idempotency_key": item.idempotency_key,
        "correlation_id": item.correlation_id, "next_attempt_at": _iso(item.next_attempt_at),
        "created_at": _iso(item.created_at), "delivered_at": _iso(item.delivered_at),
        "cloud_id": item.cloud_id, "last_error": item.last_error, "payload": payload,
    }, indent=2))
    return EXIT_OK


def _outbox_retry(store, args: argparse.Namespace) -> int:  # noqa: ANN001
    if args.dead:
        count = store.requeue_dead()
        print(f"re-queued {count} dead-lettered receipt(s)")
        return EXIT_OK
    if args.id is None:
        print("give an outbox ID or --dead", file=sys.stderr)
        return EXIT_USAGE
    if store.requeue(args.id):
        print(f"re-queued outbox item {args.id}")
        return EXIT_OK
    print(f"outbox item {args.id} not found or already delivered", file=sys.stderr)
    return EXIT_FAIL


def cmd_scan(args: argparse.Namespace) -> int:
    from agent import codes
    from agent.intake import claim_for
    from agent.queue.store import Store

    cfg = _load_config(args)
    try:
        code = codes.parse(args.code, url_hosts=cfg.codes.url_hosts)
    except CodeRejected as exc:
        print(f"rejected: {exc}", file=sys.stderr)
        return EXIT_FAIL
    workplace = args.workplace if args.workplace is not None else cfg.store.workplace
    with Store.open(cfg.data_dir) as store:
        result = claim_for(store, cfg, code, workplace=workplace, source="manual",
                           at=time.time())
    state = "already waiting" if result.duplicate else "accepted"
    print(f"{state}: {logs.mask_code(code.value)} waits for the next sale at workplace "
          f"{workplace} (claim #{result.claim.id}, cid={result.claim.correlation_id})")
    return EXIT_OK


def cmd_claims(args: argparse.Namespace) -> int:
    from agent import support
    from agent.queue.store import Store

    cfg = _load_config(args)
    readonly = args.claims_command != "assign"
    with Store.open(cfg.data_dir, readonly=readonly) as store:
        if args.claims_command == "list":
            print(support.list_claims(store, args.state, args.limit, args.json))
        elif args.claims_command == "show":
            print(support.show_claim(store, cfg, args.id))
        else:
            print(support.assign(store, cfg, args.claim, args.receipt))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from agent import demo

    logs.setup("warning" if not args.verbose else "info")
    return demo.run(interactive=args.interactive)


def cmd_sim_kassa(args: argparse.Namespace) -> int:
    from agent.sim import kassa

    logs.setup("info")
    kassa.serve_forever_cli(args.port, args.ident, args.secret,
                            auto_sales_per_minute=args.auto_sales)
    return EXIT_OK


def cmd_sim_cloud(args: argparse.Namespace) -> int:
    from agent.sim import cloud

    logs.setup("info")
    cloud.serve_forever_cli(args.port, args.token, db_path=args.db)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boniq-agent",
        description="Till-side agent for BONIQ digital receipts at MplusKASSA tills.",
        epilog="Exit statuses: 0 ok, 1 check failed/rejected, 2 usage, 65 store damaged, "
               "74 store unusable, 78 invalid configuration.")
    parser.add_argument("--version", action="version", version=f"boniq-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable, help_: str, config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if config:
            p.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                           help=f"configuration file (default {DEFAULT_CONFIG})")
            p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
        p.set_defaults(func=func)
        return p

    command("run", cmd_run, "run the agent in the foreground (systemd runs this)")
    command("check-config", cmd_check_config, "validate the configuration; exit 0 or 78")
    command("doctor", cmd_doctor,
            "check config, store, disk, scanners, POS API and cloud; OK/FAIL per line with the fix")
    p = command("status", cmd_status, "pending claims, outbox depth, dead letters, last error")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=20, help="expired claims to list (default 20)")

    p = command("outbox", cmd_outbox, "inspect and re-queue outbox items (dead letters too)")
    outbox = p.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    for name, help_ in (("list", "list outbox items, newest first"),
                        ("show", "show one item with its payload (customer masked)"),
                        ("retry", "re-queue one item, or every dead letter with --dead")):
        q = outbox.add_parser(name, help=help_, description=help_)
        q.add_argument("--config", "-c", default=argparse.SUPPRESS, help="configuration file")
        if name == "list":
            q.add_argument("--state", choices=["pending", "delivered", "dead"])
            q.add_argument("--limit", type=int, default=50)
        elif name == "show":
            q.add_argument("id", type=int)
        else:
            q.add_argument("id", type=int, nargs="?")
            q.add_argument("--dead", action="store_true", help="re-queue every dead letter")

    p = command("claims", cmd_claims, "claims by state with their reason; assign an unsure one")
    claims = p.add_subparsers(dest="claims_command", required=True, metavar="ACTION")
    for name, help_ in (("list", "list claims, newest first"),
                        ("show", "one claim with its reason and the candidate sales"),
                        ("assign", "give an unsure or expired claim its receipt (after checking"
                                   " with the customer)")):
        q = claims.add_parser(name, help=help_, description=help_)
        q.add_argument("--config", "-c", default=argparse.SUPPRESS, help="configuration file")
        if name == "list":
            q.add_argument("--state", choices=["pending", "delivered", "expired", "unsure",
                                               "cancelled", "assigned"])
            q.add_argument("--limit", type=int, default=50)
            q.add_argument("--json", action="store_true", help="machine-readable output")
        elif name == "show":
            q.add_argument("id", type=int)
        else:
            q.add_argument("claim", type=int, help="claim id (claims list)")
            q.add_argument("receipt", help="POS receipt id (claims show lists candidates)")

    p = command("scan", cmd_scan, "add a claim by hand (when a scanner fails)")
    p.add_argument("code", help="BONIQ code, BONIQ link or e-mail address")
    p.add_argument("--workplace", type=int, help="till number (default: store.workplace)")

    p = command("demo", cmd_demo, "the whole flow with simulated POS, cloud and customers",
                config=False)
    p.add_argument("--interactive", action="store_true", help="type codes yourself")
    p.add_argument("--verbose", "-v", action="store_true", help="show the agent's log lines")

    p = command("sim", lambda a: EXIT_USAGE, "run a simulator", config=False)
    sims = p.add_subparsers(dest="sim_command", required=True, metavar="SIMULATOR")
    q = sims.add_parser("kassa", help="MplusKASSA SOAP API simulator on loopback",
                        description="MplusKASSA SOAP API simulator on loopback")
    q.add_argument("--port", type=int, default=18083)
    q.add_argument("--ident", default="demo-ident")
    q.add_argument("--secret", default="demo-secret")
    q.add_argument("--auto-sales", type=float, default=0.0, metavar="PER_MINUTE",
                   help="book random sales at random workplaces")
    q.set_defaults(func=cmd_sim_kassa)
    q = sims.add_parser("cloud", help="BONIQ cloud ingest API simulator on loopback",
                        description="BONIQ cloud ingest API simulator on loopback")
    q.add_argument("--port", type=int, default=18084)
    q.add_argument("--token", default="demo-token")
    q.add_argument("--db", help="SQLite file to keep received receipts in")
    q.set_defaults(func=cmd_sim_cloud)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Every line printed goes through `printable`: store data and server text reach terminals."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PrintableStream(out), PrintableStream(err)  # type: ignore[assignment]
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = out, err


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup("info")
    if not hasattr(args, "config") and args.command in ("outbox", "claims"):
        args.config = DEFAULT_CONFIG
    try:
        return args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"store: {exc}", file=sys.stderr)
        return EXIT_CORRUPT if isinstance(exc, StoreCorrupt) else EXIT_STORE
    except AgentError as exc:
        print(f"error: {logs.redact(str(exc))}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
