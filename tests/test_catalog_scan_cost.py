"""Scan cost: a rescan reads listings only, a changed asset is sampled alone, batched sampling classifies as per asset."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from ketch_spark.catalog import AssetCatalog
from ketch_spark.catalog.classify import ClassifierSettings, classify_collected, classify_sample
from ketch_spark.connectors.files import FileConnector
from ketch_spark.tables import delta_table

SETTINGS = ClassifierSettings(sample_rows=20)


def _write_lake(spark, root: Path) -> Path:
    """Five small Parquet assets: two of one flat schema, one nested, one larger than a sample, one corrupt."""
    people = spark.createDataFrame(
        [(i, f"person{i}@example.com", f"+1415555{i:04d}", f"cust-{i:06d}") for i in range(8)],
        "id long, email string, phone string, user_id string")
    people.coalesce(2).write.parquet(str(root / "crm_a"))
    people.where("id < 5").coalesce(1).write.parquet(str(root / "crm_b"))
    spark.range(6).select(
        F.col("id").alias("event_id"),
        F.struct(F.concat(F.lit("u-"), F.col("id").cast("string")).alias("id"),
                 F.concat(F.lit("user"), F.col("id").cast("string"), F.lit("@mail.example.org")).alias("email"))
        .alias("user")).coalesce(1).write.parquet(str(root / "events"))
    spark.range(50).select(F.col("id").alias("order_id"),
                           F.concat(F.lit("buyer"), F.col("id").cast("string"), F.lit("@example.net"))
                           .alias("buyer_email")).coalesce(2).write.parquet(str(root / "orders"))
    (root / "broken").mkdir()
    (root / "broken" / "part-0.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    return root


@pytest.fixture()
def lake(spark, tmp_path):
    return _write_lake(spark, tmp_path / "lake")


def _commits(spark, cfg, name: str) -> int:
    return delta_table(spark, cfg, name).history().count()


def _classes(catalog: AssetCatalog) -> dict[tuple[str, str], tuple]:
    rows = catalog.columns().join(catalog.assets().select("asset_id", "name"), "asset_id").collect()
    return {(r["name"], r["column"]): (r["data_type"], r["category"], r["identity_type"], r["method"]) for r in rows}


def test_batched_sampling_classifies_as_the_per_asset_path(spark, cfg, lake):
    connector = FileConnector(spark, cfg)
    assets = connector.discover(str(lake))
    batched = connector.sample_many(assets, SETTINGS.sample_rows)
    one_by_one = [connector.sample_one(asset, SETTINGS.sample_rows) for asset in assets]
    assert [s.asset.asset_id for s in batched] == [a.asset_id for a in assets]
    for many, one in zip(batched, one_by_one):
        assert (many.error is None) == (one.error is None), many.asset.name
        if one.error is not None:
            assert many.asset.name == "broken"
            continue
        assert many.schema == one.schema
        assert many.asset.row_estimate == one.asset.row_estimate
        assert sorted(map(str, many.rows)) == sorted(map(str, one.rows))
        reference = classify_sample(connector.sample(one.asset, SETTINGS.sample_rows), SETTINGS, one.asset.location,
                                    one.asset.name, one.asset.asset_id)
        assert classify_collected(many.rows, many.schema, SETTINGS, many.asset.location, many.asset.name,
                                  many.asset.asset_id) == reference


def test_first_scan_records_the_unreadable_asset_and_classifies_the_others(spark, cfg, lake):
    catalog = AssetCatalog(spark, cfg, SETTINGS)
    result = catalog.scan(str(lake)).summary()
    assert (result["discovered"], result["sampled"], result["errors"]) == (5, 4, 1)
    assert [e["location"].rsplit("/", 1)[-1] for e in result["error_assets"]] == ["broken"]
    classes = _classes(catalog)
    assert classes[("crm_a", "email")][1:3] == ("email", "email")
    assert classes[("crm_b", "phone")][1] == "phone"
    assert classes[("events", "user.email")][1] == "email"
    assert classes[("orders", "buyer_email")][1] == "email"
    estimates = {r["name"]: r["row_estimate"] for r in catalog.assets().collect()}
    assert (estimates["crm_a"], estimates["crm_b"], estimates["events"], estimates["orders"]) == (8, 5, 6, 50)
    assert _commits(spark, cfg, "catalog_assets") == 2  # creation, then one MERGE


def test_rescan_without_change_reads_no_asset_and_commits_nothing(spark, cfg, lake, monkeypatch):
    catalog = AssetCatalog(spark, cfg, SETTINGS)
    catalog.scan(str(lake))
    shutil.rmtree(lake / "broken")
    catalog.scan(str(lake))  # the broken asset is gone: the lake is all readable now
    commits = {name: _commits(spark, cfg, name) for name in ("catalog_assets", "catalog_columns")}
    before = catalog.assets().drop("properties").collect()

    def no_read(*args, **kwargs):
        raise AssertionError("an unchanged asset was read")

    for method in ("sample_many", "sample_one", "sample", "describe", "read"):
        monkeypatch.setattr(FileConnector, method, no_read)
    again = catalog.scan(str(lake)).summary()
    assert (again["discovered"], again["unchanged"], again["sampled"], again["errors"]) == (4, 4, 0, 0)
    assert {name: _commits(spark, cfg, name) for name in commits} == commits
    assert sorted(map(str, catalog.assets().drop("properties").collect())) == sorted(map(str, before))


def test_a_changed_asset_among_unchanged_ones_is_sampled_alone(spark, cfg, lake, monkeypatch):
    catalog = AssetCatalog(spark, cfg, SETTINGS)
    catalog.scan(str(lake))
    spark.createDataFrame([(100, "late@example.com", "+14155550100", "cust-000100")],
                          "id long, email string, phone string, user_id string") \
        .coalesce(1).write.mode("append").parquet(str(lake / "crm_b"))
    sampled_names: list[list[str]] = []
    original = FileConnector.sample_many

    def recording(self, assets, n):
        sampled_names.append(sorted(a.name for a in assets))
        return original(self, assets, n)

    monkeypatch.setattr(FileConnector, "sample_many", recording)
    commits = _commits(spark, cfg, "catalog_assets")
    changed = catalog.scan(str(lake)).summary()
    assert sampled_names == [["broken", "crm_b"]]  # the failed asset is tried again, nothing else
    assert (changed["sampled"], changed["unchanged"], changed["errors"]) == (1, 3, 1)
    assert _commits(spark, cfg, "catalog_assets") == commits + 1
    estimates = {r["name"]: r["row_estimate"] for r in catalog.assets().collect()}
    assert estimates["crm_b"] == 6
