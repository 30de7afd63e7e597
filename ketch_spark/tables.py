"""The one registry of every Delta table: path under the warehouse, schema, partitioning.

Every module reads and writes its tables through :func:`table_path`,
:func:`ensure_table` and :func:`read_table`, so a table's location and shape are
declared once, here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from py4j.protocol import Py4JError
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ketch_spark.config import KetchConfig
from ketch_spark.errors import KetchError, TableNotFoundError
from ketch_spark.session import is_connect_session

__all__ = [
    "TableSpec",
    "TABLES",
    "table_spec",
    "table_path",
    "table_exists",
    "ensure_table",
    "ensure_tables",
    "read_table",
    "append_rows",
    "delta_table",
    "table_version",
    "TableVersion",
    "delta_sql_name",
    "delta_table_version",
    "current_version",
    "delta_history",
]

logger = logging.getLogger(__name__)

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
            "catalog_labels",
            "catalog/labels",
            _fields(
                ("asset_id", T.StringType(), False),
                ("column", T.StringType(), False),
                ("category", T.StringType(), True),  # null: reviewed as not personal
                ("labelled_by", T.StringType(), False),
                ("labelled_at", T.TimestampType(), False),
                ("note", T.StringType(), True),
            ),
            created_by="ketch-spark catalog label",
        ),
        TableSpec(
            "catalog_changes",
            "catalog/changes",
            _fields(
                ("asset_id", T.StringType(), False),
                ("column", T.StringType(), False),
                ("previous_category", T.StringType(), True),
                ("previous_confidence", T.DoubleType(), True),
                ("category", T.StringType(), True),
                ("confidence", T.DoubleType(), True),
                ("reason", T.StringType(), False),
                ("detected_at", T.TimestampType(), False),
            ),
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
            "dsr_ledger",
            "dsr/ledger",
            _fields(
                ("org_id", T.StringType(), False),
                ("identity_type", T.StringType(), False),
                ("identity_hmac", T.StringType(), False),
                ("request_id", T.StringType(), False),
                ("mode", T.StringType(), False),
                ("erased_at", T.TimestampType(), False),
                ("run_id", T.StringType(), False),
            ),
            created_by="ketch-spark dsr run",
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
    """Creates table ``name`` if it does not exist (idempotent) and returns it as a DeltaTable.

    Two commands creating the same table at once conflict in Delta; the loser
    runs again (:func:`ketch_spark.commits.retry_on_conflict`) and finds the table.
    """
    from delta.tables import DeltaTable

    from ketch_spark.commits import retry_on_conflict

    spec = table_spec(name)

    def create():  # noqa: ANN202 - DeltaTable
        builder = DeltaTable.createIfNotExists(spark).location(table_path(cfg, name)).addColumns(spec.schema)
        if spec.partition_by:
            builder = builder.partitionedBy(*spec.partition_by)
        for key, value in spec.properties.items():
            builder = builder.property(key, value)
        return builder.execute()

    return retry_on_conflict(spec.relpath, create, cfg.delta, what="creation")


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


def append_rows(spark: SparkSession, cfg: KetchConfig, name: str, rows: Sequence[tuple]) -> None:
    """Appends ``rows`` (tuples in the table's column order) to table ``name`` in one commit, creating it if missing."""
    ensure_table(spark, cfg, name)
    df = spark.createDataFrame(list(rows), table_spec(name).schema)
    df.write.format("delta").mode("append").save(table_path(cfg, name))


def delta_table(spark: SparkSession, cfg: KetchConfig, name: str):  # noqa: ANN201 - DeltaTable
    """Returns table ``name`` as a DeltaTable.

    Raises:
        TableNotFoundError: The table does not exist.
    """
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, _require(spark, cfg, name))


def table_version(spark: SparkSession, cfg: KetchConfig, name: str) -> int:
    """Current Delta version of table ``name`` (see :func:`current_version`).

    Raises:
        TableNotFoundError: The table does not exist.
    """
    return current_version(spark, cfg, name).version


# --------------------------------------------------------------------------- versions


@dataclass(frozen=True)
class TableVersion:
    """One committed version of a Delta table, named so that it cannot be taken for another.

    A version number alone repeats: delete a table and create it again at the same
    path, and its versions restart at 0. The table id (``metaData.id``, a UUID
    Delta writes when the table is created) does not, nor, in practice, does the
    commit's time; anything keyed by a committed version (a kept key set, a
    remembered count) is keyed by the whole value.

    Attributes:
        location: Path of the table, as given.
        table_id: Delta table id.
        version: Version number.
        committed_ms: Commit time of that version, milliseconds since the epoch
            (the time ``DESCRIBE HISTORY`` shows).
    """

    location: str
    table_id: str
    version: int
    committed_ms: int


def delta_sql_name(path: str) -> str:
    """The path as a Delta SQL table name: ``delta.`path```."""
    return "delta.`" + path.replace("`", "``") + "`"


def _missing_table(error: AnalysisException) -> bool:
    return (error.getCondition() or "") in ("DELTA_MISSING_DELTA_TABLE", "DELTA_TABLE_NOT_FOUND", "PATH_NOT_FOUND")


def _version_from_log(spark: SparkSession, path: str) -> TableVersion:
    """The latest version from the Delta log in this process's JVM: no Spark job (classic sessions only)."""
    jvm = spark.sparkContext._jvm
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    snapshot = log.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty())
    if snapshot.version() < 0:
        raise TableNotFoundError(f"no Delta table at {path}")
    return TableVersion(path, str(snapshot.metadata().id()), int(snapshot.version()), int(snapshot.timestamp()))


def _version_from_sql(spark: SparkSession, path: str) -> TableVersion:
    """The latest version through SQL (``DESCRIBE DETAIL`` and ``DESCRIBE HISTORY``): works over Spark Connect."""
    try:
        detail = spark.sql(f"DESCRIBE DETAIL {delta_sql_name(path)}").select("id").head()
        latest = delta_history(spark, path, limit=1).head()
    except AnalysisException as error:
        if _missing_table(error):
            raise TableNotFoundError(f"no Delta table at {path}") from None
        raise
    return TableVersion(path, str(detail["id"]), int(latest["version"]), int(latest["committed_ms"]))


def delta_table_version(spark: SparkSession, path: str) -> TableVersion:
    """The current version of the Delta table at ``path``, with the table's id and commit time.

    On a classic session it is read from the Delta log in the driver (no Spark
    job, ~10 ms); over Spark Connect, or where that log API is missing, from
    ``DESCRIBE DETAIL`` and ``DESCRIBE HISTORY`` (two commands, a few hundred ms).

    Raises:
        TableNotFoundError: No Delta table at ``path``.
    """
    if not is_connect_session(spark):
        try:
            return _version_from_log(spark, path)
        except Py4JError:
            logger.debug("DeltaLog unavailable; reading the version of %s through SQL", path)
    return _version_from_sql(spark, path)


def current_version(spark: SparkSession, cfg: KetchConfig, name: str) -> TableVersion:
    """The current version of table ``name`` (see :func:`delta_table_version`).

    Raises:
        TableNotFoundError: The table does not exist; the message names the command that creates it.
    """
    path = table_path(cfg, name)
    try:
        return delta_table_version(spark, path)
    except TableNotFoundError:
        raise TableNotFoundError(
            f"table {name} does not exist at {path}; create it with `{table_spec(name).created_by}`"
        ) from None


def delta_history(spark: SparkSession, path: str, limit: int | None = None) -> DataFrame:
    """The commits of the Delta table at ``path``, newest first: ``version``, ``timestamp``, ``committed_ms``.

    ``DESCRIBE HISTORY`` through SQL, so it works over Spark Connect too; ``limit``
    reads only that many of the latest commits.

    Raises:
        AnalysisException: No Delta table at ``path`` (when the command runs).
    """
    suffix = "" if limit is None else f" LIMIT {int(limit)}"
    history_df = spark.sql(f"DESCRIBE HISTORY {delta_sql_name(path)}{suffix}")
    return history_df.select("version", "timestamp", F.unix_millis("timestamp").alias("committed_ms"))
