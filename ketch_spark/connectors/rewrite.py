"""Erasure in file datasets (Parquet, JSON lines, CSV; gzip too), on file:// and s3a://.

One pass over the dataset finds the files that hold a row of the batch
(``_metadata.file_path``); only those files are rewritten, every other file stays
byte-identical. A rewrite never loses or duplicates another person's rows:

1. the new version of each touched file is written under
   ``<dataset>/_ketch_staging/<run_id>/new/`` (hidden from readers by the
   leading underscore), rows in their original order;
2. the staged files are read back and their row counts checked against the
   originals (minus the erased rows when deleting);
3. a ``manifest.json`` is written: from here on the run is committed;
4. each original is moved to ``backup/`` and its new version moved into its
   place (a file whose every row is erased is only moved away); the staging
   folder is removed.

A run interrupted before step 3 leaves staging without a manifest: the next run
deletes it (roll back; originals untouched). Interrupted after step 3, the next
run finishes the swap from the manifest (roll forward) before looking for matches.

JSON lines are rewritten line by line: a line without a match is copied as it
was; a matched line is dropped (delete) or re-serialised with its personal
fields obfuscated. Parquet and CSV files are rewritten through Spark's reader and
writer, partition folders kept.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ketch_spark.config import DsrSettings
from ketch_spark.connectors.base import Asset, EraseCounts
from ketch_spark.connectors.hadoopfs import FileStatus, HadoopFs, path_key
from ketch_spark.errors import ConnectorError, PartialErasureError
from ketch_spark.faults import fault_point

__all__ = ["STAGING_DIR", "FileSetEraser"]

logger = logging.getLogger(__name__)

#: Folder under a dataset's root where rewrites are staged.
STAGING_DIR = "_ketch_staging"
_FILE = "_ketch_file"
_LINE = "_ketch_line"
_PATH = "_ketch_path"
_ORDER = "_ketch_order"
_BLOCK = "_ketch_block"
_MATCHED = "_ketch_matched"
_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class _Touched:
    index: int
    status: FileStatus
    matched_rows: int


def _compression_of(name: str) -> str | None:
    return "gzip" if name.lower().endswith(".gz") else None


class FileSetEraser:
    """Finds and erases a batch's rows in one file dataset.

    Args:
        spark: Session whose Hadoop configuration reaches the dataset.
        asset: The dataset (format parquet, json or csv), with its personal columns.
        settings: DSR settings (org column, phone region, obfuscation rules).
    """

    def __init__(self, spark: SparkSession, asset: Asset, settings: DsrSettings) -> None:
        if asset.format not in ("parquet", "json", "csv"):
            raise ConnectorError(f"cannot rewrite {asset.format!r} files at {asset.location}")
        self.spark = spark
        self.asset = asset
        self.settings = settings
        self.fs = HadoopFs(spark)

    # -- layout -----------------------------------------------------------------------------

    @property
    def root(self) -> str:
        """The dataset's folder (the folder of a glob or of a single file)."""
        location = self.asset.location
        if "*" in location or "{" in location:
            return location.split("*", 1)[0].split("{", 1)[0].rstrip("/")
        if self.fs.exists(location) and not self.fs.status(location).is_dir:
            return location.rsplit("/", 1)[0]
        return location.rstrip("/")

    def data_files(self) -> list[FileStatus]:
        """The dataset's data files (hidden files and staging excluded)."""
        from ketch_spark.connectors.files import format_of_file

        location = self.asset.location
        found = self.fs.glob(location) if ("*" in location or "{" in location) else self.fs.list_files(location)
        root = path_key(self.fs.qualify(self.root))
        files = []
        for status in found:
            relative = path_key(status.uri)[len(root):].lstrip("/")
            if status.is_dir or any(p.startswith(("_", ".")) for p in relative.split("/")):
                continue
            if format_of_file(status.name) == self.asset.format:
                files.append(status)
        return files

    # -- reading ------------------------------------------------------------------------------

    def _reader(self) -> Any:
        reader = self.spark.read.option("basePath", self.root)
        if self.asset.format == "csv":
            return reader.option("header", True).option("enforceSchema", False)
        return reader

    def read(self, files: list[str] | None = None, infer: bool = False) -> DataFrame:
        """The dataset's rows (or those of ``files``), with their file as ``_ketch_path``.

        JSON is read with the catalog's schema (enough to match) unless ``infer``.
        """
        paths = files if files is not None else [self.asset.location]
        reader = self._reader()
        if self.asset.format == "json" and self.asset.schema is not None and not infer:
            reader = reader.schema(self.asset.schema)
        df = reader.format(self.asset.format).load(paths)
        return df.withColumn(_PATH, F.col("_metadata.file_path"))

    def matched_files(self, read_df: DataFrame, condition: Column,
                      attribute: Callable[..., Any] | None = None
                      ) -> tuple[dict[str, int], dict[str, int] | None]:
        """Matched rows per file (``path_key``) and, with ``attribute``, per request: one job over the dataset."""
        matched_df = read_df.where(condition)
        if attribute is not None:
            found = attribute(matched_df, _PATH)
            return {path_key(path): n for path, n in found.by_value.items()}, found.by_request
        rows = matched_df.groupBy(_PATH).count().collect()
        return {path_key(r[_PATH]): int(r["count"]) for r in rows}, None

    # -- recovery -------------------------------------------------------------------------------

    def recover(self) -> tuple[int, list[str]]:
        """Finishes or undoes interrupted rewrites; returns (rows erased by them, notes)."""
        staging = f"{self.root}/{STAGING_DIR}"
        if not self.fs.exists(staging):
            return 0, []
        rows, notes = 0, []
        for run in self.fs.list(staging):
            manifest_uri = f"{run.uri}/{_MANIFEST}"
            if self.fs.exists(manifest_uri):
                manifest = json.loads(self.fs.read_text(manifest_uri))
                for entry in manifest["entries"]:
                    self._swap(entry)
                rows += int(manifest.get("rows_changed", 0))
                notes.append(f"finished the interrupted rewrite of run {run.name} "
                             f"({len(manifest['entries'])} file(s))")
            else:
                notes.append(f"removed the unfinished staging of run {run.name} (originals untouched)")
            self.fs.delete(run.uri, recursive=True)
        self.fs.delete(staging, recursive=True)
        return rows, notes

    def _swap(self, entry: dict[str, Any]) -> None:
        original, staged, backup = entry["original"], entry.get("staged"), entry["backup"]
        staged_waiting = staged is not None and self.fs.exists(staged)
        if self.fs.exists(original) and not self.fs.exists(backup) and (staged_waiting or staged is None):
            self.fs.rename(original, backup)
        if staged_waiting:
            self.fs.rename(staged, original)

    # -- erasure ----------------------------------------------------------------------------------

    def erase(self, plan_for: Callable[[T.StructType], Any], mode: str, run_id: str,
              assignments_for: Callable[[T.StructType], dict[str, Column]],
              attribute: Callable[..., Any] | None = None) -> EraseCounts:
        """Deletes or obfuscates the batch's rows.

        Args:
            plan_for: Builds the :class:`~ketch_spark.rights.match.MatchPlan` for a schema.
            mode: ``delete`` or ``obfuscate``.
            run_id: Names the staging folder.
            assignments_for: Obfuscation assignments for a schema (``obfuscate`` only).
            attribute: Counts matched rows per request (from the pass that finds the files).
        """
        recovered, notes = self.recover()
        counts = EraseCounts(rows_matched=recovered, rows_changed=recovered, notes=notes)
        try:
            return self._erase(counts, plan_for, mode, run_id, assignments_for, attribute)
        except Exception as exc:
            if not recovered:
                raise
            raise PartialErasureError(f"an interrupted rewrite was finished, then: {exc}", counts) from exc

    def _erase(self, counts: EraseCounts, plan_for: Callable[[T.StructType], Any], mode: str, run_id: str,
               assignments_for: Callable[[T.StructType], dict[str, Column]],
               attribute: Callable[..., Any] | None) -> EraseCounts:
        files = self.data_files()
        by_key = {path_key(f.uri): f for f in files}
        read_df = self.read()
        plan = plan_for(read_df.schema)
        counts.notes.extend(plan.skipped)
        counts.bytes_read = sum(f.size for f in files)
        if not plan.can_match:
            counts.physical_after = _now_iso()
            return counts
        matched, counts.rows_by_request = self.matched_files(read_df, plan.condition, attribute)
        touched = [_Touched(i, by_key[key], n) for i, (key, n) in enumerate(sorted(matched.items())) if key in by_key]
        if len(touched) != len(matched):
            raise ConnectorError(f"{len(matched) - len(touched)} matched file(s) are not in the listing of "
                                 f"{self.asset.location}: the dataset changed during the erasure; run it again")
        counts.rows_matched += sum(t.matched_rows for t in touched)
        counts.files_matched = len(touched)
        counts.physical_after = _now_iso()
        if not touched:
            return counts
        staging = f"{self.root}/{STAGING_DIR}/{run_id}"
        self.fs.delete(staging, recursive=True)
        entries = self._stage(touched, plan_for, mode, staging, assignments_for)
        counts.files_rewritten = sum(1 for e in entries if e["staged"])
        counts.bytes_rewritten = sum(int(e["staged_bytes"]) for e in entries)
        changed = sum(t.matched_rows for t in touched)
        manifest = {"run_id": run_id, "asset": self.asset.location, "mode": mode, "rows_changed": changed,
                    "entries": entries}
        self.fs.write_text(f"{staging}/{_MANIFEST}", json.dumps(manifest))
        fault_point("rights.files.before_swap")
        for number, entry in enumerate(entries):
            self._swap(entry)
            if number == 0:
                fault_point("rights.files.mid_swap")
        self.fs.delete(staging, recursive=True)
        self.fs.delete(f"{self.root}/{STAGING_DIR}", recursive=False)
        self.spark.catalog.refreshByPath(self.root)  # cached DataFrames must not serve erased rows
        counts.rows_changed += changed
        return counts

    def _stage(self, touched: list[_Touched], plan_for: Callable[[T.StructType], Any], mode: str, staging: str,
               assignments_for: Callable[[T.StructType], dict[str, Column]]) -> list[dict[str, Any]]:
        new_dir = f"{staging}/new"
        expected: dict[int, int] = {}
        for group in self._groups(touched):
            rewrite_df = self._rewrite_frame(group, plan_for, mode, assignments_for).persist()
            try:
                per_file = {r[_FILE]: (int(r["rows"]), int(r["matched"])) for r in
                            rewrite_df.groupBy(_FILE).agg(F.count(F.lit(1)).alias("rows"),
                                                          F.sum(F.col(_MATCHED).cast("long")).alias("matched"))
                            .collect()}
                for item in group:
                    rows, matched = per_file.get(item.index, (0, 0))
                    if matched != item.matched_rows:
                        raise ConnectorError(
                            f"{item.status.uri} changed during the erasure ({item.matched_rows} matched rows at "
                            f"first, {matched} when rewriting); run the erasure again")
                    expected[item.index] = rows - matched if mode == "delete" else rows
                self._write(rewrite_df, mode, group[0].status.name, new_dir)
            finally:
                rewrite_df.unpersist()
        return self._verified_entries(touched, expected, staging)

    def _groups(self, touched: list[_Touched]) -> list[list[_Touched]]:
        """Files rewritten together: same compression, and for Parquet the same schema."""
        groups: dict[str, list[_Touched]] = {}
        for item in touched:
            key = _compression_of(item.status.name) or ""
            if self.asset.format == "parquet":
                key += self.spark.read.parquet(item.status.uri).schema.json()
            groups.setdefault(key, []).append(item)
        return list(groups.values())

    def _rewrite_frame(self, group: list[_Touched], plan_for: Callable[[T.StructType], Any], mode: str,
                       assignments_for: Callable[[T.StructType], dict[str, Column]]) -> DataFrame:
        index_of = F.create_map(*[x for item in group for x in (F.lit(path_key(item.status.uri)),
                                                                 F.lit(item.index))])
        uris = [item.status.uri for item in group]
        if self.asset.format == "json":
            return self._json_lines(uris, index_of, plan_for, mode, assignments_for)
        df = self.read(uris, infer=True)
        plan = plan_for(df.schema)
        order = F.col("_metadata.row_index") if self.asset.format == "parquet" else F.monotonically_increasing_id()
        df = (
            df.withColumn(_FILE, index_of[_path_key_column(F.col(_PATH))])
            .withColumn(_BLOCK, F.col("_metadata.file_block_start"))
            .withColumn(_ORDER, order)
            .withColumn(_MATCHED, plan.condition)
        )
        if mode == "delete":
            return df
        from ketch_spark.rights.obfuscate import obfuscate_rows

        return obfuscate_rows(df, F.col(_MATCHED), assignments_for(df.drop(_PATH, _FILE, _BLOCK, _ORDER,
                                                                            _MATCHED).schema))

    def _json_lines(self, uris: list[str], index_of: Column, plan_for: Callable[[T.StructType], Any], mode: str,
                    assignments_for: Callable[[T.StructType], dict[str, Column]]) -> DataFrame:
        schema = self.spark.read.json(uris).schema if mode == "obfuscate" else self.read(uris).drop(_PATH).schema
        schema = T.StructType([f for f in schema.fields if f.name != "_corrupt_record"])
        plan = plan_for(schema)
        lines = (
            self.spark.read.text(uris)
            .select(F.col("value").alias(_LINE), F.col("_metadata.file_path").alias(_PATH),
                    F.col("_metadata.file_block_start").alias(_BLOCK))
            .withColumn(_ORDER, F.monotonically_increasing_id())
            .withColumn(_FILE, index_of[_path_key_column(F.col(_PATH))])
            .withColumn("_ketch_json", F.from_json(_LINE, schema))
        )
        fields = [F.col(f"_ketch_json.`{f.name}`").alias(f.name) for f in schema.fields]
        parsed = lines.select(_LINE, _PATH, _BLOCK, _ORDER, _FILE, *fields)
        parsed = parsed.withColumn(_MATCHED, plan.condition)
        if mode == "obfuscate":
            from ketch_spark.rights.obfuscate import obfuscate_rows

            obfuscated = obfuscate_rows(parsed, F.col(_MATCHED), assignments_for(schema))
            new_line = F.to_json(F.struct(*[F.col(f"`{f.name}`") for f in schema.fields]))
            parsed = obfuscated.withColumn(_LINE, F.when(F.col(_MATCHED), new_line).otherwise(F.col(_LINE)))
        return parsed.select(_LINE, _PATH, _BLOCK, _ORDER, _FILE, _MATCHED)

    def _write(self, rewrite_df: DataFrame, mode: str, sample_name: str, new_dir: str) -> None:
        kept = rewrite_df.where(~F.col(_MATCHED)) if mode == "delete" else rewrite_df
        ordered = kept.repartition(_FILE).sortWithinPartitions(_FILE, _BLOCK, _ORDER)
        compression = _compression_of(sample_name)
        if self.asset.format == "json":
            writer = ordered.select(_LINE, _FILE).write.format("text")
        else:
            drop = [_PATH, _BLOCK, _ORDER, _MATCHED, *self.asset.partition_columns]
            writer = ordered.drop(*[c for c in drop if c in ordered.columns]).write.format(self.asset.format)
            if self.asset.format == "csv":
                writer = writer.option("header", True)
        if compression:
            writer = writer.option("compression", compression)
        writer.partitionBy(_FILE).mode("append").save(new_dir)

    def _verified_entries(self, touched: list[_Touched], expected: dict[int, int], staging: str) -> list[dict]:
        entries = []
        staged: dict[int, FileStatus] = {}
        new_dir = f"{staging}/new"
        if self.fs.exists(new_dir):
            for folder in self.fs.list(new_dir):
                if folder.is_dir and folder.name.startswith(f"{_FILE}="):
                    parts = [f for f in self.fs.list(folder.uri) if not f.name.startswith(("_", "."))]
                    if len(parts) != 1:
                        raise ConnectorError(f"expected one staged file in {folder.uri}, found {len(parts)}")
                    staged[int(folder.name.split("=", 1)[1])] = parts[0]
                    # a checksum file would follow the rename and then contradict any later writer of the file
                    self.fs.delete(f"{folder.uri}/.{parts[0].name}.crc")
        counted = self._staged_counts(list(staged.values()))
        for item in touched:
            want = expected[item.index]
            part = staged.get(item.index)
            got = counted.get(path_key(part.uri), 0) if part else 0
            if got != want:
                raise ConnectorError(f"staged rewrite of {item.status.uri} holds {got} rows, expected {want}; "
                                     "nothing was replaced")
            relative = path_key(item.status.uri)[len(path_key(self.fs.qualify(self.root))):].lstrip("/")
            entries.append({
                "original": item.status.uri,
                "staged": part.uri if part else None,
                "staged_bytes": part.size if part else 0,
                "backup": f"{staging}/backup/{relative}",
                "expected_rows": want,
            })
        return entries

    def _staged_counts(self, parts: list[FileStatus]) -> dict[str, int]:
        if not parts:
            return {}
        uris = [p.uri for p in parts]
        if self.asset.format == "json":
            df = self.spark.read.text(uris)
        elif self.asset.format == "csv":
            df = self.spark.read.option("header", True).csv(uris)
        else:
            df = self.spark.read.parquet(*uris)
        rows = df.groupBy(F.col("_metadata.file_path").alias("p")).count().collect()
        return {path_key(r["p"]): int(r["count"]) for r in rows}


def _path_key_column(path: Column) -> Column:
    """:func:`path_key` of Spark's ``_metadata.file_path`` as a Column."""
    decoded = F.url_decode(F.regexp_replace(path, r"\+", "%2B"))  # url_decode reads '+' as a space
    return F.regexp_replace(decoded, r"^file:/+", "file:/")


def _now_iso() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
