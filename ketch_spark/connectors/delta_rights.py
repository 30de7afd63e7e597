"""Erasure in Delta tables (file:// and s3a://): one statement per batch, then physical removal.

* **Delete**: one ``DELETE`` whose condition holds every identity of the batch.
  **Obfuscate**: one ``UPDATE`` (Delta's MERGE-style update) of the personal
  columns on the matching rows, nested fields in place.
* **Purge**: where deletion vectors are on, the erased rows are only marked
  deleted; ``REORG TABLE ... APPLY (PURGE)`` rewrites the files that carry
  deletion vectors so no current file still holds them.
* **Vacuum** with ``dsr.vacuum_retention_hours``: files that the erasure removed
  (and change-data-feed files, which hold the deleted rows as well) stay readable
  by time travel until the retention has passed; Delta's retention check stays on
  unless ``dsr.allow_short_retention`` lowers it explicitly.
* **Check**: files still stored but no longer in the current version are read
  for the batch's identities; while one holds a match, removal becomes physical
  at the erasure's commit time plus the retention.

A rerun after a failure repeats only what is left: a committed DELETE matches
nothing the second time, and purge and vacuum run again.

An append-only table (``delta.appendOnly``) refuses DELETE and UPDATE. Only an
asset whose properties carry :data:`APPEND_ONLY_ERASURE` ``= "lift"``
(ketch-spark's consent/events) is erased anyway: the property is set to false
in one commit, the erasure commits, and the property is set back to true,
whatever happened in between; every other writer keeps the append-only
guarantee, and the history shows the lift next to the erasure.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import unquote

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ketch_spark.config import DsrSettings
from ketch_spark.connectors.base import Asset, EraseCounts, VerifyResult
from ketch_spark.connectors.hadoopfs import HadoopFs, path_key
from ketch_spark.errors import PartialErasureError
from ketch_spark.faults import fault_point
from ketch_spark.session_conf import session_conf

__all__ = ["DeltaEraser", "EraseBatch", "APPEND_ONLY_ERASURE"]

logger = logging.getLogger(__name__)

_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
#: Asset property: ``"lift"`` lets an erasure lift ``delta.appendOnly`` for its own commits.
APPEND_ONLY_ERASURE = "append_only_erasure"
_APPEND_ONLY = "delta.appendOnly"
_OPTIMIZE_MAX_FILE_SIZE = "spark.databricks.delta.optimize.maxFileSize"
_DELETION_VECTORS = "deletionVectors"
_PURGE_MIN_BIN_BYTES = 16 * 1024 * 1024
_PURGE_MAX_BIN_BYTES = 1024 * 1024 * 1024


PlanFor = Callable[[T.StructType], Any]
AssignmentsFor = Callable[[T.StructType], dict[str, Column]]
Attribute = Callable[..., Any]  # (matched_df, by=None) -> rights.match.MatchCounts


@dataclass(frozen=True)
class EraseBatch:
    """One batch's erasure of a table: how to match its rows, delete or obfuscate, and how to attribute them.

    Attributes:
        plan_for: The batch's match plan for a schema (condition, columns skipped).
        mode: ``delete`` or ``obfuscate``.
        assignments_for: Obfuscation assignments for a schema (unused by ``delete``).
        attribute: Counts matched rows in all and per request id in one job
            (:func:`~ketch_spark.rights.match.count_matches`), or ``None``.
    """

    plan_for: PlanFor
    mode: str
    assignments_for: AssignmentsFor
    attribute: Attribute | None = None


def _iso(moment: dt.datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment.replace(microsecond=0).isoformat() + "Z"


def _metric(metrics: dict[str, str], *names: str) -> int:
    return sum(int(metrics.get(name) or 0) for name in names)


class DeltaEraser:
    """Finds, erases and checks a batch's rows in one Delta table.

    Args:
        spark: Delta-enabled session.
        asset: The table (format delta), with its personal columns.
        settings: DSR settings (retention, org column, obfuscation rules).
    """

    def __init__(self, spark: SparkSession, asset: Asset, settings: DsrSettings) -> None:
        self.spark = spark
        self.asset = asset
        self.settings = settings
        self.fs = HadoopFs(spark)

    def _table(self) -> Any:
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, self.asset.location)

    def read(self) -> DataFrame:
        """The current version of the table, pinned by version.

        A plain read could be served by a DataFrame the session cached before the
        erasure (Spark's cache matches Delta reads whatever their version), which
        would then re-read files that the vacuum removed.
        """
        return self._read_at(self.version())

    def _read_at(self, version: int) -> DataFrame:
        return self.spark.read.format("delta").option("versionAsOf", version).load(self.asset.location)

    def _last_commit(self) -> Any:
        return self._table().history(1).select("version", "timestamp", "operationMetrics").head()

    def version(self) -> int:
        """The current version."""
        return int(self._last_commit()["version"])

    # -- erasure -------------------------------------------------------------------------------

    def erase(self, plan_for: PlanFor, mode: str, assignments_for: AssignmentsFor,
              attribute: Attribute | None = None) -> EraseCounts:
        """Deletes or obfuscates the batch's rows in one statement, then purges and vacuums.

        ``attribute`` counts matched rows in all and per request in one job.
        """
        result = self.erase_batches([EraseBatch(plan_for, mode, assignments_for, attribute)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def erase_batches(self, batches: Sequence[EraseBatch]) -> list[EraseCounts | Exception]:
        """Erases each batch with its own statement (and commit), then purges and vacuums the table once.

        A batch of deletions and one of obfuscations of the same table cost one
        purge, one vacuum and one physical-removal check between them. Per batch its
        counts, or the exception that stopped it; a failure after a batch's commit
        is a :class:`PartialErasureError` carrying what was committed.
        """
        last = self._last_commit()
        version, commit_time = int(last["version"]), last["timestamp"]
        results: list[EraseCounts | Exception] = []
        changed = finish = False
        for batch in batches:
            counts = EraseCounts(version_before=version)
            try:
                erased = self._erase_one(batch, version, counts)
            except Exception as exc:  # noqa: BLE001 - this batch's failure; the others go on
                results.append(exc)
                continue
            results.append(counts)
            finish = finish or counts.version_after is None
            if erased is not None:
                version, commit_time, changed = int(erased["version"]), erased["timestamp"], True
        if not finish:
            return results
        finished = [c for c in results if isinstance(c, EraseCounts) and c.version_after is None]
        try:
            self._finish(finished, commit_time, after_delete=changed)
        except Exception as exc:  # noqa: BLE001 - reported per batch below
            return [self._failed_after(result, exc) if result in finished else result for result in results]
        return results

    def _erase_one(self, batch: EraseBatch, version: int, counts: EraseCounts) -> Any:
        """One batch's statement on ``version``; its commit (``None`` when nothing matched).

        A batch that cannot match (no identity column for its identity types) is
        complete at once: ``version_after`` is set and the table is left alone.
        """
        table_df = self._read_at(version)
        plan = batch.plan_for(table_df.schema)
        counts.notes.extend(plan.skipped)
        if not plan.can_match:
            counts.version_after = version
            counts.physical_after = _iso(dt.datetime.now(dt.timezone.utc))
            return None
        matched_df = table_df.where(plan.condition)
        if batch.attribute is not None:
            found = batch.attribute(matched_df)
            counts.rows_matched, counts.rows_by_request = found.rows, found.by_request
        else:
            counts.rows_matched = int(matched_df.count())
        if not counts.rows_matched:
            return None
        fault_point("rights.delta.before_delete")
        table = self._table()
        with self._append_only_lifted(counts):
            if batch.mode == "delete":
                table.delete(plan.condition)
            else:
                table.update(condition=plan.condition, set=batch.assignments_for(table_df.schema))
            erased = self._last_commit()
        metrics = dict(erased["operationMetrics"] or {})
        counts.rows_changed = _metric(metrics, "numDeletedRows", "numUpdatedRows")
        counts.files_matched = _metric(metrics, "numRemovedFiles", "numDeletionVectorsAdded",
                                       "numDeletionVectorsUpdated")
        counts.files_rewritten = _metric(metrics, "numAddedFiles")
        counts.bytes_rewritten = _metric(metrics, "numAddedBytes")
        counts.bytes_read = _metric(metrics, "numRemovedBytes")
        return erased

    @staticmethod
    def _failed_after(counts: EraseCounts, exc: Exception) -> Exception:
        if counts.rows_changed:
            error = PartialErasureError(f"the erasure was committed, then: {exc}", counts)
            error.__cause__ = exc
            return error
        return exc

    def _finish(self, finished: list[EraseCounts], commit_time: dt.datetime, after_delete: bool) -> None:
        """Purge, vacuum and the physical-removal check, once after the batches' commits."""
        if after_delete:
            fault_point("rights.delta.after_delete")
        purged = self._purge()
        if finished:  # the purge rewrote files for all batches; counted once, on the first
            finished[0].files_rewritten += purged.get("files", 0)
            finished[0].bytes_rewritten += purged.get("bytes", 0)
        self._vacuum()
        self.spark.catalog.refreshByPath(self.asset.location)  # cached DataFrames must not serve erased rows
        version_after = self.version()
        for counts in finished:
            counts.version_after = version_after
            stored, removed_at = self.erased_files(counts.version_before or 0, version_after)
            counts.physical_after = self._physical_after(len(stored), removed_at or commit_time)
            if stored:
                counts.notes.append(f"{len(stored)} file(s) removed by the erasure stay readable by time travel "
                                    f"until VACUUM after {counts.physical_after}")

    @contextmanager
    def _append_only_lifted(self, counts: EraseCounts) -> Iterator[None]:
        """Lifts ``delta.appendOnly`` around the block when the asset allows it (see the module docstring)."""
        quoted = self.asset.location.replace("`", "``")
        if self.asset.properties.get(APPEND_ONLY_ERASURE) != "lift":
            yield
            return
        properties = self.spark.sql(f"DESCRIBE DETAIL delta.`{quoted}`").head()["properties"] or {}
        if properties.get(_APPEND_ONLY) != "true":
            yield
            return
        self.spark.sql(f"ALTER TABLE delta.`{quoted}` SET TBLPROPERTIES ('{_APPEND_ONLY}' = 'false')")
        counts.notes.append("delta.appendOnly lifted for the erasure's commits and set again")
        try:
            yield
        finally:
            self.spark.sql(f"ALTER TABLE delta.`{quoted}` SET TBLPROPERTIES ('{_APPEND_ONLY}' = 'true')")

    def _purge(self) -> dict[str, int]:
        """Rewrites files carrying deletion vectors (no-op without them; skipped where the table cannot have them).

        The purge bin-packs the files it rewrites up to Delta's OPTIMIZE file size
        (1 GiB), one task per bin: a batch that touches every small file would be
        rewritten by one task into one file. Bins are capped near the table's mean
        file size instead, so the rewrite runs in parallel and keeps the layout.
        """
        quoted = self.asset.location.replace("`", "``")
        detail = self.spark.sql(f"DESCRIBE DETAIL delta.`{quoted}`").select(
            "numFiles", "sizeInBytes", "tableFeatures").head()
        if _DELETION_VECTORS not in (detail["tableFeatures"] or []):
            return {}  # no file of the table can carry a deletion vector
        version = self.version()
        mean = int(detail["sizeInBytes"] or 0) // max(1, int(detail["numFiles"] or 0))
        bin_bytes = min(_PURGE_MAX_BIN_BYTES, max(_PURGE_MIN_BIN_BYTES, mean))
        with session_conf(self.spark, {_OPTIMIZE_MAX_FILE_SIZE: str(bin_bytes)}):
            self.spark.sql(f"REORG TABLE delta.`{quoted}` APPLY (PURGE)").collect()
        last = self._last_commit()
        if int(last["version"]) == version:
            return {}
        metrics = dict(last["operationMetrics"] or {})
        return {"files": _metric(metrics, "numAddedFiles"), "bytes": _metric(metrics, "numAddedBytes")}

    def _retention_check(self) -> AbstractContextManager[None]:
        lowered = self.settings.allow_short_retention and self.settings.vacuum_retention_hours < 168
        return session_conf(self.spark, {_RETENTION_CHECK: "false"} if lowered else {})

    def _history_within_retention(self) -> bool:
        """Whether the table's first commit is younger than the vacuum retention.

        Every file the table ever removed was removed at or after that commit, so
        no removed file has passed the retention yet and a VACUUM would delete
        nothing (a table whose first commit is no longer in its log is vacuumed).
        """
        try:
            first = self._commit_actions(0)
        except Exception:  # noqa: BLE001 - log cleaned up (or unreadable): let VACUUM decide
            return False
        created = next((a["commitInfo"].get("timestamp") for a in first if "commitInfo" in a), None)
        if created is None:
            return False
        age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromtimestamp(created / 1000, dt.timezone.utc)
        return age < dt.timedelta(hours=self.settings.vacuum_retention_hours)

    def _vacuum(self) -> None:
        """VACUUM LITE (files the log says were removed: no listing of the table), else a full VACUUM.

        Skipped while the whole table is younger than the retention (nothing it
        removed can be deleted yet).
        """
        if self._history_within_retention():
            logger.info("VACUUM of %s skipped: the table is younger than the %s-hour retention",
                        self.asset.asset_id, self.settings.vacuum_retention_hours)
            return
        quoted = self.asset.location.replace("`", "``")
        with self._retention_check():
            try:
                self.spark.sql(f"VACUUM delta.`{quoted}` RETAIN {self.settings.vacuum_retention_hours} HOURS LITE")
            except Exception as exc:  # noqa: BLE001 - LITE refuses when the log no longer covers every file
                logger.info("VACUUM LITE of %s refused (%s); running a full VACUUM", self.asset.asset_id,
                            type(exc).__name__)
                self._table().vacuum(float(self.settings.vacuum_retention_hours))

    # -- physical removal ----------------------------------------------------------------------------

    def _commit_actions(self, version: int) -> list[dict[str, Any]]:
        text = self.fs.read_text(f"{self.asset.location}/_delta_log/{version:020d}.json")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _absolute(self, path: str) -> str:
        return path if "://" in path else f"{self.asset.location}/{unquote(path)}"

    def erased_files(self, version_before: int, version_after: int) -> tuple[list[str], dt.datetime | None]:
        """Files the erasure's commits removed (or wrote as change data) that are still stored.

        They held erased rows; time travel reads them until VACUUM removes them.
        Returns them with the time of the last commit that removed one.
        """
        stored, removed_at = [], None
        for version in range(version_before + 1, version_after + 1):
            actions = self._commit_actions(version)
            paths = [self._absolute(a[k]["path"]) for a in actions for k in ("remove", "cdc") if k in a]
            when = next((a["commitInfo"].get("timestamp") for a in actions if "commitInfo" in a), None)
            if paths and when is not None:
                removed_at = dt.datetime.fromtimestamp(when / 1000, dt.timezone.utc).replace(tzinfo=None)
            stored += [p for p in paths if self.fs.exists(p)]
        return stored, removed_at

    def _retained_files(self) -> tuple[list[str], list[str]]:
        """Data files and change-data files stored under the table but not in its current version."""
        root = path_key(self.fs.qualify(self.asset.location))
        current = {path_key(f) for f in self.read().inputFiles()}
        data, changes = [], []
        for status in self.fs.list_files(self.asset.location):
            key = path_key(status.uri)
            relative = key[len(root):].lstrip("/")
            if not status.name.endswith(".parquet") or relative.startswith("_delta_log"):
                continue
            if relative.startswith("_change_data/"):
                changes.append(status.uri)
            elif key not in current and not any(p.startswith(("_", ".")) for p in relative.split("/")):
                data.append(status.uri)
        return data, changes

    def _retained_files_holding(self, plan_for: Callable[[T.StructType], Any]) -> int:
        """Stored files outside the current version that hold a match (read them all)."""
        data, changes = self._retained_files()
        holding = 0
        for files, base in ((data, self.asset.location), (changes, f"{self.asset.location}/_change_data")):
            if not files:
                continue
            try:
                df = self.spark.read.option("basePath", base).parquet(*files)
                plan = plan_for(df.schema)
                holding += df.where(plan.condition).select(F.col("_metadata.file_path")).distinct().count()
            except Exception as exc:  # noqa: BLE001 - unreadable old files: assume they hold rows
                logger.warning("could not read retained files of %s (%s): counting them as holding rows",
                               self.asset.asset_id, type(exc).__name__)
                holding += len(files)
        return holding

    def _physical_after(self, holding: int, removed_at: dt.datetime | None) -> str:
        now = dt.datetime.now(dt.timezone.utc)
        if not holding:
            return _iso(now)
        return _iso((removed_at or now.replace(tzinfo=None)) + dt.timedelta(hours=self.settings.vacuum_retention_hours))

    def verify(self, plan_for: Callable[[T.StructType], Any], erased: EraseCounts | None = None) -> VerifyResult:
        """Current rows still matching, and stored old files still holding erased rows.

        After an erasure (``erased`` with its versions), the files its commits
        removed are checked for existence: they held the rows, and older removed
        files are vacuumed before them. Without one, every retained file is read.
        """
        table_df = self.read()
        plan = plan_for(table_df.schema)
        remaining = int(table_df.where(plan.condition).count()) if plan.can_match else 0
        if erased is not None and erased.version_before is not None and erased.version_after is not None:
            stored, removed_at = self.erased_files(erased.version_before, erased.version_after)
            holding = len(stored)
        else:
            holding = self._retained_files_holding(plan_for) if plan.can_match else 0
            removed_at = self._last_commit()["timestamp"]
        return VerifyResult(remaining=remaining, retained_files_holding=holding,
                            physical_after=self._physical_after(holding, removed_at))
