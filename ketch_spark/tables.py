"""The one registry of every Delta table: path under the warehouse, schema, partitioning.

Every module reads and writes its tables through :func:`table_path`,
:func:`ensure_table` and :func:`read_table`, so a table's location and shape are
declared once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from ketch_spark.config import KetchConfig
from ketch_spark.errors import KetchError, TableNotFoundError

__all__ = [
    "TableSpec",
    "TABLES",
    "table_spec",
    "table_path",
    "table_exists",
    "ensure_table",
    "ensure_tables",
    "read_table",
    "delta_table",
    "table_version",
]

_BITMAP = T.ArrayType(T.LongType(), containsNull=False)


@dataclass(frozen=True)
class TableSpec:
    """Declaration of one Delta table.

    Attributes:
        name: Registry key, e.g. ``consent_events``.
        relpath: Path under the warehouse root, e.g. ``consent/events``.
        schema: Column names and types.
        partition_by: Partition columns.
        properties: Delta table properties set at creation.
        created_by: The command users run to create and fill the table (for errors).
    """

    name: str
    relpath: str
    schema: T.StructType
    partition_by: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)
    created_by: str = "ketch-spark demo"


def _fields(*specs: tuple[str, T.DataType, bool]) -> T.StructType:
    return T.StructType([T.StructField(name, dtype, nullable) for name, dtype, nullable in specs])


_DV = {"delta.enableDeletionVectors": "true"}

TABLES: Mapping[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "consent_events",
            "consent/events",
            _fields(
                ("org_id", T.StringType(), False),
                ("user_id", T.StringType(), False),
                ("purpose", T.StringType(), False),
                ("purpose_bit", T.IntegerType(), False),
                ("granted", T.BooleanType(), False),
                ("event_ts", T.TimestampType(), False),
                ("source", T.StringType(), True),
                ("batch_id", T.StringType(), False),
                ("ingested_at", T.TimestampType(), False),
                ("event_date", T.DateType(), False),
            ),
            partition_by=("event_date",),
            properties={"delta.appendOnly": "true", "delta.enableChangeDataFeed": "true"},
            created_by="ketch-spark consent ingest",
        ),
        TableSpec(
            "consent_quarantine",
            "consent/quarantine",
            _fields(
                ("raw", T.StringType(), True),
                ("reason", T.StringType(), False),
                ("detail", T.StringType(), True),
                ("source_file", T.StringType(), True),
                ("batch_id", T.StringType(), False),
                ("ingested_at", T.TimestampType(), False),
            ),
            created_by="ketch-spark consent ingest",
        ),
        TableSpec(
            "consent_state",
            "consent/state",
            _fields(
                ("org_id", T.StringType(), False),
                ("user_id", T.StringType(), False),
                ("granted", _BITMAP, False),
                ("known", _BITMAP, False),
                ("purpose_ts", T.MapType(T.IntegerType(), T.TimestampType(), valueContainsNull=False), False),
                ("updated_at", T.TimestampType(), False),
            ),
            properties=_DV,
            created_by="ketch-spark consent compact",
        ),
        TableSpec(
            "catalog_assets",
            "catalog/assets",
            _fields(
                ("asset_id", T.StringType(), False),
                ("system", T.StringType(), False),
                ("location", T.StringType(), False),
                ("name", T.StringType(), True),
                ("format", T.StringType(), True),
                ("schema_json", T.StringType(), True),
                ("partition_columns", T.ArrayType(T.StringType()), True),
                ("size_bytes", T.LongType(), True),
                ("row_estimate", T.LongType(), True),
                ("fingerprint", T.StringType(), True),
                ("properties", T.MapType(T.StringType(), T.StringType()), True),
                ("status", T.StringType(), False),
                ("error", T.StringType(), True),
                ("first_seen_at", T.TimestampType(), True),
                ("scanned_at", T.TimestampType(), False),
            ),
            properties=_DV,
            created_by="ketch-spark catalog scan",
        ),
        TableSpec(
            "catalog_columns",
            "catalog/columns",
            _fields(
                ("asset_id", T.StringType(), False),
                ("column", T.StringType(), False),
                ("data_type", T.StringType(), True),
                ("category", T.StringType(), True),
                ("identity_type", T.StringType(), True),
                ("confidence", T.DoubleType(), True),
                ("method", T.StringType(), True),
                ("scanned_at", T.TimestampType(), False),
            ),
            properties=_DV,
            created_by="ketch-spark catalog scan",
        ),
        TableSpec(
            "dsr_requests",
            "dsr/requests",
            _fields(
                ("request_id", T.StringType(), False),
                ("org_id", T.StringType(), False),
                ("kind", T.StringType(), False),
                ("mode", T.StringType(), True),
                ("identities", T.MapType(T.StringType(), T.StringType()), False),
                ("received_at", T.TimestampType(), False),
                ("due_at", T.TimestampType(), False),
                ("status", T.StringType(), False),
                ("submitted_at", T.TimestampType(), False),
                ("updated_at", T.TimestampType(), False),
                ("last_run_id", T.StringType(), True),
                ("error", T.StringType(), True),
                ("finished_at", T.TimestampType(), True),
            ),
            properties=_DV,
            created_by="ketch-spark dsr submit",
        ),
        TableSpec(
            "dsr_audit",
            "dsr/audit",
            _fields(
                ("run_id", T.StringType(), False),
                ("request_ids", T.ArrayType(T.StringType()), False),
                ("asset_id", T.StringType(), False),
                ("location", T.StringType(), True),
                ("action", T.StringType(), False),
                ("mode", T.StringType(), True),
                ("rows_matched", T.LongType(), True),
                ("rows_changed", T.LongType(), True),
                ("rows_by_request", T.MapType(T.StringType(), T.LongType()), True),
                ("versions", T.StringType(), True),
                ("version_before", T.LongType(), True),
                ("version_after", T.LongType(), True),
                ("files_matched", T.LongType(), True),
                ("files_rewritten", T.LongType(), True),
                ("bytes_read", T.LongType(), True),
                ("bytes_rewritten", T.LongType(), True),
                ("duration_seconds", T.DoubleType(), True),
                ("physical_after", T.TimestampType(), True),
                ("status", T.StringType(), False),
                ("error", T.StringType(), True),
                ("notes", T.StringType(), True),
                ("started_at", T.TimestampType(), True),
                ("finished_at", T.TimestampType(), False),
            ),
            created_by="ketch-spark dsr run",
        ),
    )
}


def table_spec(name: str) -> TableSpec:
    """Returns the declaration of table ``name``.

    Raises:
        KetchError: The name is not in the registry.
    """
    try:
        return TABLES[name]
    except KeyError:
        raise KetchError(f"unknown table {name!r}; registered tables: {', '.join(TABLES)}") from None


def table_path(cfg: KetchConfig, name: str) -> str:
    """Location of table ``name`` under ``cfg.warehouse``."""
    return cfg.path(table_spec(name).relpath)


def table_exists(spark: SparkSession, cfg: KetchConfig, name: str) -> bool:
    """Whether table ``name`` exists as a Delta table."""
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, table_path(cfg, name))


def ensure_table(spark: SparkSession, cfg: KetchConfig, name: str):  # noqa: ANN201 - DeltaTable
    """Creates table ``name`` if it does not exist (idempotent) and returns it as a DeltaTable."""
    from delta.tables import DeltaTable

    spec = table_spec(name)
    builder = DeltaTable.createIfNotExists(spark).location(table_path(cfg, name)).addColumns(spec.schema)
    if spec.partition_by:
        builder = builder.partitionedBy(*spec.partition_by)
    for key, value in spec.properties.items():
        builder = builder.property(key, value)
    return builder.execute()


def ensure_tables(spark: SparkSession, cfg: KetchConfig, names: Iterable[str] | None = None) -> None:
    """Creates every table in ``names`` (default: all registered) that does not exist."""
    for name in names or TABLES:
        ensure_table(spark, cfg, name)


def _require(spark: SparkSession, cfg: KetchConfig, name: str) -> str:
    path = table_path(cfg, name)
    if not table_exists(spark, cfg, name):
        raise TableNotFoundError(
            f"table {name} does not exist at {path}; create it with `{table_spec(name).created_by}`"
        )
    return path


def read_table(
    spark: SparkSession, cfg: KetchConfig, name: str, version: int | None = None, timestamp: str | None = None
) -> DataFrame:
    """Reads table ``name``, optionally at a Delta version or timestamp.

    Raises:
        TableNotFoundError: The table does not exist; the message names the command that creates it.
    """
    path = _require(spark, cfg, name)
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    elif timestamp is not None:
        reader = reader.option("timestampAsOf", timestamp)
    return reader.load(path)


def delta_table(spark: SparkSession, cfg: KetchConfig, name: str):  # noqa: ANN201 - DeltaTable
    """Returns table ``name`` as a DeltaTable.

    Raises:
        TableNotFoundError: The table does not exist.
    """
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, _require(spark, cfg, name))


def table_version(spark: SparkSession, cfg: KetchConfig, name: str) -> int:
    """Current Delta version of table ``name``."""
    return delta_table(spark, cfg, name).history(1).select("version").head()[0]
