"""Purpose limitation: keep only the rows a purpose may process, with one cheap join.

The consent state (``consent/state``, one row per ``(org_id, user_id)`` with
``granted`` and ``known`` bitmaps) is reduced to the narrow key set of one
purpose (:mod:`ketch_spark.consent.key_sets`), then joined to the fact table:

* ``legal_basis: consent``: the key set holds the users who granted the purpose
  (known and granted); the fact table is **left-semi** joined to it, so users who
  never chose, and users unknown to the state, are dropped.
* ``legal_basis: legitimate_interest``: the key set holds the users who objected
  (known and not granted); the fact table is **left-anti** joined to it, so
  everyone else, unknown users included, is kept.

Identifiers follow the project's rule, trimmed everywhere: consent ingest stores
trimmed ids, and the filter compares the fact row's trimmed user id with them.
Rows whose user or org is null are dropped in both cases, and so are rows whose
org id is not trimmed (see :func:`consent_filter`). The key set is broadcast when
small enough, else joined with a sort-merge join; either way the fact table is
read once. Broadcast-sized key sets are kept for the later filters of the
application from their second use (see :mod:`ketch_spark.consent.key_sets`).

Every application records a :class:`FilterInfo` (purpose, join, strategy, key-set
size estimate, Delta version and table id of the state used): see
:attr:`ConsentFilter.info` and :func:`last_filter_info`. ``as_of`` pins the state
to an earlier Delta version or timestamp, so an output can be reproduced and tied
to its consent snapshot (:mod:`ketch_spark.consent.snapshot`).

The filter runs on classic and Spark Connect sessions alike: on its path it uses
the DataFrame API, ``spark.read.format("delta")`` and Delta's SQL commands only.

Example:
    >>> import ketch_spark as ks
    >>> allowed_df = events_df.transform(ks.consent_filter("analytics", cfg))
    >>> ks.last_filter_info().consent_version
    12

Jobs declare their purpose once with :func:`~ketch_spark.consent.purposes.purpose`;
SQL users get the same semantics through the views of
:func:`~ketch_spark.consent.views.register_consent_views`. Both are importable
from this module too.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ketch_spark.config import FilterSettings, KetchConfig
from ketch_spark.consent.key_sets import (
    BROADCAST,
    SHUFFLE,
    PlannedKeySet,
    consent_key_set,
    hinted,
    plan_key_set,
    release_key_sets,
)
from ketch_spark.consent.snapshot import (
    AsOf,
    StateSnapshot,
    check_sources,
    frame_snapshot,
    policy_of,
    table_snapshot,
)
from ketch_spark.consent.views import ConsentViews, register_consent_views, view_name
from ketch_spark.errors import SchemaError
from ketch_spark.policy import Policy, Purpose

__all__ = [
    "ConsentFilter",
    "ConsentViews",
    "FilterInfo",
    "consent_filter",
    "consent_key_set",
    "last_filter_info",
    "register_consent_views",
    "release_key_sets",
    "view_name",
    "SEMI_JOIN",
    "ANTI_JOIN",
    "BROADCAST",
    "SHUFFLE",
]

logger = logging.getLogger(__name__)

SEMI_JOIN = "left_semi"
ANTI_JOIN = "left_anti"

_KEY_ORG = "__ks_consent_org_id"
_KEY_USER = "__ks_consent_user_id"
_ID_TYPES = (T.StringType, T.LongType, T.IntegerType, T.ShortType, T.ByteType)
#: Names defined in :mod:`ketch_spark.consent.purposes`, which imports this module: still
#: importable from here (``ketch_spark`` re-exports them from here), loaded on first use.
_PURPOSE_NAMES = ("PurposeContext", "purpose")

_last_info: FilterInfo | None = None
_last_info_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """``purpose`` and ``PurposeContext``, from :mod:`ketch_spark.consent.purposes` (loaded on first use)."""
    if name in _PURPOSE_NAMES:
        return getattr(importlib.import_module("ketch_spark.consent.purposes"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
            broadcast the key set again. Always false over Spark Connect.
        consent_table_id: Delta table id of ``consent/state`` (with
            ``consent_version``, it names the state read even if the table was
            since rebuilt at the same path); ``None`` for a passed DataFrame.
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
    consent_table_id: str | None = None

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


# --------------------------------------------------------------------------- fact-side keys


def _resolve_column(df: DataFrame, name: str) -> str | None:
    if name in df.columns:
        return name
    if df.sparkSession.conf.get("spark.sql.caseSensitive", "false") == "false":
        matches = [c for c in df.columns if c.lower() == name.lower()]
        if len(matches) == 1:
            return matches[0]
    return None


def _id_column(df: DataFrame, name: str) -> tuple[Column, bool]:
    """The fact table's id column as a string, and whether it holds text (so it may need trimming).

    Raises:
        SchemaError: The column is neither a string nor an integer.
    """
    dtype = df.schema[name].dataType
    if not isinstance(dtype, _ID_TYPES):
        raise SchemaError(f"column {name!r} holds {dtype.simpleString()}; an id column must be a string or an integer")
    if isinstance(dtype, T.StringType):
        return df[name], True
    return df[name].cast("string"), False


@dataclass(frozen=True)
class _FactKeys:
    """The fact table's side of the join: the rows that may match, and their keys."""

    present: Column
    org: Column
    user: Column


def _fact_keys(df: DataFrame, org_name: str, user_name: str) -> _FactKeys:
    """Join keys of the fact rows: the org id as it is, the user id trimmed.

    The user id is compared trimmed (the identifier rule). The org id stays the
    column itself, so Spark still infers a query's org predicate onto the key set
    (``org_id = X`` on the facts becomes ``org_id = X`` on the state scan: one
    customer's keys are read and broadcast, not every customer's); a trimmed org
    key would hide it. Rows whose org id is not trimmed, which therefore could
    match no state row, are dropped with the null ones, so an objection is never
    missed because of a padded org id.
    """
    org, org_is_text = _id_column(df, org_name)
    user, user_is_text = _id_column(df, user_name)
    present = org.isNotNull() & user.isNotNull()
    if org_is_text:
        present = present & (org == F.trim(org))
    return _FactKeys(present, org, F.trim(user) if user_is_text else user)


# --------------------------------------------------------------------------- the filter


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
        as_of: AsOf | None,
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

    def _snapshot(self, spark: SparkSession) -> StateSnapshot:
        if self._consent is not None:
            return frame_snapshot(self._consent)
        assert self._cfg is not None
        return table_snapshot(spark, self._cfg, self._as_of)

    def __call__(self, df: DataFrame) -> DataFrame:
        """Returns ``df`` without the rows this purpose may not process.

        Raises:
            SchemaError: ``df`` lacks the user or org column, or they are not ids.
            TableNotFoundError: consent/state does not exist yet.
            ConfigError: ``as_of`` names no version of the state.
        """
        if not isinstance(df, DataFrame):
            raise TypeError(f"a consent filter applies to a DataFrame, got {type(df).__name__}")
        fact = _fact_keys(df, *self._fact_columns(df))
        snapshot = self._snapshot(df.sparkSession)
        planned = plan_key_set(df.sparkSession, snapshot, self.purpose, self._settings)
        join = SEMI_JOIN if self.purpose.legal_basis == "consent" else ANTI_JOIN
        keys = hinted(
            planned.key_df.select(F.col("org_id").alias(_KEY_ORG), F.col("user_id").alias(_KEY_USER)), planned.strategy
        )
        condition = (fact.org == keys[_KEY_ORG]) & (fact.user == keys[_KEY_USER])
        result_df = df.where(fact.present).join(keys, condition, join)
        self.info = self._info(snapshot, planned, join)
        _remember(self.info)
        return result_df

    def _info(self, snapshot: StateSnapshot, planned: PlannedKeySet, join: str) -> FilterInfo:
        """Logs what this application did and returns it as a :class:`FilterInfo`."""
        bound = self._settings.broadcast_max_bytes
        estimate, strategy, reused, relation_kept = planned.estimate, planned.strategy, planned.reused, planned.relation_kept
        logger.info(
            "consent filter %s (%s): %s %s join, key set ~%d bytes (%s, bound %d%s), consent version %s",
            self.purpose.name, self.purpose.legal_basis, strategy, join, estimate.size, estimate.source,
            bound, ", reused" * reused + ", kept relation" * relation_kept, snapshot.version,
        )
        return FilterInfo(
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
            relation_kept=relation_kept,
            consent_table_id=snapshot.table_id,
        )


def consent_filter(
    purpose: str,
    cfg: KetchConfig | None = None,
    *,
    consent: DataFrame | None = None,
    policy: Policy | None = None,
    user_col: str = "user_id",
    org_col: str = "org_id",
    as_of: AsOf | None = None,
) -> ConsentFilter:
    """A ``df.transform`` function keeping exactly the rows ``purpose`` may process.

    Consent-basis purposes keep only users who granted them; legitimate-interest
    purposes keep everyone but users who objected. The state is read when the
    filter is applied (the current version of consent/state, or ``as_of``); the
    version used is in ``f.info.consent_version`` and :func:`last_filter_info`
    afterwards. Works on a classic and on a Spark Connect session.

    Identifiers are trimmed everywhere (the project's rule): consent ingest stores
    trimmed ids, and the fact row's user id is trimmed before it is compared, so
    a grant for ``"x"`` keeps fact rows keyed ``" x "``, and an objection
    ingested from ``" x "`` removes fact rows keyed ``"x"`` and ``" x "``. Rows
    with a null user or org are dropped, and so are rows whose org id carries
    leading or trailing spaces: org ids are compared as they are, so that Spark
    can narrow the state read to a query's org (a padded one would match no
    state row, and could otherwise keep an objector). Integer ids are compared
    as their decimal text.

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
    check_sources(cfg, consent, policy, as_of)
    chosen = policy_of(cfg, policy).purpose(purpose)
    if chosen.retired:
        logger.warning("consent filter for retired purpose %s: only choices made before retirement count", chosen.name)
    for name, value in (("user_col", user_col), ("org_col", org_col)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name} must be a column name, got {value!r}")
    settings = cfg.filter if cfg is not None else FilterSettings()
    return ConsentFilter(chosen, cfg=cfg, consent=consent, user_col=user_col, org_col=org_col, as_of=as_of, settings=settings)
