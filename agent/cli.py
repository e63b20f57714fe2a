"""The `boniq-agent` command line. Exit statuses:

    0   success
    1   a check failed (doctor), a code was rejected (scan), an item was not found (outbox),
        the till needs attention (status)
    2   wrong usage
    3   no agent is running on this data_dir (status)
    65  the store is damaged: see `boniq-agent doctor` (systemd does not restart on this status)
    74  the store cannot be used (locked, unreadable, disk full): see `boniq-agent doctor`
    78  the configuration is invalid (systemd does not restart on this status)
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from agent import __version__, logs
from agent.errors import AgentError, CodeRejected, ConfigError, StoreCorrupt, StoreError
from agent.printable import PrintableStream, printable

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CORRUPT, EXIT_STORE, EXIT_CONFIG = 0, 1, 2, 65, 74, 78
EXIT_ATTENTION, EXIT_NOT_RUNNING = 1, 3  # status
DEFAULT_CONFIG = "/etc/boniq-agent/config.yaml"


def _load_config(args: argparse.Namespace, *, warn: bool = True):  # noqa: ANN202 - a Config
    from agent import config

    credentials = (config.credential_sources(args.credentials_dir)
                   if hasattr(args, "credentials_dir") else None)
    cfg = config.load(args.config, credentials=credentials)
    logs.setup(cfg.log_level if not getattr(args, "verbose", False) else "debug")
    for warning in cfg.warnings if warn else ():
        logs.get_logger(__name__).warning(warning)
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from agent import daemon, hardening

    hardening.forbid_core_dumps()
    return daemon.run(_load_config(args), args.config)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load_config(args, warn=False)
    problems = []
    webhook_key = [cfg.webhook_key] if cfg.kassa.webhooks is not None else []
    for secret in (cfg.kassa_secret, cfg.cloud_token, *webhook_key):
        try:
            secret()
        except ConfigError as exc:
            problems.extend(exc.problems)
    for line in [*problems, *cfg.warnings]:
        print(line, file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    print(f"{args.config}: OK ({len(cfg.scanners)} scanner(s), branch {cfg.store.branch}, "
          f"workplace {cfg.store.workplace})")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent import doctor

    return doctor.run(args.config, credentials_dir=args.credentials_dir)


def cmd_status(args: argparse.Namespace) -> int:
    from agent import health
    from agent.queue.store import Store
    from agent.support import claim_row

    cfg = _load_config(args)
    with Store.open(cfg.data_dir, readonly=True) as store:
        summary = store.summary()
        expired = store.claims("expired", limit=args.limit)
        unsure = store.claims("unsure", limit=args.limit)
    now = time.time()
    live = health.read(cfg.data_dir, now)
    summary["oldest_pending_age_s"] = (
        round(now - summary["oldest_pending_at"], 1) if summary["oldest_pending_at"] else None)
    summary["expired_claims"] = [claim_row(c) for c in expired]
    summary["unsure_claims"] = [claim_row(c) for c in unsure]
    summary["agent"] = live
    summary["attention"] = health.attention(summary, live, pending_age=args.pending_age, now=now)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_status(summary, now)
    if live is None:
        return EXIT_NOT_RUNNING
    return EXIT_ATTENTION if summary["attention"] else EXIT_OK


def _ago(ts: float | None, now: float) -> str:
    return f"{_iso(ts)} ({now - ts:.0f} s ago)" if ts else "never"


def _live_rows(live: dict | None, now: float) -> list[tuple[str, object]]:
    if live is None:
        return [("agent", "NOT RUNNING (no live agent on this data_dir)")]
    pos, cloud = live["pos"], live["cloud"]
    rows: list[tuple[str, object]] = [
        ("agent", f"running, PID {live['pid']}, version {live['version']}, "
                  f"up {now - live['started_at']:.0f} s"),
        ("POS", f"FAILING: {pos['last_error']}" if pos["last_error"] else "reachable"),
        ("POS last successful poll", _ago(pos["last_success"], now)),
        ("cloud", "TOKEN REFUSED" if cloud["auth_failing"] else
                  f"FAILING: {cloud['last_error']}" if cloud["last_error"] else "ok"),
        ("cloud last answer", _ago(cloud["last_success"], now)),
    ]
    for scanner in live["scanners"]:
        state = {True: "connected", False: "NOT CONNECTED", None: "unknown"}[scanner["connected"]]
        rows.append((f"scanner {scanner['name']}", state))
    rows.append(("scans refused / failed", f"{live['scans']['refused']} / "
                                           f"{live['scans']['failed']} since start"))
    return rows


def _print_status(s: dict, now: float) -> None:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["claims_unsure_reasons"].items()))
    rows = _live_rows(s["agent"], now) + [
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
    print("healthy" if not s["attention"] else "NEEDS ATTENTION:")
    for reason in s["attention"]:
        print(f"  - {reason}")


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds") if ts else None


def cmd_outbox(args: argparse.Namespace) -> int:
    from agent.queue.store import Store

    cfg = _load_config(args)
    readonly = args.outbox_command != "retry"
    with Store.open(cfg.data_dir, readonly=readonly) as store:
        if args.outbox_command == "list":
            return _outbox_list(store.outbox(args.state, limit=args.limit), args)
        if args.outbox_command == "show":
            return _outbox_show(store, args.id)
        return _outbox_retry(store, args)


_LIST_HEADER = ("ID", "STATE", "KIND", "TRIES", "CREATED", "NEXT/DELIVERED", "RECEIPT", "CID", "ERROR")


def _outbox_list(items: list, args: argparse.Namespace) -> int:
    rows = [{"id": i.id, "state": i.state, "kind": i.kind, "attempts": i.attempts,
             "created_at": _iso(i.created_at),
             "next_attempt_at": _iso(i.next_attempt_at) if i.state == "pending" else None,
             "delivered_at": _iso(i.delivered_at), "receipt_id": i.receipt_id,
             "correlation_id": i.correlation_id, "last_error": i.last_error} for i in items]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no {args.state + ' ' if args.state else ''}outbox items")
        return EXIT_OK
    table = [_LIST_HEADER] + [
        (str(r["id"]), r["state"], r["kind"], str(r["attempts"]), r["created_at"] or "-",
         r["delivered_at"] or r["next_attempt_at"] or "-", printable(r["receipt_id"]),
         r["correlation_id"], printable((r["last_error"] or "-")[:80])) for r in rows]
    widths = [max(len(row[n]) for row in table) for n in range(len(_LIST_HEADER) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return EXIT_OK


def _find(store, ref: str) -> list:  # noqa: ANN001
    items = store.find_outbox(ref)
    if not items:
        print(f"no outbox item matches {ref!r} (give its ID, the POS receipt id or the cid)",
              file=sys.stderr)
    return items


def _outbox_show(store, ref: str) -> int:  # noqa: ANN001
    items = _find(store, ref)
    if not items:
        return EXIT_FAIL
    for item in items:
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
        manual_action("manual action: outbox item re-queued", id=item.id,
                      receipt=item.receipt_id, cid=item.correlation_id)
        print(f"re-queued outbox item {item.id} (receipt {item.receipt_id})")
    if not requeued:
        print(f"outbox item(s) {', '.join(str(i.id) for i in items)} already delivered",
              file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


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
    from agent.audit import manual_action

    manual_action("manual action: claim added by hand (scan)", outcome=state,
                  workplace=workplace, customer=logs.mask_code(code.value),
                  claim=result.claim.id, cid=result.claim.correlation_id)
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

    logs.setup("warning" if not getattr(args, "verbose", False) else "info")
    return demo.run(interactive=args.interactive)


def cmd_sim_kassa(args: argparse.Namespace) -> int:
    from agent.sim import kassa

    logs.setup("info")
    webhook = None
    if args.webhook_url:
        if not (args.webhook_key and args.subscription_id):
            print("--webhook-url needs --webhook-key and --subscription-id", file=sys.stderr)
            return EXIT_USAGE
        webhook = {"webhook_url": args.webhook_url, "key": args.webhook_key,
                   "subscription_id": args.subscription_id, "key_form": args.webhook_key_form,
                   "timeout": args.webhook_timeout}
    try:
        kassa.serve_forever_cli(args.port, args.ident, args.secret,
                                auto_sales_per_minute=args.auto_sales, webhook=webhook)
    except ValueError as exc:  # a webhook URL off loopback, a key that is not Base64
        print(f"boniq-agent sim kassa: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def cmd_sim_cloud(args: argparse.Namespace) -> int:
    from agent.sim import cloud

    logs.setup("info")
    cloud.serve_forever_cli(args.port, args.token, db_path=args.db)
    return EXIT_OK


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps help text at spaces only: never inside /etc/boniq-agent/config.yaml."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False,
                             break_long_words=False)


class _Parser(argparse.ArgumentParser):
    """Every parser and subparser (add_subparsers makes its own type) wraps help at spaces."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(**kwargs)


def _global_options(parser: argparse.ArgumentParser) -> None:
    """--config/--verbose, accepted before the command and after it. SUPPRESS as the default,
    so a subcommand's parser does not overwrite what was given before the command."""
    parser.add_argument("--config", "-c", default=argparse.SUPPRESS, metavar="PATH",
                        help=f"configuration file (default {DEFAULT_CONFIG})")
    parser.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="boniq-agent",
        description="Till-side agent for BONIQ digital receipts at MplusKASSA tills.",
        epilog="Exit statuses: 0 ok, 1 check failed/rejected/needs attention, 2 usage, "
               "3 agent not running (status), 65 store damaged, "
               "74 store unusable, 78 invalid configuration.")
    parser.add_argument("--version", action="version", version=f"boniq-agent {__version__}")
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable, help_: str, config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if config:
            _global_options(p)
        p.set_defaults(func=func)
        return p

    command("run", cmd_run, "run the agent in the foreground (systemd runs this)")
    credentials_help = ("where the systemd credentials kassa-secret and cloud-token are "
                        "(default: $CREDENTIALS_DIRECTORY, else the unit's LoadCredential= "
                        "sources /etc/boniq-agent/kassa-secret and /etc/boniq-agent/cloud-token)")
    p = command("check-config", cmd_check_config,
                "validate the configuration and the files it names; exit 0 or 78")
    p.add_argument("--credentials-dir", metavar="DIR", help=credentials_help)
    p = command("doctor", cmd_doctor,
                "check config, store, disk, scanners, POS API and cloud; OK/FAIL per line with the fix")
    p.add_argument("--credentials-dir", metavar="DIR", help=credentials_help)
    p = command("status", cmd_status, "live health (agent, POS, cloud, scanners) and the store's "
                "claims and outbox; exit 0 healthy, 1 needs attention, 3 no agent running")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=20, help="expired claims to list (default 20)")
    p.add_argument("--pending-age", type=float, default=900.0, metavar="SECONDS",
                   help="a receipt pending longer needs attention (default 900)")

    p = command("outbox", cmd_outbox, "inspect and re-queue outbox items (dead letters too)")
    outbox = p.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    for name, help_ in (("list", "list outbox items, newest first"),
                        ("show", "show one item with its payload (customer masked)"),
                        ("retry", "re-queue one item, or every dead letter with --dead")):
        q = outbox.add_parser(name, help=help_, description=help_)
        _global_options(q)
        if name == "list":
            q.add_argument("--state", choices=["pending", "delivered", "dead"],
                           help="only items in this state (default: all)")
            q.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
            q.add_argument("--json", action="store_true", help="machine-readable output")
        elif name == "show":
            q.add_argument("id", metavar="REF", help="the item's ID (first column of list), its "
                           "POS receipt id, or the cid of the log lines")
        else:
            q.add_argument("id", metavar="REF", nargs="?", help="the item's ID, its POS receipt "
                           "id, or the cid of the log lines")
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
                                               "cancelled", "assigned"],
                           help="only claims in this state")
            q.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
            q.add_argument("--json", action="store_true", help="machine-readable output")
        elif name == "show":
            q.add_argument("id", type=int, help="claim id (claims list)")
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
    q.add_argument("--port", type=int, default=18083, help="loopback port (default 18083)")
    q.add_argument("--ident", default="demo-ident", help="the API ident it accepts")
    q.add_argument("--secret", default="demo-secret", help="the API secret it accepts")
    q.add_argument("--auto-sales", type=float, default=0.0, metavar="PER_MINUTE",
                   help="book random sales at random workplaces")
    q.add_argument("--webhook-url", metavar="URL",
                   help="play till sessions to this loopback webhook base URL")
    q.add_argument("--webhook-key", metavar="KEY", help="the webhook secret key")
    q.add_argument("--subscription-id", metavar="ID", help="the webhook subscription id")
    q.add_argument("--webhook-key-form", choices=("base64", "text"), default="base64",
                   help="HMAC key: the key's Base64-decoded bytes (default) or its text")
    q.add_argument("--webhook-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long the till waits for a blocking reply (default 5)")
    q.set_defaults(func=cmd_sim_kassa)
    q = sims.add_parser("cloud", help="BONIQ cloud ingest API simulator on loopback",
                        description="BONIQ cloud ingest API simulator on loopback")
    q.add_argument("--port", type=int, default=18084, help="loopback port (default 18084)")
    q.add_argument("--token", default="demo-token", help="the store token it accepts")
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
    if not hasattr(args, "config"):
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
