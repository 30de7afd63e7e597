"""Purpose limitation: keep only the rows a purpose may process, with one cheap join.

The consent state (``consent/state``, one row per ``(org_id, user_id)`` with
``granted`` and ``known`` bitmaps) is reduced to the narrow key set of one
purpose, then joined to the fact table:

* ``legal_basis: consent``: the key set holds the users who granted the purpose
  (known and granted); the fact table is **left-semi** joined to it, so users who
  never chose, and users unknown to the state, are dropped.
* ``legal_basis: legitimate_interest``: the key set holds the users who objected
  (known and not granted); the fact table is **left-anti** joined to it, so
  everyone else, unknown users included, is kept.

Rows whose user or org is null are dropped in both cases. The key set is two
narrow string columns, so it is broadcast whenever its estimated in-memory size
stays below ``cfg.filter.broadcast_max_bytes`` (256 MB by default, far above
Spark's 10 MB ``autoBroadcastJoinThreshold``, which does not take part in the
decision); above that bound the filter asks for a sort-merge join. Either way the
fact table is read once.

From its second use in an application, a broadcast-sized key set is persisted
for the later filters and views on the same state version and purpose
(``cfg.filter.key_set_cache_entries`` of them, least recently used dropped first;
:func:`release_key_sets` frees them): a pipeline that filters many inputs, or a
notebook that reruns a query, stops reading consent/state for every query, while
a one-query job never pays for filling it. A committed Delta version never
changes, so a kept key set is never stale; a new version of the state gets a new one.
With ketch-spark's session extension (:mod:`ketch_spark.extensions`, registered by
:func:`ketch_spark.spark_session`) the broadcast hash relation of a kept key set is
kept as well (as many as ``key_set_cache_entries``, one per key set and build-side
filter such as one org): later queries probe it without collecting, hashing and
broadcasting the key set again, so a filtered query costs about what the
unfiltered one does.

Every application records a :class:`FilterInfo` (purpose, join, strategy, key-set
size estimate, Delta version of the state used): see :attr:`ConsentFilter.info`
and :func:`last_filter_info`. ``as_of`` pins the state to an earlier Delta version
or timestamp, so an output can be reproduced and tied to its consent snapshot.

Example:
    >>> import ketch_spark as ks
    >>> allowed_df = events_df.transform(ks.consent_filter("analytics", cfg))
    >>> ks.last_filter_info().consent_version
    12

Jobs declare their purpose once with :func:`purpose`; SQL users get the same
semantics through the views of :func:`register_consent_views`.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import itertools
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from py4j.protocol import Py4JError
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ketch_spark.bitmap import has_purpose
from ketch_spark.config import FilterSettings, KetchConfig
from ketch_spark.errors import ConfigError, KetchError, SchemaError
from ketch_spark.extensions import (
    KEPT_KEY_SET_PREFIX,
    extension_active,
    release_kept_relations,
    set_kept_relation_capacity,
)
from ketch_spark.policy import Policy, Purpose
from ketch_spark.tables import delta_table, read_table, table_path

__all__ = [
    "ConsentFilter",
    "ConsentViews",
    "FilterInfo",
    "PurposeContext",
    "consent_filter",
    "consent_key_set",
    "last_filter_info",
    "purpose",
    "register_consent_views",
    "release_key_sets",
    "view_name",
    "SEMI_JOIN",
    "ANTI_JOIN",
    "BROADCAST",
    "SHUFFLE",
]

logger = logging.getLogger(__name__)

STATE_TABLE = "consent_state"
SEMI_JOIN = "left_semi"
ANTI_JOIN = "left_anti"
BROADCAST = "broadcast"
SHUFFLE = "shuffle"

#: How the key-set size was estimated.
UPPER_BOUND_ESTIMATE = "state_rows_upper_bound"
KEY_SET_SCAN = "key_set_scan"

#: In-memory bytes of one key row beyond its two strings: UnsafeRow null bits,
#: two offset words, and the hashed relation's per-entry pointer and length words.
_ROW_OVERHEAD_BYTES = 40
#: Bytes assumed per id when only the number of state rows is known (ids up to
#: 32 bytes, UUIDs padded included); the key set is then measured exactly when
#: this rough bound is above the broadcast limit.
_ASSUMED_ID_BYTES = 32
_UPPER_ROW_BYTES = _ROW_OVERHEAD_BYTES + 2 * _ASSUMED_ID_BYTES

_STATE_COLUMNS = ("org_id", "user_id", "granted", "known")
_KEY_ORG = "__ks_consent_org_id"
_KEY_USER = "__ks_consent_user_id"
_ID_TYPES = (T.StringType, T.LongType, T.IntegerType, T.ShortType, T.ByteType)

_last_info: FilterInfo | None = None
_last_info_lock = threading.Lock()
#: Row counts and key-set sizes of state versions already measured by this process.
_MEASURE_CACHE_SIZE = 256
_measure_cache: dict[tuple[Any, ...], Any] = {}
_measure_cache_lock = threading.Lock()
#: Key sets persisted for the later filters of an application, least recently used first:
#: (application id, state location, version, bit, legal basis) -> DataFrame.
_kept_key_sets: OrderedDict[tuple[Any, ...], _KeptKeySet] = OrderedDict()
_kept_key_sets_lock = threading.Lock()
#: Key sets used once and not kept yet (same keys), oldest first.
_USED_ONCE_SIZE = 256
_kept_serials = itertools.count(1)
_used_once: OrderedDict[tuple[Any, ...], None] = OrderedDict()


@dataclass(frozen=True)
class FilterInfo:
    """What one application of a consent filter did.

    Attributes:
        purpose: Purpose name.
        legal_basis: ``consent`` or ``legitimate_interest``.
        join: ``left_semi`` (keep the key set: grants) or ``left_anti`` (drop the
            key set: objections).
        strategy: ``broadcast`` or ``shuffle`` (sort-merge join).
        key_set_bytes: Estimated in-memory size of the key set the decision used.
        key_set_rows: Rows behind that estimate (state rows for an upper bound,
            key rows for an exact scan).
        estimate_source: ``state_rows_upper_bound`` (from the state's row count,
            which Delta answers from its log, remembered per version) or
            ``key_set_scan`` (measured).
        broadcast_max_bytes: The bound the estimate was compared with.
        consent_version: Delta version of ``consent/state`` that was read; ``None``
            when the state was passed as a DataFrame.
        state_location: Path of the state table, ``None`` for a passed DataFrame.
        key_set_reused: The key set was already kept (persisted) by earlier filters
            of this application on the same state version (see
            ``filter.key_set_cache_entries``), so the state was not read again.
        relation_kept: The key set is kept and ketch-spark's session extension
            (:mod:`ketch_spark.extensions`) serves its broadcast hash relation: built
            by the first query that joins to it (per build-side filter, e.g. one
            org) and reused by the later ones, so they neither collect nor
            broadcast the key set again.
    """

    purpose: str
    legal_basis: str
    join: str
    strategy: str
    key_set_bytes: int
    key_set_rows: int
    estimate_source: str
    broadcast_max_bytes: int
    consent_version: int | None
    state_location: str | None
    key_set_reused: bool = False
    relation_kept: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The info as a plain dict (for job summaries and logs)."""
        return dict(self.__dict__)


def last_filter_info() -> FilterInfo | None:
    """The :class:`FilterInfo` of the most recent consent filter applied in this process."""
    with _last_info_lock:
        return _last_info


def _remember(info: FilterInfo) -> None:
    global _last_info
    with _last_info_lock:
        _last_info = info


# --------------------------------------------------------------------------- key set


def _require_state_columns(state_df: DataFrame) -> None:
    missing = [c for c in _STATE_COLUMNS if c not in state_df.columns]
    if missing:
        raise SchemaError(
            f"consent state lacks column(s) {', '.join(missing)}; expected {', '.join(_STATE_COLUMNS)}, "
            f"found {', '.join(state_df.columns) or 'no columns'}"
        )


def _key_condition(purpose: Purpose, granted_implies_known: bool) -> Column:
    """The state rows in a purpose's key set: grants (consent basis) or objections (legitimate interest)."""
    granted = F.coalesce(has_purpose("granted", purpose.bit), F.lit(False))
    if purpose.legal_basis == "consent" and granted_implies_known:
        chose = granted
    else:
        known = F.coalesce(has_purpose("known", purpose.bit), F.lit(False))
        chose = known & granted if purpose.legal_basis == "consent" else known & ~granted
    return chose & F.col("org_id").isNotNull() & F.col("user_id").isNotNull()


def consent_key_set(state_df: DataFrame, purpose: Purpose, *, granted_implies_known: bool = False) -> DataFrame:
    """The narrow key set ``(org_id, user_id)`` of one purpose.

    For a consent-basis purpose: the users who granted it. For a
    legitimate-interest purpose: the users who objected to it.

    Args:
        state_df: Rows with org_id, user_id, granted and known bitmaps.
        purpose: The purpose.
        granted_implies_known: The state guarantees that a granted bit is also a
            known bit (compaction's consent/state does), so a consent-basis key
            set needs only ``granted`` and the ``known`` column is not read.

    Raises:
        SchemaError: ``state_df`` lacks org_id, user_id, granted or known.
    """
    _require_state_columns(state_df)
    return state_df.where(_key_condition(purpose, granted_implies_known)).select("org_id", "user_id")


def _padded(length: Column) -> Column:
    """Bytes an UnsafeRow spends on a string of ``length`` bytes (rounded up to 8)."""
    return F.ceil(length / F.lit(8)) * F.lit(8)


def _measure_key_set(key_df: DataFrame) -> tuple[int, int]:
    """Exact rows and estimated in-memory bytes of a key set (one scan of the state)."""
    row = key_df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(_padded(F.octet_length("org_id")) + _padded(F.octet_length("user_id"))).alias("id_bytes"),
    ).head()
    rows = int(row["rows"])
    return rows, rows * _ROW_OVERHEAD_BYTES + int(row["id_bytes"] or 0)


@dataclass(frozen=True)
class _Estimate:
    rows: int
    size: int
    source: str


def _estimate_key_set(snapshot: _Snapshot, purpose: Purpose, key_df: DataFrame, bound: int) -> _Estimate:
    """Estimates the key set's size, cheaply when possible.

    First an upper bound from the number of state rows (a Delta table answers the
    count from its log, without reading data); when that bound exceeds the
    broadcast limit the key set itself is measured with one scan of the state.
    Both are remembered per state version when the state is the Delta table.
    """
    rows = snapshot.row_count()
    upper = rows * _UPPER_ROW_BYTES
    if upper <= bound:
        return _Estimate(rows, upper, UPPER_BOUND_ESTIMATE)
    if snapshot.location is None:
        key_rows, size = _measure_key_set(key_df)
    else:
        key = (snapshot.location, snapshot.version, purpose.bit, purpose.legal_basis)
        key_rows, size = _remembered(key, lambda: _measure_key_set(key_df))
    return _Estimate(key_rows, size, KEY_SET_SCAN)


@dataclass(frozen=True)
class _KeptKeySet:
    key_df: DataFrame
    name: str


def _reusable_key_set(
    spark: SparkSession, snapshot: _Snapshot, purpose: Purpose, key_df: DataFrame, entries: int
) -> tuple[DataFrame, bool, bool]:
    """The key set to join to, kept for this application's later filters from its second use.

    A key set is kept from its second use on: keeping one fills it with every
    org's keys (the state scan then cannot skip other customers' files), which a
    one-query job should not pay for. Only key sets of the Delta state are kept:
    a committed version never changes, so a kept key set cannot go stale, and a
    newer version gets its own entry. The least recently used entry beyond
    ``entries`` is unpersisted, with its broadcast relations.

    Returns:
        The key set, whether an earlier filter had kept it already, and whether it is kept.
    """
    if entries == 0 or snapshot.location is None:
        return key_df, False, False
    key = (spark.sparkContext.applicationId, snapshot.location, snapshot.version, purpose.bit, purpose.legal_basis)
    with _kept_key_sets_lock:
        kept = _kept_key_sets.get(key)
        if kept is not None:
            _kept_key_sets.move_to_end(key)
            return kept.key_df, True, True
        if key not in _used_once:
            _used_once[key] = None
            while len(_used_once) > _USED_ONCE_SIZE:
                _used_once.popitem(last=False)
            return key_df, False, False
        del _used_once[key]
        _kept_key_sets[key] = _keep(spark, key_df)
        evicted = [_kept_key_sets.popitem(last=False)[1] for _ in range(len(_kept_key_sets) - entries)]
    set_kept_relation_capacity(spark, entries)
    for old in evicted:
        _unkeep(old)
    return key_df, False, True


def _keep(spark: SparkSession, key_df: DataFrame) -> _KeptKeySet:
    """Persists ``key_df`` under a kept-key-set name, by which the session extension knows its rows never change."""
    name = f"{KEPT_KEY_SET_PREFIX}{next(_kept_serials)}"
    level = spark.sparkContext._getJavaStorageLevel(StorageLevel.MEMORY_AND_DISK)
    try:
        cache_manager = spark._jsparkSession.sharedState().cacheManager()
        cache_manager.cacheQuery(key_df._jdf, spark.sparkContext._jvm.scala.Option.apply(name), level)
    except Py4JError:  # another Spark build: kept all the same, only unnamed (no kept relation)
        logger.debug("could not name the kept key set; persisting it unnamed")
        key_df.persist(StorageLevel.MEMORY_AND_DISK)
    return _KeptKeySet(key_df, name)


def _unkeep(kept: _KeptKeySet, *, destroy: bool = False) -> None:
    try:
        release_kept_relations(kept.key_df.sparkSession, kept.name, destroy=destroy)
        kept.key_df.unpersist(blocking=False)
    except Py4JError:  # its SparkContext is gone, and the cached blocks with it
        logger.debug("kept key set belonged to a stopped SparkContext")


def release_key_sets() -> int:
    """Unpersists every key set kept for reuse by consent filters and views of this process.

    Their broadcast relations (kept by the session extension) are destroyed too, so
    call it between queries. The next filter of a purpose and version then reads
    consent/state again, and the one after it keeps the key set again.

    Returns:
        How many key sets were released.
    """
    with _kept_key_sets_lock:
        kept = list(_kept_key_sets.values())
        _kept_key_sets.clear()
        _used_once.clear()
    for old in kept:
        _unkeep(old, destroy=True)
    return len(kept)


@dataclass(frozen=True)
class _PlannedKeySet:
    key_df: DataFrame
    estimate: _Estimate
    strategy: str
    reused: bool
    relation_kept: bool = False


def _plan_key_set(spark: SparkSession, snapshot: _Snapshot, purpose: Purpose, settings: FilterSettings) -> _PlannedKeySet:
    """A purpose's key set with its join strategy; a broadcast-sized one is kept for reuse."""
    key_df = consent_key_set(snapshot.state_df, purpose, granted_implies_known=snapshot.from_compaction)
    estimate = _estimate_key_set(snapshot, purpose, key_df, settings.broadcast_max_bytes)
    if estimate.size > settings.broadcast_max_bytes:
        return _PlannedKeySet(key_df, estimate, SHUFFLE, reused=False)
    key_df, reused, kept = _reusable_key_set(spark, snapshot, purpose, key_df, settings.key_set_cache_entries)
    return _PlannedKeySet(key_df, estimate, BROADCAST, reused, relation_kept=kept and extension_active(spark))


def _hinted(key_df: DataFrame, strategy: str) -> DataFrame:
    """The key set with the join hint that makes Spark follow our decision, not its own threshold."""
    return F.broadcast(key_df) if strategy == BROADCAST else key_df.hint("merge")


# --------------------------------------------------------------------------- state snapshot


@dataclass(frozen=True)
class _Snapshot:
    state_df: DataFrame
    version: int | None
    location: str | None
    row_count: Callable[[], int]

    @property
    def from_compaction(self) -> bool:
        """Whether the rows are consent/state as compaction writes it (a granted bit is always known)."""
        return self.location is not None


def _latest_version(spark: SparkSession, cfg: KetchConfig) -> int:
    """Current version of consent/state, from the Delta log without a Spark job when possible.

    Raises:
        TableNotFoundError: consent/state does not exist.
    """
    table = delta_table(spark, cfg, STATE_TABLE)
    try:
        jvm = spark.sparkContext._jvm
        log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, table_path(cfg, STATE_TABLE))
        return int(log.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty()).version())
    except Py4JError:  # another Delta build: the public (slower) history API
        logger.debug("DeltaLog.update unavailable; reading the version from the table history")
        return int(table.history(1).select("version").head()[0])


def _remembered(key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    """``compute()`` memoised under ``key`` (a table location and version: a Delta version never changes)."""
    with _measure_cache_lock:
        if key in _measure_cache:
            return _measure_cache[key]
    value = compute()
    with _measure_cache_lock:
        if len(_measure_cache) >= _MEASURE_CACHE_SIZE:
            _measure_cache.pop(next(iter(_measure_cache)))
        _measure_cache[key] = value
    return value


def _version_at(spark: SparkSession, cfg: KetchConfig, timestamp: str) -> int:
    """The state version a Delta ``timestampAsOf`` read would use: the last commit at or before it."""
    ts = F.try_to_timestamp(F.lit(timestamp))
    row = (
        delta_table(spark, cfg, STATE_TABLE)
        .history()
        .agg(
            F.max(F.when(F.col("timestamp") <= ts, F.col("version"))).alias("version"),
            F.min("timestamp").alias("first_commit"),
            F.first(ts.isNull()).alias("unparsable"),
        )
        .head()
    )
    if row["unparsable"]:
        raise ConfigError(f"as_of={timestamp!r} is not a timestamp; expected e.g. '2026-11-26 10:00:00' or a version number")
    if row["version"] is None:
        raise ConfigError(
            f"as_of={timestamp!r} is before the first version of {table_path(cfg, STATE_TABLE)} "
            f"(committed at {row['first_commit']})"
        )
    return int(row["version"])


def _resolve_version(spark: SparkSession, cfg: KetchConfig, as_of: int | str | dt.datetime | None) -> int:
    latest = _latest_version(spark, cfg)
    if as_of is None:
        return latest
    if isinstance(as_of, int):
        if not 0 <= as_of <= latest:
            raise ConfigError(
                f"as_of={as_of} is not a version of {table_path(cfg, STATE_TABLE)}; its versions go from 0 to {latest}"
            )
        return as_of
    text = as_of.isoformat(sep=" ") if isinstance(as_of, dt.datetime) else as_of
    return _version_at(spark, cfg, text)


def _check_as_of(as_of: Any) -> None:
    if as_of is not None and (isinstance(as_of, bool) or not isinstance(as_of, (int, str, dt.datetime))):
        raise TypeError(f"as_of must be a Delta version (int) or a timestamp (str or datetime), got {as_of!r}")


def _table_snapshot(spark: SparkSession, cfg: KetchConfig, as_of: int | str | dt.datetime | None) -> _Snapshot:
    """The state table pinned to one version (the current one unless ``as_of`` says otherwise).

    Raises:
        TableNotFoundError: consent/state does not exist (names the command that creates it).
    """
    location = table_path(cfg, STATE_TABLE)
    version = _resolve_version(spark, cfg, as_of)
    state_df = read_table(spark, cfg, STATE_TABLE, version=version)
    return _Snapshot(state_df, version, location, lambda: _remembered((location, version), state_df.count))


def _frame_snapshot(consent: DataFrame) -> _Snapshot:
    _require_state_columns(consent)
    return _Snapshot(consent, None, None, consent.count)


# --------------------------------------------------------------------------- the filter


def _resolve_column(df: DataFrame, name: str) -> str | None:
    if name in df.columns:
        return name
    if df.sparkSession.conf.get("spark.sql.caseSensitive", "false") == "false":
        matches = [c for c in df.columns if c.lower() == name.lower()]
        if len(matches) == 1:
            return matches[0]
    return None


def _id_column(df: DataFrame, name: str) -> Column:
    """The fact table's id column as a string, ready to compare with the state's ids."""
    dtype = df.schema[name].dataType
    if not isinstance(dtype, _ID_TYPES):
        raise SchemaError(f"column {name!r} holds {dtype.simpleString()}; an id column must be a string or an integer")
    return df[name] if isinstance(dtype, T.StringType) else df[name].cast("string")


def _policy_of(cfg: KetchConfig | None, policy: Policy | None) -> Policy:
    if policy is not None:
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a ketch_spark Policy, got {type(policy).__name__}")
        return policy
    if cfg is None:
        raise TypeError("consent filter needs cfg=KetchConfig, or both consent=<state DataFrame> and policy=<Policy>")
    return cfg.policy()


def _check_sources(cfg: KetchConfig | None, consent: DataFrame | None, policy: Policy | None, as_of: Any) -> None:
    if cfg is not None and not isinstance(cfg, KetchConfig):
        raise TypeError(f"cfg must be a KetchConfig (ks.load_config(...)), got {type(cfg).__name__}")
    if consent is not None and not isinstance(consent, DataFrame):
        raise TypeError(f"consent must be a state DataFrame, got {type(consent).__name__}")
    if cfg is None and (consent is None or policy is None):
        raise TypeError("consent filter needs cfg=KetchConfig, or both consent=<state DataFrame> and policy=<Policy>")
    if consent is not None and as_of is not None:
        raise ConfigError("as_of pins the consent/state table; with consent=<DataFrame> pass the snapshot you want instead")
    _check_as_of(as_of)


class ConsentFilter:
    """A DataFrame -> DataFrame function that keeps the rows one purpose may process.

    Made by :func:`consent_filter`; apply it with ``df.transform(f)``. After each
    application :attr:`info` describes what was done.

    Attributes:
        purpose: The purpose (from the policy).
        user_col: Name of the fact table's user id column.
        org_col: Name of the fact table's org id column.
        info: :class:`FilterInfo` of the last application, ``None`` before the first.
    """

    def __init__(
        self,
        purpose: Purpose,
        *,
        cfg: KetchConfig | None,
        consent: DataFrame | None,
        user_col: str,
        org_col: str,
        as_of: int | str | dt.datetime | None,
        settings: FilterSettings,
    ) -> None:
        self.purpose = purpose
        self.user_col = user_col
        self.org_col = org_col
        self.info: FilterInfo | None = None
        self._cfg = cfg
        self._consent = consent
        self._as_of = as_of
        self._settings = settings

    def __repr__(self) -> str:
        return f"ConsentFilter(purpose={self.purpose.name!r}, user_col={self.user_col!r}, org_col={self.org_col!r})"

    def _fact_columns(self, df: DataFrame) -> tuple[str, str]:
        org, user = _resolve_column(df, self.org_col), _resolve_column(df, self.user_col)
        if org is None or user is None:
            missing = [name for name, found in ((self.org_col, org), (self.user_col, user)) if found is None]
            raise SchemaError(
                f"consent_filter({self.purpose.name!r}) needs column(s) {', '.join(missing)} "
                f"(expected org column {self.org_col!r} and user column {self.user_col!r}); "
                f"found: {', '.join(df.columns) or 'no columns'}"
            )
        return org, user

    def _snapshot(self, spark: SparkSession) -> _Snapshot:
        if self._consent is not None:
            return _frame_snapshot(self._consent)
        assert self._cfg is not None
        return _table_snapshot(spark, self._cfg, self._as_of)

    def __call__(self, df: DataFrame) -> DataFrame:
        """Returns ``df`` without the rows this purpose may not process.

        Raises:
            SchemaError: ``df`` lacks the user or org column, or they are not ids.
            TableNotFoundError: consent/state does not exist yet.
            ConfigError: ``as_of`` names no version of the state.
        """
        if not isinstance(df, DataFrame):
            raise TypeError(f"a consent filter applies to a DataFrame, got {type(df).__name__}")
        org, user = self._fact_columns(df)
        org_id, user_id = _id_column(df, org), _id_column(df, user)
        snapshot = self._snapshot(df.sparkSession)
        planned = _plan_key_set(df.sparkSession, snapshot, self.purpose, self._settings)
        estimate, strategy, reused = planned.estimate, planned.strategy, planned.reused
        bound = self._settings.broadcast_max_bytes
        join = SEMI_JOIN if self.purpose.legal_basis == "consent" else ANTI_JOIN
        aliased_df = planned.key_df.select(F.col("org_id").alias(_KEY_ORG), F.col("user_id").alias(_KEY_USER))
        keys = _hinted(aliased_df, strategy)
        present_df = df.where(org_id.isNotNull() & user_id.isNotNull())
        result_df = present_df.join(keys, (org_id == keys[_KEY_ORG]) & (user_id == keys[_KEY_USER]), join)
        self.info = FilterInfo(
            purpose=self.purpose.name,
            legal_basis=self.purpose.legal_basis,
            join=join,
            strategy=strategy,
            key_set_bytes=estimate.size,
            key_set_rows=estimate.rows,
            estimate_source=estimate.source,
            broadcast_max_bytes=bound,
            consent_version=snapshot.version,
            state_location=snapshot.location,
            key_set_reused=reused,
            relation_kept=planned.relation_kept,
        )
        _remember(self.info)
        logger.info(
            "consent filter %s (%s): %s %s join, key set ~%d bytes (%s, bound %d%s), consent version %s",
            self.purpose.name, self.purpose.legal_basis, strategy, join, estimate.size, estimate.source,
            bound, ", reused" * reused + ", kept relation" * planned.relation_kept, snapshot.version,
        )
        return result_df


def consent_filter(
    purpose: str,
    cfg: KetchConfig | None = None,
    *,
    consent: DataFrame | None = None,
    policy: Policy | None = None,
    user_col: str = "user_id",
    org_col: str = "org_id",
    as_of: int | str | dt.datetime | None = None,
) -> ConsentFilter:
    """A ``df.transform`` function keeping exactly the rows ``purpose`` may process.

    Consent-basis purposes keep only users who granted them; legitimate-interest
    purposes keep everyone but users who objected. Rows with a null user or org
    are dropped. The state is read when the filter is applied (the current
    version of consent/state, or ``as_of``); the version used is in
    ``f.info.consent_version`` and :func:`last_filter_info` afterwards.

    Args:
        purpose: Purpose name from the policy.
        cfg: Configuration: where consent/state lives and which policy applies.
        consent: A state DataFrame (org_id, user_id, granted, known) to use
            instead of the table, e.g. a pipeline's own snapshot.
        policy: Policy to use instead of the config's (required with ``consent``
            when no ``cfg`` is given).
        user_col: The fact table's user id column.
        org_col: The fact table's org id column.
        as_of: Delta version (int) or timestamp (str, datetime) of consent/state
            to read, to reproduce an earlier run.

    Returns:
        A :class:`ConsentFilter` (callable DataFrame -> DataFrame).

    Raises:
        UnknownPurposeError: ``purpose`` is not in the policy (lists the known ones).
        TypeError: Neither ``cfg`` nor ``consent`` and ``policy`` were given, or
            an argument has the wrong type.
        ConfigError: ``as_of`` given together with ``consent``.

    Example:
        >>> allowed_df = events_df.transform(ks.consent_filter("analytics", cfg, user_col="uid"))
    """
    _check_sources(cfg, consent, policy, as_of)
    chosen = _policy_of(cfg, policy).purpose(purpose)
    if chosen.retired:
        logger.warning("consent filter for retired purpose %s: only choices made before retirement count", chosen.name)
    for name, value in (("user_col", user_col), ("org_col", org_col)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name} must be a column name, got {value!r}")
    settings = cfg.filter if cfg is not None else FilterSettings()
    return ConsentFilter(chosen, cfg=cfg, consent=consent, user_col=user_col, org_col=org_col, as_of=as_of, settings=settings)


# --------------------------------------------------------------------------- purpose-declared jobs


class PurposeContext:
    """The purpose a job works for: every input read through it is consent-filtered.

    Use :func:`purpose` to make one. As a decorator, each call of the job gets a
    fresh context as its first argument and returns the job's summary dict with
    the purpose and the consent version added; as a context manager, ``with``
    yields a fresh context. All inputs of one run use the same consent version
    (the first read pins it).

    Example:
        >>> @ks.purpose("analytics")
        ... def site_audience(job, spark, cfg, events_path):
        ...     events_df = job.read(events_path, spark=spark)          # already filtered
        ...     audience_df = events_df.groupBy("event_site").agg(F.countDistinct("user_id"))
        ...     audience_df.write.format("delta").mode("overwrite").save(cfg.path("reports/audience"))
        ...     return {"sites": audience_df.count()}
        >>> site_audience(spark, cfg, "s3a://lake/user_events")
        {'sites': 12, 'purpose': 'analytics', 'legal_basis': 'consent', 'consent_version': 12, 'inputs': [...]}

        >>> with ks.purpose("advertising", cfg) as job:
        ...     profiles_df = job.read(profiles_df)                         # a DataFrame works too
        ...     summary = job.summary({"rows": profiles_df.count()})

    Attributes:
        name: Purpose name.
        inputs: One dict per input read in this run (source and filter info).
    """

    def __init__(
        self,
        name: str,
        cfg: KetchConfig | None = None,
        *,
        consent: DataFrame | None = None,
        policy: Policy | None = None,
        as_of: int | str | dt.datetime | None = None,
    ) -> None:
        if cfg is not None or consent is not None:
            _check_sources(cfg, consent, policy, as_of)
            _policy_of(cfg, policy).purpose(name)
        elif policy is not None:
            policy.purpose(name)
        _check_as_of(as_of)
        self.name = name
        self.inputs: list[dict[str, Any]] = []
        self._cfg = cfg
        self._consent = consent
        self._policy = policy
        self._as_of = as_of
        self._version: int | None = None
        self._legal_basis: str | None = None

    def __repr__(self) -> str:
        return f"PurposeContext({self.name!r}, consent_version={self._version!r})"

    def _fresh(self, cfg: KetchConfig | None = None) -> PurposeContext:
        return PurposeContext(
            self.name, cfg if self._cfg is None else self._cfg, consent=self._consent, policy=self._policy, as_of=self._as_of
        )

    @property
    def consent_version(self) -> int | None:
        """Delta version of consent/state this run reads (``None`` before the first read)."""
        return self._version

    def apply(self, df: DataFrame, *, user_col: str = "user_id", org_col: str = "org_id", source: str | None = None) -> DataFrame:
        """Filters an input DataFrame for this purpose and records it.

        Raises:
            TypeError: The context has no cfg (nor consent and policy).
            SchemaError, TableNotFoundError: As :func:`consent_filter`.
        """
        as_of = self._version if self._version is not None else self._as_of
        f = consent_filter(
            self.name, self._cfg, consent=self._consent, policy=self._policy, user_col=user_col, org_col=org_col,
            as_of=None if self._consent is not None else as_of,
        )
        filtered_df = df.transform(f)
        assert f.info is not None
        self._version = f.info.consent_version
        self._legal_basis = f.info.legal_basis
        self.inputs.append({"source": source or "<DataFrame>", "join": f.info.join, "strategy": f.info.strategy})
        return filtered_df

    def read(
        self,
        source: str | DataFrame,
        *,
        spark: SparkSession | None = None,
        format: str = "delta",  # noqa: A002 - same word as DataFrameReader.format
        user_col: str = "user_id",
        org_col: str = "org_id",
        options: Mapping[str, str] | None = None,
    ) -> DataFrame:
        """Reads an input (a path, or a DataFrame already loaded) with the consent filter applied.

        Args:
            source: A path or URI (read with ``format``) or a DataFrame.
            spark: Session to read with; default the active one.
            format: Reader format for a path: delta, parquet, json, ...
            user_col: The input's user id column.
            org_col: The input's org id column.
            options: Reader options.
        """
        if isinstance(source, DataFrame):
            return self.apply(source, user_col=user_col, org_col=org_col)
        if not isinstance(source, str):
            raise TypeError(f"source must be a path or a DataFrame, got {type(source).__name__}")
        spark = spark or SparkSession.getActiveSession()
        if spark is None:
            raise KetchError("no active SparkSession; pass spark= to PurposeContext.read")
        df = spark.read.format(format).options(**dict(options or {})).load(source)
        return self.apply(df, user_col=user_col, org_col=org_col, source=source)

    def summary(self, result: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The job summary: ``result`` plus purpose, legal basis, consent version and inputs.

        The purpose keys win over keys of the same name in ``result``.
        """
        return {
            **dict(result or {}),
            "purpose": self.name,
            "legal_basis": self._legal_basis,
            "consent_version": self._version,
            "inputs": [dict(i) for i in self.inputs],
        }

    def __enter__(self) -> PurposeContext:
        return self._fresh()

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, fn: Callable[..., Mapping[str, Any] | None]) -> Callable[..., dict[str, Any]]:
        """Declares ``fn`` a job of this purpose (see the class example).

        ``fn`` receives a fresh context as its first argument. Without a cfg in
        :func:`purpose`, the job's own ``cfg`` argument is used. The wrapped job
        returns ``fn``'s dict (or ``{}`` for None) merged into :meth:`summary`.
        """
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def job(*args: Any, **kwargs: Any) -> dict[str, Any]:
            ctx = self._fresh(_cfg_argument(signature, args, kwargs))
            result = fn(ctx, *args, **kwargs)
            if result is not None and not isinstance(result, Mapping):
                raise TypeError(f"job {fn.__name__} of purpose {self.name!r} must return a dict or None, got {type(result).__name__}")
            return ctx.summary(result)

        return job


def _cfg_argument(signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any]) -> KetchConfig | None:
    """The ``cfg`` argument a job was called with, if its signature has one."""
    if "cfg" not in signature.parameters:
        return None
    try:
        bound = signature.bind_partial(None, *args, **kwargs)
    except TypeError:
        return None
    value = bound.arguments.get("cfg")
    return value if isinstance(value, KetchConfig) else None


def purpose(
    name: str,
    cfg: KetchConfig | None = None,
    *,
    consent: DataFrame | None = None,
    policy: Policy | None = None,
    as_of: int | str | dt.datetime | None = None,
) -> PurposeContext:
    """Declares the purpose of a job: a decorator, or a context manager.

    Inputs the job reads through the context (:meth:`PurposeContext.read`) are
    consent-filtered for ``name``; the job's summary gets the purpose and the
    consent version. See :class:`PurposeContext` for an example.

    Raises:
        UnknownPurposeError: ``name`` is not in the policy (checked when a cfg or
            policy is given, otherwise at the first read).
    """
    return PurposeContext(name, cfg, consent=consent, policy=policy, as_of=as_of)


# --------------------------------------------------------------------------- SQL


@dataclass(frozen=True)
class ConsentViews:
    """Temp views registered by :func:`register_consent_views`.

    Attributes:
        consent_version: Delta version of consent/state behind every view.
        views: Purpose name -> view name (``consented_users_<p>`` for consent-basis
            purposes, ``objecting_users_<p>`` for legitimate-interest ones).
        strategies: Purpose name -> ``broadcast`` or ``shuffle`` (the hint in the view).
    """

    consent_version: int | None
    views: Mapping[str, str] = field(default_factory=dict)
    strategies: Mapping[str, str] = field(default_factory=dict)


def view_name(purpose: Purpose) -> str:
    """Name of a purpose's key-set view."""
    prefix = "consented_users" if purpose.legal_basis == "consent" else "objecting_users"
    return f"{prefix}_{purpose.name}"


def register_consent_views(
    spark: SparkSession,
    cfg: KetchConfig,
    purposes: Sequence[str] | None = None,
    *,
    as_of: int | str | dt.datetime | None = None,
) -> ConsentViews:
    """Registers one temp view per purpose so Spark SQL gets the filter's semantics.

    Consent-basis purposes get ``consented_users_<purpose>`` (org_id, user_id of
    the users who granted it): keep rows with a ``LEFT SEMI JOIN``.
    Legitimate-interest purposes get ``objecting_users_<purpose>`` (org_id,
    user_id of the users who objected): drop them with a ``LEFT ANTI JOIN`` and
    drop null ids, as the filter does. Each view carries the filter's broadcast
    or merge hint, and all views read the same version of consent/state.

    The story's query, rewritten::

        SELECT e.event_site, COUNT(DISTINCT e.user_id) AS users
        FROM user_events e
        LEFT SEMI JOIN consented_users_analytics c
          ON e.org_id = c.org_id AND e.user_id = c.user_id
        WHERE e.org_id = '0x1F3A00C1' AND e.event_type = 'PAGE_VIEW'
          AND e.event_day >= date_sub(current_date(), 30)
        GROUP BY e.event_site

    A legitimate-interest purpose::

        SELECT e.* FROM user_events e
        LEFT ANTI JOIN objecting_users_product_improvement o
          ON e.org_id = o.org_id AND e.user_id = o.user_id
        WHERE e.org_id IS NOT NULL AND e.user_id IS NOT NULL

    Args:
        spark: Session to register the views in.
        cfg: Configuration (state table and policy).
        purposes: Purpose names; default every active purpose of the policy.
        as_of: Delta version or timestamp of consent/state.

    Returns:
        The registered views and the consent version behind them.

    Raises:
        UnknownPurposeError: A name is not in the policy.
        TableNotFoundError: consent/state does not exist yet.
    """
    _check_sources(cfg, None, None, as_of)
    policy = cfg.policy()
    chosen = [policy.purpose(name) for name in purposes] if purposes is not None else list(policy.active)
    snapshot = _table_snapshot(spark, cfg, as_of)
    views: dict[str, str] = {}
    strategies: dict[str, str] = {}
    for item in chosen:
        planned = _plan_key_set(spark, snapshot, item, cfg.filter)
        _hinted(planned.key_df, planned.strategy).createOrReplaceTempView(view_name(item))
        views[item.name] = view_name(item)
        strategies[item.name] = planned.strategy
    logger.info("registered consent views %s on consent version %s", ", ".join(views.values()), snapshot.version)
    return ConsentViews(consent_version=snapshot.version, views=views, strategies=strategies)
