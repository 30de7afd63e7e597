"""The table registry: idempotent creation, schemas, clear error for a missing table."""

from __future__ import annotations

import pytest

from ketch_spark.errors import KetchError, TableNotFoundError
from ketch_spark.tables import TABLES, ensure_table, ensure_tables, read_table, table_exists, table_path, table_version


def test_every_design_table_is_registered():
    relpaths = {spec.relpath for spec in TABLES.values()}
    assert {"consent/events", "consent/quarantine", "consent/state", "catalog/assets", "catalog/columns",
            "dsr/requests", "dsr/audit"} <= relpaths
    assert TABLES["consent_events"].partition_by == ("event_date",)


def test_creation_is_idempotent_and_schemas_match(spark, cfg):
    ensure_tables(spark, cfg)
    versions = {name: table_version(spark, cfg, name) for name in TABLES}
    ensure_tables(spark, cfg)
    assert {name: table_version(spark, cfg, name) for name in TABLES} == versions
    for name, spec in TABLES.items():
        assert table_path(cfg, name) == f"{cfg.warehouse}/{spec.relpath}"
        df = read_table(spark, cfg, name)
        assert [(f.name, f.dataType) for f in df.schema] == [(f.name, f.dataType) for f in spec.schema]
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{table_path(cfg, 'consent_events')}`").head()
    assert detail.partitionColumns == ["event_date"]


def test_missing_table_names_the_command_that_creates_it(spark, cfg):
    assert not table_exists(spark, cfg, "consent_state")
    with pytest.raises(TableNotFoundError, match="ketch-spark consent compact"):
        read_table(spark, cfg, "consent_state")
    with pytest.raises(KetchError, match="unknown table"):
        ensure_table(spark, cfg, "nope")
