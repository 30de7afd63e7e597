"""Small file operations through the session's Hadoop FileSystem (file://, s3a://, ...).

One code path for local folders and object stores: listing, existence, rename,
delete and small text files. These run on the driver of a classic session (jobs),
never on a pipeline's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from pyspark.sql import SparkSession

__all__ = ["FileStatus", "HadoopFs", "path_key"]


@dataclass(frozen=True)
class FileStatus:
    """One file or folder.

    Attributes:
        uri: Fully qualified URI.
        name: Last path element.
        is_dir: Whether it is a folder.
        size: Bytes (0 for folders).
        mtime: Modification time, epoch milliseconds.
    """

    uri: str
    name: str
    is_dir: bool
    size: int
    mtime: int


def path_key(uri: str) -> str:
    """A comparable form of a file URI: decoded, ``file:/`` for local files, no trailing slash.

    Spark's ``_metadata.file_path`` is URL-encoded and Hadoop writes ``file:/x``
    where users write ``file:///x``; both map to the same key here.
    """
    text = unquote(uri)
    if text.startswith("file:"):
        text = "file:/" + text[len("file:"):].lstrip("/")
    elif text.startswith("/"):
        text = "file:" + text
    return text.rstrip("/")


class HadoopFs:
    """File operations on any Hadoop URI of ``spark``'s configuration."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    def _path(self, uri: str) -> Any:
        return self.spark._jvm.org.apache.hadoop.fs.Path(uri)

    def _fs(self, uri: str) -> Any:
        return self._path(uri).getFileSystem(self.spark._jsc.hadoopConfiguration())

    def qualify(self, uri: str) -> str:
        """``uri`` fully qualified (scheme and authority), as Spark reports file paths."""
        return str(self._fs(uri).makeQualified(self._path(uri)).toString())

    def exists(self, uri: str) -> bool:
        """Whether a file or folder exists at ``uri``."""
        return bool(self._fs(uri).exists(self._path(uri)))

    def status(self, uri: str) -> FileStatus:
        """The status of ``uri`` (raises the JVM's FileNotFoundException when missing)."""
        return self._status(self._fs(uri).getFileStatus(self._path(uri)))

    @staticmethod
    def _status(status: Any) -> FileStatus:
        return FileStatus(str(status.getPath().toString()), str(status.getPath().getName()),
                          bool(status.isDirectory()), int(status.getLen()), int(status.getModificationTime()))

    def list(self, uri: str) -> list[FileStatus]:
        """Entries directly under folder ``uri``, sorted by name."""
        statuses = self._fs(uri).listStatus(self._path(uri))
        return sorted((self._status(s) for s in statuses), key=lambda s: s.name)

    def list_files(self, uri: str) -> list[FileStatus]:
        """Every file under ``uri`` (recursive), or the file itself; sorted by URI."""
        iterator = self._fs(uri).listFiles(self._path(uri), True)
        found = []
        while iterator.hasNext():
            found.append(self._status(iterator.next()))
        return sorted(found, key=lambda s: s.uri)

    def glob(self, pattern: str) -> list[FileStatus]:
        """Entries matching a glob (``dir/*.json.gz``), sorted by URI."""
        statuses = self._fs(pattern).globStatus(self._path(pattern)) or []
        return sorted((self._status(s) for s in statuses), key=lambda s: s.uri)

    def mkdirs(self, uri: str) -> None:
        """Creates folder ``uri`` and its parents."""
        self._fs(uri).mkdirs(self._path(uri))

    def rename(self, source: str, target: str) -> None:
        """Moves ``source`` to ``target`` (parents created); raises OSError when the store refuses."""
        fs = self._fs(source)
        self.mkdirs(target.rsplit("/", 1)[0])
        if not fs.rename(self._path(source), self._path(target)):
            raise OSError(f"could not move {source} to {target}")

    def delete(self, uri: str, recursive: bool = False) -> bool:
        """Deletes ``uri``; True when something was deleted."""
        return bool(self._fs(uri).delete(self._path(uri), recursive))

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Writes ``data`` to ``uri``, replacing it."""
        stream = self._fs(uri).create(self._path(uri), True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def write_text(self, uri: str, text: str) -> None:
        """Writes ``text`` (UTF-8) to ``uri``, replacing it."""
        self.write_bytes(uri, text.encode("utf-8"))

    def read_bytes(self, uri: str) -> bytes:
        """The bytes of the (small) file at ``uri``."""
        stream = self._fs(uri).open(self._path(uri))
        try:
            return bytes(stream.readAllBytes())
        finally:
            stream.close()

    def first_line(self, uri: str, max_bytes: int) -> str | None:
        """The first non-blank line of a text file (decompressed by its extension, as Spark reads it).

        Reads at most ``max_bytes`` of it; ``None`` when the file holds no
        complete non-blank line within them (empty, or a huge first line).
        """
        path = self._path(uri)
        fs = self._fs(uri)
        stream = fs.open(path)
        try:
            codec = self.spark._jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(
                self.spark._jsc.hadoopConfiguration()
            ).getCodec(path)
            if codec is not None:
                stream = codec.createInputStream(stream)
            head = bytes(stream.readNBytes(max_bytes))
        finally:
            stream.close()
        lines = head.decode("utf-8", errors="replace").splitlines(keepends=True)
        complete = lines if len(head) < max_bytes else lines[:-1]
        return next((line.rstrip("\r\n") for line in complete if line.strip()), None)

    def read_text(self, uri: str) -> str:
        """The UTF-8 text of the (small) file at ``uri``."""
        return self.read_bytes(uri).decode("utf-8")
