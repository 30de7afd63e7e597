"""What spark-submit handed this driver: its settings and the files of ``--files``.

Under ``spark-submit`` the driver's Python process talks to a JVM that spark-submit
started, whose system properties hold the submitted settings (``--master``,
``--conf``, ``--files``...) before any SparkContext exists. Where a file of
``--files`` lands depends on the deploy mode:

- cluster mode (YARN, Kubernetes): in the driver's working folder, under its own name;
- client mode (a local master included): nowhere new before the SparkContext starts;
  ``spark.files`` names the submitted file (``file:`` URIs on the submitting machine,
  which runs the driver; a remote URI there cannot be read before the context), and
  once the context runs :func:`pyspark.SparkFiles.get` finds a copy too.

:func:`ketch_spark.config.load_config` reads a bare name from the working folder
first, then where :func:`shipped_file` finds it, so ``--files conf/ketch.yaml`` with
``--conf ketch.yaml`` works in both modes (and ``policy: policy.yaml`` next to it).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["inside_spark_submit", "submitted_setting", "submitted_files", "shipped_file", "is_bare_name"]


def inside_spark_submit() -> bool:
    """Whether this process is a driver that spark-submit started, or already runs a SparkContext."""
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        return True
    from pyspark import SparkContext

    return SparkContext._active_spark_context is not None  # noqa: SLF001


def submitted_setting(key: str, default: str | None = None) -> str | None:
    """A setting spark-submit gave the driver (``--conf``, ``--master``, ``--files``...).

    Connects to spark-submit's JVM if no SparkContext did yet; outside spark-submit
    (and without a running SparkContext) returns ``default`` without starting a JVM.
    """
    if not inside_spark_submit():
        return default
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # noqa: SLF001 - joins spark-submit's gateway; starts no context
    return SparkConf().get(key, default)


def submitted_files() -> list[Path]:
    """The local paths of the submitted ``--files`` (``spark.files``) that exist on this machine."""
    paths = []
    for entry in filter(None, (submitted_setting("spark.files") or "").split(",")):
        path = _local_file(entry.strip())
        if path is not None and path.is_file():
            paths.append(path)
    return paths


def _local_file(entry: str) -> Path | None:
    """The local path of a ``spark.files`` entry (a plain path or a ``file:`` URI); ``None`` for other URIs."""
    parsed = urlparse(entry)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else entry)
    return None


def is_bare_name(name: str | Path) -> bool:
    """Whether ``name`` is a file name without a folder (``ketch.yaml``, not ``conf/ketch.yaml``)."""
    return Path(name).name == str(name) and str(name) not in ("", ".", "..")


def shipped_file(name: str | Path) -> Path | None:
    """Where a file given to ``spark-submit --files`` under this bare name is readable, if anywhere.

    For a name not found where the caller looked first (the working folder, where
    cluster mode puts the files): looks among the submitted ``spark.files`` (client
    mode, before the SparkContext starts), then in the running context's
    :class:`pyspark.SparkFiles` folder. A name with a folder part, or a process that
    spark-submit did not start (and that runs no SparkContext), finds nothing: no
    other file is ever taken for a missing one.
    """
    if not is_bare_name(name) or not inside_spark_submit():
        return None
    for path in submitted_files():
        if path.name == str(name):
            return path
    return _spark_files_copy(str(name))


def _spark_files_copy(name: str) -> Path | None:
    from pyspark import SparkContext, SparkFiles

    if SparkContext._active_spark_context is None:  # noqa: SLF001
        return None
    copy = Path(SparkFiles.get(name))
    return copy if copy.is_file() else None
