"""The consent state a filter reads: one pinned version of consent/state, or a caller's DataFrame.

A filter, a purpose-declared job or a set of SQL views reads the state once and
pins it: the table's current version, or the one ``as_of`` names (a Delta
version number, or a timestamp: the last commit at or before it). The pinned
version is a :class:`~ketch_spark.tables.TableVersion` (table id, version and
commit time), so a table deleted and rebuilt at the same path, whose version
numbers start again at 0, is never taken for the old one.

Everything here goes through what a Spark Connect session carries too:
``spark.read.format("delta")`` with ``versionAsOf``, and ``DESCRIBE HISTORY`` /
``DESCRIBE DETAIL`` (see :func:`ketch_spark.tables.delta_table_version`).
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any, Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ketch_spark.config import KetchConfig
from ketch_spark.errors import ConfigError, SchemaError
from ketch_spark.policy import Policy
from ketch_spark.tables import TableVersion, current_version, delta_history

__all__ = [
    "STATE_TABLE",
    "STATE_KEY_COLUMNS",
    "AsOf",
    "StateSnapshot",
    "check_as_of",
    "check_sources",
    "frame_snapshot",
    "policy_of",
    "forget_remembered",
    "remembered",
    "require_state_columns",
    "table_snapshot",
]

STATE_TABLE = "consent_state"
#: The state columns a key set needs: the ids and the two bitmaps.
STATE_KEY_COLUMNS = ("org_id", "user_id", "granted", "known")

#: What ``as_of`` may be: a Delta version, or a timestamp (text or datetime).
AsOf = int | str | dt.datetime

_MEMO_SIZE = 256
_memo: dict[tuple[Any, ...], Any] = {}
_memo_lock = threading.Lock()


@dataclass(frozen=True)
class StateSnapshot:
    """The consent state one filter, job run or set of views reads.

    Attributes:
        state_df: The state rows (org_id, user_id, granted, known, ...).
        table: The pinned version of consent/state; ``None`` for a caller's DataFrame.
        row_count: Number of state rows (Delta answers it from its log; remembered
            per table version).
    """

    state_df: DataFrame
    table: TableVersion | None
    row_count: Callable[[], int]

    @property
    def version(self) -> int | None:
        """Delta version of consent/state, ``None`` for a caller's DataFrame."""
        return None if self.table is None else self.table.version

    @property
    def location(self) -> str | None:
        """Path of consent/state, ``None`` for a caller's DataFrame."""
        return None if self.table is None else self.table.location

    @property
    def table_id(self) -> str | None:
        """Delta table id of consent/state, ``None`` for a caller's DataFrame."""
        return None if self.table is None else self.table.table_id

    @property
    def from_compaction(self) -> bool:
        """Whether the rows are consent/state as compaction writes it (a granted bit is always known)."""
        return self.table is not None


def require_state_columns(state_df: DataFrame) -> None:
    """Checks that ``state_df`` has the columns a key set reads.

    Raises:
        SchemaError: A column is missing (the message lists the expected and the found ones).
    """
    expected = STATE_KEY_COLUMNS
    missing = [c for c in expected if c not in state_df.columns]
    if missing:
        raise SchemaError(
            f"consent state lacks column(s) {', '.join(missing)}; expected {', '.join(expected)}, "
            f"found {', '.join(state_df.columns) or 'no columns'}"
        )


def forget_remembered() -> None:
    """Drops every remembered count and key-set size: the next filter computes them again, as a new job would."""
    with _memo_lock:
        _memo.clear()


def remembered(key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    """``compute()`` memoised under ``key``, which names a committed table version (it never changes)."""
    with _memo_lock:
        if key in _memo:
            return _memo[key]
    value = compute()
    with _memo_lock:
        if len(_memo) >= _MEMO_SIZE:
            _memo.pop(next(iter(_memo)))
        _memo[key] = value
    return value


# --------------------------------------------------------------------------- arguments


def check_as_of(as_of: Any) -> None:
    """Raises TypeError unless ``as_of`` is None, a version number or a timestamp."""
    if as_of is not None and (isinstance(as_of, bool) or not isinstance(as_of, (int, str, dt.datetime))):
        raise TypeError(f"as_of must be a Delta version (int) or a timestamp (str or datetime), got {as_of!r}")


def policy_of(cfg: KetchConfig | None, policy: Policy | None) -> Policy:
    """The policy given, else the config's.

    Raises:
        TypeError: ``policy`` is not a Policy, or neither is given.
    """
    if policy is not None:
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a ketch_spark Policy, got {type(policy).__name__}")
        return policy
    if cfg is None:
        raise TypeError("consent filter needs cfg=KetchConfig, or both consent=<state DataFrame> and policy=<Policy>")
    return cfg.policy()


def check_sources(cfg: KetchConfig | None, consent: DataFrame | None, policy: Policy | None, as_of: Any) -> None:
    """Checks where the state comes from: a config (its consent/state table) or a DataFrame and a policy.

    Raises:
        TypeError: Wrong types, or neither a config nor a DataFrame with a policy.
        ConfigError: ``as_of`` given with a DataFrame.
    """
    if cfg is not None and not isinstance(cfg, KetchConfig):
        raise TypeError(f"cfg must be a KetchConfig (ks.load_config(...)), got {type(cfg).__name__}")
    if consent is not None and not isinstance(consent, DataFrame):
        raise TypeError(f"consent must be a state DataFrame, got {type(consent).__name__}")
    if cfg is None and (consent is None or policy is None):
        raise TypeError("consent filter needs cfg=KetchConfig, or both consent=<state DataFrame> and policy=<Policy>")
    if consent is not None and as_of is not None:
        raise ConfigError("as_of pins the consent/state table; with consent=<DataFrame> pass the snapshot you want instead")
    check_as_of(as_of)


# --------------------------------------------------------------------------- pinning a version


def _at_version(spark: SparkSession, latest: TableVersion, version: int) -> TableVersion:
    """Version ``version`` of the table ``latest`` belongs to.

    Raises:
        ConfigError: Not a version of the table, or no longer in its history.
    """
    if not 0 <= version <= latest.version:
        raise ConfigError(
            f"as_of={version} is not a version of {latest.location}; its versions go from 0 to {latest.version}"
        )
    if version == latest.version:
        return latest
    row = delta_history(spark, latest.location).where(F.col("version") == version).select("committed_ms").head()
    if row is None:
        raise ConfigError(f"as_of={version}: version {version} of {latest.location} is no longer in its history")
    return TableVersion(latest.location, latest.table_id, version, int(row["committed_ms"]))


def _at_time(spark: SparkSession, latest: TableVersion, timestamp: str) -> TableVersion:
    """The version a Delta ``timestampAsOf`` read would use: the last commit at or before ``timestamp``.

    Raises:
        ConfigError: ``timestamp`` does not parse, or lies before the first commit.
    """
    ts = F.try_to_timestamp(F.lit(timestamp))
    at_or_before = F.when(F.col("timestamp") <= ts, F.col("version"))
    row = delta_history(spark, latest.location).agg(
        F.max(at_or_before).alias("version"),
        F.max_by("committed_ms", at_or_before).alias("committed_ms"),
        F.min("timestamp").alias("first_commit"),
        F.first(ts.isNull()).alias("unparsable"),
    ).head()
    if row["unparsable"]:
        raise ConfigError(f"as_of={timestamp!r} is not a timestamp; expected e.g. '2026-11-26 10:00:00' or a version number")
    if row["version"] is None:
        raise ConfigError(
            f"as_of={timestamp!r} is before the first version of {latest.location} (committed at {row['first_commit']})"
        )
    return TableVersion(latest.location, latest.table_id, int(row["version"]), int(row["committed_ms"]))


def _pinned(spark: SparkSession, latest: TableVersion, as_of: AsOf | None) -> TableVersion:
    if as_of is None:
        return latest
    if isinstance(as_of, int):
        return _at_version(spark, latest, as_of)
    return _at_time(spark, latest, as_of.isoformat(sep=" ") if isinstance(as_of, dt.datetime) else as_of)


def table_snapshot(spark: SparkSession, cfg: KetchConfig, as_of: AsOf | None = None) -> StateSnapshot:
    """consent/state pinned to one version: the current one unless ``as_of`` names another.

    Raises:
        TableNotFoundError: consent/state does not exist (names the command that creates it).
        ConfigError: ``as_of`` names no version of the state.
    """
    table = _pinned(spark, current_version(spark, cfg, STATE_TABLE), as_of)
    state_df = spark.read.format("delta").option("versionAsOf", table.version).load(table.location)
    return StateSnapshot(state_df, table, lambda: remembered(("rows", table), state_df.count))


def frame_snapshot(consent: DataFrame) -> StateSnapshot:
    """A caller's state DataFrame as a snapshot (no version; counted when needed).

    Raises:
        SchemaError: ``consent`` lacks org_id, user_id, granted or known.
    """
    require_state_columns(consent)
    return StateSnapshot(consent, None, consent.count)
