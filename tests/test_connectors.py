"""Connectors against real stores: local and s3a files (moto), PostgreSQL, DynamoDB (moto)."""

from __future__ import annotations

import pytest
from services import AWS_SECRET_ACCESS_KEY, PG_PASSWORD, SeededStores, free_port, with_connectors

from ketch_spark.connectors import Asset, asset_id_of, connector_for, redact, secret_values, system_of_uri
from ketch_spark.connectors.dynamodb import DynamoDbConnector, items_to_json_lines
from ketch_spark.connectors.files import FileConnector, format_of_file, normalise_file_uri
from ketch_spark.connectors.jdbc import JdbcConnector
from ketch_spark.errors import ConfigError, ConnectorError

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def stores_cfg(seeded_stores: SeededStores, base_config, tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("connectors-warehouse")
    return with_connectors(base_config.with_warehouse(warehouse), seeded_stores.connectors)


def _by_name(assets: list[Asset]) -> dict[str, Asset]:
    return {a.name: a for a in assets}


def test_uri_dispatch_and_file_names():
    assert system_of_uri("s3a://bucket/x") == "s3" and system_of_uri("s3://bucket/x") == "s3"
    assert system_of_uri("/tmp/x") == "file" and system_of_uri("file:///tmp/x") == "file"
    assert system_of_uri("jdbc:postgresql://h:5432/db") == "postgres"
    assert system_of_uri("dynamodb://eu-west-1") == "dynamodb"
    with pytest.raises(ConfigError, match="no connector"):
        system_of_uri("ftp://host/x")
    assert normalise_file_uri("file:/tmp/a/") == "file:///tmp/a"
    assert normalise_file_uri("s3://b/p/") == "s3a://b/p"
    assert [format_of_file(n) for n in ("a.snappy.parquet", "b.jsonl.gz", "c.json", "d.csv", "e.txt")] == [
        "parquet", "json", "json", "csv", None]
    assert asset_id_of("file", "file:///x") == asset_id_of("file", "file:///x") != asset_id_of("s3", "file:///x")


@pytest.mark.parametrize("where", ["local", "s3a"])
def test_files_discovery_finds_one_asset_per_dataset(spark, stores_cfg, seeded_stores, where):
    uri = str(seeded_stores.lake) if where == "local" else seeded_stores.s3_lake
    connector = connector_for(uri, spark, stores_cfg)
    assert isinstance(connector, FileConnector)
    assets = _by_name(connector.discover(uri))
    assert set(assets) == {"customers", "events", "logs", "exports"}
    assert {name: a.format for name, a in assets.items()} == {
        "customers": "delta", "events": "parquet", "logs": "json", "exports": "csv"}
    assert assets["events"].partition_columns == ("event_date",)
    assert all(a.system == ("file" if where == "local" else "s3") for a in assets.values())
    assert all(a.location.startswith(connector.location_prefix(uri) + "/") for a in assets.values())
    assert all(a.fingerprint for a in assets.values())
    delta = connector.describe(assets["customers"])
    assert delta.row_estimate == 3 and "email" in delta.schema.fieldNames()
    logs = connector.describe(assets["logs"])
    assert logs.row_estimate == 6 and {"user", "payload", "items"} <= set(logs.schema.fieldNames())
    events_sample = connector.sample(connector.describe(assets["events"]), 2).collect()
    assert len(events_sample) == 2 and "event_date" in events_sample[0].asDict()


def test_files_errors_are_connector_errors(spark, stores_cfg, seeded_stores):
    connector = FileConnector(spark, stores_cfg)
    with pytest.raises(ConnectorError, match="empty"):
        connector.discover(str(seeded_stores.bad / "empty"))
    with pytest.raises(ConnectorError, match="nothing found"):
        connector.discover(str(seeded_stores.bad / "missing"))
    corrupt = connector.discover(str(seeded_stores.bad / "corrupt"))
    assert [a.format for a in corrupt] == ["parquet"]
    with pytest.raises(Exception):
        connector.sample(connector.describe(corrupt[0]), 5).collect()


def test_jdbc_discovery_and_sample(spark, stores_cfg, seeded_stores):
    uri = seeded_stores.postgres.jdbc_url
    connector = connector_for(uri, spark, stores_cfg)
    assert isinstance(connector, JdbcConnector)
    assets = _by_name(connector.discover(uri))
    assert set(assets) == {"public.customers", "public.orders", "public.restricted"}
    assert assets["public.customers"].properties["primary_key"] == "id"
    assert assets["public.orders"].properties["primary_key"] == ""
    assert "no primary key" in assets["public.orders"].properties["note"]
    assert assets["public.customers"].row_estimate == 3
    assert all(PG_PASSWORD not in repr(a) for a in assets.values())
    rows = connector.sample(assets["public.customers"], 2).collect()
    assert len(rows) == 2 and "@" in rows[0]["email"]
    assert len(connector.discover(uri + "/public.orders")) == 1
    with pytest.raises(Exception, match="permission denied"):
        connector.sample(assets["public.restricted"], 2).collect()
    wrong = stores_cfg.section("connectors")["jdbc"][1]["url"]
    with pytest.raises(ConnectorError, match="password authentication failed") as denied:
        connector.discover(wrong)
    assert "wrong-Password" not in str(denied.value)
    with pytest.raises(ConnectorError, match="no connectors.jdbc entry"):
        connector.discover("jdbc:postgresql://127.0.0.1:1/unknown")


def test_dynamodb_discovery_and_mixed_shapes(spark, stores_cfg):
    connector = connector_for("dynamodb://", spark, stores_cfg)
    assert isinstance(connector, DynamoDbConnector)
    assets = _by_name(connector.discover("dynamodb://"))
    assert {"profiles", "mixed_items"} <= set(assets)
    assert assets["profiles"].properties["hash_key"] == "user_id"
    assert assets["profiles"].row_estimate == 3
    profiles = connector.sample(assets["profiles"], 10).collect()
    assert len(profiles) == 3 and profiles[0]["device"]["idfa"]
    mixed = connector.sample(assets["mixed_items"], 10)
    assert mixed.count() == 4
    assert dict(mixed.dtypes)["contact"] == "string"  # a map in one item, a string in another
    assert len(connector.discover("dynamodb://us-east-1/prof")) == 1


def test_dynamodb_unreachable_endpoint_is_a_connector_error(spark, stores_cfg):
    section = stores_cfg.section("connectors")
    unreachable = {**section["dynamodb"], "endpoint_url": f"http://127.0.0.1:{free_port()}", "max_attempts": 1,
                   "connect_timeout": 1}
    connector = DynamoDbConnector(spark, with_connectors(stores_cfg, {**section, "dynamodb": unreachable}))
    with pytest.raises(ConnectorError, match="cannot list DynamoDB tables") as unreachable_error:
        connector.discover("dynamodb://")
    assert AWS_SECRET_ACCESS_KEY not in str(unreachable_error.value)


def test_items_to_json_lines_handles_every_attribute_type():
    lines = items_to_json_lines([{"n": {"N": "1.5"}, "i": {"N": "2"}, "ss": {"SS": ["b", "a"]}, "b": {"B": b"\x01"},
                                  "m": {"M": {"x": {"NULL": True}}}, "bool": {"BOOL": False}}])
    assert lines == ['{"b": "AQ==", "bool": false, "i": 2, "m": {"x": null}, "n": 1.5, "ss": ["a", "b"]}']


def test_secrets_are_collected_and_redacted(stores_cfg, monkeypatch):
    monkeypatch.setenv("KETCH_TEST_DB_PASSWORD", "env-Secret-123")
    cfg = with_connectors(stores_cfg, {**stores_cfg.section("connectors"),
                                       "extra": {"password_env": "KETCH_TEST_DB_PASSWORD"}})
    secrets = secret_values(cfg)
    assert PG_PASSWORD in secrets and "env-Secret-123" in secrets
    text = f"login with {PG_PASSWORD} and env-Secret-123 at jdbc:postgresql://user:pw@host/db password=hunter2"
    cleaned = redact(text, secrets)
    assert PG_PASSWORD not in cleaned and "env-Secret-123" not in cleaned
    assert "user:pw" not in cleaned and "hunter2" not in cleaned
    assert len(redact("x" * 5000)) <= 600
