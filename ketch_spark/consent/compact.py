"""Compaction: consent/events -> consent/state, incremental, exactly once, equal to a full rebuild.

State per (org_id, user_id, purpose bit) is the choice with the greatest
event_ts; on equal event_ts a denial wins. ``purpose_ts`` holds the event_ts of
that latest choice, so a later event that repeats the current choice still
moves it (needed to order events that arrive late).

How a run works (one code path for incremental and full):

1. **New events.** The state table records, as a Delta idempotent-write
   transaction, the consent/events version it has applied. Each full rebuild
   starts a new *generation* with its own ``txnAppId`` (``ketch-spark/compact``,
   then ``ketch-spark/compact/1``, ``/2``, ...), because Delta never lets a
   transaction's version go down: a rebuild up to an older batch must be able to
   record the older version, so that the next plain run applies the rest. An incremental run reads only the events committed
   after it, through the events table's Change Data Feed (only the files added
   by those commits are read). A full run reads every event.
2. **Reduce** them to one row per touched user holding, per purpose bit, the
   latest choice as one orderable long (:func:`user_choices`, one hash
   aggregate: no sort, no collected arrays).
3. **Apply** each user's choices to the user's state row (:func:`apply_choices`,
   plain column arithmetic over the policy's bits): an incremental run joins
   only the key, bitmap and ``purpose_ts`` columns of the state and keeps the
   users whose row changes; a full run applies them to an empty state.
4. **Commit** once, recording the applied events version in the same commit:
   an overwrite (full), clustered by (org_id, user_id) in files of about
   :data:`_ROWS_PER_STATE_FILE` rows, so that a consent filter for one org
   reads only that org's files (Delta's data skipping on org_id); or a MERGE
   of the changed rows (incremental), in one of two ways chosen by
   :func:`state_commit_kind`. Usually deletion vectors mark the old rows and
   only the changed rows are written (``merge``); when most rows change
   (``consent.state_rewrite_share`` of the state or more) the MERGE rewrites
   the files it touches (``rewrite``). Both are a MERGE, so an erasure
   committed to consent/state while compaction runs conflicts with it instead
   of being overwritten (an overwrite computed from an earlier read could
   bring the erased rows back). Once MERGEs have multiplied the state's files
   past what a rebuild would write (:func:`state_needs_compacting`, checked on
   the files the run read before its MERGE), or when this run's MERGE wrote a
   large share of the state (:func:`state_needs_clustering`: a MERGE's files
   hold every org), an OPTIMIZE clustered by org_id, in files sized like a
   rebuild's, follows the commit, so the dead rows and small files of earlier
   runs do not pile up for every later read and a filter for one org reads
   only that org's files. The commit also records each purpose's
   key-set size and the state's row count
   (:mod:`ketch_spark.consent.key_set_sizes`), kept up to date from the changed
   rows, so neither the next run nor a consent filter counts or measures them.
   A run killed before its commit leaves the state as it was; running again
   applies the same events; applying the same events twice is skipped by
   Delta (same ``txnAppId``, same version).
5. **Conflicts.** A run whose commit meets another writer's (another
   compaction, an erasure), because consent/state moved past the version the
   run read (checked just before the commit) or because Delta refused the
   commit, starts again from the new state, at most ``delta.commit_retries``
   times (:mod:`ketch_spark.commits`); it then reads afresh which events the
   state has applied, so none is applied twice.
"""

from __future__ import annotations

import contextlib
import functools
import datetime as dt
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ketch_spark.bitmap import has_purpose, sql_word, sql_word_bit, sql_words_with_bits
from ketch_spark.policy import WORD_BITS
from ketch_spark.clock import utc_micros, utc_now
from ketch_spark.commits import ConcurrentCommitError, retry_on_conflict
from ketch_spark.config import KetchConfig
from ketch_spark.consent.sources import delta_txn_versions
from ketch_spark.errors import KetchError
from ketch_spark.faults import fault_point
from ketch_spark.session_conf import session_conf
from ketch_spark.policy import Policy, Purpose
from ketch_spark.consent.key_set_sizes import RecordedState, commit_user_metadata, recorded_state, sizes_after, size_change_columns
from ketch_spark.progress import report_progress
from ketch_spark.tables import (
    delta_table,
    ensure_table,
    read_table,
    table_exists,
    table_path,
    table_version,
)

__all__ = [
    "CompactResult",
    "CompactError",
    "compact_consent",
    "choice_key",
    "user_choices",
    "apply_choices",
    "state_merge_condition",
    "consent_rates",
    "applied_events_version",
    "state_commit_kind",
    "state_needs_clustering",
    "state_needs_compacting",
    "COMPACT_TXN_APP_ID",
]

logger = logging.getLogger(__name__)

COMPACT_TXN_APP_ID = "ketch-spark/compact"
_KEY = ("org_id", "user_id")
_TXN_CONF_APP = "spark.databricks.delta.write.txnAppId"
_TXN_CONF_VERSION = "spark.databricks.delta.write.txnVersion"
_MATERIALIZE_SOURCE = "spark.databricks.delta.merge.materializeSource"
_MERGE_DELETION_VECTORS = "spark.databricks.delta.merge.deletionVectors.persistent"
#: Largest MERGE source broadcast to the state's side (rows of ~100-200 bytes).
_BROADCAST_MAX_ROWS = 200_000
_STATE_COLUMNS = ("org_id", "user_id", "granted", "known", "purpose_ts", "updated_at")
#: Rows per consent/state file written by a full rebuild (about 15-30 MB).
_ROWS_PER_STATE_FILE = 250_000
#: Files the state may hold beyond what a rebuild would write before a run OPTIMIZEs it.
_EXTRA_STATE_FILES = 16
#: Share of the state's rows one MERGE may write (in files holding every org) before the run re-clusters the state.
_RECLUSTER_SHARE = 0.3
OLD_GRANTED, OLD_KNOWN = "old_granted", "old_known"
_USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
#: How a run commits: see :func:`state_commit_kind`.
OVERWRITE, MERGE, REWRITE, NO_CHANGE = "overwrite", "merge", "rewrite", "none"


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
        commit_seconds: Part of ``seconds`` spent committing to consent/state
            (the MERGE or overwrite); the rest reads, reduces and applies events.
        commit_kind: ``overwrite`` (full), ``merge`` (deletion vectors),
            ``rewrite`` (a MERGE rewriting the files it touches) or ``none``.
        optimized: An OPTIMIZE of consent/state followed the commit (its files had multiplied).
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
    commit_seconds: float = 0.0
    commit_kind: str = NO_CHANGE
    optimized: bool = False

    def summary(self) -> dict[str, Any]:
        """A JSON-able dict of the result."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 2)
        data["commit_seconds"] = round(self.commit_seconds, 2)
        return data


# ---------------------------------------------------------------- the one code path


def choice_key(granted: Column, event_ts: Column) -> Column:
    """One orderable long per choice: event_ts in microseconds, then a denial above a grant.

    The greatest key is the latest choice and, on equal event_ts, the denial, so
    ``max`` picks the winning choice in a plain hash aggregate.
    """
    return F.unix_micros(event_ts) * F.lit(2) + (~granted).cast("long")


def _choice_column(bit: int) -> str:
    return f"choice_{bit}"


def user_choices(events_df: DataFrame, bits: Sequence[int]) -> DataFrame:
    """One row per user with the latest choice per purpose bit, in one hash aggregate.

    Args:
        events_df: Rows with org_id, user_id, purpose_bit, granted, event_ts.
        bits: The policy's purpose bits (active and retired).

    Returns:
        org_id, user_id, ``events`` (rows reduced) and one ``choice_<bit>`` column
        per bit: the :func:`choice_key` of the user's latest choice, null when the
        events hold none for that bit.
    """
    key = choice_key(F.col("granted"), F.col("event_ts"))
    per_bit = [F.max(F.when(F.col("purpose_bit") == bit, key)).alias(_choice_column(bit)) for bit in bits]
    return events_df.groupBy(*_KEY).agg(F.count(F.lit(1)).alias("events"), *per_bit)


def _old_columns(prefix: str | None, bits: Sequence[int], n_words: int) -> list[str]:
    """Stage 1 of :func:`apply_choices`: the state row read once into plain columns (SQL).

    Per bit, the old choice's time in microseconds (``__ots_<bit>``); per word,
    the old granted and known words (``__gw_<w>``, ``__kw_<w>``), whose bits
    outside the policy are kept. ``prefix`` starts the names of the state row's
    columns (``<prefix>_granted``, ...), ``None`` for users without one.
    """
    if prefix is None:
        times = [f"CAST(NULL AS BIGINT) AS __ots_{bit}" for bit in bits]
        return times + [f"0L AS __{name}_{w}" for name in ("gw", "kw") for w in range(n_words)]
    times = [f"unix_micros(try_element_at({prefix}_purpose_ts, {bit})) AS __ots_{bit}" for bit in bits]
    words = [
        f"{sql_word(f'{prefix}_{column}', w)} AS __{name}_{w}"
        for name, column in (("gw", "granted"), ("kw", "known"))
        for w in range(n_words)
    ]
    return times + words


def _new_bit_columns(bit: int) -> list[str]:
    """Stage 2 of :func:`apply_choices`: one bit's new state from the old one and the user's latest choice (SQL).

    The choice wins when it is newer than the state's; on the same time a denial
    wins. Only columns of stage 1 are read, so the expressions stay small.
    """
    word, offset = bit // WORD_BITS, bit % WORD_BITS
    key, old_ts = _choice_column(bit), f"__ots_{bit}"
    old_granted, old_known = sql_word_bit(f"__gw_{word}", offset), sql_word_bit(f"__kw_{word}", offset)
    new_ts, new_granted = f"shiftright({key}, 1)", f"(({key} & 1L) = 0L)"
    newer = f"({key} IS NOT NULL AND ({old_ts} IS NULL OR {new_ts} > {old_ts}))"
    tie = f"({key} IS NOT NULL AND {new_ts} <=> {old_ts})"
    return [
        f"CASE WHEN {newer} THEN {new_ts} ELSE {old_ts} END AS __ts_{bit}",
        f"CASE WHEN {newer} THEN {new_granted} WHEN {tie} THEN {old_granted} AND {new_granted} ELSE {old_granted} END AS __g_{bit}",
        f"{old_known} OR {newer} AS __k_{bit}",
        f"{newer} OR ({tie} AND {old_granted} AND NOT {new_granted}) AS __c_{bit}",
    ]


def _new_state_columns(bits: Sequence[int], n_words: int) -> list[str]:
    """Stage 3 of :func:`apply_choices`: the per-bit columns packed into the state's columns (SQL)."""
    entries = ", ".join(
        f"CASE WHEN __ts_{b} IS NOT NULL THEN named_struct('key', {b}, 'value', "
        f"coalesce(timestamp_micros(__ts_{b}), TIMESTAMP'1970-01-01 00:00:00')) END"  # coalesce: non-null map values
        for b in bits
    )
    packed = {
        flag: sql_words_with_bits([f"__{flag}w_{w}" for w in range(n_words)], {b: f"__{flag}_{b}" for b in bits})
        for flag in ("g", "k")
    }
    return [
        f"{packed['g']} AS granted",
        f"{packed['k']} AS known",
        f"map_from_entries(array_compact(array({entries}))) AS purpose_ts",
        f"{' OR '.join(f'__c_{b}' for b in bits)} AS changed",
    ]


def apply_choices(
    choices_df: DataFrame, state_df: DataFrame | None, bits: Sequence[int], n_words: int, updated_at: dt.datetime
) -> DataFrame:
    """New state rows of the users in ``choices_df``; ``changed`` is false where nothing would change.

    Three projections of plain column arithmetic (no lambda, no UDF): the state
    row unpacked into per-bit columns, each bit's new choice, the bits packed
    again. Kept apart, each old value is read once and the generated code stays
    small whatever the number of purposes (one fused expression per output
    column repeated the map lookups and bit tests many times over).

    Args:
        choices_df: From :func:`user_choices`.
        state_df: Current state rows (org_id, user_id, granted, known, purpose_ts);
            ``None`` for a rebuild from nothing.
        bits: The bits ``choices_df`` holds choices for.
        n_words: Bitmap width in 64-bit words.
        updated_at: Time stamped on written rows.

    Returns:
        The consent_state columns plus ``is_new`` (no state row before), ``events``
        (event rows of the user read), ``changed``, and the user's bitmaps before
        the run as ``old_granted`` / ``old_known`` (zero words for a new user).
    """
    choices = [_choice_column(bit) for bit in bits]
    carried = [F.col(f"s.{c}") for c in (*_KEY, "events", *choices)]
    if state_df is None:
        base_df, prefix = choices_df.alias("s").select(*carried, F.lit(True).alias("is_new")), None
    else:
        old_state = [F.col(c).alias(f"__t_{c}") for c in ("granted", "known", "purpose_ts")]
        state = state_df.select(*_KEY, *old_state).alias("t")
        joined = choices_df.alias("s").join(state, [F.col(f"s.{c}") == F.col(f"t.{c}") for c in _KEY], "left")
        is_new = F.col("t.user_id").isNull().alias("is_new")
        base_df, prefix = joined.select(*carried, is_new, "__t_granted", "__t_known", "__t_purpose_ts"), "__t"
    old_df = base_df.selectExpr(*_KEY, "is_new", "events", *choices, *_old_columns(prefix, bits, n_words))
    kept_words = [f"__{name}_{w}" for name in ("gw", "kw") for w in range(n_words)]
    new_df = old_df.selectExpr(*_KEY, "is_new", "events", *kept_words, *[c for b in bits for c in _new_bit_columns(b)])
    granted, known, purpose_ts, changed = _new_state_columns(bits, n_words)
    updated = f"timestamp_micros({utc_micros(updated_at)}L) AS updated_at"
    old_bitmaps = [f"array({', '.join(f'__{name}_{w}' for w in range(n_words))}) AS {column}"
                   for name, column in (("gw", OLD_GRANTED), ("kw", OLD_KNOWN))]
    return new_df.selectExpr(*_KEY, granted, known, purpose_ts, updated, "is_new", "events", changed, *old_bitmaps)


def state_merge_condition(target: str = "t", source: str = "s") -> str:
    """The MERGE condition of consent_state: one row per (org_id, user_id)."""
    return " AND ".join(f"{target}.{c} = {source}.{c}" for c in _KEY)


# ---------------------------------------------------------------- versions and reading


def _generation_app_id(generation: int) -> str:
    return COMPACT_TXN_APP_ID if generation == 0 else f"{COMPACT_TXN_APP_ID}/{generation}"


def _generation_of(app_id: str) -> int | None:
    if app_id == COMPACT_TXN_APP_ID:
        return 0
    prefix = COMPACT_TXN_APP_ID + "/"
    rest = app_id[len(prefix):]
    return int(rest) if app_id.startswith(prefix) and rest.isdigit() else None


def _applied(spark: SparkSession, cfg: KetchConfig) -> tuple[int | None, int | None]:
    """(generation, consent/events version applied) of the state; (None, None) before the first compaction."""
    found = {
        generation: version
        for app_id, version in delta_txn_versions(spark, table_path(cfg, "consent_state"), COMPACT_TXN_APP_ID).items()
        if (generation := _generation_of(app_id)) is not None
    }
    if not found:
        return None, None
    generation = max(found)
    return generation, found[generation]


def applied_events_version(spark: SparkSession, cfg: KetchConfig) -> int | None:
    """The consent/events version the state has applied, ``None`` before the first compaction."""
    return _applied(spark, cfg)[1]


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


def _erasure_versions(spark: SparkSession, cfg: KetchConfig, after: int, upto: int) -> set[int]:
    """Versions in ``after + 1 .. upto`` of consent/events made by an erasure (DELETE or UPDATE)."""
    history = delta_table(spark, cfg, "consent_events").history().where(
        (F.col("version") > after) & (F.col("version") <= upto) & F.col("operation").isin("DELETE", "UPDATE")
    )
    return {int(r["version"]) for r in history.select("version").collect()}


def _append_ranges(after: int, upto: int, skipped: set[int]) -> list[tuple[int, int]]:
    """Contiguous version ranges of ``after + 1 .. upto`` without the ``skipped`` versions."""
    ranges: list[tuple[int, int]] = []
    for version in range(after + 1, upto + 1):
        if version in skipped:
            continue
        if ranges and ranges[-1][1] == version - 1:
            ranges[-1] = (ranges[-1][0], version)
        else:
            ranges.append((version, version))
    return ranges


def _incremental_rows(spark: SparkSession, cfg: KetchConfig, after: int, upto: int,
                      new_rows: Any) -> DataFrame:
    """``new_rows`` of the events committed after ``after``; erasures of consent/events are stepped over.

    An erasure (``ketch-spark dsr run``) deletes rows of consent/events, and its
    vacuum may remove the change-data and data files that the change feed of
    the versions around it points to. Its own versions hold no new event, so
    they are skipped; events whose files an erasure rewrote are read from the
    current table instead (applying an already applied event changes nothing).
    """
    try:
        return new_rows(_new_events(spark, cfg, after, upto))
    except Exception as exc:  # noqa: BLE001 - only a missing file is recovered from, see below
        _raise_unless_missing_file(exc)
    erasures = _erasure_versions(spark, cfg, after, upto)
    logger.info("consent/events versions %s were erasures: the change feed is read around them", sorted(erasures))
    parts = [_new_events(spark, cfg, start - 1, end) for start, end in _append_ranges(after, upto, erasures)]
    try:
        events_df = functools.reduce(DataFrame.unionByName, parts) if parts else None
        return new_rows(events_df if events_df is not None else _all_events(spark, cfg, upto).limit(0))
    except Exception as exc:  # noqa: BLE001
        _raise_unless_missing_file(exc)
    since = _version_time(spark, cfg, after)
    logger.warning("consent/events files of versions after %s were vacuumed by an erasure: reading the events"
                   " ingested since that version from the current table", after)
    return new_rows(_all_events(spark, cfg, upto).where(F.col("ingested_at") >= since))


def _raise_unless_missing_file(exc: Exception) -> None:
    """Re-raises ``exc`` unless Spark failed because a file of the table is gone."""
    if "FILE_NOT_EXIST" not in str(exc) and "FileNotFound" not in str(exc):
        raise exc


def _version_time(spark: SparkSession, cfg: KetchConfig, version: int) -> Any:
    row = delta_table(spark, cfg, "consent_events").history().where(F.col("version") == version).select("timestamp").head()
    return row["timestamp"] - dt.timedelta(days=1)


def _all_events(spark: SparkSession, cfg: KetchConfig, upto: int) -> DataFrame:
    return read_table(spark, cfg, "consent_events", version=upto)


def _idempotent_commit(
    spark: SparkSession, app_id: str, version: int, kind: str, user_metadata: str | None
) -> contextlib.AbstractContextManager[None]:
    """Makes the MERGE inside an idempotent write of (``app_id``, ``version``).

    The source is already checkpointed by the caller, so Delta need not
    materialise it again. A ``rewrite`` MERGE writes no deletion vector: the
    files it touches are rewritten without their old rows.
    """
    settings = {_TXN_CONF_APP: app_id, _TXN_CONF_VERSION: str(version), _MATERIALIZE_SOURCE: "none"}
    if kind == REWRITE:
        settings[_MERGE_DELETION_VECTORS] = "false"
    if user_metadata is not None:
        settings[_USER_METADATA] = user_metadata
    return session_conf(spark, settings)


def state_commit_kind(changed: int, state_rows: int, rewrite_share: float) -> str:
    """How an incremental run commits ``changed`` rows to a state of ``state_rows`` rows.

    ``rewrite`` when at least ``rewrite_share`` of the state changes (deletion
    vectors would mark most rows of files that are all rewritten anyway);
    ``merge`` otherwise.
    """
    if changed == 0:
        return NO_CHANGE
    if state_rows and changed >= rewrite_share * state_rows:
        return REWRITE
    return MERGE


def state_needs_compacting(state_rows: int, state_files: int) -> bool:
    """Whether the state holds more than :data:`_EXTRA_STATE_FILES` files beyond what a rebuild writes.

    Each MERGE adds files (its changed rows) and leaves deletion vectors on older
    ones; past that many, every read of the state pays for them.
    """
    return state_files > max(1, -(-state_rows // _ROWS_PER_STATE_FILE)) + _EXTRA_STATE_FILES


def state_needs_clustering(changed: int, state_rows: int) -> bool:
    """Whether a MERGE of ``changed`` rows into ``state_rows`` wrote :data:`_RECLUSTER_SHARE` of the state or more.

    A MERGE writes its changed rows in files that hold every org, which a
    consent filter for one org cannot skip: past that share, its first read of
    the state costs measurably more (see the filter benchmark's clustered figures).
    """
    return state_rows > 0 and changed >= _RECLUSTER_SHARE * state_rows


def _merge_source(rows_df: DataFrame) -> DataFrame:
    """The changed rows, as written to consent/state (the table's columns)."""
    return rows_df.where("changed").select(*_STATE_COLUMNS)


def _merge_changes(
    spark: SparkSession, cfg: KetchConfig, rows_df: DataFrame, changed: int, app_id: str, version: int, kind: str,
    user_metadata: str | None,
) -> None:
    """One MERGE of the ``changed`` rows: updates of known users, inserts of new ones.

    A day's changes are usually few next to the state: they are then broadcast,
    so the MERGE's joins do not shuffle the state. ``kind`` is ``merge`` or
    ``rewrite`` (:func:`state_commit_kind`).
    """
    columns = ("granted", "known", "purpose_ts", "updated_at")
    source = _merge_source(rows_df)
    if changed <= _BROADCAST_MAX_ROWS:
        source = F.broadcast(source)
    state = delta_table(spark, cfg, "consent_state")
    with _idempotent_commit(spark, app_id, version, kind, user_metadata):
        (
            state.alias("t")
            .merge(source.alias("s"), state_merge_condition("t", "s"))
            .whenMatchedUpdate(set={c: f"s.{c}" for c in columns})
            .whenNotMatchedInsert(values={c: f"s.{c}" for c in _STATE_COLUMNS})
            .execute()
        )


def _overwrite_state(spark: SparkSession, cfg: KetchConfig, rows_df: DataFrame, rows: int, app_id: str,
                     version: int, user_metadata: str | None) -> None:
    """The whole state in one commit, clustered by (org_id, user_id)."""
    files = max(1, -(-rows // _ROWS_PER_STATE_FILE))
    clustered = rows_df.repartitionByRange(files, *_KEY).sortWithinPartitions(*_KEY)
    _with_metadata(
        clustered.write.format("delta").mode("overwrite").option("txnAppId", app_id).option("txnVersion", version),
        user_metadata,
    ).save(table_path(cfg, "consent_state"))


def _with_metadata(writer: Any, user_metadata: str | None) -> Any:
    return writer if user_metadata is None else writer.option("userMetadata", user_metadata)


def compact_consent(spark: SparkSession, cfg: KetchConfig, batch_id: str | None = None, full: bool = False) -> CompactResult:
    """Applies the not-yet-applied consent events to consent/state, all orgs in one pass.

    A run whose commit conflicts with another writer's (another compaction, an
    erasure) runs again from the state's new version, up to
    ``delta.commit_retries`` times: it then reads which events the state has
    applied afresh, so no event is applied twice.

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
        CommitConflictError: Other writers' commits conflicted with every attempt.
    """
    started = time.perf_counter()
    return retry_on_conflict(
        "consent/state", lambda: _compact_once(spark, cfg, batch_id, full, started), cfg.delta, what="compaction"
    )


def _compact_once(spark: SparkSession, cfg: KetchConfig, batch_id: str | None, full: bool,
                  started: float) -> CompactResult:
    """One attempt of :func:`compact_consent`, from the tables' current versions."""
    policy: Policy = cfg.policy()
    events_version = table_version(spark, cfg, "consent_events")
    if not table_exists(spark, cfg, "consent_state"):
        ensure_table(spark, cfg, "consent_state")
    upto = _batch_version(spark, cfg, batch_id) if batch_id else events_version
    # the state version this run reads; its commit is refused if another writer committed after it
    state_version = table_version(spark, cfg, "consent_state")
    generation, applied = _applied(spark, cfg)
    incremental = not full and applied is not None
    # a full run starts a new generation: its version may be below the applied one
    app_id = _generation_app_id(generation if incremental else (0 if generation is None else generation + 1))
    if incremental and upto <= applied:
        logger.info("consent state already holds events up to version %s", applied)
        return _result(spark, cfg, full, batch_id, None, applied, {}, False, started)
    from_version = applied + 1 if incremental else 0
    report_progress(f"read events of versions {from_version}-{upto}" + ("" if incremental else " (full rebuild)"))
    updated_at = utc_now()
    bits = sorted(p.bit for p in policy.purposes.values())

    def new_rows(events_df: DataFrame) -> DataFrame:
        choices_df = user_choices(events_df.select("org_id", "user_id", "purpose_bit", "granted", "event_ts"), bits)
        state_df = read_table(spark, cfg, "consent_state", version=state_version) if incremental else None
        # Computed once: counted, then read twice by the MERGE (touched files, then the write).
        return apply_choices(choices_df, state_df, bits, policy.n_words, updated_at).localCheckpoint(eager=True)

    if incremental:
        rows_df = _incremental_rows(spark, cfg, applied, upto, new_rows)
    else:
        rows_df = new_rows(_all_events(spark, cfg, upto))
    purposes = list(policy.active)
    counts, size_changes = _counts(rows_df, purposes)
    report_progress("reduce events", counts["events"], unit="events")
    report_progress("commit changed users", counts["changed"], counts["touched"], unit="users")
    recorded = recorded_state(spark, table_path(cfg, "consent_state"), state_version) if incremental else None
    sizes_before = recorded.sizes if recorded is not None else None
    sizes = sizes_after(purposes, size_changes, sizes_before) if sizes_before is not None or not incremental else None
    fault_point("consent.compact.before_write")
    commit_started = time.perf_counter()
    if not incremental:
        kind, state_files = OVERWRITE, 0
        metadata = commit_user_metadata(sizes, counts["changed"])
        _require_state_version(spark, cfg, state_version)
        _overwrite_state(spark, cfg, _merge_source(rows_df), counts["changed"], app_id, upto, metadata)
    else:
        if counts["changed"]:
            state_rows = _state_rows(spark, cfg, recorded)
            rows_after = state_rows + counts["inserted"]
            # files before the MERGE, from the snapshot this run already read (after it, Delta would list them again)
            state_files = len(read_table(spark, cfg, "consent_state", version=state_version).inputFiles())
        else:
            state_rows, state_files = 0, 0
            rows_after = recorded.exact_rows if recorded is not None else None
        metadata = commit_user_metadata(sizes, rows_after)
        kind = _incremental_commit_kind(counts["changed"], state_rows, cfg)
        _require_state_version(spark, cfg, state_version)
        if kind == NO_CHANGE:
            _record_applied_version(spark, cfg, app_id, upto, metadata)
        else:
            _merge_changes(spark, cfg, rows_df, counts["changed"], app_id, upto, kind, metadata)
    commit_seconds = time.perf_counter() - commit_started
    fault_point("consent.compact.after_commit")
    # the MERGE adds files: the check sees them at the next run, which OPTIMIZEs then
    optimized = incremental and kind != NO_CHANGE and _compact_state_files(
        spark, cfg, state_rows, state_files, counts["changed"])
    return _result(spark, cfg, full or applied is None, batch_id, from_version, upto, counts, True, started,
                   commit_seconds, kind, optimized)


def _require_state_version(spark: SparkSession, cfg: KetchConfig, read_version: int) -> None:
    """Raises :class:`ConcurrentCommitError` when consent/state moved past the version this run read.

    Delta checks a MERGE against the commits made while the MERGE itself runs;
    the rows it writes were computed earlier, from ``read_version``. A commit in
    between (another compaction, an erasure) would otherwise go unnoticed: the
    run is refused, and :func:`compact_consent` runs it again from the new state.
    """
    current = table_version(spark, cfg, "consent_state")
    if current != read_version:
        raise ConcurrentCommitError(
            f"consent/state moved from version {read_version} to {current} while this compaction computed its change"
        )


def _incremental_commit_kind(changed: int, state_rows: int, cfg: KetchConfig) -> str:
    kind = state_commit_kind(changed, state_rows, cfg.consent.state_rewrite_share)
    if kind != NO_CHANGE:
        logger.info("compaction: %d of %d state rows change: %s", changed, state_rows, kind)
    return kind


def _compact_state_files(spark: SparkSession, cfg: KetchConfig, state_rows: int, state_files: int,
                         changed: int) -> bool:
    """OPTIMIZEs consent/state, clustered by org_id, when its MERGEs have multiplied its files or this
    run's MERGE wrote a large share of its rows (:func:`state_needs_clustering`).

    The files it writes are sized like a rebuild's (:data:`_ROWS_PER_STATE_FILE`
    rows), so a filter for one org reads only that org's files. A commit of its
    own after the MERGE: it changes no row, and Delta fails it rather than an
    erasure committed meanwhile. Returns whether it ran.
    """
    if state_needs_compacting(state_rows, state_files):
        logger.info("consent/state holds %d files for %d rows: OPTIMIZE", state_files, state_rows)
    elif state_needs_clustering(changed, state_rows):
        logger.info("compaction wrote %d of %d state rows unclustered: OPTIMIZE", changed, state_rows)
    else:
        return False
    try:
        state = delta_table(spark, cfg, "consent_state")
        size = int(state.detail().select("sizeInBytes").head()[0] or 0)
        files = max(1, -(-state_rows // _ROWS_PER_STATE_FILE))
        file_bytes = max(1, size // files)
        with session_conf(spark, {"spark.databricks.delta.optimize.maxFileSize": str(file_bytes)}):
            state.optimize().executeZOrderBy("org_id")
    except Exception as exc:  # noqa: BLE001 - maintenance only: the state is already committed
        logger.warning("OPTIMIZE of consent/state did not commit (%s); the next compaction tries again",
                       str(exc).splitlines()[0][:200])
        return False
    return True


def _state_rows(spark: SparkSession, cfg: KetchConfig, recorded: RecordedState | None) -> int:
    """Rows of consent/state: the exact count recorded with its last compaction commit, else counted."""
    exact = recorded.exact_rows if recorded is not None else None
    return exact if exact is not None else read_table(spark, cfg, "consent_state").count()


def _record_applied_version(spark: SparkSession, cfg: KetchConfig, app_id: str, version: int,
                            user_metadata: str | None) -> None:
    """Records ``version`` as applied when no row changed: an empty idempotent append."""
    empty = read_table(spark, cfg, "consent_state").limit(0)
    _with_metadata(
        empty.write.format("delta").mode("append").option("txnAppId", app_id).option("txnVersion", version),
        user_metadata,
    ).save(table_path(cfg, "consent_state"))


def _counts(rows_df: DataFrame, purposes: Sequence[Purpose]) -> tuple[dict[str, int], dict[str, Any]]:
    """The run's counts and the key-set size changes of ``purposes``, in one job over the applied rows."""
    row = rows_df.agg(
        F.count(F.lit(1)).alias("touched"),
        F.coalesce(F.sum(F.col("changed").cast("int")), F.lit(0)).alias("changed"),
        F.coalesce(F.sum((F.col("is_new") & F.col("changed")).cast("int")), F.lit(0)).alias("inserted"),
        F.coalesce(F.sum("events"), F.lit(0)).alias("events"),
        *size_change_columns(purposes, OLD_GRANTED, OLD_KNOWN),
    ).head().asDict()
    return {key: int(row[key]) for key in ("touched", "changed", "inserted", "events")}, row


def _result(
    spark: SparkSession, cfg: KetchConfig, full: bool, batch_id: str | None, from_version: int | None,
    to_version: int | None, counts: dict[str, int], committed: bool, started: float, commit_seconds: float = 0.0,
    commit_kind: str = NO_CHANGE, optimized: bool = False,
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
        state_version=table_version(spark, cfg, "consent_state"),
        seconds=time.perf_counter() - started,
        commit_seconds=commit_seconds,
        commit_kind=commit_kind,
        optimized=optimized,
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
