"""Compaction: consent/events -> consent/state, incremental, exactly once, equal to a full rebuild.

State per (org_id, user_id, purpose bit) is the choice with the greatest
event_ts; on equal event_ts a denial wins. ``purpose_ts`` holds the event_ts of
that latest choice, so a later event that repeats the current choice still
moves it (needed to order events that arrive late).

How a run works (one code path for incremental and full):

1. **New events.** The state table records, as a Delta idempotent-write
   transaction (``txnAppId`` ``ketch-spark/compact``), the consent/events
   version it has applied. An incremental run reads only the events committed
   after it, through the events table's Change Data Feed (only the files added
   by those commits are read). A full run reads every event.
2. **Reduce** them to the latest choice per (org, user, bit)
   (:func:`latest_choices`), then to one row per user (:func:`user_choices`).
3. **Apply** each user's choices to the user's current state row
   (:func:`apply_choices`): only the key, bitmap and ``purpose_ts`` columns of
   the state are read, and a user whose row would not change is dropped. A
   full run applies to an empty state.
4. **Write** in one Delta commit that also records the applied events version:
   a MERGE of the changed rows (incremental; deletion vectors keep it to the
   changed rows) or an overwrite (full). A run killed before its commit leaves
   the state as it was; running again applies the same events; applying the
   same events twice is skipped by Delta (same ``txnAppId``, same version).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ketch_spark.bitmap import bitmap_assign, empty_bitmap, has_bit, has_purpose
from ketch_spark.config import KetchConfig
from ketch_spark.consent.sources import delta_txn_version, delta_version
from ketch_spark.errors import KetchError
from ketch_spark.policy import Policy
from ketch_spark.tables import delta_table, ensure_table, read_table, table_exists, table_path

__all__ = [
    "CompactResult",
    "CompactError",
    "compact_consent",
    "latest_choices",
    "user_choices",
    "apply_choices",
    "state_merge_condition",
    "consent_rates",
    "applied_events_version",
    "COMPACT_TXN_APP_ID",
]

logger = logging.getLogger(__name__)

COMPACT_TXN_APP_ID = "ketch-spark/compact"
_KEY = ("org_id", "user_id")
_TXN_CONF_APP = "spark.databricks.delta.write.txnAppId"
_TXN_CONF_VERSION = "spark.databricks.delta.write.txnVersion"
_CHOICE = "struct<bit:int,granted:boolean,event_ts:timestamp>"


class CompactError(KetchError, ValueError):
    """Compaction was asked for something that does not exist (e.g. an unknown batch)."""


@dataclass(frozen=True)
class CompactResult:
    """Outcome of one :func:`compact_consent` call.

    Attributes:
        full: Whether the state was rebuilt from every event.
        batch_id: The batch asked for, if any.
        from_version: First consent/events version read (``None`` when nothing was to do).
        to_version: Last consent/events version applied.
        events_read: Event rows read.
        users_touched: Users with at least one new event.
        users_changed: State rows written (inserted + updated).
        inserted: New state rows.
        updated: Changed state rows.
        committed: Whether a state commit was made.
        state_version: consent/state version after the run.
        seconds: Wall time.
    """

    full: bool
    batch_id: str | None
    from_version: int | None
    to_version: int | None
    events_read: int
    users_touched: int
    users_changed: int
    inserted: int
    updated: int
    committed: bool
    state_version: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        """A JSON-able dict of the result."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 2)
        return data


# ---------------------------------------------------------------- the one code path


def latest_choices(events_df: DataFrame) -> DataFrame:
    """The latest choice per (org_id, user_id, purpose_bit); on equal event_ts a denial wins.

    Args:
        events_df: Rows with org_id, user_id, purpose_bit, granted, event_ts.

    Returns:
        org_id, user_id, bit, granted, event_ts, events (rows reduced).
    """
    latest = F.max(F.struct(F.col("event_ts"), (~F.col("granted")).alias("denied")))
    reduced = events_df.groupBy("org_id", "user_id", F.col("purpose_bit").alias("bit")).agg(
        latest.alias("m"), F.count(F.lit(1)).alias("events")
    )
    return reduced.select(
        "org_id", "user_id", "bit", (~F.col("m.denied")).alias("granted"), F.col("m.event_ts").alias("event_ts"), "events"
    )


def user_choices(latest_df: DataFrame) -> DataFrame:
    """One row per user: ``choices`` (array of bit, granted, event_ts) and ``events``."""
    choice = F.struct(F.col("bit").cast("int").alias("bit"), "granted", "event_ts")
    return latest_df.groupBy(*_KEY).agg(F.collect_list(choice).alias("choices"), F.sum("events").alias("events"))


def _apply_one(choice: Column, old_ts: Column, old_granted: Column) -> Column:
    """A user's choice for one bit against the state: the resulting (bit, granted, event_ts, changed)."""
    state_ts = F.try_element_at(old_ts, choice["bit"])
    state_granted = F.coalesce(has_bit(old_granted, choice["bit"]), F.lit(False))
    newer = state_ts.isNull() | (choice["event_ts"] > state_ts)
    tie = choice["event_ts"] == state_ts
    granted = F.when(newer, choice["granted"]).when(tie, state_granted & choice["granted"]).otherwise(state_granted)
    event_ts = F.when(newer, choice["event_ts"]).otherwise(state_ts)
    changed = newer | (tie & state_granted & ~choice["granted"])
    return F.struct(
        choice["bit"].alias("bit"), granted.alias("granted"), event_ts.alias("event_ts"), changed.alias("changed")
    )


def _not_null_words(bitmap: Column) -> Column:
    """The same bitmap typed ``array<bigint>`` without null elements, as consent_state declares it."""
    return F.transform(bitmap, lambda word: F.coalesce(word, F.lit(0).cast("bigint")))


def _not_null_values(entries: Column) -> Column:
    """Map entries typed with a non-null timestamp value, as consent_state declares ``purpose_ts``."""
    epoch = F.lit(dt.datetime(1970, 1, 1)).cast("timestamp")
    return F.transform(
        entries, lambda e: F.struct(e["key"].alias("key"), F.coalesce(e["value"], epoch).alias("value"))
    )


def apply_choices(choices_df: DataFrame, state_df: DataFrame, n_words: int, updated_at: dt.datetime) -> DataFrame:
    """New state rows of the users in ``choices_df``; ``changed`` is false where nothing would change.

    Args:
        choices_df: From :func:`user_choices`.
        state_df: Current state rows (org_id, user_id, granted, known, purpose_ts); may be empty.
        n_words: Bitmap width in 64-bit words.
        updated_at: Time stamped on written rows.

    Returns:
        The consent_state columns plus ``is_new`` (no state row before), ``events``
        (event rows of the user read) and ``changed``.
    """
    state = state_df.select(
        *_KEY,
        F.col("granted").alias("old_granted"),
        F.col("known").alias("old_known"),
        F.col("purpose_ts").alias("old_ts"),
    )
    joined = choices_df.join(state, list(_KEY), "left")
    old_ts = F.coalesce("old_ts", F.create_map().cast("map<int,timestamp>"))
    old_granted = F.coalesce("old_granted", empty_bitmap(n_words))
    old_known = F.coalesce("old_known", empty_bitmap(n_words))
    outcome = F.filter(
        F.transform("choices", lambda c: _apply_one(c, old_ts, old_granted)), lambda o: o["changed"]
    )
    staged = joined.select(
        *_KEY, "events", F.col("old_ts").isNull().alias("is_new"),
        old_ts.alias("old_ts"), old_granted.alias("old_granted"), old_known.alias("old_known"), outcome.alias("outcome"),
    )
    changed_bits = F.transform("outcome", lambda o: o["bit"])
    granted_assignments = F.transform("outcome", lambda o: F.struct(o["bit"].alias("bit"), o["granted"].alias("value")))
    known_assignments = F.transform("outcome", lambda o: F.struct(o["bit"].alias("bit"), F.lit(True).alias("value")))
    kept_ts = F.filter(F.map_entries("old_ts"), lambda e: ~F.array_contains(changed_bits, e["key"]))
    new_ts = F.concat(kept_ts, F.transform("outcome", lambda o: F.struct(o["bit"].alias("key"), o["event_ts"].alias("value"))))
    return staged.select(
        *_KEY,
        _not_null_words(bitmap_assign("old_granted", granted_assignments, n_words)).alias("granted"),
        _not_null_words(bitmap_assign("old_known", known_assignments, n_words)).alias("known"),
        F.map_from_entries(_not_null_values(F.array_sort(new_ts))).alias("purpose_ts"),
        F.lit(updated_at).cast("timestamp").alias("updated_at"),
        "is_new",
        "events",
        (F.size("outcome") > 0).alias("changed"),
    )


def state_merge_condition(target: str = "t", source: str = "s") -> str:
    """The MERGE condition of consent_state: one row per (org_id, user_id)."""
    return " AND ".join(f"{target}.{c} = {source}.{c}" for c in _KEY)


# ---------------------------------------------------------------- versions and reading


def applied_events_version(spark: SparkSession, cfg: KetchConfig) -> int | None:
    """The consent/events version the state has applied, ``None`` before the first compaction."""
    return delta_txn_version(spark, table_path(cfg, "consent_state"), COMPACT_TXN_APP_ID)


def _require_events(spark: SparkSession, cfg: KetchConfig) -> str:
    """Path of consent/events; raises TableNotFoundError when nothing was ingested yet."""
    read_table(spark, cfg, "consent_events")
    return table_path(cfg, "consent_events")


def _batch_version(spark: SparkSession, cfg: KetchConfig, batch_id: str) -> int:
    history = delta_table(spark, cfg, "consent_events").history().select("version", "userMetadata").collect()
    versions = [
        row["version"]
        for row in history
        if row["userMetadata"] and json.loads(row["userMetadata"]).get("batch_id") == batch_id
    ]
    if not versions:
        raise CompactError(f"batch {batch_id!r} is not in consent/events; ingest it with `ketch-spark consent ingest`")
    return max(versions)


def _new_events(spark: SparkSession, cfg: KetchConfig, after: int, upto: int) -> DataFrame:
    """Events committed in versions ``after + 1 .. upto`` (Change Data Feed: only the added files)."""
    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", after + 1)
        .option("endingVersion", upto)
        .load(table_path(cfg, "consent_events"))
    )
    return changes.where(F.col("_change_type") == "insert")


def _all_events(spark: SparkSession, cfg: KetchConfig, upto: int) -> DataFrame:
    return read_table(spark, cfg, "consent_events", version=upto)


@contextlib.contextmanager
def _delta_txn(spark: SparkSession, app_id: str, version: int) -> Iterator[None]:
    """Makes the Delta commits inside idempotent writes of (app_id, version)."""
    spark.conf.set(_TXN_CONF_APP, app_id)
    spark.conf.set(_TXN_CONF_VERSION, str(version))
    try:
        yield
    finally:
        spark.conf.unset(_TXN_CONF_APP)
        spark.conf.unset(_TXN_CONF_VERSION)


def _merge_changes(spark: SparkSession, cfg: KetchConfig, changes_df: DataFrame, version: int) -> None:
    columns = ("granted", "known", "purpose_ts", "updated_at")
    state = delta_table(spark, cfg, "consent_state")
    with _delta_txn(spark, COMPACT_TXN_APP_ID, version):
        (
            state.alias("t")
            .merge(changes_df.alias("s"), state_merge_condition("t", "s"))
            .whenMatchedUpdate(set={c: f"s.{c}" for c in columns})
            .whenNotMatchedInsert(values={c: f"s.{c}" for c in (*_KEY, *columns)})
            .execute()
        )


def _overwrite_state(spark: SparkSession, cfg: KetchConfig, rows_df: DataFrame, version: int, applied: int | None) -> None:
    writer = rows_df.write.format("delta").mode("overwrite")
    if applied is None or version > applied:
        writer = writer.option("txnAppId", COMPACT_TXN_APP_ID).option("txnVersion", version)
    writer.save(table_path(cfg, "consent_state"))


def _state_columns() -> list[str]:
    return ["org_id", "user_id", "granted", "known", "purpose_ts", "updated_at"]


def compact_consent(spark: SparkSession, cfg: KetchConfig, batch_id: str | None = None, full: bool = False) -> CompactResult:
    """Applies the not-yet-applied consent events to consent/state, all orgs in one pass.

    Args:
        spark: Delta-enabled session.
        cfg: Configuration.
        batch_id: Apply the pending events up to and including this ingest batch;
            ``None`` applies every pending event.
        full: Rebuild the state from every event (up to the batch, if given).

    Returns:
        What was read and written.

    Raises:
        TableNotFoundError: consent/events does not exist (nothing ingested yet).
        CompactError: ``batch_id`` is not in consent/events.
    """
    started = time.perf_counter()
    policy: Policy = cfg.policy()
    events_version = delta_version(spark, _require_events(spark, cfg))
    if not table_exists(spark, cfg, "consent_state"):
        ensure_table(spark, cfg, "consent_state")
    upto = _batch_version(spark, cfg, batch_id) if batch_id else events_version
    applied = applied_events_version(spark, cfg)
    incremental = not full and applied is not None
    if incremental and upto <= applied:
        logger.info("consent state already holds events up to version %s", applied)
        return _result(spark, cfg, full, batch_id, None, applied, {}, False, started)
    from_version = applied + 1 if incremental else 0
    events_df = _new_events(spark, cfg, applied, upto) if incremental else _all_events(spark, cfg, upto)
    state_df = read_table(spark, cfg, "consent_state") if incremental else _empty_state(spark, cfg)
    updated_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    choices_df = user_choices(latest_choices(events_df.select("org_id", "user_id", "purpose_bit", "granted", "event_ts")))
    rows_df = apply_choices(choices_df, state_df, policy.n_words, updated_at)
    if incremental:
        rows_df = rows_df.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts = _counts(rows_df)
            if counts["changed"]:
                _merge_changes(spark, cfg, _merge_source(rows_df), upto)
            else:
                _record_applied_version(spark, cfg, upto)
        finally:
            rows_df.unpersist()
    else:
        written = rows_df.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts = _counts(written)
            _overwrite_state(spark, cfg, _merge_source(written), upto, applied)
        finally:
            written.unpersist()
    return _result(spark, cfg, full or applied is None, batch_id, from_version, upto, counts, True, started)


def _merge_source(rows_df: DataFrame) -> DataFrame:
    """The changed rows, as written to consent/state (the table's columns)."""
    return rows_df.where("changed").select(*_state_columns())


def _record_applied_version(spark: SparkSession, cfg: KetchConfig, version: int) -> None:
    """Records ``version`` as applied when no row changed: an empty idempotent append."""
    empty = read_table(spark, cfg, "consent_state").limit(0)
    (
        empty.write.format("delta").mode("append")
        .option("txnAppId", COMPACT_TXN_APP_ID).option("txnVersion", version)
        .save(table_path(cfg, "consent_state"))
    )


def _empty_state(spark: SparkSession, cfg: KetchConfig) -> DataFrame:
    return read_table(spark, cfg, "consent_state").limit(0)


def _counts(rows_df: DataFrame) -> dict[str, int]:
    row = rows_df.agg(
        F.count(F.lit(1)).alias("touched"),
        F.coalesce(F.sum(F.col("changed").cast("int")), F.lit(0)).alias("changed"),
        F.coalesce(F.sum((F.col("is_new") & F.col("changed")).cast("int")), F.lit(0)).alias("inserted"),
        F.coalesce(F.sum("events"), F.lit(0)).alias("events"),
    ).head()
    return {key: int(row[key]) for key in ("touched", "changed", "inserted", "events")}


def _result(
    spark: SparkSession, cfg: KetchConfig, full: bool, batch_id: str | None, from_version: int | None,
    to_version: int | None, counts: dict[str, int], committed: bool, started: float,
) -> CompactResult:
    changed, inserted = counts.get("changed", 0), counts.get("inserted", 0)
    result = CompactResult(
        full=full,
        batch_id=batch_id,
        from_version=from_version,
        to_version=to_version,
        events_read=counts.get("events", 0),
        users_touched=counts.get("touched", 0),
        users_changed=changed,
        inserted=inserted,
        updated=changed - inserted,
        committed=committed,
        state_version=delta_version(spark, table_path(cfg, "consent_state")),
        seconds=time.perf_counter() - started,
    )
    logger.info("compaction: %s", result.summary())
    return result


# ---------------------------------------------------------------- statistics


def consent_rates(spark: SparkSession, cfg: KetchConfig) -> DataFrame:
    """Per active purpose: users_known, users_granted, users_allowed (policy fallback) and rate.

    ``rate`` is users_allowed / users in the state; a user who never chose a
    legitimate-interest purpose counts as allowed, one who never chose a consent
    purpose as not allowed.
    """
    policy = cfg.policy()
    state = read_table(spark, cfg, "consent_state")
    aggs = []
    for purpose in policy.active:
        known, granted = has_purpose("known", purpose.bit), has_purpose("granted", purpose.bit)
        allowed = granted | (~known & F.lit(purpose.default_allowed))
        aggs += [
            F.sum(known.cast("long")).alias(f"k{purpose.bit}"),
            F.sum(granted.cast("long")).alias(f"g{purpose.bit}"),
            F.sum(allowed.cast("long")).alias(f"a{purpose.bit}"),
        ]
    row = state.agg(F.count(F.lit(1)).alias("users"), *aggs).head()
    users = int(row["users"])
    data = [
        (
            p.name, p.bit, p.legal_basis, users,
            int(row[f"k{p.bit}"] or 0), int(row[f"g{p.bit}"] or 0), int(row[f"a{p.bit}"] or 0),
            (int(row[f"a{p.bit}"] or 0) / users) if users else None,
        )
        for p in policy.active
    ]
    schema = "purpose string, bit int, legal_basis string, users long, users_known long, users_granted long, users_allowed long, rate double"
    return spark.createDataFrame(data, schema)
