"""The commands behind `boniq-agent` (the parser is `agent.cli`), and what they share."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING

from agent import logs

if TYPE_CHECKING:
    from agent.config import Config

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CORRUPT, EXIT_STORE, EXIT_CONFIG = 0, 1, 2, 65, 74, 78
EXIT_ATTENTION, EXIT_NOT_RUNNING = 1, 3  # status
DEFAULT_CONFIG = "/etc/boniq-agent/config.yaml"


def load_config(args: argparse.Namespace, *, warn: bool = True) -> Config:
    from agent import config

    credentials = (
        config.credential_sources(args.credentials_dir)
        if hasattr(args, "credentials_dir")
        else None
    )
    cfg = config.load(args.config, credentials=credentials)
    logs.setup(cfg.log_level if not getattr(args, "verbose", False) else "debug")
    for warning in cfg.warnings if warn else ():
        logs.get_logger(__name__).warning(warning)
    return cfg


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds") if ts else None
