"""dsr/audit: one row per (run, asset, action), appended as each asset finishes.

Actions: ``erase`` (delete or obfuscate, ``mode`` says which), ``verify`` (the
re-query after an erasure) and ``export`` (an access package's file). Rows hold
counts, versions and hashes, never an identity value.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ketch_spark.config import KetchConfig
from ketch_spark.tables import append_rows, ensure_table, read_table, table_spec

__all__ = ["AuditRow", "append_audit", "read_audit", "completed_work", "utc_now", "iso_z", "OK", "FAILED"]

OK, FAILED = "ok", "failed"
_AUDIT = "dsr_audit"


def utc_now() -> dt.datetime:
    """Now, as the naive UTC timestamp Spark stores (sessions run in UTC)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def iso_z(value: Any) -> str | None:
    """A naive UTC timestamp as ``2026-11-26T10:00:00Z`` (other values as text, ``None`` kept)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(microsecond=0).isoformat() + "Z"
    return str(value)


@dataclass
class AuditRow:
    """One audit record (see the ``dsr_audit`` table for the columns)."""

    run_id: str
    request_ids: list[str]
    asset_id: str
    location: str | None
    action: str
    status: str
    mode: str | None = None
    rows_matched: int | None = None
    rows_changed: int | None = None
    rows_by_request: dict[str, int] = field(default_factory=dict)
    version_before: int | None = None
    version_after: int | None = None
    files_matched: int | None = None
    files_rewritten: int | None = None
    bytes_read: int | None = None
    bytes_rewritten: int | None = None
    duration_seconds: float | None = None
    physical_after: dt.datetime | None = None
    error: str | None = None
    notes: str | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime = field(default_factory=utc_now)

    @property
    def versions(self) -> str | None:
        """``before->after`` for Delta tables."""
        if self.version_before is None:
            return None
        return f"{self.version_before}->{self.version_after if self.version_after is not None else '?'}"

    def as_tuple(self) -> tuple[Any, ...]:
        """The row in the table's column order."""
        values = {**self.__dict__, "versions": self.versions}
        return tuple(values[f.name] for f in table_spec(_AUDIT).schema.fields)


def append_audit(spark: SparkSession, cfg: KetchConfig, rows: Sequence[AuditRow]) -> None:
    """Appends ``rows`` to dsr/audit in one commit (the table is created if missing)."""
    if rows:
        append_rows(spark, cfg, _AUDIT, [r.as_tuple() for r in rows])


def read_audit(spark: SparkSession, cfg: KetchConfig) -> DataFrame:
    """dsr/audit (created if missing)."""
    ensure_table(spark, cfg, _AUDIT)
    return read_table(spark, cfg, _AUDIT)


def completed_work(spark: SparkSession, cfg: KetchConfig, request_ids: Iterable[str]) -> set[tuple[str, str, str]]:
    """(request_id, asset_id, action) already done with status ok, for the given requests."""
    ids = sorted(set(request_ids))
    if not ids:
        return set()
    rows = (
        read_audit(spark, cfg)
        .where(F.col("status") == OK)
        .select(F.explode("request_ids").alias("request_id"), "asset_id", "action")
        .where(F.col("request_id").isin(ids))
        .distinct()
        .collect()
    )
    return {(r["request_id"], r["asset_id"], r["action"]) for r in rows}
