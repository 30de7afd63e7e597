"""Matching a batch's identities against an asset's identity columns, in one pass.

The identities of a batch of requests are a small DataFrame (:data:`IDENTITIES_SCHEMA`),
one row per (request, identity type, normalised value). For one asset, every
identity column (``asset.identity_columns``, from the catalog) is normalised the way
intake normalised the identities of its type, and compared with the batch's values
of that type:

* ``email`` and ``email_sha256``: trimmed and lower-cased;
* ``phone``: digits with a leading ``+`` (``00`` read as ``+``; a number without a
  country code gets ``dsr.default_phone_region``'s, else it cannot match);
* ``user_id`` and ``device_id``: trimmed of spaces (as consent ingest trims the
  ids it stores); non-string columns are cast to string.

Where the asset has the org column (``dsr.org_column``, default ``org_id``), a
request only matches rows of its own org: the key is ``org <US> value``.

A free-text column (category :data:`FREE_TEXT`, such as consent/quarantine's
``raw`` record text) is split into tokens at spaces and JSON/CSV punctuation; a
row matches when one token equals an identity (emails lower-cased). Without an
org column (consent/quarantine has none), a rejected record naming the
identity is matched whatever its org.

The row condition is one hash-set membership per identity column (Spark plans an
``IN`` list of more than a few values as ``InSet``: one hash set shipped with the
tasks), so an asset is read once for the whole batch whatever its number of
requests. :func:`with_request_ids` then attributes only the matched rows to their
requests through a literal map of the batch's keys (no join).
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ketch_spark.connectors.base import Asset, PersonalColumn

__all__ = [
    "phone_country_prefix",
    "IDENTITIES_SCHEMA",
    "IDENTITY_TYPES",
    "REQUEST_ID_COLUMN",
    "KEY_SEPARATOR",
    "MatchPlan",
    "match_plan",
    "normalised_key",
    "resolve_leaf",
    "with_request_ids",
    "request_ids",
    "MatchCounts",
    "count_matches",
    "batch_rows",
    "identity_values",
    "FREE_TEXT",
    "phone_country_code",
]

logger = logging.getLogger(__name__)

#: Schema of a batch's identities.
IDENTITIES_SCHEMA = T.StructType(
    [
        T.StructField("request_id", T.StringType(), False),
        T.StructField("org_id", T.StringType(), False),
        T.StructField("identity_type", T.StringType(), False),
        T.StructField("value", T.StringType(), False),
    ]
)
#: Identity types a request can carry and a column can hold.
IDENTITY_TYPES = ("email", "email_sha256", "phone", "user_id", "device_id")
#: Column that :meth:`Connector.find` adds: the request a matched row belongs to.
REQUEST_ID_COLUMN = "_request_id"
#: Separates org and value in org-scoped keys (a control character no id contains).
KEY_SEPARATOR = "\x1f"
#: Category of a column holding free text (a raw record) in which identities are looked for as tokens.
FREE_TEXT = "free_text"
_TOKEN_SEPARATORS = r"[\s,;:\"'{}\[\]()<>|=\\]+"

_BATCH_ROWS: weakref.WeakKeyDictionary[DataFrame, list[Row]] = weakref.WeakKeyDictionary()
_BATCH_ROWS_LOCK = threading.Lock()


def batch_rows(identities_df: DataFrame) -> list[Row]:
    """The rows of a batch's identities frame, collected once per frame object (a batch is small).

    A batch's match plan is built for each asset and each step (find, erase,
    verify); one collect serves them all.
    """
    with _BATCH_ROWS_LOCK:
        rows = _BATCH_ROWS.get(identities_df)
    if rows is None:
        rows = identities_df.collect()
        with _BATCH_ROWS_LOCK:
            _BATCH_ROWS[identities_df] = rows
    return rows


@dataclass(frozen=True)
class _Leaf:
    column: PersonalColumn
    values: Column
    is_array: bool
    data_type: T.DataType


def resolve_leaf(schema: T.StructType, path: str) -> tuple[Column, bool, T.DataType] | None:
    """The values at dot path ``path`` of ``schema``: (expression, is_array, leaf type), or ``None``.

    Struct fields extend the path; an array of structs on the way makes the
    expression an array of the leaf's values. A path that does not resolve (a
    field inside a JSON string, a column gone since the scan) gives ``None``.
    """
    parts = path.split(".")
    dtype: T.DataType = schema
    is_array = False
    for part in parts:
        if isinstance(dtype, T.ArrayType):
            is_array, dtype = True, dtype.elementType
        if not isinstance(dtype, T.StructType) or part not in dtype.fieldNames():
            return None
        dtype = dtype[part].dataType
    if isinstance(dtype, (T.StructType, T.MapType)) or (isinstance(dtype, T.ArrayType) and is_array):
        return None
    if isinstance(dtype, T.ArrayType):
        is_array, dtype = True, dtype.elementType
        if isinstance(dtype, (T.StructType, T.MapType, T.ArrayType)):
            return None
    column = F.col(".".join(f"`{p}`" for p in parts))
    return column, is_array, dtype


def _phone_key(value: Column, country_code: str | None) -> Column:
    compact = F.regexp_replace(F.trim(value), r"[^0-9+]", "")
    digits = F.regexp_replace(compact, r"[^0-9]", "")
    national = F.lit(None).cast("string") if country_code is None else \
        F.concat(F.lit(f"+{country_code}"), F.regexp_replace(digits, r"^0", ""))
    return (
        F.when(compact.startswith("+"), F.concat(F.lit("+"), digits))
        .when(compact.startswith("00"), F.concat(F.lit("+"), F.substring(digits, 3, 64)))
        .otherwise(national)
    )


def normalised_key(value: Column, identity_type: str, country_code: str | None = None) -> Column:
    """``value`` normalised like intake normalises identities of ``identity_type``."""
    text = value.cast("string")
    if identity_type in ("email", "email_sha256"):
        return F.lower(F.trim(text))
    if identity_type == "phone":
        return _phone_key(text, country_code)
    return F.trim(text)


@dataclass
class MatchPlan:
    """How one asset is matched against one batch.

    Attributes:
        condition: True on rows matching any identity of the batch (one pass).
        key_columns: Per identity column, its keys as an array of (type, key) structs.
        org_column: The org column the keys are scoped by, or ``None``.
        matched_columns: Identity columns that took part.
        skipped: Identity columns that could not be read from the asset (why, per column).
        identity_count: Distinct (type, key) values of the batch.
    """

    condition: Column
    key_columns: list[Column]
    org_column: str | None
    matched_columns: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    identity_count: int = 0

    @property
    def can_match(self) -> bool:
        """Whether any identity column of the asset has a value of the batch to look for."""
        return bool(self.matched_columns)


def _key_expression(leaf: _Leaf, org: Column | None, country_code: str | None) -> Column:
    identity_type = leaf.column.identity_type or ""

    def key(value: Column) -> Column:
        normal = normalised_key(value, identity_type, country_code)
        return normal if org is None else F.concat(org, F.lit(KEY_SEPARATOR), normal)

    return F.transform(leaf.values, key) if leaf.is_array else key(leaf.values)


def phone_country_code(region: str | None) -> str | None:
    """The country calling code of ``region`` (``"US"`` -> ``"1"``), ``None`` without a region or for an unknown one."""
    if region is None:
        return None
    import phonenumbers

    code = phonenumbers.country_code_for_region(region)
    return str(code) if code else None


def phone_country_prefix(region: str | None) -> str | None:
    """``+<country code>`` that national phone numbers of ``region`` get when normalised, or ``None``."""
    code = phone_country_code(region)
    return None if code is None else f"+{code}"


def _identity_key(row: Row, scoped: bool) -> str:
    """The key an identity of the batch matches: its value, prefixed by its org where the asset has one."""
    return f"{row['org_id']}{KEY_SEPARATOR}{row['value']}" if scoped else row["value"]


def _batch_keys(identities: Iterable[Row], scoped: bool) -> dict[str, list[str]]:
    keys: dict[str, set[str]] = {}
    for row in identities:
        keys.setdefault(row["identity_type"], set()).add(_identity_key(row, scoped))
    return {t: sorted(v) for t, v in keys.items()}


def match_plan(
    schema: T.StructType,
    asset: Asset,
    identities: list[Row],
    org_column: str = "org_id",
    default_phone_region: str | None = None,
) -> MatchPlan:
    """The match of ``asset`` (read with ``schema``) against a batch's collected identities.

    Args:
        schema: Schema the asset is read with.
        asset: The asset, with its ``personal_columns`` from the catalog.
        identities: Rows of :data:`IDENTITIES_SCHEMA` (the batch, collected: it is small).
        org_column: Column naming the customer; used when the asset has it.
        default_phone_region: Region whose country code national phone numbers get.
    """
    scoped = org_column in schema.fieldNames()
    org = F.col(f"`{org_column}`").cast("string") if scoped else None
    batch = _batch_keys(identities, scoped)
    country_code = phone_country_code(default_phone_region)
    conditions: list[Column] = []
    key_columns: list[Column] = []
    plan = MatchPlan(F.lit(False), key_columns, org_column if scoped else None,
                     identity_count=sum(len(v) for v in batch.values()))
    for personal in asset.identity_columns:
        resolved = resolve_leaf(schema, personal.column)
        if resolved is None:
            plan.skipped.append(f"{personal.column}: not readable as a column of the asset")
            continue
        values = batch.get(personal.identity_type or "")
        if not values:
            continue
        leaf = _Leaf(personal, *resolved)
        if personal.category == FREE_TEXT:
            leaf = _Leaf(personal, F.split(leaf.values.cast("string"), _TOKEN_SEPARATORS), True, T.StringType())
        key = _key_expression(leaf, org, country_code)
        conditions.append(F.exists(key, lambda k: k.isin(values)) if leaf.is_array else key.isin(values))
        label = F.lit(personal.identity_type)
        pairs = F.transform(key, lambda k: F.struct(label.alias("t"), k.alias("k"))) if leaf.is_array else \
            F.array(F.struct(label.alias("t"), key.alias("k")))
        key_columns.append(pairs)
        plan.matched_columns.append(personal.column)
    if conditions:
        condition = conditions[0]
        for other in conditions[1:]:
            condition = condition | other
        plan.condition = F.coalesce(condition, F.lit(False))
    if plan.skipped:
        logger.warning("asset %s: %s", asset.asset_id, "; ".join(plan.skipped))
    return plan


def identity_values(
    df: DataFrame, asset: Asset, org_column: str = "org_id", default_phone_region: str | None = None
) -> DataFrame:
    """Distinct normalised values of ``asset``'s identity columns in ``df`` (one pass).

    Returns:
        identity_type, org_id (the row's org, null where ``df`` has no org
        column), value: normalised as :func:`normalised_key` does, so equal to
        the value of a request naming the same identity.
    """
    scoped = org_column in df.columns
    org = (F.col(f"`{org_column}`").cast("string") if scoped else F.lit(None).cast("string")).alias("org_id")
    country_code = phone_country_code(default_phone_region)
    entries: list[Column] = []
    for personal in asset.identity_columns:
        resolved = resolve_leaf(df.schema, personal.column)
        if resolved is None:
            continue
        values, is_array, _ = resolved
        if personal.category == FREE_TEXT:
            values, is_array = F.split(values.cast("string"), _TOKEN_SEPARATORS), True
        identity_type = personal.identity_type or ""

        def entry(value: Column, identity_type: str = identity_type) -> Column:
            return F.struct(F.lit(identity_type).alias("identity_type"),
                            normalised_key(value, identity_type, country_code).alias("value"))

        entries.append(F.transform(values, entry) if is_array else F.array(entry(values)))
    empty = df.sparkSession.createDataFrame([], "identity_type string, org_id string, value string")
    if not entries:
        return empty
    exploded = df.select(org, F.explode(F.concat(*entries)).alias("e"))
    found = exploded.select(F.col("e.identity_type").alias("identity_type"), "org_id", F.col("e.value").alias("value"))
    return found.where(F.col("value").isNotNull() & (F.col("value") != "")).distinct()


def _requests_by_key(identities: Iterable[Row], scoped: bool) -> dict[str, list[str]]:
    """Request ids per ``<identity type><sep><key>`` of a batch, keys as :func:`match_plan` builds them."""
    requests: dict[str, set[str]] = {}
    for row in identities:
        typed_key = f"{row['identity_type']}{KEY_SEPARATOR}{_identity_key(row, scoped)}"
        requests.setdefault(typed_key, set()).add(row["request_id"])
    return {k: sorted(v) for k, v in sorted(requests.items())}


def request_ids(plan: MatchPlan, identities_df: DataFrame) -> Column | None:
    """Per row, the distinct ids of the batch's requests whose identities the row holds (an array).

    Each row's keys are looked up in a literal map of the batch's keys to their
    request ids (a batch is small, and the plan's condition already holds its
    keys): no join, no shuffle, no broadcast job. ``None`` when no row can match.
    """
    requests = _requests_by_key(batch_rows(identities_df), plan.org_column is not None)
    if not plan.key_columns or not requests:
        return None
    keys = plan.key_columns[0] if len(plan.key_columns) == 1 else F.concat(*plan.key_columns)
    lookup = F.create_map(*[x for key, ids in requests.items() for x in (F.lit(key), F.array(*map(F.lit, ids)))])
    nothing = F.array().cast("array<string>")
    return F.array_distinct(F.flatten(F.transform(
        keys, lambda pair: F.coalesce(lookup[F.concat(pair["t"], F.lit(KEY_SEPARATOR), pair["k"])], nothing))))


def with_request_ids(matched_df: DataFrame, plan: MatchPlan, identities_df: DataFrame) -> DataFrame:
    """``matched_df`` (rows passing ``plan.condition``) with ``_request_id``: one row per (row, request)."""
    ids = request_ids(plan, identities_df)
    if ids is None:
        return matched_df.withColumn(REQUEST_ID_COLUMN, F.lit(None).cast("string")).limit(0)
    return matched_df.withColumn(REQUEST_ID_COLUMN, F.explode(ids))


@dataclass(frozen=True)
class MatchCounts:
    """Matched rows of one pass: in all, per request id, and per value of a chosen column.

    Attributes:
        rows: Rows matched.
        by_request: Rows per request id (a row holding two requests' identities counts for each).
        by_value: Rows per value of the column named by :func:`count_matches`' ``by``.
    """

    rows: int
    by_request: dict[str, int]
    by_value: dict[Any, int]


def count_matches(matched_df: DataFrame, plan: MatchPlan, identities_df: DataFrame, by: str | None = None
                  ) -> MatchCounts:
    """Counts ``matched_df``'s rows in all, per request and per value of column ``by``: one job.

    The rows are grouped by (their set of request ids, ``by``), which has few
    groups whatever the number of rows; the sums are made here.
    """
    ids = request_ids(plan, identities_df)
    columns = [(ids if ids is not None else F.array().cast("array<string>")).alias("ids")]
    columns.append((F.col(f"`{by}`") if by else F.lit(None)).alias("by"))
    groups = matched_df.select(*columns).groupBy("ids", "by").count().collect()
    by_request: dict[str, int] = {}
    by_value: dict[Any, int] = {}
    for group in groups:
        for request_id in group["ids"]:
            by_request[request_id] = by_request.get(request_id, 0) + int(group["count"])
        if by:
            by_value[group["by"]] = by_value.get(group["by"], 0) + int(group["count"])
    return MatchCounts(sum(int(g["count"]) for g in groups), by_request, by_value)
