"""Key-set sizes recorded by compaction with each consent/state commit, read by the filter.

A consent filter chooses broadcast or shuffle from its key set's size. When the
state's row count alone cannot settle it (millions of users), the key set used to
be measured with a scan of the whole state, paid by every first filter after a
compaction commit. Compaction now records, in the commit's ``userMetadata``
(under :data:`KEY_SET_SIZES`), each purpose's key-set rows and estimated bytes,
kept up to date from the rows it changes (a user entering or leaving a purpose's
key set) at no extra read: the figures of the previous compaction commit plus
this run's changes; a full rebuild counts them from scratch.

Commits after the recording one that only remove rows or rewrite files
(an erasure's DELETE, OPTIMIZE, REORG, VACUUM) keep the figures valid as upper
bounds; any other commit (a RESTORE, a write by another tool) makes the filter
measure again. A state compacted before this existed carries no figures until its
next full rebuild.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping, Sequence

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from ketch_spark.bitmap import has_purpose
from ketch_spark.policy import Purpose
from ketch_spark.tables import TableVersion, delta_sql_name

__all__ = [
    "KEY_ROW_OVERHEAD_BYTES",
    "KEY_SET_SIZES",
    "commit_user_metadata",
    "key_row_bytes",
    "key_set_member",
    "purpose_key",
    "recorded_key_set_size",
    "recorded_sizes",
    "size_change_columns",
    "sizes_after",
]

logger = logging.getLogger(__name__)

#: Key of the sizes in a consent/state commit's ``userMetadata`` JSON.
KEY_SET_SIZES = "ketch_key_set_sizes"
#: Operations after the recording commit that keep its sizes upper bounds (rows removed or rewritten, none added).
_SIZE_KEEPING_OPERATIONS = frozenset({"DELETE", "OPTIMIZE", "REORG", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES"})
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


def commit_user_metadata(sizes: Sizes) -> str:
    """The ``userMetadata`` text of a consent/state commit carrying ``sizes``."""
    return json.dumps({KEY_SET_SIZES: {key: list(value) for key, value in sorted(sizes.items())}}, sort_keys=True)


def _sizes_of(user_metadata: str | None) -> Sizes | None:
    if not user_metadata:
        return None
    try:
        found = json.loads(user_metadata).get(KEY_SET_SIZES)
    except (ValueError, AttributeError):
        return None
    if not isinstance(found, dict):
        return None
    return {str(key): (int(value[0]), int(value[1])) for key, value in found.items()}


def recorded_sizes(spark: SparkSession, location: str, version: int) -> Sizes | None:
    """The key-set sizes valid for ``version`` of the state at ``location``, ``None`` when unknown.

    Reads the latest commits (``DESCRIBE HISTORY``, so it works over Spark
    Connect) back from ``version`` to the compaction commit that recorded sizes;
    only size-keeping operations may lie between.
    """
    history = (
        spark.sql(f"DESCRIBE HISTORY {delta_sql_name(location)} LIMIT {_HISTORY_DEPTH}")
        .where(F.col("version") <= version)
        .select("version", "operation", "userMetadata")
        .collect()
    )
    for row in sorted(history, key=lambda r: -r["version"]):
        sizes = _sizes_of(row["userMetadata"])
        if sizes is not None:
            return sizes
        if row["operation"] not in _SIZE_KEEPING_OPERATIONS:
            return None
    return None


def recorded_key_set_size(spark: SparkSession, table: TableVersion, purpose: Purpose) -> tuple[int, int] | None:
    """(rows, bytes) of ``purpose``'s key set at ``table`` as compaction recorded them, ``None`` when unknown."""
    try:
        sizes = recorded_sizes(spark, table.location, table.version)
    except Exception as exc:  # noqa: BLE001 - history unreadable: the filter measures instead
        logger.debug("no recorded key-set sizes for %s: %s", table.location, exc)
        return None
    return None if sizes is None else sizes.get(purpose_key(purpose))
