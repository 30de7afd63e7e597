"""Checks that need no Spark: run them before a session starts, so a wrong path fails in a second.

Only local paths are checked; ``s3a://``, ``jdbc:`` and other URIs are left to the
connectors, which name them when they fail.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ketch_spark.config import KetchConfig
from ketch_spark.errors import ConfigError

__all__ = ["local_path", "check_warehouse", "check_inputs_exist"]


def local_path(location: str) -> Path | None:
    """The local path of ``location`` (a plain path or ``file:`` URI); ``None`` for any other URI."""
    if location.startswith("file://"):
        return Path(location[len("file://"):])
    if location.startswith("file:"):
        return Path(location[len("file:"):])
    if "://" in location or location.startswith("jdbc:"):
        return None
    return Path(location).expanduser()


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_warehouse(cfg: KetchConfig) -> None:
    """Refuses a local warehouse that is a file, sits under a file, or cannot be written.

    Raises:
        ConfigError: The message names the warehouse, the config file and the fix.
    """
    path = local_path(cfg.warehouse)
    if path is None:
        return
    where = f"set `warehouse:` in {cfg.source}" if cfg.source else "pass --conf with a `warehouse:` folder"
    existing = _nearest_existing(path.resolve())
    if not existing.is_dir():
        what = "is a file" if existing == path.resolve() else f"lies under the file {existing}"
        raise ConfigError(f"the warehouse {path} {what}, not a folder; {where} to a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"the warehouse {path} cannot be written by this user ({existing} is not writable); "
                          f"fix its permissions or {where} to a folder you can write")


def check_inputs_exist(inputs: Iterable[str], option: str = "--input") -> None:
    """Refuses local inputs that do not exist (one error naming every missing one).

    Raises:
        ConfigError: Some local inputs are missing.
    """
    missing = [given for given in inputs if (path := local_path(given)) is not None and not path.exists()]
    if missing:
        raise ConfigError(f"{option} {', '.join(missing)}: no such file or folder")
