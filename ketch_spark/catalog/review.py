"""Reviewed labels and the review queue of the catalog.

A person confirms or corrects a column's classification with
:func:`label_column` (``ketch-spark catalog label``); the decision is stored in
``catalog_labels`` (catalog/labels) with who made it and when, applied at once to
``catalog_columns`` (so the rights engine uses it) and kept by every later scan.

Every scan that samples an asset again (new fingerprint: new files, a new Delta
version, a changed schema) compares the new classification of each column with
the previous one and records a difference in ``catalog_changes``
(catalog/changes); a column labelled with a category whose values no longer
look like it is recorded too (the label still wins). :func:`review_queue` (``ketch-spark catalog review``) lists the
columns a person should look at: low-confidence or context-inferred
classifications and the changes no later label has settled.
"""

from __future__ import annotations

import datetime as dt
import difflib
import getpass
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ketch_spark.catalog.classify import CATEGORIES, ColumnClass, identity_type_of
from ketch_spark.config import KetchConfig
from ketch_spark.errors import ConfigError
from ketch_spark.tables import delta_table, ensure_table, read_table, table_spec

__all__ = ["Label", "asset_named", "label_column", "read_labels", "labelled_classes", "record_changes", "review_queue",
           "REVIEW_BELOW"]

_LABELS, _CHANGES, _COLUMNS, _ASSETS = "catalog_labels", "catalog_changes", "catalog_columns", "catalog_assets"
#: Classifications below this confidence are listed for review.
REVIEW_BELOW = 0.8
#: Before any scan: the ``since`` of a change of an asset the catalog does not hold yet.
_LONG_AGO = dt.datetime(1970, 1, 2)
LABEL_METHOD = "label"


@dataclass(frozen=True)
class Label:
    """A reviewed decision on one column.

    Attributes:
        asset_id: The asset.
        column: Dot path of the column.
        category: The confirmed category; ``None`` when reviewed as not personal.
        labelled_by: Who decided.
        labelled_at: When (UTC).
        note: Free text.
    """

    asset_id: str
    column: str
    category: str | None
    labelled_by: str
    labelled_at: dt.datetime
    note: str | None = None


def read_labels(spark: SparkSession, cfg: KetchConfig, asset_ids: Iterable[str] | None = None) -> dict[
        str, dict[str, Label]]:
    """Labels per asset id and column (every asset, or ``asset_ids`` only)."""
    ensure_table(spark, cfg, _LABELS)
    labels_df = read_table(spark, cfg, _LABELS)
    if asset_ids is not None:
        wanted = sorted(set(asset_ids))
        if not wanted:
            return {}
        labels_df = labels_df.where(F.col("asset_id").isin(wanted))
    out: dict[str, dict[str, Label]] = {}
    for row in labels_df.collect():
        out.setdefault(row["asset_id"], {})[row["column"]] = Label(**row.asDict())
    return out


def labelled_classes(classes: list[ColumnClass], labels: Mapping[str, Label]) -> tuple[list[ColumnClass],
                                                                                     list[tuple[str, str]]]:
    """``classes`` with the labels applied, and (column, reason) for each labelled column whose values
    no longer look like its label."""
    drifted = []
    by_column = {c.column: c for c in classes}
    for column, label in labels.items():
        found = by_column.get(column)
        if found is None:
            continue
        if label.category is not None and found.category != label.category \
                and found.method not in (LABEL_METHOD, "override"):
            looks = f"look like {found.category}" if found.category else "no longer look personal"
            drifted.append((column, f"drift: labelled {label.category}, the values now {looks}"))
        by_column[column] = ColumnClass(column, found.data_type, label.category, identity_type_of(label.category),
                                        1.0, LABEL_METHOD)
    return [by_column[c] for c in sorted(by_column)], drifted


def record_changes(spark: SparkSession, cfg: KetchConfig, classified: Mapping[str, list[ColumnClass]],
                   previous: Mapping[str, Mapping[str, Any]], drifted: Mapping[str, list[tuple[str, str]]],
                   now: dt.datetime, scanned_at: Mapping[str, dt.datetime | None] | None = None) -> int:
    """Records in catalog_changes the columns of re-sampled assets whose category changed, and the drifts.

    A scan writes an asset's catalog_assets row last, after its changes and columns: a change of the asset
    detected after the row's ``scanned_at`` was recorded by a scan killed before it wrote the row, and is not
    recorded again by the scan that repeats it.

    Args:
        classified: The new classes per asset id.
        previous: Per ``asset_id|column``, the previous catalog_columns row (category, confidence).
        drifted: Per asset id, (column, reason) of labelled columns whose values drifted.
        now: Detection time.
        scanned_at: Per asset id, the ``scanned_at`` of its catalog_assets row before this scan (none: new).

    Returns:
        Changes found (recorded now, or already by a scan killed before it finished).
    """
    rows = []
    for asset_id, classes in classified.items():
        reasons = dict(drifted.get(asset_id, []))
        for column_class in classes:
            before = previous.get(f"{asset_id}|{column_class.column}")
            reason = reasons.get(column_class.column)
            if reason is None and before is not None and before["category"] != column_class.category:
                reason = "rescan: the new sample is classified differently"
            if reason is None:
                continue
            rows.append((asset_id, column_class.column, before["category"] if before else None,
                         before["confidence"] if before else None, column_class.category,
                         float(column_class.confidence), reason, now))
    if rows:
        _insert_changes_once(spark, cfg, rows, scanned_at or {})
    return len(rows)


def _insert_changes_once(spark: SparkSession, cfg: KetchConfig, rows: list[tuple],
                         scanned_at: Mapping[str, dt.datetime | None]) -> None:
    """Inserts change ``rows`` but those detected for their asset and column, with their reason, after the
    asset's ``scanned_at`` (recorded by an interrupted scan)."""
    ensure_table(spark, cfg, _CHANGES)
    schema = table_spec(_CHANGES).schema
    source_schema = T.StructType([*schema.fields, T.StructField("since", T.TimestampType(), False)])
    source_df = spark.createDataFrame([(*row, scanned_at.get(row[0]) or _LONG_AGO) for row in rows], source_schema)
    (
        delta_table(spark, cfg, _CHANGES).alias("t")
        .merge(source_df.alias("s"), "t.asset_id = s.asset_id AND t.`column` = s.`column` AND t.reason = s.reason "
                                     "AND t.detected_at > s.since")
        .whenNotMatchedInsert(values={f.name: f"s.`{f.name}`" for f in schema.fields})
        .execute()
    )


def asset_named(asset: str) -> Column:
    """Whether a ``catalog_assets`` row is the asset ``asset`` names: its id, location, name, or local path."""
    return ((F.col("asset_id") == asset) | (F.col("location") == asset) | (F.col("name") == asset)
            | (F.col("location") == F.lit("file://" + asset)))


def _resolve_asset(spark: SparkSession, cfg: KetchConfig, asset: str) -> Any:
    assets = read_table(spark, cfg, _ASSETS).where(asset_named(asset)).collect()
    if not assets:
        raise ConfigError(f"no catalogued asset has id, location or name {asset!r}; `ketch-spark catalog list` "
                          "shows them")
    if len(assets) > 1:
        raise ConfigError(f"{asset!r} names {len(assets)} assets ({', '.join(sorted(r['location'] for r in assets))});"
                          " give the location or the asset id")
    return assets[0]


def label_column(spark: SparkSession, cfg: KetchConfig, asset: str, column: str, category: str | None,
                 labelled_by: str | None = None, note: str | None = None) -> Label:
    """Records a reviewed classification of ``column`` of ``asset``; every later scan keeps it.

    Args:
        asset: Asset id, location or name.
        column: Dot path of a column of that asset (as the catalog lists it).
        category: One of :data:`~ketch_spark.catalog.classify.CATEGORIES`; ``None`` for not personal.
        labelled_by: Who decides (default: the OS user).
        note: Free text kept with the label.

    Raises:
        ConfigError: Unknown category, asset or column.
    """
    if category is not None and category not in CATEGORIES:
        raise ConfigError(f"unknown category {category!r}; one of {', '.join(CATEGORIES)} (or --not-personal)")
    for name in (_ASSETS, _COLUMNS, _LABELS):
        ensure_table(spark, cfg, name)
    row = _resolve_asset(spark, cfg, asset)
    asset_id = row["asset_id"]
    known = [r["column"] for r in read_table(spark, cfg, _COLUMNS).where(F.col("asset_id") == asset_id)
             .select("column").collect()]
    if column not in known:
        close = difflib.get_close_matches(column, known, n=5, cutoff=0.6)
        raise ConfigError(f"asset {row['location']} has no column {column!r}"
                          + (f"; did you mean {', '.join(close)}?" if close else f"; its columns: "
                             f"{', '.join(sorted(known)[:20])}"))
    label = Label(asset_id, column, category, labelled_by or getpass.getuser(),
                  dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), note)
    labels_df = spark.createDataFrame([tuple(label.__dict__[f.name] for f in table_spec(_LABELS).schema.fields)],
                                      table_spec(_LABELS).schema)
    (delta_table(spark, cfg, _LABELS).alias("t")
     .merge(labels_df.alias("s"), "t.asset_id = s.asset_id AND t.`column` = s.`column`")
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
    (delta_table(spark, cfg, _COLUMNS).update(
        (F.col("asset_id") == asset_id) & (F.col("column") == column),
        {"category": F.lit(category).cast("string"), "identity_type": F.lit(identity_type_of(category)).cast("string"),
         "confidence": F.lit(1.0), "method": F.lit(LABEL_METHOD)}))
    return label


def review_queue(spark: SparkSession, cfg: KetchConfig, below: float = REVIEW_BELOW) -> DataFrame:
    """Columns to review: personal classifications below ``below`` confidence or inferred from context
    alone, and recorded changes not settled by a later label (assets not gone).

    Columns: asset_id, location, column, category, identity_type, confidence, method, reason, detected_at.
    """
    for name in (_ASSETS, _COLUMNS, _LABELS, _CHANGES):
        ensure_table(spark, cfg, name)
    assets_df = read_table(spark, cfg, _ASSETS).where(F.col("status") != "gone").select("asset_id", "location")
    columns_df = read_table(spark, cfg, _COLUMNS)
    labels_df = read_table(spark, cfg, _LABELS).select("asset_id", "column", "labelled_at")
    uncertain = (
        columns_df.where(F.col("category").isNotNull() & ~F.col("method").isin(LABEL_METHOD, "override")
                         & ((F.col("confidence") < below) | F.col("method").startswith("context")))
        .withColumn("reason", F.when(F.col("confidence") < below, F.lit("low confidence"))
                    .otherwise(F.lit("inferred from the enclosing struct's or the asset's name")))
        .withColumn("detected_at", F.col("scanned_at"))
    )
    changes = (
        read_table(spark, cfg, _CHANGES).alias("c")
        .join(labels_df.alias("l"), ["asset_id", "column"], "left")
        .where(F.col("l.labelled_at").isNull() | (F.col("l.labelled_at") < F.col("c.detected_at")))
        .join(columns_df.select("asset_id", "column", "identity_type", "method"), ["asset_id", "column"], "left")
        .select("asset_id", "column", "c.category", "identity_type", "c.confidence", "method",
                F.concat(F.col("c.reason"), F.lit(" (was "), F.coalesce("c.previous_category", F.lit("not personal")),
                         F.lit(")")).alias("reason"), "c.detected_at")
    )
    fields = ["asset_id", "column", "category", "identity_type", "confidence", "method", "reason", "detected_at"]
    return (uncertain.select(*fields).unionByName(changes.select(*fields))
            .join(assets_df, "asset_id")
            .select("asset_id", "location", *fields[1:])
            .orderBy("location", "column", "detected_at"))
