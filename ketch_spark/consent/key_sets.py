"""A purpose's key set: who granted it (consent basis) or who objected (legitimate interest).

The consent state is reduced to the narrow key set ``(org_id, user_id)`` of one
purpose, and the join strategy is chosen from its estimated size: broadcast when
it stays below ``cfg.filter.broadcast_max_bytes`` (256 MB by default, far above
Spark's 10 MB ``autoBroadcastJoinThreshold``, which does not take part in the
decision), a sort-merge join above it.

From its second use in an application, a broadcast-sized key set of the Delta
state is kept (persisted) for the later filters and views on the same table
version and purpose (``cfg.filter.key_set_cache_entries`` of them, least
recently used dropped first; :func:`release_key_sets` frees them). Kept key sets
are keyed by the application (or the Spark Connect session), the state's
:class:`~ketch_spark.tables.TableVersion` (location, Delta table id, version and
commit time), the purpose's bit and legal basis. A committed version never
changes, and a table deleted and rebuilt at the same path has a new table id,
so a kept key set is never stale; kept key sets of a table that has since been
replaced at its location are dropped as soon as a filter sees the new one.

On a classic session the kept key set is named in Spark's cache manager, so
ketch-spark's session extension (:mod:`ketch_spark.extensions`) can keep its
broadcast hash relation too. Over Spark Connect there is no JVM in this process:
the key set is kept with a plain ``persist`` and its relation is broadcast per
query as usual.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from py4j.protocol import Py4JError
from pyspark import StorageLevel
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ketch_spark.config import FilterSettings
from ketch_spark.consent.key_set_sizes import (
    KEY_ROW_OVERHEAD_BYTES,
    key_row_bytes,
    key_set_member,
    purpose_key,
    recorded_for,
)
from ketch_spark.consent.snapshot import StateSnapshot, remembered, require_state_columns
from ketch_spark.extensions import (
    KEPT_KEY_SET_PREFIX,
    extension_active,
    release_kept_relations,
    set_kept_relation_capacity,
)
from ketch_spark.policy import Purpose
from ketch_spark.session import is_connect_session
from ketch_spark.tables import TableVersion

__all__ = [
    "BROADCAST",
    "SHUFFLE",
    "UPPER_BOUND_ESTIMATE",
    "KEY_SET_SCAN",
    "RECORDED_SIZE",
    "KeySetEstimate",
    "PlannedKeySet",
    "consent_key_set",
    "hinted",
    "kept_key_set_count",
    "plan_key_set",
    "release_key_sets",
]

logger = logging.getLogger(__name__)

BROADCAST = "broadcast"
SHUFFLE = "shuffle"

#: How the key-set size was estimated.
UPPER_BOUND_ESTIMATE = "state_rows_upper_bound"
KEY_SET_SCAN = "key_set_scan"
RECORDED_SIZE = "recorded_by_compaction"

#: Bytes assumed per id when only the number of state rows is known (ids up to
#: 32 bytes, UUIDs padded included); the key set is then measured exactly when
#: this rough bound is above the broadcast limit.
_ASSUMED_ID_BYTES = 32
_UPPER_ROW_BYTES = KEY_ROW_OVERHEAD_BYTES + 2 * _ASSUMED_ID_BYTES

#: Key sets used once and not kept yet, remembered at most this many.
_USED_ONCE_SIZE = 256


class _KeySetKey(NamedTuple):
    """What a kept key set is kept under."""

    session: tuple[str, str]
    table: TableVersion
    bit: int
    legal_basis: str


@dataclass(frozen=True)
class _KeptKeySet:
    key_df: DataFrame
    name: str


_kept: OrderedDict[_KeySetKey, _KeptKeySet] = OrderedDict()  # least recently used first
_used_once: OrderedDict[_KeySetKey, None] = OrderedDict()  # oldest first
_kept_lock = threading.Lock()
_kept_serials = itertools.count(1)


# --------------------------------------------------------------------------- the key set


def _key_condition(purpose: Purpose, granted_implies_known: bool) -> Column:
    """The state rows in a purpose's key set (:func:`key_set_member`) with both ids present."""
    chose = key_set_member(purpose, granted_implies_known=granted_implies_known)
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
    require_state_columns(state_df)
    return state_df.where(_key_condition(purpose, granted_implies_known)).select("org_id", "user_id")


# --------------------------------------------------------------------------- its size


@dataclass(frozen=True)
class KeySetEstimate:
    """Estimated in-memory size of a key set.

    Attributes:
        rows: State rows (an upper bound) or key rows (a scan).
        size: Bytes.
        source: ``state_rows_upper_bound``, ``recorded_by_compaction`` or ``key_set_scan``.
    """

    rows: int
    size: int
    source: str


def _measure_key_set(key_df: DataFrame) -> tuple[int, int]:
    """Exact rows and estimated in-memory bytes of a key set (one scan of the state)."""
    row = key_df.agg(F.count(F.lit(1)).alias("rows"), F.sum(key_row_bytes()).alias("bytes")).head()
    return int(row["rows"]), int(row["bytes"] or 0)


def _estimate_key_set(snapshot: StateSnapshot, purpose: Purpose, key_df: DataFrame, bound: int) -> KeySetEstimate:
    """Estimates the key set's size, cheaply when possible.

    First an upper bound from the number of state rows; when that bound exceeds
    the broadcast limit, the size of the key set. For consent/state both come from
    what compaction recorded with the state's commit
    (:mod:`ketch_spark.consent.key_set_sizes`, one read of the table's history);
    without a record, the rows are counted (Delta answers from its log) and the key
    set measured with one scan of the state. Each is remembered per table version.
    """
    table = snapshot.table
    recorded = None
    if table is not None:
        spark = key_df.sparkSession
        recorded = remembered(("recorded", table), lambda: recorded_for(spark, table))
    rows = recorded.rows if recorded is not None and recorded.rows is not None else snapshot.row_count()
    upper = rows * _UPPER_ROW_BYTES
    if upper <= bound:
        return KeySetEstimate(rows, upper, UPPER_BOUND_ESTIMATE)
    sizes = recorded.sizes if recorded is not None else None
    if sizes is not None and purpose_key(purpose) in sizes:
        key_rows, size = sizes[purpose_key(purpose)]
        return KeySetEstimate(key_rows, size, RECORDED_SIZE)
    if table is None:
        key_rows, size = _measure_key_set(key_df)
    else:
        key_rows, size = remembered(("key_set", table, purpose.bit, purpose.legal_basis), lambda: _measure_key_set(key_df))
    return KeySetEstimate(key_rows, size, KEY_SET_SCAN)


# --------------------------------------------------------------------------- kept key sets


def _session_key(spark: SparkSession) -> tuple[str, str]:
    """The application (classic) or Spark Connect session a kept key set belongs to."""
    if is_connect_session(spark):
        return ("connect", spark.session_id)
    return ("classic", spark.sparkContext.applicationId)


def _keep(spark: SparkSession, key_df: DataFrame) -> _KeptKeySet:
    """Persists ``key_df``; on a classic session under a kept-key-set name, by which the extension knows it.

    Over Spark Connect, and where the cache manager cannot name it, a plain persist.
    """
    name = f"{KEPT_KEY_SET_PREFIX}{next(_kept_serials)}"
    if is_connect_session(spark):
        key_df.persist(StorageLevel.MEMORY_AND_DISK)
        return _KeptKeySet(key_df, name)
    level = spark.sparkContext._getJavaStorageLevel(StorageLevel.MEMORY_AND_DISK)
    try:
        cache_manager = spark._jsparkSession.sharedState().cacheManager()
        cache_manager.cacheQuery(key_df._jdf, spark.sparkContext._jvm.scala.Option.apply(name), level)
    except Py4JError:  # another Spark build: kept all the same, only unnamed (no kept relation)
        logger.debug("could not name the kept key set; persisting it unnamed")
        key_df.persist(StorageLevel.MEMORY_AND_DISK)
    return _KeptKeySet(key_df, name)


def _unkeep(kept: _KeptKeySet, *, destroy: bool = False) -> None:
    spark = kept.key_df.sparkSession
    try:
        if not is_connect_session(spark):
            release_kept_relations(spark, kept.name, destroy=destroy)
        kept.key_df.unpersist(blocking=False)
    except (Py4JError, PySparkException):  # its SparkContext or Connect session is gone, its cache with it
        logger.debug("kept key set belonged to a stopped session")


def _forget_replaced_tables(session: tuple[str, str], table: TableVersion) -> None:
    """Drops kept key sets of an earlier table at ``table``'s location (deleted and rebuilt since).

    Their keys can never be asked for again (the table id is gone), but their rows
    could still be served: Spark's cache manager matches a cached plan by its
    shape, and a Delta read of the same path at the same version has the same
    shape whatever table lies there. Without this, the first filter on a rebuilt
    table reads the old table's key set. Runs before the new key set is planned.
    """
    def replaced(key: _KeySetKey) -> bool:
        return key.session == session and key.table.location == table.location and key.table.table_id != table.table_id

    with _kept_lock:
        stale = [key for key in _kept if replaced(key)]
        dropped = [_kept.pop(key) for key in stale]
        for key in [key for key in _used_once if replaced(key)]:
            del _used_once[key]
    for old in dropped:
        _unkeep(old)
    if dropped:
        logger.info("dropped %d kept key set(s) of a replaced table at %s", len(dropped), table.location)


def _reusable_key_set(
    spark: SparkSession, snapshot: StateSnapshot, purpose: Purpose, key_df: DataFrame, entries: int
) -> tuple[DataFrame, bool, bool]:
    """The key set to join to, kept for this application's later filters from its second use.

    A key set is kept from its second use on: keeping one fills it with every
    org's keys (the state scan then cannot skip other customers' files), which a
    one-query job should not pay for. Only key sets of the Delta state are kept.
    The least recently used entry beyond ``entries`` is unpersisted, with its
    broadcast relations.

    Returns:
        The key set, whether an earlier filter had kept it already, and whether it is kept.
    """
    if entries == 0 or snapshot.table is None:
        return key_df, False, False
    key = _KeySetKey(_session_key(spark), snapshot.table, purpose.bit, purpose.legal_basis)
    with _kept_lock:
        kept = _kept.get(key)
        if kept is not None:
            _kept.move_to_end(key)
            return kept.key_df, True, True
        if key not in _used_once:
            _used_once[key] = None
            while len(_used_once) > _USED_ONCE_SIZE:
                _used_once.popitem(last=False)
            return key_df, False, False
        del _used_once[key]
        _kept[key] = _keep(spark, key_df)
        evicted = [_kept.popitem(last=False)[1] for _ in range(len(_kept) - entries)]
    if not is_connect_session(spark):
        set_kept_relation_capacity(spark, entries)
    for old in evicted:
        _unkeep(old)
    return key_df, False, True


def release_key_sets() -> int:
    """Unpersists every key set kept for reuse by consent filters and views of this process.

    Their broadcast relations (kept by the session extension) are destroyed too, so
    call it between queries. The next filter of a purpose and version then reads
    consent/state again, and the one after it keeps the key set again.

    Returns:
        How many key sets were released.
    """
    with _kept_lock:
        kept = list(_kept.values())
        _kept.clear()
        _used_once.clear()
    for old in kept:
        _unkeep(old, destroy=True)
    return len(kept)


def kept_key_set_count() -> int:
    """How many key sets this process keeps for reuse."""
    with _kept_lock:
        return len(_kept)


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PlannedKeySet:
    """A purpose's key set, ready to join.

    Attributes:
        key_df: The key set (org_id, user_id), kept or not.
        estimate: Its estimated size.
        strategy: ``broadcast`` or ``shuffle``.
        reused: An earlier filter had kept it already.
        relation_kept: It is kept and the session extension serves its broadcast relation.
    """

    key_df: DataFrame
    estimate: KeySetEstimate
    strategy: str
    reused: bool
    relation_kept: bool = False


def plan_key_set(
    spark: SparkSession, snapshot: StateSnapshot, purpose: Purpose, settings: FilterSettings
) -> PlannedKeySet:
    """A purpose's key set with its join strategy; a broadcast-sized one is kept for reuse."""
    if snapshot.table is not None:
        _forget_replaced_tables(_session_key(spark), snapshot.table)
    key_df = consent_key_set(snapshot.state_df, purpose, granted_implies_known=snapshot.from_compaction)
    estimate = _estimate_key_set(snapshot, purpose, key_df, settings.broadcast_max_bytes)
    if estimate.size > settings.broadcast_max_bytes:
        return PlannedKeySet(key_df, estimate, SHUFFLE, reused=False)
    key_df, reused, kept = _reusable_key_set(spark, snapshot, purpose, key_df, settings.key_set_cache_entries)
    relation_kept = kept and not is_connect_session(spark) and extension_active(spark)
    return PlannedKeySet(key_df, estimate, BROADCAST, reused, relation_kept)


def hinted(key_df: DataFrame, strategy: str) -> DataFrame:
    """The key set with the join hint that makes Spark follow our decision, not its own threshold."""
    return F.broadcast(key_df) if strategy == BROADCAST else key_df.hint("merge")
