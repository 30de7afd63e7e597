"""Intake of data-subject requests into ``dsr/requests``, and their status.

:func:`submit_requests` validates every request (:func:`~ketch_spark.rights.identities.validate_request`),
reports the invalid ones with their reason and stores the valid ones with one
insert-only MERGE keyed by ``request_id``: submitting a request again changes
nothing (it is counted as a duplicate). The rights engine reads open requests
with :func:`read_requests` and records its progress with :func:`update_requests`.

Identity values are personal data: nothing here logs them, and rejection reasons
never contain them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ketch_spark.config import KetchConfig
from ketch_spark.errors import InvalidRequestError
from ketch_spark.rights.identities import (
    REQUEST_KINDS,
    UNREADABLE_KEY,
    ValidRequest,
    validate_request,
)
from ketch_spark.tables import delta_table, ensure_table, read_table, table_spec

__all__ = [
    "STATUS_OPEN",
    "STATUS_DONE",
    "UPDATABLE_FIELDS",
    "SubmitResult",
    "submit_requests",
    "read_request_file",
    "read_requests",
    "request_status",
    "update_requests",
    "request_key_condition",
]

logger = logging.getLogger(__name__)

_TABLE = "dsr_requests"
#: Status of a request stored and not yet processed.
STATUS_OPEN = "open"
#: Status of a request fully processed.
STATUS_DONE = "done"
#: Fields :func:`update_requests` may set.
UPDATABLE_FIELDS = ("status", "error", "finished_at")
_STATUS_COLUMNS = ("request_id", "org_id", "kind", "mode", "status", "received_at", "due_at", "overdue", "error",
                   "finished_at")


@dataclass
class SubmitResult:
    """Outcome of one :func:`submit_requests` call; every input is in exactly one list.

    Attributes:
        accepted: Ids of the requests newly stored.
        duplicates: Ids of requests already stored (or given twice, identically, in the call).
        rejected: One dict per invalid input: ``index`` (position in the input),
            ``request_id`` (when it was a string, else ``None``) and ``reason``.
    """

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def submitted(self) -> int:
        """Number of inputs."""
        return len(self.accepted) + len(self.duplicates) + len(self.rejected)

    def summary(self) -> dict[str, Any]:
        """A JSON-able dict: counts and the rejections."""
        return {
            "submitted": self.submitted,
            "accepted": len(self.accepted),
            "duplicates": len(self.duplicates),
            "rejected": len(self.rejected),
            "rejections": [dict(r) for r in self.rejected],
        }


def request_key_condition(target: str = "t", source: str = "s") -> str:
    """The MERGE condition of ``dsr_requests``: one row per ``request_id``."""
    return f"{target}.request_id = {source}.request_id"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _aware(naive_utc: dt.datetime | None) -> dt.datetime | None:
    """A naive UTC datetime made explicit, so Spark stores the same instant whatever the local zone."""
    if naive_utc is None or naive_utc.tzinfo is not None:
        return naive_utc
    return naive_utc.replace(tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------------- reading inputs


def read_request_file(path: str | Path) -> list[dict[str, Any]]:
    """Reads requests from a local JSON-lines file (the CLI's ``--input``).

    Blank lines are skipped. A line that is not a JSON object becomes a placeholder
    that :func:`submit_requests` rejects with the reason ``line N is not valid
    JSON`` (or ``... not a JSON object``), so one bad line does not stop the others.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    requests: list[dict[str, Any]] = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                # exc.msg names the syntax problem, never the line's content.
                requests.append({UNREADABLE_KEY: f"line {number} is not valid JSON ({exc.msg} at column {exc.colno})"})
                continue
            if not isinstance(value, dict):
                requests.append({UNREADABLE_KEY: f"line {number} is not a JSON object"})
                continue
            requests.append(value)
    return requests


def _plain(value: Any) -> Any:
    """A collected value as plain Python: Rows become dicts; nulls inside them are dropped."""
    if isinstance(value, T.Row):
        value = value.asDict(recursive=False)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value


def _collect_frame(requests_df: DataFrame) -> list[dict[str, Any]]:
    """The rows of a DataFrame of requests as dicts; a null column counts as absent.

    Timestamps are collected as epoch microseconds and turned into naive UTC
    datetimes here, so the local time zone of the driver plays no part.
    """
    columns = []
    stamps = set()
    for f in requests_df.schema.fields:
        col = F.col(f"`{f.name}`")
        if isinstance(f.dataType, T.TimestampType):
            stamps.add(f.name)
            col = F.unix_micros(col)
        elif isinstance(f.dataType, (T.TimestampNTZType, T.DateType)):
            col = col.cast("string")
        columns.append(col.alias(f.name))
    epoch = dt.datetime(1970, 1, 1)
    out = []
    for row in requests_df.select(*columns).collect():
        record = _plain(row)
        for name in stamps & record.keys():
            record[name] = epoch + dt.timedelta(microseconds=record[name])
        out.append(record)
    return out


def _inputs(requests: Iterable[Mapping[str, Any]] | DataFrame) -> list[Any]:
    if isinstance(requests, DataFrame):
        return _collect_frame(requests)
    if isinstance(requests, (Mapping, str, bytes)):
        raise TypeError(
            f"requests must be a list of request dicts or a DataFrame, found {type(requests).__name__}"
        )
    return list(requests)


# ---------------------------------------------------------------------- submitting


def _content(request: ValidRequest) -> tuple:
    return request.org_id, request.kind, request.mode, request.identities


def _validate_all(
    inputs: list[Any], cfg: KetchConfig, now: dt.datetime, result: SubmitResult
) -> dict[str, ValidRequest]:
    """The valid requests, one per request_id (the first wins); fills ``result``'s rejections."""
    valid: dict[str, ValidRequest] = {}
    for index, raw in enumerate(inputs):
        raw_id = raw.get("request_id") if isinstance(raw, Mapping) else None
        try:
            request = validate_request(raw, cfg.dsr, now)
            earlier = valid.get(request.request_id)
            if earlier is not None and earlier != request:
                raise InvalidRequestError("request_id given twice with different content")
        except InvalidRequestError as exc:
            result.rejected.append(
                {"index": index, "request_id": raw_id if isinstance(raw_id, str) else None, "reason": str(exc)}
            )
            continue
        if earlier is not None:
            result.duplicates.append(request.request_id)
        else:
            valid[request.request_id] = request
    return valid


def _stored(spark: SparkSession, cfg: KetchConfig, request_ids: list[str]) -> dict[str, tuple]:
    """Content of the requests among ``request_ids`` that are already stored."""
    rows = (
        read_table(spark, cfg, _TABLE)
        .where(F.col("request_id").isin(request_ids))
        .select("request_id", "org_id", "kind", "mode", "identities")
        .collect()
    )
    return {r.request_id: (r.org_id, r.kind, r.mode, dict(r.identities)) for r in rows}


def _table_rows(requests: Iterable[ValidRequest], now: dt.datetime) -> list[tuple]:
    stamp = _aware(now)
    return [
        (r.request_id, r.org_id, r.kind, r.mode, dict(r.identities), _aware(r.received_at), _aware(r.due_at),
         STATUS_OPEN, stamp, stamp, None, None, None)
        for r in requests
    ]


def submit_requests(
    spark: SparkSession, cfg: KetchConfig, requests: Iterable[Mapping[str, Any]] | DataFrame
) -> SubmitResult:
    """Validates data-subject requests and stores the valid ones in ``dsr/requests``.

    Invalid requests are reported, not raised. The valid ones are written with one
    insert-only MERGE on ``request_id``: a request already stored stays as it was
    and is counted as a duplicate, so submitting a file twice is harmless. Within
    one call the first request of an id wins; a later one is a duplicate when
    identical, else rejected. New rows are ``open`` with ``submitted_at`` =
    ``updated_at`` = now. Nothing is written when no request is new.

    Args:
        spark: The session.
        cfg: The config (``cfg.dsr`` holds due days and the default phone region).
        requests: Request dicts (see :func:`~ketch_spark.rights.identities.validate_request`),
            or a DataFrame of them whose ``identities`` is a map or a struct and
            ``received_at`` a string or a timestamp.

    Returns:
        Accepted, duplicate and rejected requests.

    Raises:
        TypeError: ``requests`` is a single dict or a string rather than a list.
    """
    inputs = _inputs(requests)
    now = _utc_now()
    result = SubmitResult()
    valid = _validate_all(inputs, cfg, now, result)
    for rejection in result.rejected:
        logger.info("request %s rejected: %s", rejection["request_id"] or f"#{rejection['index']}",
                    rejection["reason"])
    if result.rejected:
        logger.warning("%d of %d requests rejected", len(result.rejected), len(inputs))
    if valid:
        ensure_table(spark, cfg, _TABLE)
        stored = _stored(spark, cfg, list(valid))
        for request_id, content in stored.items():
            if content != _content(valid[request_id]):
                logger.warning("request %s is already stored with other content; the stored one is kept", request_id)
        result.duplicates.extend(stored)
        new = [r for request_id, r in valid.items() if request_id not in stored]
        if new:
            _insert(spark, cfg, new, now)
            result.accepted.extend(r.request_id for r in new)
    logger.info("submitted %d requests: %d accepted, %d duplicates, %d rejected", result.submitted,
                len(result.accepted), len(result.duplicates), len(result.rejected))
    return result


def _insert(spark: SparkSession, cfg: KetchConfig, requests: list[ValidRequest], now: dt.datetime) -> None:
    """One insert-only MERGE of ``requests`` (one per request_id already: the source is deduplicated)."""
    schema = table_spec(_TABLE).schema
    source_df = spark.createDataFrame(_table_rows(requests, now), schema)
    (
        delta_table(spark, cfg, _TABLE).alias("t")
        .merge(source_df.alias("s"), request_key_condition("t", "s"))
        .whenNotMatchedInsert(values={c: f"s.`{c}`" for c in schema.fieldNames()})
        .execute()
    )


# ---------------------------------------------------------------------- reading and updating


def read_requests(
    spark: SparkSession, cfg: KetchConfig, statuses: Sequence[str] | None = None, kind: str | None = None
) -> DataFrame:
    """The ``dsr_requests`` table (created empty if missing), optionally filtered.

    Args:
        spark: The session.
        cfg: The config.
        statuses: Keep requests with one of these statuses (a single string is one status).
        kind: Keep requests of this kind (``erasure`` or ``access``).

    Raises:
        InvalidRequestError: ``kind`` is not a request kind.
    """
    if kind is not None and kind not in REQUEST_KINDS:
        raise InvalidRequestError(f"unknown kind {kind!r}; expected one of {', '.join(REQUEST_KINDS)}")
    ensure_table(spark, cfg, _TABLE)
    requests_df = read_table(spark, cfg, _TABLE)
    if statuses is not None:
        wanted = [statuses] if isinstance(statuses, str) else list(statuses)
        requests_df = requests_df.where(F.col("status").isin(wanted))
    if kind is not None:
        requests_df = requests_df.where(F.col("kind") == kind)
    return requests_df


def request_status(spark: SparkSession, cfg: KetchConfig, now: dt.datetime | None = None) -> DataFrame:
    """Every request's progress, without its identities, ordered by due date.

    Columns: request_id, org_id, kind, mode, status, received_at, due_at, overdue
    (not ``done`` and due before ``now``), error, finished_at.

    Args:
        spark: The session.
        cfg: The config.
        now: Time the overdue flag is computed against (naive = UTC); default the current time.
    """
    now = _utc_now() if now is None else now
    overdue = (F.col("status") != STATUS_DONE) & (F.col("due_at") < F.lit(_aware(now)))
    return (
        read_requests(spark, cfg)
        .withColumn("overdue", F.coalesce(overdue, F.lit(False)))
        .select(*_STATUS_COLUMNS)
        .orderBy("due_at", "request_id")
    )


def _update_rows(updates: Mapping[str, Mapping[str, Any]]) -> list[tuple]:
    rows = []
    for request_id, changes in updates.items():
        if not isinstance(request_id, str) or not isinstance(changes, Mapping):
            raise InvalidRequestError("updates must map a request_id to a mapping of fields")
        unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
        if unknown:
            raise InvalidRequestError(
                f"update of request {request_id}: unknown field(s) {', '.join(map(str, unknown))}; "
                f"expected {', '.join(UPDATABLE_FIELDS)}"
            )
        status, error, finished_at = (changes.get(c) for c in UPDATABLE_FIELDS)
        if "status" in changes and (not isinstance(status, str) or not status.strip()):
            raise InvalidRequestError(f"update of request {request_id}: status must be a non-empty string")
        if error is not None and not isinstance(error, str):
            raise InvalidRequestError(f"update of request {request_id}: error must be a string or None")
        if finished_at is not None and not isinstance(finished_at, dt.datetime):
            raise InvalidRequestError(f"update of request {request_id}: finished_at must be a datetime or None")
        rows.append((request_id, "status" in changes, status, "error" in changes, error,
                     "finished_at" in changes, _aware(finished_at)))
    return rows


_UPDATE_SCHEMA = T.StructType(
    [
        T.StructField("request_id", T.StringType(), False),
        T.StructField("set_status", T.BooleanType(), False),
        T.StructField("status", T.StringType(), True),
        T.StructField("set_error", T.BooleanType(), False),
        T.StructField("error", T.StringType(), True),
        T.StructField("set_finished_at", T.BooleanType(), False),
        T.StructField("finished_at", T.TimestampType(), True),
    ]
)


def update_requests(
    spark: SparkSession, cfg: KetchConfig, updates: Mapping[str, Mapping[str, Any]], run_id: str
) -> None:
    """Records the progress of requests with one MERGE.

    Each request named in ``updates`` gets the fields its mapping gives (any of
    ``status``, ``error``, ``finished_at``; a field given as ``None`` is cleared,
    a field not given is kept), ``last_run_id = run_id`` and ``updated_at = now``.
    Ids that are not stored are ignored.

    Args:
        spark: The session.
        cfg: The config.
        updates: request_id -> fields to set.
        run_id: Id of the run making the update.

    Raises:
        InvalidRequestError: An update names an unknown field or has a value of the
            wrong type (checked before any Spark work).
        TableNotFoundError: ``dsr/requests`` does not exist (no request was ever submitted).
    """
    if not isinstance(run_id, str) or not run_id.strip():
        raise InvalidRequestError("run_id must be a non-empty string")
    rows = _update_rows(updates)
    if not rows:
        return
    now = _aware(_utc_now())
    source_df = spark.createDataFrame(rows, _UPDATE_SCHEMA)

    def kept_unless(flag: str, column: str) -> Any:
        return F.when(F.col(f"s.{flag}"), F.col(f"s.{column}")).otherwise(F.col(f"t.{column}"))

    (
        delta_table(spark, cfg, _TABLE).alias("t")
        .merge(source_df.alias("s"), request_key_condition("t", "s"))
        .whenMatchedUpdate(
            set={
                "status": kept_unless("set_status", "status"),
                "error": kept_unless("set_error", "error"),
                "finished_at": kept_unless("set_finished_at", "finished_at"),
                "last_run_id": F.lit(run_id),
                "updated_at": F.lit(now),
            }
        )
        .execute()
    )
    logger.info("run %s updated %d requests", run_id, len(rows))
