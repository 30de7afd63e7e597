"""Consent ingest: raw signals -> consent/events, rejected records -> consent/quarantine.

Formats (``fmt``):

* ``json``: JSON lines in DESIGN's raw shape ``{"org_id", "user_id", "ts",
  "purposes": {name: bool, ...}, "source"}``; a record may also carry one choice
  as ``"purpose": name, "granted": bool``.
* ``csv``: one choice per line; the first line of every file names the columns,
  in any order: ``org_id``, ``user_id``, ``ts``, ``purpose``, ``granted``
  (required) and ``source``; columns are taken by name, other columns are
  ignored and reported (``IngestResult.ignored_columns``); a file whose header
  lacks a required column stops the ingest before anything is written.
  ``granted`` is ``true``/``false`` (or ``1``/``0``).
* ``parquet``: the CSV columns (``ts`` a timestamp or ISO-8601 string,
  ``granted`` a boolean or a CSV-style string) or the JSON shape with a
  ``purposes`` map<string, boolean> column (values of another type are read
  like CSV choices; a ``purposes`` column that is no map stops the ingest).
* ``tcf``: JSON lines ``{"org_id", "user_id", "ts", "source", "tc_string",
  "us_privacy"}`` with at least one of the two strings; see
  :mod:`ketch_spark.consent.tcf` for how they become choices. ``ts`` is needed
  with ``us_privacy`` (the string carries no time).
* ``gpp``: JSON lines in the ``json`` shape carrying a ``gpp_string`` (an IAB
  GPP string), with or without ``purposes``; see
  :mod:`ketch_spark.consent.gpp` for how its sections become choices (through
  the policy's ``gpp`` mapping). ``ts`` is required: US sections carry no time.

A ``gpp_string`` column in CSV or Parquet inputs is read the same way; a row
then needs ``purpose`` and ``granted`` only when it has no GPP string. A GPP
string that cannot be decoded quarantines its record as
``invalid_gpp_string``, with the decoder's reason and detail. A ``json``
record carrying ``gpp_string`` is quarantined (``malformed_record``) with a
detail saying to use ``--format gpp``: GPP decoding is a large plan, so the
plain JSON format does not pay for it.

Ids: ``user_id`` and ``org_id`` are strings, trimmed (the rule everywhere in
ketch-spark: the filter and the rights engine compare trimmed ids too). A
number, object or array is quarantined (``invalid_user_id`` /
``invalid_org_id``), not coerced; an id longer than ``consent.max_id_length``
(256) is ``id_too_long``. Times: before ``consent.earliest_event_date``
(2000-01-01) is ``ancient_timestamp``; later than now (UTC, whatever the
process's ``TZ``) plus ``consent.max_future_skew_seconds`` is ``future_timestamp``.

Erased subjects: once dsr/ledger lists erasures, the events of an erased user
(per org) from before the erasure are quarantined as ``erased_subject`` and
their text withheld (:mod:`ketch_spark.rights.ledger`); later events are accepted.

Counting: the unit is the row. A valid record yields one row per purpose choice
it carries; a record rejected as a whole (malformed, missing org or user, bad or
future timestamp, invalid TC / US Privacy string, no choice at all) is one row.
Every row is accepted, quarantined or a duplicate, so ``read == accepted +
quarantined + duplicates``. Choice-level rejects (unknown or retired purpose,
non-boolean choice) are one quarantine row per choice, with the record's text.
A US Privacy string ``1---`` (not applicable) yields no row.

Duplicates: an event equal to one already in consent/events on (org_id,
user_id, purpose, event_ts, granted), or to another row of the same batch, is
counted and not stored.

Exactly once: the default ``batch_id`` is ``b-`` + a hash of the format and of
every input file's path, size and modification time, so re-ingesting unchanged
files reuses the id. Both writes are Delta idempotent writes (``txnAppId`` =
``ketch-spark/ingest/<batch_id>``, ``txnVersion`` = a fingerprint of the
batch's records): a rerun after a failure writes only what is missing and a
repeated batch writes nothing (``already_ingested`` is then true). A batch id
reused for other records is refused with :class:`IngestError` before anything
is written.
The events commit carries ``{"batch_id": ...}`` as its user metadata.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark import StorageLevel

from ketch_spark.clock import utc_now, utc_timestamp
from ketch_spark.commits import retry_on_conflict
from ketch_spark.config import KetchConfig
from ketch_spark.connectors.hadoopfs import HadoopFs
from ketch_spark.consent.gpp import DECODE_SETTINGS, gpp_choices, with_gpp_fields
from ketch_spark.consent.tcf import CHOICE_TYPE, tc_choices, tc_fields, us_privacy_choices, us_privacy_valid
from ketch_spark.errors import KetchError, SchemaError
from ketch_spark.faults import fault_point
from ketch_spark.policy import Policy
from ketch_spark.progress import report_progress
from ketch_spark.session_conf import session_conf
from ketch_spark.tables import ensure_table, read_table, table_path, table_spec

__all__ = [
    "IngestResult",
    "IngestError",
    "ingest_consent",
    "FORMATS",
    "REASONS",
    "EVENT_KEY",
    "delta_txn_version",
    "delta_txn_versions",
    "quarantine_breakdown",
]

logger = logging.getLogger(__name__)

FORMATS = ("json", "csv", "parquet", "tcf", "gpp")
#: Machine-readable quarantine reasons.
REASONS = (
    "malformed_record",
    "missing_org_id",
    "missing_user_id",
    "invalid_org_id",
    "invalid_user_id",
    "id_too_long",
    "invalid_timestamp",
    "ancient_timestamp",
    "future_timestamp",
    "invalid_tc_string",
    "invalid_us_privacy",
    "invalid_gpp_string",
    "erased_subject",
    "unknown_purpose",
    "retired_purpose",
    "invalid_choice",
)
#: Columns that make two events the same event.
EVENT_KEY = ("org_id", "user_id", "purpose", "event_ts", "granted")
CSV_REQUIRED = ("org_id", "user_id", "ts", "purpose", "granted")
CSV_OPTIONAL = ("source", "gpp_string")
#: Columns a row needs only when it carries no GPP string.
_CHOICE_COLUMNS = ("purpose", "granted")
CSV_COLUMNS = CSV_REQUIRED + CSV_OPTIONAL
_CSV_HEADER_MAX_BYTES = 64 * 1024
_ID_COLUMNS = ("org_id", "org_id_type", "user_id", "user_id_type")
_RAW_CHOICE_TYPE = "array<struct<purpose:string,granted:boolean,choice_ok:boolean,event_ts:timestamp>>"
_TXN_PREFIX = "ketch-spark/ingest/"


class IngestError(KetchError, ValueError):
    """The ingest was asked something it cannot do (unknown format, no input files)."""


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one :func:`ingest_consent` call.

    Attributes:
        batch_id: Id of the batch (given or derived).
        fmt: Input format.
        inputs: Input paths as given.
        records: Input records read (lines, CSV rows, Parquet rows).
        read: Rows read (see the module docstring): accepted + quarantined + duplicates.
        accepted: Events stored in consent/events.
        quarantined: Rows stored in consent/quarantine.
        duplicates: Rows equal to an event already stored or seen earlier in the batch.
        reasons: Quarantined rows per reason.
        expectations: Great Expectations outcome on the accepted events (``None`` when skipped).
        already_ingested: The batch had been written before with the same records;
            nothing was written again (the counts are those of the batch).
        ignored_columns: Input columns ketch-spark does not read (CSV header, Parquet).
        ingested_at: Time stamped on every row of the batch.
        seconds: Wall time.
    """

    batch_id: str
    fmt: str
    inputs: tuple[str, ...]
    records: int
    read: int
    accepted: int
    quarantined: int
    duplicates: int
    reasons: dict[str, int] = field(default_factory=dict)
    expectations: dict[str, Any] | None = None
    already_ingested: bool = False
    ignored_columns: tuple[str, ...] = ()
    ingested_at: dt.datetime | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """A JSON-able dict of the result."""
        data = asdict(self)
        data["inputs"] = list(self.inputs)
        data["ingested_at"] = self.ingested_at.isoformat() if self.ingested_at else None
        data["seconds"] = round(self.seconds, 2)
        return data


# ---------------------------------------------------------------- inputs, batch id


def _as_list(inputs: str | Iterable[str]) -> list[str]:
    paths = [inputs] if isinstance(inputs, str) else [str(p) for p in inputs]
    if not paths:
        raise IngestError("no input given; pass one or more files, folders or s3a:// URIs")
    return paths


def _list_input_files(spark: SparkSession, paths: Sequence[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every data file under ``paths`` (Hadoop FS; hidden files skipped)."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    files: list[tuple[str, int, int]] = []
    for given in paths:
        hpath = jvm.org.apache.hadoop.fs.Path(given)
        fs = hpath.getFileSystem(conf)
        statuses = fs.globStatus(hpath) or []
        for status in statuses:
            if status.isDirectory():
                iterator = fs.listFiles(status.getPath(), True)
                while iterator.hasNext():
                    child = iterator.next()
                    name = child.getPath().getName()
                    if not name.startswith(("_", ".")):
                        files.append((child.getPath().toString(), child.getLen(), child.getModificationTime()))
            else:
                files.append((status.getPath().toString(), status.getLen(), status.getModificationTime()))
    if not files:
        raise IngestError(f"no input files found under {', '.join(paths)}")
    return sorted(files)


def default_batch_id(fmt: str, files: Sequence[tuple[str, int, int]]) -> str:
    """``b-`` + 16 hex digits of the sha256 of the format and every (path, size, mtime)."""
    digest = hashlib.sha256(fmt.encode())
    for path, size, mtime in files:
        digest.update(f"\n{path}\t{size}\t{mtime}".encode())
    return f"b-{digest.hexdigest()[:16]}"


def _delta_snapshot(spark: SparkSession, path: str):  # noqa: ANN202 - a py4j Snapshot
    """The latest snapshot of the Delta table at ``path`` (the log only, no Spark job)."""
    jvm = spark.sparkContext._jvm
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    return log.update(
        getattr(log, "update$default$1")(), getattr(log, "update$default$2")(), getattr(log, "update$default$3")()
    )


def delta_txn_version(spark: SparkSession, path: str, app_id: str) -> int | None:
    """The latest idempotent-write version recorded for ``app_id`` in the Delta table at ``path``."""
    found = _delta_snapshot(spark, path).transactions().get(app_id)
    return int(found.get()) if found.isDefined() else None


def delta_txn_versions(spark: SparkSession, path: str, prefix: str) -> dict[str, int]:
    """Every idempotent-write (app id, version) recorded in the Delta table at ``path`` whose app id starts with ``prefix``."""
    jvm = spark.sparkContext._jvm
    found = jvm.scala.jdk.javaapi.CollectionConverters.asJava(_delta_snapshot(spark, path).transactions())
    return {str(app_id): int(found.get(app_id)) for app_id in found.keySet() if str(app_id).startswith(prefix)}


# ---------------------------------------------------------------- parsing per format


def _text_lines(spark: SparkSession, paths: Sequence[str]) -> DataFrame:
    df = spark.read.text(list(paths)).select("value", F.col("_metadata.file_path").alias("source_file"))
    return df.where(F.length(F.trim("value")) > 0)


def _parse_ts(text: Column) -> Column:
    return F.try_to_timestamp(F.trim(text))


def _blank(col: Column) -> Column:
    return col.isNull() | (F.length(F.trim(col)) == 0)


#: Fields every JSON-lines record carries besides the ids: (column, JSON path, type).
_RECORD_FIELDS = (
    ("ts_text", "$.ts", "string"),
    ("source", "$.source", "string"),
)
_STRING = "STRING"
#: Detail of a line that does not parse as one JSON object (Spark's parser refuses a key given twice).
_NOT_AN_OBJECT = "not a JSON object (not valid JSON, or a key given twice)"


def _json_id(v: Column, name: str) -> tuple[Column, Column]:
    """(value, JSON type) of an id field: the value only when the JSON holds a string there.

    A number, object or array is not coerced to text: the type (``BIGINT``,
    ``OBJECT<...>``, ...) lets the checks quarantine it; JSON null counts as missing.
    """
    kind = F.schema_of_variant(F.variant_get(v, f"$.{name}", "variant"))
    value = F.when(kind == _STRING, F.try_variant_get(v, f"$.{name}", "string"))
    return value.alias(name), F.when(~kind.isin("NULL", "VOID"), kind).alias(f"{name}_type")


def _json_objects(spark: SparkSession, paths: Sequence[str], *fields: tuple[str, str, str]) -> DataFrame:
    """JSON lines -> raw line, source file, ``is_object``, typed ids, the shared record fields and ``fields``."""
    lines = _text_lines(spark, paths)
    v = F.try_parse_json("value")
    is_object = F.coalesce(F.schema_of_variant(v).startswith("OBJECT"), F.lit(False))
    return lines.select(
        F.col("value").alias("raw"),
        "source_file",
        is_object.alias("is_object"),
        *_json_id(v, "org_id"),
        *_json_id(v, "user_id"),
        *[F.try_variant_get(v, path, dtype).alias(name) for name, path, dtype in (*_RECORD_FIELDS, *fields)],
    )


def _json_records(spark: SparkSession, paths: Sequence[str], *, gpp: bool = False) -> DataFrame:
    """JSON lines -> records with their choices (before the common checks).

    With ``gpp``, records keep their ``gpp_string`` (decoded later); without, a
    record carrying one is quarantined with a pointer to ``--format gpp``.
    """
    parsed = _json_objects(
        spark,
        paths,
        ("purposes", "$.purposes", "map<string,variant>"),
        ("one_purpose", "$.purpose", "string"),
        ("one_choice", "$.granted", "variant"),
        ("gpp_string", "$.gpp_string", "string"),
    )
    entries = F.coalesce(
        F.map_entries("purposes"),
        F.when(F.col("one_purpose").isNotNull(), F.array(F.struct(F.col("one_purpose").alias("key"), F.col("one_choice").alias("value")))),
    )
    event_ts = _parse_ts(F.col("ts_text"))
    choices = F.transform(
        entries,
        lambda e: F.struct(
            e["key"].alias("purpose"),
            F.try_variant_get(e["value"], "$", "boolean").alias("granted"),
            F.coalesce(F.schema_of_variant(e["value"]) == "BOOLEAN", F.lit(False)).alias("choice_ok"),
            event_ts.alias("event_ts"),
        ),
    )
    stray_gpp = F.lit(False) if gpp else ~_blank(F.col("gpp_string"))
    pre_reason, pre_detail = _first_match([
        (~F.col("is_object"), "malformed_record", _NOT_AN_OBJECT),
        (stray_gpp, "malformed_record", "the record carries a gpp_string: ingest GPP strings with --format gpp"),
    ])
    no_choice = F.coalesce(F.size(choices), F.lit(0)) == 0
    return parsed.select(
        "raw", "source_file", *_ID_COLUMNS, "ts_text", "source",
        pre_reason.alias("pre_reason"), pre_detail.alias("pre_detail"),
        event_ts.alias("record_ts"),
        no_choice.alias("no_choice"),
        choices.cast(_RAW_CHOICE_TYPE).alias("choices"),
        *(["gpp_string"] if gpp else []),
    )


def _choice_from_text(text: Column) -> tuple[Column, Column]:
    """(granted, choice_ok) from a CSV-style choice: true/false/1/0, any case."""
    value = F.lower(F.trim(text))
    granted = F.when(value.isin("true", "1"), F.lit(True)).when(value.isin("false", "0"), F.lit(False))
    return granted, granted.isNotNull()


def _single_choice_records(df: DataFrame, granted: Column, choice_ok: Column, pre_reason: Column, pre_detail: Column) -> DataFrame:
    """One choice per record (CSV, Parquet in the CSV shape); ``gpp_string`` kept when ``df`` has it."""
    event_ts = _parse_ts(F.col("ts_text"))
    choice = F.struct(
        F.col("purpose").alias("purpose"), granted.alias("granted"), choice_ok.alias("choice_ok"), event_ts.alias("event_ts")
    )
    return df.select(
        "raw", "source_file", *_ID_COLUMNS, "ts_text", "source",
        pre_reason.alias("pre_reason"), pre_detail.alias("pre_detail"),
        event_ts.alias("record_ts"),
        _blank(F.col("purpose")).alias("no_choice"),
        F.array(choice).cast(_RAW_CHOICE_TYPE).alias("choices"),
        *[c for c in ("gpp_string",) if c in df.columns],
    )


def _csv_header(text: str) -> tuple[str, ...]:
    """Column names of a CSV header line: unquoted, trimmed, lower-cased (a UTF-8 BOM is dropped)."""
    row = next(csv.reader([text.lstrip("\ufeff")]), [])
    return tuple(name.strip().lower() for name in row)


def _csv_headers(spark: SparkSession, files: Sequence[str]) -> dict[tuple[str, ...], list[str]]:
    """Input files grouped by their header (the first non-blank line of each file).

    Raises:
        SchemaError: A file lacks a required column, names one twice, or has no header line;
            nothing is ingested then.
    """
    fs = HadoopFs(spark)
    groups: dict[tuple[str, ...], list[str]] = {}
    problems: list[str] = []
    for path in files:
        line = fs.first_line(path, _CSV_HEADER_MAX_BYTES)
        header = _csv_header(line) if line is not None else ()
        required = [c for c in CSV_REQUIRED if not ("gpp_string" in header and c in _CHOICE_COLUMNS)]
        missing = [c for c in required if c not in header]
        repeated = sorted({c for c in header if c and header.count(c) > 1})
        if line is None:
            problems.append(f"{path}: empty, or no line break within its first {_CSV_HEADER_MAX_BYTES} bytes")
        elif missing or repeated:
            found = ",".join(header) or "<nothing>"
            what = f"lacks {', '.join(missing)}" if missing else f"names {', '.join(repeated)} twice"
            problems.append(f"{path}: header {what} (found {found})")
        else:
            groups.setdefault(header, []).append(path)
    if problems:
        raise SchemaError(
            "CSV consent input rejected, nothing ingested: "
            + "; ".join(problems[:10])
            + (f"; and {len(problems) - 10} more file(s)" if len(problems) > 10 else "")
            + f". The first line of every CSV file must name its columns, in any order: {', '.join(CSV_REQUIRED)}"
            + f" (optional: {', '.join(CSV_OPTIONAL)}; with gpp_string, {' and '.join(_CHOICE_COLUMNS)} may be left out)"
        )
    return groups


def _csv_group_records(spark: SparkSession, header: tuple[str, ...], files: Sequence[str]) -> DataFrame:
    """Records of CSV files sharing ``header``: columns taken by name, the header lines dropped."""
    positional = [f"c{i}" for i in range(len(header))]
    schema = ", ".join(f"{c} string" for c in positional) + ", _corrupt string"
    lines = _text_lines(spark, files)
    normalised = F.lower(F.regexp_replace(F.regexp_replace("value", "^\ufeff", ""), r"[\s\"]", ""))
    lines = lines.where(normalised != ",".join(header))
    options = {"columnNameOfCorruptRecord": "_corrupt", "mode": "PERMISSIVE"}
    parsed = lines.select(F.col("value").alias("raw"), "source_file", F.from_csv("value", schema, options).alias("r"))
    by_name = {name: F.col(f"r.c{header.index(name)}") for name in CSV_COLUMNS if name in header}
    missing_value = F.lit(None).cast("string")
    return parsed.select(
        "raw", "source_file",
        *[by_name.get(name, missing_value).alias("ts_text" if name == "ts" else name) for name in CSV_COLUMNS],
        F.lit(_STRING).alias("org_id_type"), F.lit(_STRING).alias("user_id_type"),
        F.col("r._corrupt").alias("_corrupt"),
    )


def _csv_records(spark: SparkSession, paths: Sequence[str]) -> tuple[DataFrame, list[str]]:
    """Records of CSV files read by header name, and the header columns ignored (sorted)."""
    groups = _csv_headers(spark, paths)
    ignored = sorted({c for header in groups for c in header if c not in CSV_COLUMNS})
    parts = [_csv_group_records(spark, header, files) for header, files in groups.items()]
    parsed = functools.reduce(DataFrame.unionByName, parts)
    granted, choice_ok = _choice_from_text(F.col("granted"))
    malformed = F.col("_corrupt").isNotNull()
    records = _single_choice_records(
        parsed,
        granted,
        choice_ok,
        F.when(malformed, F.lit("malformed_record")),
        F.when(malformed, F.lit("fields do not match the header (count or quoting)")),
    )
    if not any("gpp_string" in header for header in groups):
        records = records.drop("gpp_string")
    return records, ignored


def _require_columns(df: DataFrame, needed: Iterable[str], what: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise SchemaError(f"{what} lacks column(s) {', '.join(missing)}; found {', '.join(df.columns)}")


def _parquet_frames(spark: SparkSession, paths: Sequence[str]) -> list[DataFrame]:
    """The Parquet input files read with merged schemas: one frame, or one per file schema when types conflict.

    A column only some files have is null in the others. Files whose columns
    conflict (``user_id`` a string in one, a number in another) are read apart,
    so each file's rows are judged by its own types (a numeric id is quarantined)
    instead of the whole batch failing inside Spark's reader.
    """
    try:
        return [spark.read.option("mergeSchema", "true").parquet(*paths)]
    except Exception as exc:  # noqa: BLE001 - only a schema conflict is handled here
        if "CANNOT_MERGE" not in str(exc):
            raise
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault(spark.read.parquet(path).schema.json(), []).append(path)
    logger.info("parquet consent input: %d file schemas that do not merge; each read apart", len(groups))
    return [spark.read.parquet(*group) for group in groups.values()]


def _parquet_records(spark: SparkSession, paths: Sequence[str]) -> tuple[DataFrame, list[str]]:
    """The Parquet input's records, and every column its files have."""
    frames = _parquet_frames(spark, paths)
    records = functools.reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True),
                               [_parquet_frame_records(df, paths) for df in frames])
    return records, sorted({c for df in frames for c in df.columns})


def _parquet_frame_records(df: DataFrame, paths: Sequence[str]) -> DataFrame:
    """The records of one Parquet read (JSON shape with ``purposes``, or CSV shape); ``paths`` name it in errors."""
    has_gpp = "gpp_string" in df.columns
    if has_gpp:
        df = df.withColumn("gpp_string", F.col("gpp_string").cast("string"))
        for name in _CHOICE_COLUMNS if "purposes" not in df.columns else ():
            if name not in df.columns:
                df = df.withColumn(name, F.lit(None).cast("string"))
    raw = F.to_json(F.struct(*[F.col(c) for c in df.columns]))
    base = df.select(
        "*", raw.alias("raw"), F.col("_metadata.file_path").alias("source_file")
    )
    dtypes = dict(df.dtypes)
    if "purposes" in df.columns:
        _require_columns(df, ("org_id", "user_id", "ts"), "parquet consent input (JSON shape)")
        if not dtypes["purposes"].startswith("map<"):
            raise SchemaError(
                f"parquet consent input {', '.join(paths)}: column purposes is {dtypes['purposes']}; "
                "expected map<string,boolean> (purpose name -> choice)"
            )
        event_ts = _ts_from_any(F.col("ts"), dtypes["ts"])
        boolean_values = dtypes["purposes"].endswith(",boolean>")
        choices = F.transform(
            F.map_entries("purposes"),
            lambda e: F.struct(e["key"].cast("string").alias("purpose"), *_map_choice(e["value"], boolean_values),
                               event_ts.alias("event_ts")),
        )
        return base.select(
            "raw", "source_file",
            *_parquet_ids(dtypes),
            F.col("ts").cast("string").alias("ts_text"),
            (F.col("source").cast("string") if "source" in df.columns else F.lit(None).cast("string")).alias("source"),
            F.lit(None).cast("string").alias("pre_reason"),
            F.lit(None).cast("string").alias("pre_detail"),
            event_ts.alias("record_ts"),
            (F.coalesce(F.size(choices), F.lit(0)) == 0).alias("no_choice"),
            choices.cast(_RAW_CHOICE_TYPE).alias("choices"),
            *(["gpp_string"] if has_gpp else []),
        )
    _require_columns(df, ("org_id", "user_id", "ts", "purpose", "granted"), "parquet consent input (CSV shape)")
    if dtypes["granted"] == "boolean":
        granted, choice_ok = F.col("granted"), F.col("granted").isNotNull()
    else:
        granted, choice_ok = _choice_from_text(F.col("granted").cast("string"))
    selected = base.select(
        "raw", "source_file", "granted", *(["gpp_string"] if has_gpp else []),
        *_parquet_ids(dtypes),
        F.col("ts").cast("string").alias("ts_text"),
        F.col("purpose").cast("string").alias("purpose"),
        (F.col("source").cast("string") if "source" in df.columns else F.lit(None).cast("string")).alias("source"),
    )
    return _single_choice_records(selected, granted, choice_ok, F.lit(None).cast("string"), F.lit(None).cast("string"))


def _map_choice(value: Column, is_boolean: bool) -> tuple[Column, Column]:
    """(granted, choice_ok) of a ``purposes`` map value: a boolean as it is, anything else read like a CSV choice."""
    granted, choice_ok = (value, value.isNotNull()) if is_boolean else _choice_from_text(value.cast("string"))
    return granted.alias("granted"), choice_ok.alias("choice_ok")


def _parquet_ids(dtypes: dict[str, str]) -> list[Column]:
    """The id columns of a Parquet input: kept when they are strings, else only their type (to quarantine)."""
    columns = []
    for name in ("org_id", "user_id"):
        is_string = dtypes[name] == "string"
        columns.append((F.col(name) if is_string else F.lit(None).cast("string")).alias(name))
        columns.append(F.when(F.col(name).isNotNull(), F.lit(_STRING if is_string else dtypes[name].upper())).alias(f"{name}_type"))
    return columns


def _ts_from_any(col: Column, dtype: str) -> Column:
    if dtype.startswith("timestamp"):
        return col.cast("timestamp")
    return _parse_ts(col.cast("string"))


def _decoded_choices(choices: Column) -> Column:
    """Choices decoded from a consent string (always booleans) in the raw choice shape, ``choice_ok`` true."""
    return F.transform(
        choices,
        lambda c: F.struct(c["purpose"].alias("purpose"), c["granted"].alias("granted"), F.lit(True).alias("choice_ok"),
                           c["event_ts"].alias("event_ts")),
    )


def _tcf_records(spark: SparkSession, paths: Sequence[str], policy: Policy) -> DataFrame:
    parsed = _json_objects(
        spark, paths, ("tc_string", "$.tc_string", "string"), ("us_privacy", "$.us_privacy", "string")
    ).withColumn("tc", tc_fields("tc_string"))
    record_ts = _parse_ts(F.col("ts_text"))
    has_tc, has_usp = ~_blank(F.col("tc_string")), ~_blank(F.col("us_privacy"))
    pre_reason = (
        F.when(~F.col("is_object"), F.lit("malformed_record"))
        .when(~has_tc & ~has_usp, F.lit("malformed_record"))
        .when(has_tc & ~F.coalesce(F.col("tc.valid"), F.lit(False)), F.lit("invalid_tc_string"))
        .when(has_usp & ~F.coalesce(us_privacy_valid("us_privacy"), F.lit(False)), F.lit("invalid_us_privacy"))
        .when(has_usp & _blank(F.col("ts_text")), F.lit("invalid_timestamp"))
    )
    pre_detail = (
        F.when(~F.col("is_object"), F.lit(_NOT_AN_OBJECT))
        .when(~has_tc & ~has_usp, F.lit("neither tc_string nor us_privacy"))
        .when(has_tc & ~F.coalesce(F.col("tc.valid"), F.lit(False)), F.lit("not a TCF v2 core segment (base64url, >= 213 bits, version 2)"))
        .when(has_usp & ~F.coalesce(us_privacy_valid("us_privacy"), F.lit(False)), F.lit("expected 1 then three of Y, N, -"))
        .when(has_usp & _blank(F.col("ts_text")), F.lit("a us_privacy string needs the record's ts"))
    )
    choices = F.concat(
        F.when(has_tc, tc_choices("tc", policy)).otherwise(F.array().cast(CHOICE_TYPE)),
        F.when(has_usp, us_privacy_choices("us_privacy", record_ts, policy)).otherwise(F.array().cast(CHOICE_TYPE)),
    )
    choices = _decoded_choices(choices)
    # the record's own time stands in for checks; TC choices carry LastUpdated
    check_ts = F.greatest(record_ts, F.col("tc.last_updated"))
    return parsed.select(
        "raw", "source_file", *_ID_COLUMNS,
        F.when(_blank(F.col("ts_text")), F.date_format(F.col("tc.last_updated"), "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"))
        .otherwise(F.col("ts_text")).alias("ts_text"),
        "source",
        pre_reason.alias("pre_reason"), pre_detail.alias("pre_detail"),
        check_ts.alias("record_ts"),
        F.lit(False).alias("no_choice"),
        choices.cast(_RAW_CHOICE_TYPE).alias("choices"),
    )


def _records(spark: SparkSession, policy: Policy, fmt: str, paths: Sequence[str]) -> tuple[DataFrame, list[str]]:
    """The input's records, and the input columns ignored (CSV header or Parquet columns ketch-spark does not read)."""
    if fmt == "tcf":
        return _tcf_records(spark, paths, policy), []
    ignored: list[str] = []
    if fmt in ("json", "gpp"):
        records = _json_records(spark, paths, gpp=fmt == "gpp")
    elif fmt == "csv":
        records, ignored = _csv_records(spark, paths)
    else:
        records, columns = _parquet_records(spark, paths)
        ignored = [c for c in columns if c not in {*CSV_COLUMNS, "purposes"}]
    if "gpp_string" in records.columns:
        records = _with_gpp_choices(records, policy)
    return records, ignored


def _with_gpp_choices(records: DataFrame, policy: Policy) -> DataFrame:
    """Records with their GPP string's choices added, and ``invalid_gpp_string`` when it cannot be decoded.

    A record's own choices stay (none when it names no purpose); US-section
    choices take the record's time, a tcfeuv2 section's its LastUpdated.
    """
    decoded = with_gpp_fields(records, "gpp_string", "gpp")
    has_gpp = ~_blank(F.col("gpp_string"))
    bad = has_gpp & ~F.coalesce(F.col("gpp.valid"), F.lit(False))
    empty = F.array().cast(_RAW_CHOICE_TYPE)
    from_gpp = _decoded_choices(gpp_choices("gpp", "record_ts", policy))
    own = F.when(F.col("no_choice"), empty).otherwise(F.col("choices"))
    gpp_detail = F.concat(F.col("gpp.reason"), F.lit(": "), F.col("gpp.detail"))
    replaced = ("pre_reason", "pre_detail", "no_choice", "choices", "gpp_string", "gpp")
    return decoded.select(
        *[c for c in decoded.columns if c not in replaced],
        F.coalesce(F.col("pre_reason"), F.when(bad, F.lit("invalid_gpp_string"))).alias("pre_reason"),
        F.coalesce(F.col("pre_detail"), F.when(bad, gpp_detail)).alias("pre_detail"),
        (F.col("no_choice") & ~has_gpp).alias("no_choice"),
        F.concat(own, F.when(has_gpp, from_gpp).otherwise(empty)).cast(_RAW_CHOICE_TYPE).alias("choices"),
    )


# ---------------------------------------------------------------- common checks


@dataclass(frozen=True)
class _Limits:
    """What a valid record stays within: event times (naive UTC) and id length."""

    earliest: dt.datetime
    latest: dt.datetime
    max_id_length: int

    def earliest_ts(self) -> Column:
        return utc_timestamp(self.earliest)

    def latest_ts(self) -> Column:
        return utc_timestamp(self.latest)


def _id_checks(name: str, max_length: int) -> list[tuple[Column, str, Column]]:
    """(condition, reason, detail) of the checks of one id column, in order."""
    value, kind = F.col(name), F.col(f"{name}_type")
    not_text = kind.isNotNull() & (kind != _STRING)
    return [
        (not_text, f"invalid_{name}", F.concat(F.lit(f"{name} is "), F.lower(kind), F.lit(", not a string"))),
        (_blank(value), f"missing_{name}", F.lit(f"{name} is missing or empty")),
        (
            F.length(F.trim(value)) > max_length,
            "id_too_long",
            F.concat(F.lit(f"{name} has "), F.length(F.trim(value)).cast("string"), F.lit(f" characters; at most {max_length}")),
        ),
    ]


def _record_reason(limits: _Limits) -> tuple[Column, Column]:
    """(reason, detail) of a record rejected as a whole, null for a good one."""
    ts_text, record_ts = F.col("ts_text"), F.col("record_ts")
    checks = [
        (F.col("pre_reason").isNotNull(), F.col("pre_reason"), F.col("pre_detail")),
        *_id_checks("org_id", limits.max_id_length),
        *_id_checks("user_id", limits.max_id_length),
        (
            _blank(ts_text) | record_ts.isNull(),
            "invalid_timestamp",
            F.concat(F.lit("unparsable ts: "), F.coalesce(ts_text, F.lit("<missing>"))),
        ),
        (
            record_ts < limits.earliest_ts(),
            "ancient_timestamp",
            F.concat(F.lit(f"ts earlier than {limits.earliest.date().isoformat()}: "), ts_text),
        ),
        (
            record_ts > limits.latest_ts(),
            "future_timestamp",
            F.concat(F.lit(f"ts later than {limits.latest.isoformat()}Z: "), ts_text),
        ),
        (F.col("no_choice"), "malformed_record", F.lit("the record carries no purpose choice")),
    ]
    return _first_match(checks)


def _first_match(checks: Sequence[tuple[Column, Any, Any]]) -> tuple[Column, Column]:
    """(reason, detail) of the first check whose condition holds; null when none does."""
    reason: Any = F
    detail: Any = F
    for condition, why, what in checks:
        why = F.lit(why) if isinstance(why, str) else why
        what = F.lit(what) if isinstance(what, str) else what
        reason, detail = reason.when(condition, why), detail.when(condition, what)
    return reason, detail


def _purpose_lookup(policy: Policy) -> tuple[Column, Column]:
    """Maps from purpose name to bit and to retired flag."""
    bits = F.create_map(*[x for p in policy.purposes.values() for x in (F.lit(p.name), F.lit(p.bit))])
    retired = F.create_map(*[x for p in policy.purposes.values() for x in (F.lit(p.name), F.lit(p.retired))])
    return bits, retired


def classify_rows(records_df: DataFrame, policy: Policy, limits: _Limits) -> DataFrame:
    """One row per choice (or per record rejected as a whole), with ``reason`` null when valid.

    Columns: raw, source_file, org_id, user_id, source, purpose, purpose_bit,
    granted, event_ts, reason, detail.
    """
    record_reason, record_detail = _record_reason(limits)
    staged = records_df.select("*", record_reason.alias("r_reason"), record_detail.alias("r_detail"))
    lone = F.array(F.lit(None).cast(_RAW_CHOICE_TYPE.removeprefix("array<").removesuffix(">")))
    exploded = staged.select(
        "*",
        F.posexplode_outer(F.when(F.col("r_reason").isNull(), F.col("choices")).otherwise(lone)).alias("pos", "c"),
    )
    # a valid record without any choice (US Privacy "1---") leaves one marker row, dropped after counting
    no_row = F.col("r_reason").isNull() & F.col("c").isNull()
    bits, retired = _purpose_lookup(policy)
    purpose = F.trim(F.col("c.purpose"))
    bit = F.try_element_at(bits, purpose)
    is_retired = F.coalesce(F.try_element_at(retired, purpose), F.lit(False))
    reason, detail = _first_match([
        (F.col("r_reason").isNotNull(), F.col("r_reason"), F.col("r_detail")),
        (bit.isNull(), "unknown_purpose", F.concat(F.lit("purpose not in the policy: "), F.coalesce(purpose, F.lit("<missing>")))),
        (is_retired, "retired_purpose", F.concat(F.lit("purpose is retired: "), purpose)),
        (
            ~F.col("c.choice_ok") | F.col("c.granted").isNull(),
            "invalid_choice",
            F.concat(F.lit("choice for "), purpose, F.lit(" is not a boolean")),
        ),
        (F.col("c.event_ts") < limits.earliest_ts(), "ancient_timestamp", "choice time earlier than the earliest valid date"),
        (F.col("c.event_ts") > limits.latest_ts(), "future_timestamp", "choice time in the future"),
    ])
    return exploded.select(
        "raw", "source_file",
        F.trim("org_id").alias("org_id"),
        F.trim("user_id").alias("user_id"),
        "source",
        purpose.alias("purpose"),
        bit.cast("int").alias("purpose_bit"),
        F.col("c.granted").alias("granted"),
        F.col("c.event_ts").alias("event_ts"),
        F.when(~no_row, reason).alias("reason"),
        F.when(~no_row, detail).alias("detail"),
        F.coalesce(F.col("pos"), F.lit(0)).alias("choice_index"),
        no_row.alias("no_row"),
    )


# ---------------------------------------------------------------- writing


def _existing_keys(spark: SparkSession, cfg: KetchConfig, dates: list[dt.date], batch_id: str) -> DataFrame:
    """Keys of stored events on ``dates`` (partition pruning), other batches only."""
    events = read_table(spark, cfg, "consent_events")
    days = [F.lit(d.isoformat()).cast("date") for d in dates]  # a date literal from Python fails before year 1000
    return events.where(F.col("event_date").isin(days) & (F.col("batch_id") != batch_id)).select(*EVENT_KEY).distinct()


def _event_rows(valid_df: DataFrame, batch_id: str, ingested_at: dt.datetime) -> DataFrame:
    return valid_df.select(
        "org_id", "user_id", "purpose", "purpose_bit", "granted", "event_ts", "source",
        F.lit(batch_id).alias("batch_id"),
        utc_timestamp(ingested_at).alias("ingested_at"),
        F.to_date("event_ts").alias("event_date"),
    )


def _without_erased_subjects(spark: SparkSession, cfg: KetchConfig, rows_df: DataFrame) -> DataFrame:
    """``rows_df`` with the events of erased users that predate their erasure quarantined (``erased_subject``).

    Raises:
        IngestError: dsr/ledger lists erased subjects and its key (from the receipt secret) is not set.
    """
    from ketch_spark.errors import ConfigError
    from ketch_spark.rights.ledger import ledger_key, quarantine_erased_subjects, read_ledger

    ledger = read_ledger(spark, cfg)
    if ledger is None:
        return rows_df
    try:
        key = ledger_key(cfg.dsr)
    except ConfigError as exc:
        raise IngestError(
            f"dsr/ledger lists erased subjects, and ingest needs the ledger's key to keep their old events out: {exc}"
        ) from None
    return quarantine_erased_subjects(rows_df, ledger, key)


def _quarantine_rows(rejected_df: DataFrame, batch_id: str, ingested_at: dt.datetime) -> DataFrame:
    from ketch_spark.rights.ledger import ERASED_SUBJECT, WITHHELD

    withheld = F.when(F.col("reason") == ERASED_SUBJECT, F.lit(WITHHELD)).otherwise(F.col("raw"))
    return rejected_df.select(
        withheld.alias("raw"), "reason", "detail", "source_file",
        F.lit(batch_id).alias("batch_id"),
        utc_timestamp(ingested_at).alias("ingested_at"),
    )


def _idempotent_append(df: DataFrame, path: str, batch_id: str, content: int = 0) -> None:
    """Appends ``df`` once per ``batch_id``; the transaction's version records the batch's ``content`` fingerprint.

    Delta's optimized write bins the rows by partition before writing: one file
    per event date of a batch instead of one per date and task, which later
    compactions and erasures would each have to open.
    """
    (
        df.write.format("delta")
        .mode("append")
        .option("optimizeWrite", "true")
        .option("txnAppId", f"{_TXN_PREFIX}{batch_id}")
        .option("txnVersion", content)
        .option("userMetadata", json.dumps({"batch_id": batch_id}))
        .save(path)
    )


def _append_once(cfg: KetchConfig, name: str, df: DataFrame, batch_id: str, content: int = 0) -> None:
    """:func:`_idempotent_append` to table ``name``, run again while it conflicts with another writer's commit.

    A retry of a batch that another ingest of the same batch committed meanwhile
    writes nothing (Delta skips a recorded transaction version).
    """
    retry_on_conflict(
        table_spec(name).relpath,
        lambda: _idempotent_append(df, table_path(cfg, name), batch_id, content),
        cfg.delta,
        what="ingest",
    )


def append_events(spark: SparkSession, cfg: KetchConfig, events_df: DataFrame, batch_id: str) -> None:
    """Appends already-validated event rows (the consent_events columns) once per ``batch_id``.

    Used by :func:`ingest_consent`, and by tests and benchmarks that build events directly.
    """
    ensure_table(spark, cfg, "consent_events")
    columns = [f.name for f in read_table(spark, cfg, "consent_events").schema.fields]
    _append_once(cfg, "consent_events", events_df.select(*columns), batch_id)


def ingest_consent(
    spark: SparkSession,
    cfg: KetchConfig,
    inputs: str | Iterable[str],
    fmt: str = "json",
    batch_id: str | None = None,
    *,
    validate: bool = True,
) -> IngestResult:
    """Reads raw consent signals into consent/events and consent/quarantine.

    Args:
        spark: Delta-enabled session.
        cfg: Configuration (warehouse, policy, future skew).
        inputs: Files, folders or globs; local paths or ``s3a://`` URIs.
        fmt: ``json``, ``csv``, ``parquet`` or ``tcf`` (see the module docstring).
        batch_id: Id of this batch; default derived from the input files.
        validate: Run the Great Expectations suites on the batch (see :mod:`ketch_spark.quality`).

    Returns:
        The counts; ``read == accepted + quarantined + duplicates``.

    Raises:
        IngestError: Unknown format or no input file.
        SchemaError: A Parquet input lacks the needed columns.
    """
    started = time.perf_counter()
    if fmt not in FORMATS:
        raise IngestError(f"unknown consent format {fmt!r}; expected one of {', '.join(FORMATS)}")
    paths = _as_list(inputs)
    files = _list_input_files(spark, paths)
    report_progress("list inputs", len(files), unit="files")
    batch_id = batch_id or default_batch_id(fmt, files)
    policy = cfg.policy()
    ingested_at = utc_now().replace(microsecond=0)
    limits = _Limits(
        earliest=dt.datetime.combine(cfg.consent.earliest_event_date, dt.time()),
        latest=ingested_at + dt.timedelta(seconds=cfg.consent.max_future_skew_seconds),
        max_id_length=cfg.consent.max_id_length,
    )
    for name in ("consent_events", "consent_quarantine"):
        ensure_table(spark, cfg, name)
    events_path = table_path(cfg, "consent_events")
    stored_content = delta_txn_version(spark, events_path, f"{_TXN_PREFIX}{batch_id}")
    already = stored_content is not None

    records_df, ignored_columns = _records(spark, policy, fmt, [f for f, _, _ in files])
    if ignored_columns:
        logger.info("batch %s: input column(s) not read by ketch-spark: %s", batch_id, ", ".join(ignored_columns))
    rows_df = _without_erased_subjects(spark, cfg, classify_rows(records_df, policy, limits))
    rows_df = rows_df.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # the rows are cached by this first action: GPP strings are decoded once, with their own settings
        with session_conf(spark, DECODE_SETTINGS if "gpp_string" in records_df.columns else {}):
            n_records, reasons, dates, content = _batch_counts(rows_df, fmt)
        report_progress("check records", sum(reasons.values()), unit="rows")
        if already:
            _check_same_content(batch_id, stored_content, content)
            content = stored_content
        valid_df = rows_df.where(F.col("reason").isNull() & ~F.col("no_row"))
        n_valid = reasons.pop("__valid__", 0)
        new_df = valid_df.dropDuplicates(list(EVENT_KEY))
        if dates:
            new_df = new_df.join(_existing_keys(spark, cfg, dates, batch_id), list(EVENT_KEY), "left_anti")
        events_df = _event_rows(new_df, batch_id, ingested_at).persist(StorageLevel.MEMORY_AND_DISK)
        n_new = events_df.count()
        report_progress("new events", n_new, unit="rows")
        expectations = None
        if validate:
            from ketch_spark.quality import QualityLimits, validate_consent_batch

            quality = QualityLimits(limits.earliest, limits.latest, cfg.consent.max_quarantined_share)
            expectations = validate_consent_batch(rows_df, events_df, policy, quality)
        fault_point("consent.ingest.before_write")
        _append_once(cfg, "consent_events", events_df, batch_id, content)
        fault_point("consent.ingest.after_events_commit")
        _append_once(
            cfg,
            "consent_quarantine",
            _quarantine_rows(rows_df.where(F.col("reason").isNotNull() & ~F.col("no_row")), batch_id, ingested_at),
            batch_id,
            content,
        )
        fault_point("consent.ingest.after_commit")
        report_progress("write events and quarantine", n_new + sum(reasons.values()), unit="rows")
        events_df.unpersist()
    finally:
        rows_df.unpersist()
    quarantined = sum(reasons.values())
    result = IngestResult(
        batch_id=batch_id,
        fmt=fmt,
        inputs=tuple(paths),
        records=n_records,
        read=n_valid + quarantined,
        accepted=n_new,
        quarantined=quarantined,
        duplicates=n_valid - n_new,
        reasons=reasons,
        expectations=expectations,
        already_ingested=already,
        ignored_columns=tuple(ignored_columns),
        ingested_at=ingested_at,
        seconds=time.perf_counter() - started,
    )
    logger.info("ingested batch %s: %s", batch_id, {k: v for k, v in result.summary().items() if k != "expectations"})
    return result


def _batch_counts(rows_df: DataFrame, fmt: str) -> tuple[int, dict[str, int], list[dt.date], int]:
    """In one job: records read, rows per reason (valid rows under ``__valid__``), dates of valid rows, content fingerprint."""
    group = F.when(F.col("no_row"), F.lit("__no_row__")).otherwise(F.coalesce("reason", F.lit("__valid__")))
    first_of_record = F.col("choice_index") == 0
    counted = (
        rows_df.groupBy(group.alias("r"))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(first_of_record.cast("long")).alias("records"),
            F.collect_set(F.to_date("event_ts")).alias("dates"),
            F.sum(F.when(first_of_record, F.xxhash64("raw").cast("decimal(20,0)"))).alias("content"),
        )
        .collect()
    )
    records = sum(int(row["records"]) for row in counted)
    reasons = {row["r"]: int(row["rows"]) for row in counted if row["r"] != "__no_row__"}
    dates = sorted({d for row in counted if row["r"] == "__valid__" for d in row["dates"]})
    content = sum(int(row["content"] or 0) for row in counted)
    return records, reasons, dates, _fingerprint(fmt, records, content)


def _fingerprint(fmt: str, records: int, content: int) -> int:
    """A positive 63-bit fingerprint of a batch's records (order-free), recorded as its Delta transaction version."""
    digest = hashlib.sha256(f"{fmt}|{records}|{content}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1 or 1


def _check_same_content(batch_id: str, stored: int, content: int) -> None:
    """Raises when ``batch_id`` was ingested before with other records (0: recorded before fingerprints, not checked)."""
    if stored not in (0, content):
        raise IngestError(
            f"batch id {batch_id!r} was already ingested with different records; nothing was written. "
            "A batch id names one set of records: ingest these under a new batch id "
            "(--batch-id, or leave it out to derive one from the input files)"
        )


def quarantine_breakdown(spark: SparkSession, cfg: KetchConfig, batch_id: str | None = None) -> DataFrame:
    """Quarantined rows per (batch_id, reason), optionally for one batch; most frequent first."""
    df = read_table(spark, cfg, "consent_quarantine")
    if batch_id is not None:
        df = df.where(F.col("batch_id") == batch_id)
    return df.groupBy("batch_id", "reason").count().orderBy(F.desc("count"), "reason")
