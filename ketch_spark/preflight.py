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

__all__ = ["local_path", "check_warehouse", "check_warehouse_for_master", "is_local_master", "check_inputs_exist",
           "check_output_file"]


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


def is_local_master(master: str | None) -> bool:
    """Whether a Spark master runs every task on this machine (``local``, ``local[*]``, ``local-cluster[...]``)."""
    return master is None or master.strip() == "" or master.strip().startswith("local")


def check_warehouse_for_master(master: str | None, cfg: KetchConfig) -> None:
    """Refuses a relative ``warehouse`` when Spark runs beyond this machine.

    On a cluster the driver and every executor would resolve a relative folder
    against their own working folder, so the tables would scatter (or vanish
    with a container).

    Args:
        master: The Spark master (``spark.master``), such as ``yarn`` or ``local[*]``.
        cfg: The config; its ``warehouse_as_written`` is checked.

    Raises:
        ConfigError: A relative warehouse with a non-local master; the message says to
            use an absolute path or an s3a:// URI.
    """
    written = cfg.warehouse_as_written or cfg.warehouse
    if is_local_master(master) or "://" in written or written.startswith("file:"):
        return
    if Path(written).expanduser().is_absolute():
        return
    where = f"in {cfg.source}" if cfg.source else "in the config (--conf)"
    raise ConfigError(
        f"the warehouse {written!r} is a relative path and Spark runs on {master}: each machine would resolve it "
        f"against its own working folder; set `warehouse:` {where} to an absolute path or an s3a:// URI "
        "(such as s3a://bucket/ketch-data)"
    )


def check_inputs_exist(inputs: Iterable[str], option: str = "--input") -> None:
    """Refuses local inputs that do not exist (one error naming every missing one).

    Raises:
        ConfigError: Some local inputs are missing.
    """
    missing = [given for given in inputs if (path := local_path(given)) is not None and not path.exists()]
    if missing:
        raise ConfigError(f"{option} {', '.join(missing)}: no such file or folder")


def check_output_file(output: str, option: str = "--out") -> None:
    """Refuses an output file that is a folder or would sit under a file (a missing folder is created later).

    Raises:
        ConfigError: The message names the option, the path and what is in the way.
    """
    path = Path(output).expanduser().resolve()
    if path.is_dir():
        raise ConfigError(f"{option} {output} is a folder; name a file, such as {Path(output) / 'report.html'}")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise ConfigError(f"{option} {output} lies under the file {existing}; name a file in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {output} cannot be written by this user ({existing} is not writable)")
