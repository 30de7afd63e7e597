"""Key-set sizes recorded by compaction with each consent/state commit, read by the filter.

A consent filter chooses broadcast or shuffle from its key set's size. When the
state's row count alone cannot settle it (millions of users), the key set used to
be measured with a scan of the whole state, paid by every first filter after a
compaction commit. Compaction now records, in the commit's ``userMetadata``
(under :data:`KEY_SET_SIZES`), each purpose's key-set rows and estimated bytes,
kept up to date from the rows it changes (a user entering or leaving a purpose's
key set) at no extra read: the figures of the previous compaction commit plus
this run's changes; a full rebuild counts them from scratch. The same metadata
carries the state's row count after the commit (under :data:`STATE_ROWS`), so that
neither the next compaction nor a first filter counts the state.

Commits after the recording one that only remove rows or rewrite files
(an erasure's DELETE, OPTIMIZE, REORG, VACUUM) keep the figures valid as upper
bounds; any other commit (a RESTORE, a write by another tool) makes the filter
measure again. A state compacted before this existed carries no figures until its
next full rebuild.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from ketch_spark.bitmap import has_purpose
from ketch_spark.policy import Purpose
from ketch_spark.tables import TableVersion, delta_sql_name

__all__ = [
    "KEY_ROW_OVERHEAD_BYTES",
    "KEY_SET_SIZES",
    "STATE_ROWS",
    "RecordedState",
    "commit_user_metadata",
    "key_row_bytes",
    "key_set_member",
    "purpose_key",
    "recorded_for",
    "recorded_sizes",
    "recorded_state",
    "size_change_columns",
    "sizes_after",
]

logger = logging.getLogger(__name__)

#: Key of the sizes in a consent/state commit's ``userMetadata`` JSON.
KEY_SET_SIZES = "ketch_key_set_sizes"
#: Key of the state's row count in the same ``userMetadata``.
STATE_ROWS = "ketch_state_rows"
#: Operations after the recording commit that keep its figures upper bounds (rows removed or rewritten, none added).
_SIZE_KEEPING_OPERATIONS = frozenset({"DELETE", "OPTIMIZE", "REORG", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES"})
#: Of those, the operations that remove no row: the recorded row count stays exact.
_ROW_KEEPING_OPERATIONS = _SIZE_KEEPING_OPERATIONS - {"DELETE"}
#: Commits read back from the pinned version to find the recording one.
_HISTORY_DEPTH = 20

Sizes = dict[str, tuple[int, int]]

#: In-memory bytes of one key row beyond its two strings: UnsafeRow null bits,
#: two offset words, and the hashed relation's per-entry pointer and length words.
KEY_ROW_OVERHEAD_BYTES = 40


def _padded(length: Column) -> Column:
    """Bytes an UnsafeRow spends on a string of ``length`` bytes (rounded up to 8)."""
    return F.ceil(length / F.lit(8)) * F.lit(8)


def key_set_member(purpose: Purpose, granted: str = "granted", known: str = "known",
                   granted_implies_known: bool = False) -> Column:
    """Whether a state row is in a purpose's key set: a grant (consent basis) or an objection (legitimate interest).

    Args:
        purpose: The purpose.
        granted: Name of the granted bitmap column.
        known: Name of the known bitmap column.
        granted_implies_known: A granted bit is always known (compaction's state):
            a consent-basis test then reads ``granted`` only.
    """
    has_granted = F.coalesce(has_purpose(granted, purpose.bit), F.lit(False))
    if purpose.legal_basis == "consent" and granted_implies_known:
        return has_granted
    has_known = F.coalesce(has_purpose(known, purpose.bit), F.lit(False))
    return has_known & has_granted if purpose.legal_basis == "consent" else has_known & ~has_granted


def key_row_bytes() -> Column:
    """Estimated in-memory bytes of one key row (org_id, user_id) of a broadcast key set."""
    return F.lit(KEY_ROW_OVERHEAD_BYTES) + _padded(F.octet_length("org_id")) + _padded(F.octet_length("user_id"))


def purpose_key(purpose: Purpose) -> str:
    """The key of a purpose's sizes: bit and legal basis (both decide who is in its key set)."""
    return f"{purpose.bit}:{purpose.legal_basis}"


def size_change_columns(purposes: Sequence[Purpose], old_granted: str, old_known: str) -> list[Column]:
    """Aggregates of the changed rows: per purpose, the key-set rows and bytes they add (negative: remove).

    Reads the rows :func:`~ketch_spark.consent.compact.apply_choices` returns:
    the new ``granted``/``known`` bitmaps, the old ones under ``old_granted`` /
    ``old_known`` (zero words for a new user) and ``changed``.
    """
    columns = []
    for index, purpose in enumerate(purposes):
        new_in = key_set_member(purpose, granted_implies_known=True).cast("long")
        old_in = key_set_member(purpose, old_granted, old_known, granted_implies_known=True).cast("long")
        step = F.when(F.col("changed"), new_in - old_in).otherwise(F.lit(0))
        columns += [
            F.coalesce(F.sum(step), F.lit(0)).alias(f"__key_rows_{index}"),
            F.coalesce(F.sum(step * key_row_bytes()), F.lit(0)).alias(f"__key_bytes_{index}"),
        ]
    return columns


def sizes_after(purposes: Sequence[Purpose], changes: Mapping[str, Any], before: Sizes | None) -> Sizes:
    """The sizes after a commit: ``before`` (``None`` for a rebuild from nothing) plus ``changes``.

    ``changes`` is the aggregated row of :func:`size_change_columns`. A purpose
    without a size before (added to the policy since) gets none.
    """
    sizes: Sizes = {}
    for index, purpose in enumerate(purposes):
        key = purpose_key(purpose)
        if before is not None and key not in before:
            continue
        rows, size = before.get(key, (0, 0)) if before is not None else (0, 0)
        sizes[key] = (max(0, rows + int(changes[f"__key_rows_{index}"])),
                      max(0, size + int(changes[f"__key_bytes_{index}"])))
    return sizes


def commit_user_metadata(sizes: Sizes | None, state_rows: int | None = None) -> str | None:
    """The ``userMetadata`` text of a consent/state commit carrying ``sizes`` and the row count (``None``: neither)."""
    metadata: dict[str, Any] = {}
    if sizes is not None:
        metadata[KEY_SET_SIZES] = {key: list(value) for key, value in sorted(sizes.items())}
    if state_rows is not None:
        metadata[STATE_ROWS] = int(state_rows)
    return json.dumps(metadata, sort_keys=True) if metadata else None


@dataclass(frozen=True)
class RecordedState:
    """What compaction recorded with the state's last commit of its own, as valid for a later version.

    Attributes:
        sizes: Key-set (rows, bytes) per :func:`purpose_key`; upper bounds; ``None`` when not recorded.
        rows: The state's row count; an upper bound; ``None`` when not recorded.
        rows_exact: Whether ``rows`` is exact (no commit since removed rows).
    """

    sizes: Sizes | None
    rows: int | None
    rows_exact: bool

    @property
    def exact_rows(self) -> int | None:
        """``rows`` when recorded and exact, else ``None``."""
        return self.rows if self.rows_exact else None


def _recorded_of(user_metadata: str | None) -> dict[str, Any] | None:
    """The parsed ``userMetadata`` when it holds anything compaction records, else ``None``."""
    if not user_metadata:
        return None
    try:
        found = json.loads(user_metadata)
    except ValueError:
        return None
    if not isinstance(found, dict) or not ({KEY_SET_SIZES, STATE_ROWS} & found.keys()):
        return None
    return found


def _sizes_of(found: dict[str, Any]) -> Sizes | None:
    sizes = found.get(KEY_SET_SIZES)
    if not isinstance(sizes, dict):
        return None
    return {str(key): (int(value[0]), int(value[1])) for key, value in sizes.items()}


def _rows_of(found: dict[str, Any]) -> int | None:
    rows = found.get(STATE_ROWS)
    return int(rows) if isinstance(rows, int) and not isinstance(rows, bool) else None


def recorded_state(spark: SparkSession, location: str, version: int) -> RecordedState | None:
    """What compaction recorded for ``version`` of the state at ``location``, ``None`` when unknown.

    Reads the latest commits (``DESCRIBE HISTORY``, so it works over Spark
    Connect) back from ``version`` to the compaction commit that recorded them;
    only size-keeping operations may lie between.
    """
    history = (
        spark.sql(f"DESCRIBE HISTORY {delta_sql_name(location)} LIMIT {_HISTORY_DEPTH}")
        .where(F.col("version") <= version)
        .select("version", "operation", "userMetadata")
        .collect()
    )
    rows_exact = True
    for row in sorted(history, key=lambda r: -r["version"]):
        found = _recorded_of(row["userMetadata"])
        if found is not None:
            return RecordedState(_sizes_of(found), _rows_of(found), rows_exact)
        if row["operation"] not in _SIZE_KEEPING_OPERATIONS:
            return None
        rows_exact = rows_exact and row["operation"] in _ROW_KEEPING_OPERATIONS
    return None


def recorded_sizes(spark: SparkSession, location: str, version: int) -> Sizes | None:
    """The key-set sizes valid for ``version`` of the state at ``location``, ``None`` when unknown."""
    recorded = recorded_state(spark, location, version)
    return None if recorded is None else recorded.sizes


def recorded_for(spark: SparkSession, table: TableVersion) -> RecordedState | None:
    """:func:`recorded_state` of a pinned table version; ``None`` also when its history cannot be read."""
    try:
        return recorded_state(spark, table.location, table.version)
    except Exception as exc:  # noqa: BLE001 - history unreadable: the filter counts and measures instead
        logger.debug("nothing recorded by compaction for %s: %s", table.location, exc)
        return None
