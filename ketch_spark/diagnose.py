"""Spark, Delta and JVM failures explained in one line that names what is at fault and what to do.

A command that fails inside Spark raises a Py4J or PySpark exception whose text
is a JVM stack trace. :func:`explain_failure` reads the exception (its message,
its Java class and its causes) and returns one sentence for a person: the
input, format, table or warehouse at fault and the next step. It returns
``None`` for a failure it does not recognise; the caller then shows the
exception's first line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

__all__ = ["CONFLICT_MARKERS", "FailureContext", "explain_failure", "failure_text"]

#: Delta's optimistic-concurrency conflicts: another writer committed to the table meanwhile.
CONFLICT_MARKERS = (
    "ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException", "ConcurrentWriteException", "MetadataChangedException",
    "ProtocolChangedException", "DELTA_CONCURRENT_", "DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED",
)
_NOT_PARQUET_MARKERS = ("is not a Parquet file", "CANNOT_READ_FILE_FOOTER", "Could not read footer",
                        "expected magic number")
_NOT_WRITABLE_MARKERS = ("Permission denied", "AccessDeniedException", "ParentNotDirectoryException",
                         "Not a directory", "Mkdirs failed", "Access Denied", "EACCES")
#: Class or scheme named in a failure -> the jar group that provides it.
_JAR_OF = {
    "io.delta": "Delta", "DeltaSparkSessionExtension": "Delta", "DeltaCatalog": "Delta",
    "S3AFileSystem": "hadoop-aws (s3a://)", 'scheme "s3a"': "hadoop-aws (s3a://)",
    "org.postgresql": "PostgreSQL JDBC",
}


@dataclass(frozen=True)
class FailureContext:
    """What a command was working on, to name it in the explanation.

    Attributes:
        command: The command (``consent compact``).
        inputs: Its input paths or URIs.
        fmt: The input format it read them with.
        warehouse: The warehouse root.
        table: The table it writes, as a warehouse path (``consent/state``).
        driver_memory: The session's ``spark.driver.memory``.
    """

    command: str
    inputs: Sequence[str] = field(default_factory=tuple)
    fmt: str | None = None
    warehouse: str | None = None
    table: str | None = None
    driver_memory: str | None = None


def failure_text(exc: BaseException) -> str:
    """The exception's text with its Java class name and its causes', for matching."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [type(current).__name__, str(current)]
        java = getattr(current, "java_exception", None)
        if java is not None:
            try:
                parts.append(str(java.getClass().getName()))
            except Exception:  # noqa: BLE001 - the JVM may be gone (out of memory); the message still helps
                pass
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def _any(text: str, markers: Sequence[str]) -> bool:
    return any(marker in text for marker in markers)


def _out_of_memory(text: str, context: FailureContext) -> str | None:
    if "OutOfMemoryError" not in text and "Java heap space" not in text:
        return None
    now = f" (now {context.driver_memory})" if context.driver_memory else ""
    return (f"the Spark driver ran out of memory (Java heap space){now}; raise spark.driver.memory in the config's "
            "spark: section, e.g. `spark.driver.memory: 8g`, or give the command fewer inputs at once")


def _concurrent_commit(text: str, context: FailureContext) -> str | None:
    if not _any(text, CONFLICT_MARKERS):
        return None
    table = context.table or "a table"
    if context.command == "consent compact":
        return ("two compactions at once: another `ketch-spark consent compact` committed to consent/state while "
                "this one ran; run one compaction at a time, then run this one again (it applies only what is left)")
    return (f"another command committed to {table} under {context.warehouse or 'the warehouse'} while this "
            f"`ketch-spark {context.command}` ran; run them one at a time, then run this one again")


def _file_named(text: str) -> str | None:
    match = re.search(r"(?:file|path|File)[: ]+((?:file:|s3a://|/)[^\s,;'\"\]]+)", text)
    return match.group(1).rstrip(".") if match else None


def _not_parquet(text: str, context: FailureContext) -> str | None:
    if not _any(text, _NOT_PARQUET_MARKERS):
        return None
    culprit = _file_named(text) or ", ".join(context.inputs) or "an input"
    return (f"{culprit} is not a Parquet file, but the input was read as Parquet (--format "
            f"{context.fmt or 'parquet'}); pass the format the files are in (--format json, csv, tcf or gpp)")


def _no_s3_credentials(text: str, context: FailureContext) -> str | None:  # noqa: ARG001
    if "NoAuthWithAWSException" not in text and "No AWS Credentials" not in text:
        return None
    culprit = re.search(r"(s3a://[^\s:]+)", text)
    return (f"no AWS credentials for {culprit.group(1) if culprit else 's3a://'}; set connectors.s3 "
            "(access_key_id, secret_access_key, endpoint) in the config, or the AWS_* environment variables")


def _not_writable(text: str, context: FailureContext) -> str | None:
    if not _any(text, _NOT_WRITABLE_MARKERS):
        return None
    reason = _first_marker(text, _NOT_WRITABLE_MARKERS)
    culprit = _file_named(text)
    if culprit and any(culprit.startswith(given) or given.endswith(culprit) for given in context.inputs):
        return f"cannot read the input {culprit} ({reason}); check its permissions"
    where = f"the warehouse {context.warehouse}" if context.warehouse else "the warehouse"
    return (f"cannot write under {where} ({reason}); set `warehouse:` in the config to a folder (or s3a:// "
            "prefix) this user can write, or fix its permissions")


def _first_marker(text: str, markers: Sequence[str]) -> str:
    return next(marker for marker in markers if marker in text)


def _missing_jars(text: str, context: FailureContext) -> str | None:  # noqa: ARG001
    missing = "ClassNotFoundException" in text or "NoClassDefFoundError" in text or "No FileSystem for scheme" in text
    if not missing:
        return None
    group = next((name for marker, name in _JAR_OF.items() if marker in text), "the needed")
    return (f"Spark cannot load the {group} jars; run `make install` (or `python -m ketch_spark.jars install`), "
            "or point KETCH_SPARK_JARS or the config's jars_dir at the folder holding them")


def _missing_input(text: str, context: FailureContext) -> str | None:
    if "PATH_NOT_FOUND" not in text and "Path does not exist" not in text:
        return None
    culprit = _file_named(text) or ", ".join(context.inputs) or "an input"
    return f"input {culprit} does not exist; check --input (a file or folder, local or s3a://)"


_RULES: tuple[Callable[[str, FailureContext], str | None], ...] = (
    _out_of_memory, _concurrent_commit, _not_parquet, _missing_jars, _missing_input, _no_s3_credentials,
    _not_writable,
)


def explain_failure(exc: BaseException, context: FailureContext) -> str | None:
    """One line naming what is at fault in a Spark, Delta or Py4J failure and what to do; ``None`` if unknown.

    Args:
        exc: The exception a command raised.
        context: What the command was working on.
    """
    text = failure_text(exc)
    for rule in _RULES:
        explanation = rule(text, context)
        if explanation is not None:
            return explanation
    return None
