"""AssetCatalog: what data assets exist, where, and which of their columns are personal.

The catalog lives in two registered Delta tables, ``catalog_assets`` (one row per
asset) and ``catalog_columns`` (one row per asset column, nested columns named by
dot path). A scan:

* discovers the assets under each URI through its connector (listings, Delta
  versions, table statistics only);
* samples and classifies only assets that are new, changed (another fingerprint)
  or failed last time, many per Spark job where the connector can
  (:meth:`~ketch_spark.connectors.Connector.sample_many`); an unchanged asset is
  not read again: a rescan of files reads their listing only;
* marks assets previously seen under a scanned URI and not found any more as
  ``gone`` (never deletes them);
* records a failure on the asset (status ``error``) and goes on with the rest;
* keeps reviewed labels (catalog/labels, :mod:`ketch_spark.catalog.review`) over
  the classifier, and records in catalog/changes the columns of a re-sampled
  asset that are classified differently, or no longer look like their label;
* MERGEs the rows it changed (new, changed, failed and gone assets and the
  columns of sampled ones) keyed by ``asset_id`` and ``(asset_id, column)``, one
  commit per table and scan: the changes and columns first, the asset rows last,
  so that a scan killed in between leaves the assets it sampled to be sampled
  again (an asset's row, with its new fingerprint, says it is done); the changes
  such a scan recorded are not recorded twice
  (:func:`~ketch_spark.catalog.review.record_changes`). An unchanged asset's row is left as it is, so its
  ``scanned_at`` is the time of the scan that last wrote it (found it new,
  changed, failed or gone), and a scan that finds nothing changed commits
  nothing: running it twice changes nothing.

Secrets from the connectors config never reach the tables, the summary or the logs.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ketch_spark.catalog.classify import ClassifierSettings, ColumnClass, classify_collected
from ketch_spark.catalog.review import (
    REVIEW_BELOW,
    Label,
    asset_named,
    label_column,
    labelled_classes,
    read_labels,
    record_changes,
    review_queue,
)
from ketch_spark.config import KetchConfig
from ketch_spark.commits import retry_on_conflict
from ketch_spark.connectors import (
    Asset,
    Connector,
    SampledAsset,
    connector_for,
    describe_error,
    redact,
    secret_values,
    system_of_uri,
)
from ketch_spark.errors import KetchError
from ketch_spark.faults import fault_point
from ketch_spark.progress import report_progress
from ketch_spark.tables import ensure_table, read_table, table_spec

__all__ = ["AssetCatalog", "ScanResult", "asset_from_row"]

logger = logging.getLogger(__name__)

_ASSETS = "catalog_assets"
_COLUMNS = "catalog_columns"
_OK, _ERROR, _GONE = "ok", "error", "gone"
#: What :meth:`AssetCatalog._row_without_read` returns for an unchanged asset: nothing to write.
_UNCHANGED: dict[str, Any] = {}


@dataclass
class ScanResult:
    """What one scan did.

    Attributes:
        uris: The scanned URIs (credentials removed).
        discovered: Assets found (including those that failed to read).
        sampled: Assets sampled and classified (new, changed or failed before).
        unchanged: Assets whose fingerprint did not change (not read again).
        gone: Assets seen before under a scanned URI and not found any more.
        errors: Assets or URIs that failed; each is in ``error_assets``.
        personal_columns: Personal columns found in the sampled assets.
        changed_columns: Columns of re-sampled assets classified differently than before, or
            whose values no longer look like their label (catalog/changes; ``catalog review``).
        error_assets: ``{"location", "error"}`` per failure (redacted).
        seconds: Wall time of the scan.
    """

    uris: list[str] = field(default_factory=list)
    discovered: int = 0
    sampled: int = 0
    unchanged: int = 0
    gone: int = 0
    errors: int = 0
    personal_columns: int = 0
    changed_columns: int = 0
    error_assets: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """A JSON-able one-line summary."""
        return {
            "uris": list(self.uris),
            "discovered": self.discovered,
            "sampled": self.sampled,
            "unchanged": self.unchanged,
            "gone": self.gone,
            "errors": self.errors,
            "personal_columns": self.personal_columns,
            "changed_columns": self.changed_columns,
            "error_assets": [dict(e) for e in self.error_assets],
            "seconds": round(self.seconds, 3),
        }


def _asset_key_condition() -> str:
    return "t.asset_id = s.asset_id"


def _column_key_condition() -> str:
    return "t.asset_id = s.asset_id AND t.`column` = s.`column`"


#: Columns of :meth:`AssetCatalog.personal_columns` and :meth:`AssetCatalog.search`.
_FOUND_COLUMNS = ("asset_id", "system", "location", "name", "format", "column", "data_type", "category",
                  "identity_type", "confidence", "method", "asset_status")


def asset_from_row(row: Any) -> Asset:
    """Rebuilds a connector :class:`Asset` from a ``catalog_assets`` row (for readers such as the rights engine)."""
    record = row.asDict() if hasattr(row, "asDict") else dict(row)
    schema_json = record.get("schema_json")
    return Asset(
        system=record["system"],
        location=record["location"],
        name=record.get("name") or record["location"],
        format=record.get("format"),
        schema=T.StructType.fromJson(json.loads(schema_json)) if schema_json else None,
        partition_columns=tuple(record.get("partition_columns") or ()),
        size_bytes=record.get("size_bytes"),
        row_estimate=record.get("row_estimate"),
        fingerprint=record.get("fingerprint"),
        properties=dict(record.get("properties") or {}),
        error=record.get("error"),
    )


class AssetCatalog:
    """The Delta-backed catalog of data assets and their classified columns.

    Args:
        spark: SparkSession.
        cfg: Configuration (warehouse, ``connectors`` and ``catalog`` sections).
        settings: Classifier settings; read from ``cfg.section("catalog")`` when ``None``.

    Example:
        >>> catalog = AssetCatalog(spark, cfg)
        >>> catalog.scan("s3a://lake/raw", "jdbc:postgresql://db:5432/warehouse").summary()
        >>> catalog.search(identity_type="email").show()
    """

    def __init__(self, spark: SparkSession, cfg: KetchConfig, settings: ClassifierSettings | None = None) -> None:
        self.spark = spark
        self.cfg = cfg
        self.settings = settings or ClassifierSettings.from_config(cfg)
        self._secrets = secret_values(cfg)

    # -- reading --------------------------------------------------------------------------

    def _ensure_tables(self) -> None:
        ensure_table(self.spark, self.cfg, _ASSETS)
        ensure_table(self.spark, self.cfg, _COLUMNS)

    def assets(self) -> DataFrame:
        """Every asset ever seen (``status``: ok, error or gone)."""
        self._ensure_tables()
        return read_table(self.spark, self.cfg, _ASSETS)

    def columns(self, identity_type: str | None = None, asset: str | None = None) -> DataFrame:
        """Every column of every sampled asset, with its classification (the ``catalog_columns`` table).

        Args:
            identity_type: Keep the columns that give this DSR identity type only
                (email, email_sha256, phone, user_id, device_id, ...).
            asset: Keep the columns of this asset only: its id, location or name.
        """
        self._ensure_tables()
        columns_df = read_table(self.spark, self.cfg, _COLUMNS)
        if identity_type is not None:
            columns_df = columns_df.where(F.col("identity_type") == identity_type)
        if asset is not None:
            chosen_df = self.assets().where(asset_named(asset)).select("asset_id")
            columns_df = columns_df.join(chosen_df, "asset_id", "left_semi")
        return columns_df

    def personal_columns(self, identity_type: str | None = None, asset: str | None = None) -> DataFrame:
        """Personal columns of the assets not gone, with the asset's system, location, name and format.

        Args:
            identity_type: Keep the columns that give this DSR identity type only.
            asset: Keep the columns of this asset only: its id, location or name.

        Returns:
            Columns asset_id, system, location, name, format, column, data_type, category,
            identity_type, confidence, method, asset_status; ordered by location and column.
        """
        assets_df = self.assets().where(F.col("status") != _GONE)
        if asset is not None:
            assets_df = assets_df.where(asset_named(asset))
        assets_df = assets_df.select(
            "asset_id", "system", "location", "name", "format", F.col("status").alias("asset_status")
        )
        found_df = self.columns(identity_type=identity_type).where(F.col("category").isNotNull())
        return (found_df.join(assets_df, "asset_id")
                .select(*_FOUND_COLUMNS)
                .orderBy("location", "column"))

    def search(self, text: str | None = None, *, category: str | None = None, identity_type: str | None = None,
               system: str | None = None) -> DataFrame:
        """Personal columns of assets not gone, as :meth:`personal_columns`, found by text or filters.

        Args:
            text: Keep the columns whose asset location or name, column path, category or
                identity type contains this text, ignoring case (``"email"`` finds
                ``user.contact.email``, every ``email_sha256`` column and the ``crm/emails`` asset).
            category: Keep this category only.
            identity_type: Keep columns that give this DSR identity type only.
            system: Keep assets of this system only (file, s3, postgres, dynamodb).
        """
        found_df = self.personal_columns(identity_type=identity_type)
        if text is not None and text.strip():
            needle = text.strip().lower()
            searched = ("location", "name", "column", "category", "identity_type")
            found_df = found_df.where(functools.reduce(
                lambda either, name: either | F.lower(F.coalesce(F.col(name), F.lit(""))).contains(needle),
                searched[1:], F.lower(F.col(searched[0])).contains(needle)))
        if category is not None:
            found_df = found_df.where(F.col("category") == category)
        if system is not None:
            found_df = found_df.where(F.col("system") == system)
        return found_df

    def load_assets(self, status: str = _OK) -> list[Asset]:
        """Assets with ``status`` as connector :class:`Asset` objects."""
        return [asset_from_row(r) for r in self.assets().where(F.col("status") == status).collect()]

    # -- scanning ---------------------------------------------------------------------------

    def scan(self, *uris: str) -> ScanResult:
        """Discovers, samples and classifies the assets under ``uris``.

        Args:
            uris: ``file://`` paths or local paths, ``s3a://bucket/prefix``,
                ``jdbc:postgresql://host:port/db[/schema[.table]]``, ``dynamodb://[region[/prefix]]``.

        Returns:
            The counts of the scan; failures are in it and on the assets, not raised.

        Raises:
            ConfigError: A URI has no connector, or the config is invalid.
        """
        started = time.perf_counter()
        connectors = [(uri, connector_for(uri, self.spark, self.cfg)) for uri in uris]
        self._ensure_tables()
        previous = self._read_previous()
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        result = ScanResult(uris=[redact(u, self._secrets) for u in uris])
        rows: dict[str, dict[str, Any]] = {}
        classified: dict[str, list[ColumnClass]] = {}
        seen: set[str] = set()
        for uri, connector in connectors:
            self._scan_uri(uri, connector, previous, now, seen, rows, classified, result)
        drifted = self._apply_labels(classified)
        previous_columns = self._previous_columns(classified)
        fault_point("catalog.scan.before_write")
        if classified:
            scanned_at = {asset_id: previous.get(asset_id, {}).get("scanned_at") for asset_id in classified}
            result.changed_columns = record_changes(self.spark, self.cfg, classified, previous_columns, drifted, now,
                                                    scanned_at)
        self._write(rows, classified, now)
        fault_point("catalog.scan.after_commit")
        result.seconds = time.perf_counter() - started
        logger.info("catalog scan: %s", json.dumps(result.summary()))
        return result

    def _read_previous(self) -> dict[str, dict[str, Any]]:
        """``asset_id`` -> its ``catalog_assets`` row, for every asset ever seen."""
        return {r["asset_id"]: r.asDict() for r in read_table(self.spark, self.cfg, _ASSETS).collect()}

    def _apply_labels(self, classified: dict[str, list[ColumnClass]]) -> dict[str, list[tuple[str, str]]]:
        """Replaces classes by their reviewed labels (in place); per asset, the labelled columns that drifted."""
        labels = read_labels(self.spark, self.cfg, classified) if classified else {}
        drifted = {}
        for asset_id, asset_labels in labels.items():
            classified[asset_id], drifted[asset_id] = labelled_classes(classified[asset_id], asset_labels)
        return drifted

    def _previous_columns(self, classified: dict[str, list[ColumnClass]]) -> dict[str, dict[str, Any]]:
        """``asset_id|column`` -> the category and confidence stored before this scan, for the sampled assets."""
        if not classified:
            return {}
        rows = (read_table(self.spark, self.cfg, _COLUMNS).where(F.col("asset_id").isin(sorted(classified)))
                .select("asset_id", "column", "category", "confidence").collect())
        return {f"{r['asset_id']}|{r['column']}": r.asDict() for r in rows}

    # -- review -----------------------------------------------------------------------------

    def label(self, asset: str, column: str, category: str | None, labelled_by: str | None = None,
              note: str | None = None) -> Label:
        """Records a reviewed classification that every later scan keeps (see :mod:`ketch_spark.catalog.review`)."""
        return label_column(self.spark, self.cfg, asset, column, category, labelled_by, note)

    def labels(self) -> DataFrame:
        """Every reviewed label (asset_id, column, category, labelled_by, labelled_at, note)."""
        ensure_table(self.spark, self.cfg, "catalog_labels")
        return read_table(self.spark, self.cfg, "catalog_labels")

    def review(self, below: float = REVIEW_BELOW) -> DataFrame:
        """Columns a person should review (see :func:`ketch_spark.catalog.review.review_queue`)."""
        return review_queue(self.spark, self.cfg, below)

    def _scan_uri(self, uri: str, connector: Connector, previous: dict[str, dict], now: dt.datetime,
                  found_before: set[str], rows: dict[str, dict], classified: dict[str, list[ColumnClass]],
                  result: ScanResult) -> None:
        """Adds to ``rows`` the asset rows to write for ``uri`` (``found_before``: ids handled by earlier URIs)."""
        try:
            assets = connector.discover(uri)
        except KetchError as exc:
            assets = [self._uri_error_asset(uri, connector, str(exc))]
        except Exception as exc:  # noqa: BLE001 - any store failure is recorded, the scan goes on
            assets = [self._uri_error_asset(uri, connector, describe_error(exc, self._secrets))]
        else:
            result.discovered += len(assets)
        found = {a.asset_id for a in assets}
        to_sample = []
        for asset in assets:
            if asset.asset_id in found_before:
                continue
            found_before.add(asset.asset_id)
            row = self._row_without_read(asset, previous.get(asset.asset_id), now, result)
            if row is None:
                to_sample.append(asset)
            elif row is not _UNCHANGED:
                rows[asset.asset_id] = row
        label = f"scan {redact(uri, self._secrets)}"
        report_progress(label, len(assets) - len(to_sample), len(assets), unit="assets")
        for sampled in connector.sample_many(to_sample, self.settings.sample_rows) if to_sample else []:
            asset_id = sampled.asset.asset_id
            rows[asset_id] = self._sampled_row(sampled, previous.get(asset_id), now, classified, result)
        if to_sample:
            report_progress(label, len(assets), len(assets), unit="assets")
        for asset_id, prev in previous.items():
            if asset_id in found or asset_id in found_before or prev["status"] == _GONE:
                continue
            if prev["system"] == system_of_uri(uri) and connector.covers(uri, prev["location"]):
                rows[asset_id] = {**prev, "status": _GONE, "scanned_at": now}
                found_before.add(asset_id)
                result.gone += 1

    def _uri_error_asset(self, uri: str, connector: Connector, message: str) -> Asset:
        location = connector.location_prefix(uri)
        return Asset(system_of_uri(uri), location, redact(uri, self._secrets), None,
                     error=redact(message, self._secrets))

    def _row_without_read(self, asset: Asset, prev: dict | None, now: dt.datetime,
                          result: ScanResult) -> dict[str, Any] | None:
        """The asset's row when it needs no read (failed discovery, or unchanged: :data:`_UNCHANGED`), else ``None``."""
        if asset.error is not None:
            return self._error_row(asset, prev, now, asset.error, result)
        unchanged = asset.fingerprint is not None and prev is not None and prev["fingerprint"] == asset.fingerprint
        if unchanged and prev["status"] == _OK:
            result.unchanged += 1
            return _UNCHANGED
        return None

    def _sampled_row(self, sampled: SampledAsset, prev: dict | None, now: dt.datetime,
                     classified: dict[str, list[ColumnClass]], result: ScanResult) -> dict[str, Any]:
        described = sampled.asset
        if sampled.error is not None:
            return self._error_row(described, prev, now, describe_error(sampled.error, self._secrets), result)
        try:
            classes = classify_collected(sampled.rows, sampled.schema, self.settings, described.location,
                                         described.name, described.asset_id)
        except Exception as exc:  # noqa: BLE001 - values the classifier cannot handle fail this asset only
            return self._error_row(described, prev, now, describe_error(exc, self._secrets), result)
        schema = described.schema if described.schema is not None else sampled.schema
        classified[described.asset_id] = classes
        result.sampled += 1
        result.personal_columns += sum(1 for c in classes if c.category)
        return self._asset_row(described, schema.json(), _OK, None, prev, now)

    def _error_row(self, asset: Asset, prev: dict | None, now: dt.datetime, message: str,
                   result: ScanResult) -> dict[str, Any]:
        message = redact(message, self._secrets)
        result.errors += 1
        result.error_assets.append({"location": redact(asset.location, self._secrets), "error": message})
        logger.warning("catalog: %s failed: %s", redact(asset.location, self._secrets), message)
        row = self._asset_row(asset, asset.schema_json, _ERROR, message, prev, now)
        if prev is not None:
            for key in ("schema_json", "size_bytes", "row_estimate", "format", "partition_columns"):
                if row[key] in (None, []) and prev.get(key) is not None:
                    row[key] = prev[key]
        return row

    def _asset_row(self, asset: Asset, schema_json: str | None, status: str, error: str | None, prev: dict | None,
                   now: dt.datetime) -> dict[str, Any]:
        return {
            "asset_id": asset.asset_id,
            "system": asset.system,
            "location": redact(asset.location, self._secrets),
            "name": redact(asset.name, self._secrets),
            "format": asset.format,
            "schema_json": schema_json,
            "partition_columns": list(asset.partition_columns),
            "size_bytes": asset.size_bytes,
            "row_estimate": asset.row_estimate,
            "fingerprint": asset.fingerprint,
            "properties": {k: redact(str(v), self._secrets) for k, v in asset.properties.items()},
            "status": status,
            "error": error,
            "first_seen_at": (prev or {}).get("first_seen_at") or now,
            "scanned_at": now,
        }

    # -- writing ---------------------------------------------------------------------------

    def _write(self, rows: dict[str, dict[str, Any]], classified: dict[str, list[ColumnClass]],
               now: dt.datetime) -> None:
        """MERGEs the columns of the sampled assets, then the asset rows.

        The asset rows come last: an asset whose row holds its new fingerprint is not sampled again, so a scan
        killed before writing it must leave the asset to be sampled (and its columns written) by the next scan.
        """
        from ketch_spark.tables import delta_table

        if classified:
            self._write_columns(classified, now)
        fault_point("catalog.scan.after_columns_commit")
        if rows:
            schema = table_spec(_ASSETS).schema
            source_df = self.spark.createDataFrame([tuple(r[f.name] for f in schema.fields) for r in rows.values()],
                                                   schema)
            retry_on_conflict(
                table_spec(_ASSETS).relpath,
                lambda: (
                    delta_table(self.spark, self.cfg, _ASSETS).alias("t")
                    .merge(source_df.alias("s"), _asset_key_condition())
                    .whenMatchedUpdateAll()
                    .whenNotMatchedInsertAll()
                    .execute()
                ),
                self.cfg.delta,
                what="catalog scan",
            )

    def _write_columns(self, classified: dict[str, list[ColumnClass]], now: dt.datetime) -> None:
        from ketch_spark.tables import delta_table

        schema = table_spec(_COLUMNS).schema
        records = {
            (asset_id, c.column): (asset_id, c.column, c.data_type, c.category, c.identity_type, float(c.confidence),
                                   c.method, now)
            for asset_id, classes in classified.items()
            for c in classes
        }
        source_df = self.spark.createDataFrame(list(records.values()), schema)
        sampled_ids = ", ".join(f"'{asset_id}'" for asset_id in sorted(classified))
        retry_on_conflict(
            table_spec(_COLUMNS).relpath,
            lambda: (
                delta_table(self.spark, self.cfg, _COLUMNS).alias("t")
                .merge(source_df.alias("s"), _column_key_condition())
                .whenMatchedUpdateAll()
                .whenNotMatchedInsertAll()
                .whenNotMatchedBySourceDelete(condition=f"t.asset_id IN ({sampled_ids})")
                .execute()
            ),
            self.cfg.delta,
            what="catalog scan",
        )
