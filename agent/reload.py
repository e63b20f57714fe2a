"""SIGHUP: read the configuration again and say what changed.

What can change in place is `RELOADABLE`; every other change is logged as needing a restart.
An invalid file is logged and the running configuration kept.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agent.config import Config, load
from agent.errors import ConfigError
from agent.logs import fields, get_logger

log = get_logger(__name__)

RELOADABLE = ("log_level", "feedback", "matching")


def read(current: Config, path: Path | None) -> Config | None:
    """The new configuration, or None (logged) when there is none to apply."""
    if path is None:
        log.warning("reload requested, but the agent was not started from a config file")
        return None
    try:
        new = load(path)
    except ConfigError as exc:
        log.error(
            "reload refused: the configuration file is invalid; the agent keeps "
            "running with the previous one",
            extra=fields(problems="; ".join(exc.problems)),
        )
        return None
    for warning in new.warnings:
        log.warning(warning)
    return new


def applied(current: Config, new: Config) -> Config:
    """The running configuration with the reloadable sections of `new`; logs what changed."""
    changed = changed_keys(current.model_dump(), new.model_dump())
    done = [k for k in changed if k.split(".")[0] in RELOADABLE]
    pending = [k for k in changed if k.split(".")[0] not in RELOADABLE]
    if new.log_level != current.log_level:
        logging.getLogger().setLevel(new.log_level.upper())
    visible = logging.INFO if logging.getLogger().level <= logging.INFO else logging.WARNING
    log.log(
        visible,
        "configuration reloaded",
        extra=fields(
            applied=",".join(done) or "nothing changed",
            needs_restart=",".join(pending) or "nothing",
        ),
    )
    if pending:
        log.warning(
            "some changes take effect only after a restart (systemctl restart boniq-agent)",
            extra=fields(keys=",".join(pending)),
        )
    return current.model_copy(update={key: getattr(new, key) for key in RELOADABLE})


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two `model_dump()`s."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [
            k for key in keys for k in changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [prefix.rstrip(".")] if old != new else []
