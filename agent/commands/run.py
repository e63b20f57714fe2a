"""`boniq-agent run`, `check-config` and `doctor`; the demo and the simulators."""

from __future__ import annotations

import argparse
import sys

from agent import logs
from agent.commands import EXIT_CONFIG, EXIT_OK, EXIT_USAGE, load_config
from agent.errors import ConfigError


def cmd_run(args: argparse.Namespace) -> int:
    from agent import daemon, hardening

    hardening.forbid_core_dumps()
    return daemon.run(load_config(args), args.config)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args, warn=False)
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
    print(
        f"{args.config}: OK ({len(cfg.scanners)} scanner(s), branch {cfg.store.branch}, "
        f"workplace {cfg.store.workplace})"
    )
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent import doctor

    return doctor.run(args.config, credentials_dir=args.credentials_dir)


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
        webhook = {
            "webhook_url": args.webhook_url,
            "key": args.webhook_key,
            "subscription_id": args.subscription_id,
            "key_form": args.webhook_key_form,
            "timeout": args.webhook_timeout,
        }
    try:
        kassa.serve_forever_cli(
            args.port,
            args.ident,
            args.secret,
            auto_sales_per_minute=args.auto_sales,
            webhook=webhook,
        )
    except ValueError as exc:  # a webhook URL off loopback, a key that is not Base64
        print(f"boniq-agent sim kassa: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def cmd_sim_cloud(args: argparse.Namespace) -> int:
    from agent.sim import cloud

    logs.setup("info")
    cloud.serve_forever_cli(args.port, args.token, db_path=args.db)
    return EXIT_OK
