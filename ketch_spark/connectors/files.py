"""Files on ``file://``, plain local paths and ``s3a://``: Delta, Parquet, JSON lines, CSV.

Listing goes through the JVM's Hadoop FileSystem of the SparkSession, so local
folders and S3 prefixes are walked by the same code; the folders of a local path
are listed by Python, with the same names, sizes and modification times (ms). A Delta table (a folder with
``_delta_log``) or a Parquet dataset with hive-style partitions (``col=value``
folders) is one asset; loose files in a folder form one asset per format.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ketch_spark.connectors.base import (
    Asset,
    Connector,
    EraseCounts,
    SampledAsset,
    VerifyResult,
    describe_error,
    fingerprint_of,
)
from ketch_spark.errors import ConnectorError

__all__ = ["FileConnector", "normalise_file_uri", "format_of_file", "is_file_uri"]

logger = logging.getLogger(__name__)

_FORMAT_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".snappy.parquet", "parquet"),
    (".parquet", "parquet"),
    (".parq", "parquet"),
    (".jsonl.gz", "json"),
    (".ndjson.gz", "json"),
    (".json.gz", "json"),
    (".jsonl", "json"),
    (".ndjson", "json"),
    (".json", "json"),
    (".csv.gz", "csv"),
    (".csv", "csv"),
)
_PARTITION_DIR = re.compile(r"^(?P<column>[^=/]+)=(?P<value>[^/]*)$")
_DELTA_COMMIT = re.compile(r"^(\d{20})\.(json|checkpoint\.parquet|checkpoint\..*\.parquet)$")
#: Files read for a sample (and for the schema of JSON / CSV): the first ones, up to these bounds.
_SAMPLE_MAX_FILES = 4
_SAMPLE_MAX_BYTES = 64 * 1024 * 1024
_S3_SCHEMES = ("s3a://", "s3://", "s3n://")
#: Spark jobs :meth:`FileConnector.sample_many` runs at once (schema reads, non-Parquet samples).
_CONCURRENT_JOBS = 4
#: Parquet assets of one schema sampled by one Spark job, at most.
_ASSETS_PER_JOB = 64
#: A Parquet asset up to this size is sampled by reading it whole (cheaper than a LIMIT in a shared job).
_READ_WHOLE_BYTES = 4 * 1024 * 1024
_TAG, _ROW = "_ketch_asset", "_ketch_row"


def is_file_uri(uri: str) -> bool:
    """Whether ``uri`` is served by :class:`FileConnector` (file://, s3a://, or a plain path)."""
    return uri.startswith(("file:", *_S3_SCHEMES)) or "://" not in uri


def normalise_file_uri(uri: str) -> str:
    """``file:///abs/path`` for local paths, ``s3a://`` for S3 URIs; no trailing slash."""
    if uri.startswith(("s3://", "s3n://")):
        uri = "s3a://" + uri.split("://", 1)[1]
    if uri.startswith("s3a://"):
        return uri.rstrip("/")
    if uri.startswith("file:"):
        uri = re.sub(r"^file:/*", "/", uri)
    return "file://" + str(Path(uri).expanduser().resolve())


def format_of_file(name: str) -> str | None:
    """Format of a data file from its name (``.parquet``, ``.json[l].gz``, ``.csv``...), or ``None``."""
    lowered = name.lower()
    for suffix, fmt in _FORMAT_SUFFIXES:
        if lowered.endswith(suffix):
            return fmt
    return None


def _hidden(name: str) -> bool:
    return name.startswith(("_", ".")) or name.endswith((".crc", "$folder$"))


@dataclass(frozen=True)
class _Entry:
    uri: str
    name: str
    is_dir: bool
    size: int
    mtime: int


class FileConnector(Connector):
    """Delta tables, Parquet datasets, JSON-lines logs and CSV files on file:// or s3a://."""

    system = "file"

    # -- Hadoop FileSystem access -------------------------------------------------

    def _hadoop_path(self, uri: str) -> Any:
        return self.spark._jvm.org.apache.hadoop.fs.Path(uri)

    def _fs(self, uri: str) -> Any:
        return self._hadoop_path(uri).getFileSystem(self.spark._jsc.hadoopConfiguration())

    def _list(self, uri: str) -> list[_Entry]:
        if uri.startswith("file://"):
            return _list_local(uri)
        statuses = self._fs(uri).listStatus(self._hadoop_path(uri))
        base = uri.rstrip("/")
        entries = []
        for status in statuses:
            name = status.getPath().getName()
            entries.append(_Entry(f"{base}/{name}", name, bool(status.isDirectory()), int(status.getLen()),
                                  int(status.getModificationTime())))
        return sorted(entries, key=lambda e: e.name)

    def _list_recursive(self, uri: str) -> list[_Entry]:
        iterator = self._fs(uri).listFiles(self._hadoop_path(uri), True)
        base = uri.rstrip("/")
        qualified_base = str(self._fs(uri).makeQualified(self._hadoop_path(uri)).toString()).rstrip("/")
        entries = []
        while iterator.hasNext():
            status = iterator.next()
            full = str(status.getPath().toString())
            if full.startswith(qualified_base):
                relative = full[len(qualified_base):].lstrip("/")
            else:
                relative = status.getPath().getName()
            if any(_hidden(part) for part in relative.split("/")):
                continue
            entries.append(_Entry(f"{base}/{relative}", status.getPath().getName(), False, int(status.getLen()),
                                  int(status.getModificationTime())))
        return sorted(entries, key=lambda e: e.uri)

    # -- discovery ----------------------------------------------------------------

    @staticmethod
    def system_of(uri: str) -> str:
        """``s3`` for s3a:// locations, ``file`` otherwise."""
        return "s3" if uri.startswith("s3a://") else "file"

    def location_prefix(self, uri: str) -> str:
        """``uri`` normalised like the locations of its assets (``file:///abs``, ``s3a://``)."""
        return normalise_file_uri(uri)

    def discover(self, uri: str) -> list[Asset]:
        """Walks ``uri`` and returns its datasets (cheap: listing only, no data read).

        Raises:
            ConnectorError: The location cannot be listed, does not exist or holds no data files.
        """
        base = normalise_file_uri(uri)
        try:
            fs = self._fs(base)
            path = self._hadoop_path(base)
            if not fs.exists(path):
                raise ConnectorError(f"empty or missing location: nothing found at {base}")
            status = fs.getFileStatus(path)
            if status.isFile():
                entry = _Entry(base, status.getPath().getName(), False, int(status.getLen()),
                               int(status.getModificationTime()))
                assets = [self._loose_files_asset(base, entry.name, [entry], format_of_file(entry.name), single=True)]
                assets = [a for a in assets if a is not None]
            else:
                assets = list(self._walk(base))
        except ConnectorError:
            raise
        except Exception as exc:  # noqa: BLE001 - JVM errors (access denied, unknown bucket, ...)
            raise ConnectorError(self.redact(f"cannot list {base}: {describe_error(exc)}")) from None
        if not assets:
            raise ConnectorError(f"empty location: no Delta, Parquet, JSON or CSV data under {base}")
        logger.info("discovered %d asset(s) under %s", len(assets), self.redact(base))
        return assets

    def _walk(self, uri: str) -> Iterator[Asset]:
        entries = self._list(uri)
        names = {e.name for e in entries}
        if "_delta_log" in names:
            yield self._delta_asset(uri)
            return
        visible = [e for e in entries if not _hidden(e.name)]
        subdirs = [e for e in visible if e.is_dir]
        files = [e for e in visible if not e.is_dir and format_of_file(e.name)]
        partition_dirs = [d for d in subdirs if _PARTITION_DIR.match(d.name)]
        if partition_dirs and len(partition_dirs) == len(subdirs):
            asset = self._partitioned_asset(uri)
            if asset is not None:
                yield asset
            return
        by_format: dict[str, list[_Entry]] = {}
        for entry in files:
            by_format.setdefault(format_of_file(entry.name), []).append(entry)
        single = len(by_format) == 1 and not subdirs
        for fmt, fmt_files in sorted(by_format.items()):
            asset = self._loose_files_asset(uri, Path(uri).name, fmt_files, fmt, single=single)
            if asset is not None:
                yield asset
        for subdir in subdirs:
            yield from self._walk(subdir.uri)

    def _delta_asset(self, uri: str) -> Asset:
        log = self._list(f"{uri}/_delta_log")
        versions = [int(m.group(1)) for m in (_DELTA_COMMIT.match(e.name) for e in log) if m]
        version = max(versions) if versions else -1
        return Asset(
            system=self.system_of(uri),
            location=uri,
            name=Path(uri).name,
            format="delta",
            fingerprint=fingerprint_of("delta", version),
            properties={"delta_version": str(version)},
        )

    def _partitioned_asset(self, uri: str) -> Asset | None:
        files = [e for e in self._list_recursive(uri) if format_of_file(e.name)]
        if not files:
            return None
        formats = sorted({format_of_file(e.name) for e in files})
        first_relative = files[0].uri[len(uri) + 1:].split("/")[:-1]
        partition_columns = tuple(m.group("column") for m in map(_PARTITION_DIR.match, first_relative) if m)
        return Asset(
            system=self.system_of(uri),
            location=uri,
            name=Path(uri).name,
            format=formats[0],
            partition_columns=partition_columns,
            size_bytes=sum(e.size for e in files),
            fingerprint=fingerprint_of([(e.uri, e.size, e.mtime) for e in files]),
            properties={
                "sample_files": json.dumps([e.uri for e in _first_files(files)]),
                "file_count": str(len(files)),
                **({"mixed_formats": ",".join(formats)} if len(formats) > 1 else {}),
            },
        )

    def _loose_files_asset(
        self, uri: str, name: str, files: list[_Entry], fmt: str | None, single: bool
    ) -> Asset | None:
        if fmt is None or not files:
            return None
        if single:
            location = uri
        else:
            suffixes = sorted({_suffix_of(e.name) for e in files})
            pattern = suffixes[0] if len(suffixes) == 1 else "{" + ",".join(suffixes) + "}"
            location = f"{uri}/*{pattern}"
        return Asset(
            system=self.system_of(uri),
            location=location,
            name=name if single or not name else f"{name} ({fmt})",
            format=fmt,
            size_bytes=sum(e.size for e in files),
            fingerprint=fingerprint_of([(e.uri, e.size, e.mtime) for e in files]),
            properties={
                "sample_files": json.dumps([e.uri for e in _first_files(files)]),
                "file_count": str(len(files)),
            },
        )

    # -- reading --------------------------------------------------------------------

    def read(self, asset: Asset) -> DataFrame:
        """The whole asset as a DataFrame (lazy; callers bound what they take)."""
        reader = self.spark.read
        if asset.format == "delta":
            return reader.format("delta").load(asset.location)
        if asset.format == "parquet":
            return reader.option("basePath", _base_of(asset.location)).parquet(asset.location)
        if asset.format == "json":
            return reader.json(asset.location)
        if asset.format == "csv":
            return reader.option("header", True).csv(asset.location)
        raise ConnectorError(f"unsupported file format {asset.format!r} at {asset.location}")

    def _read_sample_files(self, asset: Asset) -> DataFrame:
        files = json.loads(asset.properties.get("sample_files", "[]")) or [asset.location]
        reader = self.spark.read if asset.schema is None else self.spark.read.schema(asset.schema)
        if asset.format == "json":
            return reader.json(files)
        if asset.format == "csv":
            return reader.option("header", True).csv(files)
        raise ConnectorError(f"no sample files for format {asset.format!r}")

    def describe(self, asset: Asset) -> Asset:
        """Adds schema, partition columns, size and row estimate (reads metadata, footers or a few files)."""
        if asset.format == "delta":
            return self._describe_delta(asset)
        if asset.format == "parquet":
            df = self.read(asset)
            return replace(asset, schema=df.schema, row_estimate=int(df.count()))
        sample_df = self._read_sample_files(asset)
        sample_rows = int(sample_df.count())
        files = json.loads(asset.properties.get("sample_files", "[]"))
        sampled_bytes = sum(self._file_size(f) for f in files) or 1
        estimate = round(sample_rows * (asset.size_bytes or sampled_bytes) / sampled_bytes)
        return replace(asset, schema=sample_df.schema, row_estimate=int(estimate))

    def _file_size(self, uri: str) -> int:
        return int(self._fs(uri).getFileStatus(self._hadoop_path(uri)).getLen())

    def _describe_delta(self, asset: Asset) -> Asset:
        from delta.tables import DeltaTable

        detail = DeltaTable.forPath(self.spark, asset.location).detail().head()
        df = self.spark.read.format("delta").load(asset.location)
        return replace(
            asset,
            schema=df.schema,
            partition_columns=tuple(detail["partitionColumns"] or ()),
            size_bytes=int(detail["sizeInBytes"] or 0),
            row_estimate=int(df.count()),
            properties={**asset.properties, "file_count": str(detail["numFiles"])},
        )

    def sample(self, asset: Asset, n: int) -> DataFrame:
        """At most ``n`` rows: a LIMIT over Delta / Parquet, the first few files of JSON / CSV."""
        if asset.format in ("delta", "parquet"):
            return self.read(asset).limit(n)
        return self._read_sample_files(asset).limit(n)

    def sample_many(self, assets: list[Asset], n: int) -> list[SampledAsset]:
        """Describes and samples many assets in few Spark jobs (see :meth:`Connector.sample_many`).

        Parquet assets: their schemas are read by concurrent jobs, then the
        assets of one schema are sampled together, up to :data:`_ASSETS_PER_JOB`
        per job (a LIMIT per asset, tagged with the asset); their row estimate is
        the sample's size when it holds fewer than ``n`` rows, otherwise a count
        (one job for the group). An asset of at most 4 MiB is read whole (its
        rows cut to ``n``, counted as read). A group whose job fails is read again asset by
        asset, so that only the unreadable assets fail. Other formats are read
        asset by asset, a few at once.
        """
        outcomes: dict[int, SampledAsset] = {}
        parquet = [i for i, a in enumerate(assets) if a.format == "parquet"]
        others = [i for i, a in enumerate(assets) if a.format != "parquet"]
        with ThreadPoolExecutor(_CONCURRENT_JOBS, thread_name_prefix="ketch-sample") as pool:
            opened = dict(zip(parquet, pool.map(self._open_parquet, [assets[i] for i in parquet])))
            outcomes.update(zip(others, pool.map(lambda a: self.sample_one(a, n), [assets[i] for i in others])))
        readable: dict[str, list[tuple[int, DataFrame]]] = {}
        for index, frame in opened.items():
            if isinstance(frame, BaseException):
                outcomes[index] = SampledAsset(assets[index], error=frame)
            else:
                readable.setdefault(frame.schema.json(), []).append((index, frame))
        for group in readable.values():
            for start in range(0, len(group), _ASSETS_PER_JOB):
                outcomes.update(self._sample_parquet_group(assets, group[start:start + _ASSETS_PER_JOB], n))
        return [outcomes[i] for i in range(len(assets))]

    def _open_parquet(self, asset: Asset) -> DataFrame | BaseException:
        """The asset read lazily with its schema resolved (Spark reads a footer), or why it cannot be."""
        try:
            frame = self.read(asset)
            frame.schema  # noqa: B018 - resolves the schema now, in this thread
        except Exception as exc:  # noqa: BLE001 - corrupt files, access denied...
            return exc
        return frame

    def _sample_parquet_group(self, assets: list[Asset], group: list[tuple[int, DataFrame]],
                              n: int) -> dict[int, SampledAsset]:
        """Samples assets of one schema with one job (and counts the larger ones with one more)."""
        schema = group[0][1].schema
        try:
            tagged = _union([_bounded(frame, assets[i], n).select(F.lit(i).alias(_TAG), F.struct("*").alias(_ROW))
                             for i, frame in group])
            rows: dict[int, list] = {i: [] for i, _ in group}
            for row in tagged.collect():
                rows[row[_TAG]].append(row[_ROW])
            full = [(i, frame) for i, frame in group if len(rows[i]) >= n and not _small(assets[i])]
            counts = {i: len(found) for i, found in rows.items()}
            if full:
                counted = _union([frame.select(F.lit(i).alias(_TAG)) for i, frame in full]).groupBy(_TAG).count()
                counts.update({r[_TAG]: int(r["count"]) for r in counted.collect()})
        except Exception:  # noqa: BLE001 - one unreadable file fails the job: read these assets one by one
            logger.info("a sample job over %d Parquet assets failed; reading them one by one", len(group))
            return {i: self.sample_one(assets[i], n) for i, _ in group}
        return {i: SampledAsset(replace(assets[i], schema=schema, row_estimate=counts.get(i, 0)), rows[i][:n], schema)
                for i, _ in group}


    # -- rights ---------------------------------------------------------------------------------

    def _match_read(self, asset: Asset) -> DataFrame:
        """The read a batch is matched on: the table or Parquet dataset, or JSON/CSV files with the catalog's schema.

        File sets carry each row's file as ``_ketch_path`` (which files hold a match).
        """
        from ketch_spark.connectors.rewrite import FileSetEraser

        if asset.format in ("delta", "parquet"):
            return self.read(asset)
        return FileSetEraser(self.spark, asset, self.cfg.dsr).read()

    def _plan_for(self, asset: Asset, identities_df: DataFrame):  # noqa: ANN202 - (schema -> MatchPlan)
        from ketch_spark.rights.match import batch_rows, match_plan

        identities = batch_rows(identities_df)
        settings = self.cfg.dsr
        return lambda schema: match_plan(schema, asset, identities, settings.org_column,
                                         settings.default_phone_region)

    def _assignments_for(self, asset: Asset):  # noqa: ANN202 - (schema -> assignments)
        from ketch_spark.rights.obfuscate import hmac_key_from_env, obfuscation_assignments

        settings = self.cfg.dsr
        key = hmac_key_from_env(settings)
        return lambda schema: obfuscation_assignments(schema, asset.personal_columns, settings, key)

    def identity_values(self, asset: Asset) -> DataFrame:
        """The asset's normalised identity values (see :meth:`Connector.identity_values`), read once."""
        from ketch_spark.rights.match import identity_values

        settings = self.cfg.dsr
        return identity_values(self.read(asset), asset, settings.org_column, settings.default_phone_region)

    def find(self, asset: Asset, identities_df: DataFrame) -> DataFrame:
        """The asset's rows matching the batch, with ``_request_id`` (see :meth:`Connector.find`).

        Delta and Parquet are read once. JSON and CSV are read once with the
        catalog's schema to find the files holding a match, then those files are
        read whole so that a subject's rows come back with every field.
        """
        from ketch_spark.connectors.rewrite import FileSetEraser
        from ketch_spark.rights.match import with_request_ids

        plan_for = self._plan_for(asset, identities_df)
        read_df = self._match_read(asset)
        plan = plan_for(read_df.schema)
        if asset.format in ("delta", "parquet"):
            return with_request_ids(read_df.where(plan.condition), plan, identities_df)
        eraser = FileSetEraser(self.spark, asset, self.cfg.dsr)
        files = sorted(eraser.matched_files(read_df, plan.condition)[0]) if plan.can_match else []
        if not files:
            return with_request_ids(read_df.drop("_ketch_path").limit(0), plan, identities_df)
        full_df = eraser.read(files, infer=True).drop("_ketch_path")
        full_plan = plan_for(full_df.schema)
        return with_request_ids(full_df.where(full_plan.condition), full_plan, identities_df)

    def count_by_request(self, asset: Asset, identities_df: DataFrame) -> dict[str, int]:
        """As :meth:`Connector.count_by_request`, in one job over the asset (JSON and CSV with the catalog's schema)."""
        from ketch_spark.rights.match import count_matches

        read_df = self._match_read(asset)
        plan = self._plan_for(asset, identities_df)(read_df.schema)
        if not plan.can_match:
            return {}
        return count_matches(read_df.where(plan.condition), plan, identities_df).by_request

    def _erase_batch(self, asset: Asset, identities_df: DataFrame, mode: str):  # noqa: ANN202 - EraseBatch
        from ketch_spark.connectors.delta_rights import EraseBatch

        plan_for = self._plan_for(asset, identities_df)
        assignments_for = self._assignments_for(asset) if mode == "obfuscate" else (lambda schema: {})
        return EraseBatch(plan_for, mode, assignments_for, _attribution(plan_for, identities_df))

    def erase(self, asset: Asset, identities_df: DataFrame, mode: str) -> EraseCounts:
        """Deletes or obfuscates the batch's rows: one statement on Delta, rewritten files otherwise."""
        import uuid

        from ketch_spark.connectors.delta_rights import DeltaEraser
        from ketch_spark.connectors.rewrite import FileSetEraser

        batch = self._erase_batch(asset, identities_df, mode)
        if asset.format == "delta":
            return DeltaEraser(self.spark, asset, self.cfg.dsr).erase(batch.plan_for, mode, batch.assignments_for,
                                                                      batch.attribute)
        eraser = FileSetEraser(self.spark, asset, self.cfg.dsr)
        return eraser.erase(batch.plan_for, mode, uuid.uuid4().hex[:12], batch.assignments_for, batch.attribute)

    def erase_all(self, work: Sequence[tuple[Asset, DataFrame, str]]) -> list[EraseCounts | Exception]:
        """As :meth:`Connector.erase_all`; a Delta table's batches share one purge and vacuum."""
        from ketch_spark.connectors.delta_rights import DeltaEraser

        if len(work) < 2 or any(asset.format != "delta" or asset.location != work[0][0].location
                                for asset, _, _ in work):
            return super().erase_all(work)
        asset = work[0][0]
        results: list[Any] = []
        for _, frame, mode in work:
            try:
                results.append(self._erase_batch(asset, frame, mode))
            except Exception as exc:  # noqa: BLE001 - e.g. no obfuscation key: that batch fails, the others go on
                results.append(exc)
        ready = [r for r in results if not isinstance(r, Exception)]
        erased = iter(DeltaEraser(self.spark, asset, self.cfg.dsr).erase_batches(ready) if ready else [])
        return [r if isinstance(r, Exception) else next(erased) for r in results]

    def verify(self, asset: Asset, identities_df: DataFrame, erased: EraseCounts | None = None) -> VerifyResult:
        """Current rows still matching (and, for Delta, old files still holding erased rows)."""
        from ketch_spark.connectors.delta_rights import DeltaEraser

        if asset.format == "delta":
            return DeltaEraser(self.spark, asset, self.cfg.dsr).verify(self._plan_for(asset, identities_df), erased)
        import datetime as dt

        remaining = int(self.find(asset, identities_df).count())
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0, tzinfo=None).isoformat() + "Z"
        return VerifyResult(remaining=remaining, physical_after=now)


def _attribution(plan_for: Any, identities_df: DataFrame) -> Callable[..., Any]:
    """Counts matched rows in all, per request id and per value of a column (rows of ``matched_df`` all match)."""
    from ketch_spark.rights.match import count_matches

    def attribute(matched_df: DataFrame, by: str | None = None) -> Any:
        return count_matches(matched_df, plan_for(matched_df.schema), identities_df, by)

    return attribute


def _list_local(uri: str) -> list[_Entry]:
    """The entries of a local folder as Hadoop's local FileSystem lists them (sizes, mtimes in ms), read by Python."""
    import os

    base = uri.rstrip("/")
    entries = []
    with os.scandir(base[len("file://"):]) as listed:
        for item in listed:
            stat = item.stat()
            is_dir = item.is_dir()
            entries.append(_Entry(f"{base}/{item.name}", item.name, is_dir, 0 if is_dir else int(stat.st_size),
                                  stat.st_mtime_ns // 1_000_000))
    return sorted(entries, key=lambda e: e.name)


def _small(asset: Asset) -> bool:
    return asset.size_bytes is not None and asset.size_bytes <= _READ_WHOLE_BYTES


def _bounded(frame: DataFrame, asset: Asset, n: int) -> DataFrame:
    """A small asset whole (its rows are cut to ``n`` once collected), a larger one's first ``n`` rows."""
    return frame if _small(asset) else frame.coalesce(1).limit(n)


def _union(frames: list[DataFrame]) -> DataFrame:
    return functools.reduce(DataFrame.union, frames)


def _first_files(files: list[_Entry]) -> list[_Entry]:
    chosen: list[_Entry] = []
    total = 0
    for entry in files:
        if chosen and (len(chosen) >= _SAMPLE_MAX_FILES or total + entry.size > _SAMPLE_MAX_BYTES):
            break
        chosen.append(entry)
        total += entry.size
    return chosen


def _suffix_of(name: str) -> str:
    lowered = name.lower()
    for suffix, _ in _FORMAT_SUFFIXES:
        if lowered.endswith(suffix):
            return name[len(name) - len(suffix):]
    return ""


def _base_of(location: str) -> str:
    return location.rsplit("/", 1)[0] if "*" in location else location
