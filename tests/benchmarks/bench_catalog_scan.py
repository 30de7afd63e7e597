"""Catalog scan cost: a first scan of many small assets, a rescan with nothing changed, a rescan after a few changes.

Data: ``ASSETS`` small Parquet datasets (500; 60 in quick mode), one folder each
holding a few files, written by Spark from inline rows in one job and moved into
their own folders. The assets come in five column shapes (flat customer rows,
events with a nested ``user`` struct, orders, device logs, and a non-personal
metrics table) so that the scan meets different schemas, as in a lake.

Timed with ``AssetCatalog.scan`` on one ``file://`` URI:

* the first scan (empty catalog): seconds and assets per second (target >= 5);
* a rescan with nothing changed: seconds and its ratio to the first scan
  (target <= 0.05);
* a rescan after 5 assets got one more file: seconds (reported).

The scan's main steps are timed by a step clock so the notes say where the time goes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ketch_spark.catalog import AssetCatalog

from timing import RunTiming, ratio

ASSETS, QUICK_ASSETS = 500, 60
ROWS_PER_ASSET = 40
FILES_PER_ASSET = 3
CHANGED_ASSETS = 5

_STEP_TARGETS: tuple[tuple[str, str, str], ...] = (
    ("ketch_spark.connectors.files:FileConnector", "discover", "discover (listing, fingerprints)"),
    ("ketch_spark.catalog.catalog:AssetCatalog", "_read_previous", "read the previous catalog"),
    ("ketch_spark.connectors.files:FileConnector", "sample_many", "describe and sample (Spark jobs)"),
    ("ketch_spark.connectors.files:FileConnector", "_open_parquet", "  schema reads (per asset, 4 at once)"),
    ("ketch_spark.connectors.files:FileConnector", "_sample_parquet_group", "  sample jobs (per schema group)"),
    ("ketch_spark.catalog.catalog", "classify_collected", "classify (Python)"),
    ("ketch_spark.catalog.catalog:AssetCatalog", "_apply_labels", "labels"),
    ("ketch_spark.catalog.catalog:AssetCatalog", "_previous_columns", "previous columns"),
    ("ketch_spark.catalog.catalog:AssetCatalog", "_write", "catalog MERGE"),
    ("ketch_spark.catalog.review", "record_changes", "record changes"),
)

_SHAPES = {
    "customers": ("customer_id", "concat('cust-', lpad(cast(id as string), 8, '0')) as user_id",
                  "concat('person', id, '@example.com') as email",
                  "concat('+1415555', lpad(cast(id % 10000 as string), 4, '0')) as phone",
                  "element_at(array('Ada Lovelace', 'Alan Turing', 'Grace Hopper'), cast(id % 3 + 1 as int)) "
                  "as full_name", "cast(id % 5 as int) as plan_tier"),
    "events": ("event_id", "named_struct('id', concat('u-', cast(id as string)), "
               "'email', concat('user', id, '@mail.example.org')) as user",
               "element_at(array('view', 'click', 'buy'), cast(id % 3 + 1 as int)) as event_type",
               "timestamp_millis(1700000000000 + id * 1000) as event_time"),
    "orders": ("order_id", "concat('buyer', id, '@example.net') as buyer_email",
               "cast(id * 3.5 as double) as amount", "element_at(array('EUR', 'USD'), cast(id % 2 + 1 as int)) "
               "as currency"),
    "devices": ("device_row", "uuid() as device_id",
                "concat('10.0.', cast(id % 250 as string), '.', cast(id % 200 as string)) as ip_address",
                "element_at(array('ios', 'android', 'web'), cast(id % 3 + 1 as int)) as platform"),
    "metrics": ("metric_id", "element_at(array('cpu', 'mem', 'disk'), cast(id % 3 + 1 as int)) as metric",
                "cast(id % 97 as double) as value", "timestamp_millis(1700000000000 + id * 60000) as measured_at"),
}


def write_assets(spark: SparkSession, root: Path, assets: int) -> list[Path]:
    """Writes ``assets`` small Parquet datasets under ``root`` (one folder each); returns their folders."""
    staging = root.parent / f"{root.name}_staging"
    names = sorted(_SHAPES)
    for index, shape in enumerate(names):
        key, *expressions = _SHAPES[shape]
        ids = list(range(index, assets, len(names)))
        if not ids:
            continue
        (spark.range(len(ids) * ROWS_PER_ASSET)
         .withColumn("asset", F.element_at(F.array(*[F.lit(i) for i in ids]),
                                           (F.col("id") % len(ids) + 1).cast("int")))
         .selectExpr("asset", f"id as {key}", *expressions)
         .repartition(FILES_PER_ASSET)
         .write.partitionBy("asset").mode("overwrite").parquet(str(staging / shape)))
    root.mkdir(parents=True, exist_ok=True)
    folders = []
    for shape in names:
        for partition in sorted((staging / shape).glob("asset=*")):
            target = root / f"{shape}_{int(partition.name.split('=')[1]):04d}"
            partition.rename(target)
            folders.append(target)
    return sorted(folders)


def change_assets(spark: SparkSession, folders: list[Path], count: int) -> list[Path]:
    """Adds one Parquet file to each of the first ``count`` customer folders (a new batch of rows)."""
    changed = [f for f in folders if f.name.startswith("customers_")][:count]
    for folder in changed:
        extra = folder.parent / f"{folder.name}_extra"
        spark.read.parquet(str(folder)).limit(5).coalesce(1).write.parquet(str(extra))
        for part in extra.glob("part-*.parquet"):
            part.rename(folder / f"extra-{part.name}")
        for leftover in extra.iterdir():
            leftover.unlink()
        extra.rmdir()
    return changed


def _timing() -> RunTiming:
    return RunTiming(_STEP_TARGETS)


def run(spark: SparkSession, cfg, workdir: Path, quick: bool) -> dict:
    assets = QUICK_ASSETS if quick else ASSETS
    lake = workdir / "lake"
    started = time.perf_counter()
    folders = write_assets(spark, lake, assets)
    write_seconds = time.perf_counter() - started
    catalog = AssetCatalog(spark, cfg)
    catalog.assets().count()  # the catalog tables exist before the clock starts, as after a first install

    first, rescan, after_change = _timing(), _timing(), _timing()
    first_result = first.run(lambda: catalog.scan(str(lake)))
    rescan_result = rescan.run(lambda: catalog.scan(str(lake)))
    changed = change_assets(spark, folders, CHANGED_ASSETS)
    changed_result = after_change.run(lambda: catalog.scan(str(lake)))

    first_summary, rescan_summary = first_result.summary(), rescan_result.summary()
    changed_summary = changed_result.summary()
    assert first_summary["sampled"] == len(folders) and first_summary["errors"] == 0, first_summary
    assert rescan_summary["unchanged"] == len(folders) and rescan_summary["sampled"] == 0, rescan_summary
    assert changed_summary["sampled"] == len(changed), changed_summary
    commits = _commits(spark, cfg)

    figures = {
        "assets": len(folders),
        "first_scan_seconds": round(first.total, 2),
        "first_scan_assets_per_second": round(len(folders) / first.total, 2),
        "rescan_unchanged_seconds": round(rescan.total, 2),
        "rescan_to_first_ratio": ratio(rescan.total, first.total),
        "rescan_5_changed_seconds": round(after_change.total, 2),
        "catalog_commits_per_scan": commits,
    }
    targets = {"first_scan_assets_per_second": ">= 5", "rescan_to_first_ratio": "<= 0.05"}
    notes = [
        f"{len(folders)} Parquet assets of {ROWS_PER_ASSET} rows in about {FILES_PER_ASSET} files each, five column "
        f"shapes (flat, nested struct, orders, devices, non-personal metrics), written by Spark in "
        f"{write_seconds:.0f} s (not timed); {os.cpu_count()} cores, local[2]",
        f"first scan: {first.clock.describe(first.total)}",
        f"rescan, nothing changed: {rescan.clock.describe(rescan.total)}",
        f"rescan, {len(changed)} assets with one more file: {after_change.clock.describe(after_change.total)}",
        "catalog commits per scan: the Delta versions of catalog_assets and catalog_columns written by the three "
        "scans, per scan (a scan that changes no row commits nothing)",
    ]
    return {"figures": figures, "targets": targets, "notes": notes}


def _commits(spark: SparkSession, cfg) -> str:
    from ketch_spark.tables import delta_table

    counts = []
    for name in ("catalog_assets", "catalog_columns"):
        history = delta_table(spark, cfg, name).history().select("version", "operation").collect()
        counts.append(f"{name} {sum(1 for r in history if r['operation'] != 'CREATE TABLE')}")
    return ", ".join(counts) + " (3 scans)"
