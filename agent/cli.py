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
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from agent import __version__, logs
from agent.commands import (
    DEFAULT_CONFIG,
    EXIT_ATTENTION,
    EXIT_CONFIG,
    EXIT_CORRUPT,
    EXIT_FAIL,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_STORE,
    EXIT_USAGE,
)
from agent.commands.claims import cmd_claims, cmd_scan
from agent.commands.outbox import cmd_outbox
from agent.commands.run import (
    cmd_check_config,
    cmd_demo,
    cmd_doctor,
    cmd_run,
    cmd_sim_cloud,
    cmd_sim_kassa,
)
from agent.commands.status import cmd_status
from agent.errors import AgentError, ConfigError, StoreCorrupt, StoreError
from agent.printable import PrintableStream

__all__ = [
    "EXIT_ATTENTION",
    "EXIT_CONFIG",
    "EXIT_CORRUPT",
    "EXIT_FAIL",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_STORE",
    "EXIT_USAGE",
    "build_parser",
    "main",
]


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps help text at spaces only: never inside /etc/boniq-agent/config.yaml."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(
            " ".join(text.split()), width, break_on_hyphens=False, break_long_words=False
        )


class _Parser(argparse.ArgumentParser):
    """Every parser and subparser (add_subparsers makes its own type) wraps help at spaces."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(**kwargs)


def _global_options(parser: argparse.ArgumentParser) -> None:
    """--config/--verbose, accepted before the command and after it. SUPPRESS as the default,
    so a subcommand's parser does not overwrite what was given before the command."""
    parser.add_argument(
        "--config",
        "-c",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help=f"configuration file (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="boniq-agent",
        description="Till-side agent for BONIQ digital receipts at MplusKASSA tills.",
        epilog="Exit statuses: 0 ok, 1 check failed/rejected/needs attention, 2 usage, "
        "3 agent not running (status), 65 store damaged, "
        "74 store unusable, 78 invalid configuration.",
    )
    parser.add_argument("--version", action="version", version=f"boniq-agent {__version__}")
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, func: Callable[[argparse.Namespace], int], help_: str, config: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if config:
            _global_options(p)
        p.set_defaults(func=func)
        return p

    command("run", cmd_run, "run the agent in the foreground (systemd runs this)")
    credentials_help = (
        "where the systemd credentials kassa-secret and cloud-token are "
        "(default: $CREDENTIALS_DIRECTORY, else the unit's LoadCredential= "
        "sources /etc/boniq-agent/kassa-secret and /etc/boniq-agent/cloud-token)"
    )
    p = command(
        "check-config",
        cmd_check_config,
        "validate the configuration and the files it names; exit 0 or 78",
    )
    p.add_argument("--credentials-dir", metavar="DIR", help=credentials_help)
    p = command(
        "doctor",
        cmd_doctor,
        "check config, store, disk, scanners, POS API and cloud; OK/FAIL per line with the fix",
    )
    p.add_argument("--credentials-dir", metavar="DIR", help=credentials_help)
    p = command(
        "status",
        cmd_status,
        "live health (agent, POS, cloud, scanners) and the store's "
        "claims and outbox; exit 0 healthy, 1 needs attention, 3 no agent running",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=20, help="expired claims to list (default 20)")
    p.add_argument(
        "--pending-age",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="a receipt pending longer needs attention (default 900)",
    )

    p = command("outbox", cmd_outbox, "inspect and re-queue outbox items (dead letters too)")
    outbox = p.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    for name, help_ in (
        ("list", "list outbox items, newest first"),
        ("show", "show one item with its payload (customer masked)"),
        ("retry", "re-queue one item, or every dead letter with --dead"),
    ):
        q = outbox.add_parser(name, help=help_, description=help_)
        _global_options(q)
        if name == "list":
            q.add_argument(
                "--state",
                choices=["pending", "delivered", "dead"],
                help="only items in this state (default: all)",
            )
            q.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
            q.add_argument("--json", action="store_true", help="machine-readable output")
        elif name == "show":
            q.add_argument(
                "id",
                metavar="REF",
                help="the item's ID (first column of list), its "
                "POS receipt id, or the cid of the log lines",
            )
        else:
            q.add_argument(
                "id",
                metavar="REF",
                nargs="?",
                help="the item's ID, its POS receipt id, or the cid of the log lines",
            )
            q.add_argument("--dead", action="store_true", help="re-queue every dead letter")

    p = command("claims", cmd_claims, "claims by state with their reason; assign an unsure one")
    claims = p.add_subparsers(dest="claims_command", required=True, metavar="ACTION")
    for name, help_ in (
        ("list", "list claims, newest first"),
        ("show", "one claim with its reason and the candidate sales"),
        (
            "assign",
            ("give an unsure or expired claim its receipt (after checking with the customer)"),
        ),
    ):
        q = claims.add_parser(name, help=help_, description=help_)
        q.add_argument("--config", "-c", default=argparse.SUPPRESS, help="configuration file")
        if name == "list":
            q.add_argument(
                "--state",
                choices=["pending", "delivered", "expired", "unsure", "cancelled", "assigned"],
                help="only claims in this state",
            )
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

    p = command(
        "demo", cmd_demo, "the whole flow with simulated POS, cloud and customers", config=False
    )
    p.add_argument("--interactive", action="store_true", help="type codes yourself")
    p.add_argument("--verbose", "-v", action="store_true", help="show the agent's log lines")

    p = command("sim", lambda a: EXIT_USAGE, "run a simulator", config=False)
    sims = p.add_subparsers(dest="sim_command", required=True, metavar="SIMULATOR")
    q = sims.add_parser(
        "kassa",
        help="MplusKASSA SOAP API simulator on loopback",
        description="MplusKASSA SOAP API simulator on loopback",
    )
    q.add_argument("--port", type=int, default=18083, help="loopback port (default 18083)")
    q.add_argument("--ident", default="demo-ident", help="the API ident it accepts")
    q.add_argument("--secret", default="demo-secret", help="the API secret it accepts")
    q.add_argument(
        "--auto-sales",
        type=float,
        default=0.0,
        metavar="PER_MINUTE",
        help="book random sales at random workplaces",
    )
    q.add_argument(
        "--webhook-url", metavar="URL", help="play till sessions to this loopback webhook base URL"
    )
    q.add_argument("--webhook-key", metavar="KEY", help="the webhook secret key")
    q.add_argument("--subscription-id", metavar="ID", help="the webhook subscription id")
    q.add_argument(
        "--webhook-key-form",
        choices=("base64", "text"),
        default="base64",
        help="HMAC key: the key's Base64-decoded bytes (default) or its text",
    )
    q.add_argument(
        "--webhook-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long the till waits for a blocking reply (default 5)",
    )
    q.set_defaults(func=cmd_sim_kassa)
    q = sims.add_parser(
        "cloud",
        help="BONIQ cloud ingest API simulator on loopback",
        description="BONIQ cloud ingest API simulator on loopback",
    )
    q.add_argument("--port", type=int, default=18084, help="loopback port (default 18084)")
    q.add_argument("--token", default="demo-token", help="the store token it accepts")
    q.add_argument("--db", help="SQLite file to keep received receipts in")
    q.set_defaults(func=cmd_sim_cloud)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Every line printed goes through `printable`: store data and server text reach terminals."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PrintableStream(out), PrintableStream(err)
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
        command: Callable[[argparse.Namespace], int] = args.func
        return command(args)
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
