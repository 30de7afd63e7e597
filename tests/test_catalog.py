"""AssetCatalog end to end: one scan over every store kind, rescans, gone assets, errors, secrets."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from services import (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    PG_PASSWORD,
    WRONG_PASSWORD,
    SeededStores,
    with_connectors,
)

import ketch_spark as ks
from ketch_spark.catalog import AssetCatalog
from ketch_spark.catalog.catalog import asset_from_row
from ketch_spark.errors import ConfigError

pytestmark = pytest.mark.services

_SECRETS = (PG_PASSWORD, WRONG_PASSWORD, AWS_SECRET_ACCESS_KEY, AWS_ACCESS_KEY_ID)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def scanned(spark, seeded_stores: SeededStores, base_config, tmp_path_factory):
    """The catalog after one scan of every store, its result and the log lines written meanwhile."""
    root = tmp_path_factory.mktemp("catalog")
    local_lake = root / "lake"
    shutil.copytree(seeded_stores.lake, local_lake)  # a private copy: the tests below change it
    cfg = with_connectors(
        base_config.with_warehouse(root / "warehouse"),
        seeded_stores.connectors,
        catalog={"sample_rows": 50, "overrides": [{"asset": "file://*/exports", "column": "dob", "exclude": True}]},
    )
    jdbc = [entry["url"] for entry in seeded_stores.connectors["jdbc"]]
    uris = {
        "local": str(local_lake),
        "s3": seeded_stores.s3_lake,
        "postgres": jdbc[0],
        "dynamodb": "dynamodb://",
        "corrupt": str(seeded_stores.bad / "corrupt"),
        "empty": str(seeded_stores.bad / "empty"),
        "denied": jdbc[1],
        "unreachable": jdbc[2],
    }
    handler = _Records()
    package_logger = logging.getLogger("ketch_spark")
    old_level = package_logger.level
    package_logger.setLevel(logging.DEBUG)
    package_logger.addHandler(handler)
    try:
        catalog = ks.AssetCatalog(spark, cfg)
        result = catalog.scan(*uris.values())
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(old_level)
    return catalog, result, uris, handler.lines, local_lake


def _found(rows, **filters) -> set[tuple[str, str]]:
    """(asset short name, column) of the search rows matching ``filters``."""
    return {
        (r["location"].rsplit("/", 1)[-1], r["column"])
        for r in rows
        if all(r[key] == value for key, value in filters.items())
    }


def test_first_scan_finds_the_seeded_personal_columns(scanned):
    catalog, result, uris, _, _ = scanned
    summary = result.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert (summary["discovered"], summary["sampled"], summary["unchanged"], summary["gone"]) == (14, 12, 0, 0)
    assert summary["errors"] == 5 and len(summary["error_assets"]) == 5
    personal = catalog.search().collect()
    emails = catalog.search(identity_type="email").collect()
    assert {r["identity_type"] for r in emails} == {"email"}
    assert len(emails) == sum(1 for r in personal if r["identity_type"] == "email")
    assert {("customers", "email"), ("logs", "user.contact.email"), ("public.customers", "email"),
            ("public.customers", "preferences.contact.email"), ("profiles", "email"),
            ("mixed_items", "email")} <= _found(emails)
    assert {r["system"] for r in emails} == {"file", "s3", "postgres", "dynamodb"}
    assert _found(personal, identity_type="email_sha256") >= {("customers", "profile.contact.email_sha256"),
                                                              ("public.orders", "customer_email_sha256")}
    assert {("events", "user_id"), ("logs", "user.id"), ("profiles", "user_id")} <= _found(personal,
                                                                                            identity_type="user_id")
    assert {("events", "idfa"), ("profiles", "device.idfa")} <= _found(personal, identity_type="device_id")
    assert {("customers", "phone"), ("public.customers", "phone")} <= _found(personal, identity_type="phone")
    assert ("logs", "items.card_number") in _found(personal, category="credit_card")
    assert ("logs", "user.name") in _found(personal, category="person_name")
    assert ("logs", "payload.client.ip") in _found(personal, category="ip_address")
    s3_personal = _found(catalog.search(system="s3").collect())
    exported = ("first_name", "last_name", "gender", "age_range", "income_band", "dob")
    assert {("exports", c) for c in exported} <= s3_personal
    assert ("exports", "dob") in _found(personal, system="s3", category="date_of_birth")
    assert ("exports", "dob") not in _found(personal, system="file")  # excluded by the override
    assert not {("events", "order_number"), ("public.orders", "order_number"), ("exports", "content_sha256")} & \
        _found(personal)
    assets = {(r["system"], r["name"]): r for r in catalog.assets().collect()}
    assert assets["file", "events"]["partition_columns"] == ["event_date"]
    assert assets["file", "events"]["format"] == "parquet"
    assert assets["file", "customers"]["format"] == "delta" and assets["file", "customers"]["row_estimate"] == 3
    orders = assets["postgres", "public.orders"]
    assert "no primary key" in orders["properties"]["note"]
    restored = asset_from_row(orders)
    assert restored.asset_id == orders["asset_id"] and "customer_email_sha256" in restored.schema.fieldNames()


def test_every_failure_is_recorded_on_its_asset(scanned):
    catalog, result, uris, _, _ = scanned
    errors = {r["location"]: r["error"] for r in catalog.assets().where(F.col("status") == "error").collect()}
    assert len(errors) == 5
    messages = " | ".join(errors.values())
    assert "password authentication failed" in messages          # access denied at login
    assert "permission denied for table restricted" in messages  # access denied on a table
    assert "empty location" in messages                          # an empty prefix
    unreachable = next(e for loc, e in errors.items() if loc.startswith(uris["unreachable"]))
    assert "cannot read the catalog" in unreachable
    corrupt = next(e for loc, e in errors.items() if loc.endswith("/corrupt"))
    assert corrupt  # a corrupt Parquet file
    assert {e["error"] for e in result.summary()["error_assets"]} == set(errors.values())


def test_credentials_never_leave_the_config(scanned):
    catalog, result, _, log_lines, _ = scanned
    texts = [json.dumps(result.summary()), "\n".join(log_lines)]
    texts += [json.dumps(r.asDict(), default=str) for r in catalog.assets().collect()]
    texts += [json.dumps(r.asDict(), default=str) for r in catalog.columns().collect()]
    assert log_lines  # the scan did log
    for text in texts:
        for secret in _SECRETS:
            assert secret not in text


def _comparable_assets(catalog: AssetCatalog):
    """Assets without the scan time, maps as JSON (chispa sorts rows, and maps cannot be sorted)."""
    return catalog.assets().drop("scanned_at").withColumn(
        "properties", F.to_json(F.array_sort(F.map_entries("properties"))))


def test_rescans_are_incremental_idempotent_and_mark_gone_assets(spark, scanned, seeded_stores):
    catalog, _, uris, _, local_lake = scanned
    good = [uris["local"], uris["s3"], uris["postgres"], uris["dynamodb"]]
    assets_before, columns_before = [spark.createDataFrame(df.collect(), df.schema)
                                     for df in (_comparable_assets(catalog), catalog.columns())]
    again = catalog.scan(*good).summary()
    assert (again["discovered"], again["unchanged"], again["sampled"], again["errors"]) == (13, 12, 0, 1)
    assert_df_equality(_comparable_assets(catalog), assets_before, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(catalog.columns(), columns_before, ignore_row_order=True, ignore_nullable=True)

    spark.createDataFrame([(4, "new.person@example.com", "+14155550199", "New Person")],
                          "customer_id long, email string, phone string, full_name string") \
        .write.format("delta").mode("append").option("mergeSchema", "true").save(str(local_lake / "crm" / "customers"))
    shutil.rmtree(local_lake / "exports")
    changed = catalog.scan(uris["local"]).summary()
    assert (changed["discovered"], changed["sampled"], changed["unchanged"], changed["gone"]) == (3, 1, 2, 1)
    statuses = {r["name"]: (r["status"], r["row_estimate"]) for r in
                catalog.assets().where(F.col("system") == "file").collect()}
    assert statuses["exports"][0] == "gone" and statuses["customers"] == ("ok", 4)
    assert ("exports", "first_name") not in _found(catalog.search(system="file").collect())
    assert catalog.assets().count() == assets_before.count()  # gone assets are kept


def test_unknown_uri_kind_is_a_config_error(spark, cfg):
    with pytest.raises(ConfigError, match="no connector"):
        AssetCatalog(spark, cfg).scan("ftp://example.com/data")
    with pytest.raises(ConfigError, match="catalog.overrides"):
        AssetCatalog(spark, with_connectors(cfg, {}, catalog={"overrides": [{"column": "x", "category": "nope"}]}))
