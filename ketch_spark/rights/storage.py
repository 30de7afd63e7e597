"""Private files of the rights engine (exports, receipts): owner-only on local disks.

On a local warehouse, missing folders are created 0700 and files written 0600,
atomically (a temporary file in the same folder, then a rename). On an object
store (s3a://) the bucket's access policy applies; files go through the
session's Hadoop FileSystem (classic sessions: jobs, not pipelines).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from pyspark.sql import SparkSession

from ketch_spark.errors import ConnectorError

__all__ = ["local_path", "write_private", "read_private"]

_DIR_MODE = 0o700


def local_path(uri: str) -> Path | None:
    """The local file ``uri`` stands for (plain path or ``file:`` URI), else ``None``."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if "://" in uri:
        return None
    return Path(uri).expanduser()


def _make_private_dirs(folder: Path) -> None:
    """Creates ``folder`` and its missing parents with mode 0700 (existing ones are left as they are)."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=_DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(created, _DIR_MODE)  # mkdir's mode is narrowed by the umask, never widened


def _write_local(target: Path, data: bytes) -> None:
    folder = target.parent
    _make_private_dirs(folder)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp_name, 0o600)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _hadoop(spark: SparkSession | None, uri: str):  # noqa: ANN202 - HadoopFs
    from ketch_spark.connectors.hadoopfs import HadoopFs

    if spark is None or getattr(spark, "_jvm", None) is None:
        raise ConnectorError(f"{uri}: files on remote storage need a classic SparkSession (not Spark Connect)")
    return HadoopFs(spark)


def write_private(spark: SparkSession | None, uri: str, data: bytes) -> None:
    """Writes ``data`` to ``uri``, replacing it; owner-only where the store has permissions.

    Raises:
        ConnectorError: A remote URI without a classic session.
    """
    local = local_path(uri)
    if local is not None:
        _write_local(local, data)
    else:
        _hadoop(spark, uri).write_bytes(uri, data)


def read_private(spark: SparkSession | None, uri: str) -> bytes:
    """The bytes at ``uri``.

    Raises:
        FileNotFoundError: No such file.
        ConnectorError: A remote URI without a classic session.
    """
    local = local_path(uri)
    if local is not None:
        return local.read_bytes()
    fs = _hadoop(spark, uri)
    if not fs.exists(uri):
        raise FileNotFoundError(f"no file at {uri}")
    return fs.read_bytes(uri)
