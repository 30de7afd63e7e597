"""SQL users get the consent filter's semantics through one temp view per purpose.

``consented_users_<purpose>`` (consent basis: who granted it) and
``objecting_users_<purpose>`` (legitimate interest: who objected) hold the
purpose's key set, ``(org_id, user_id)``, with the filter's broadcast or merge
hint; all views of one call read the same version of consent/state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from pyspark.sql import SparkSession

from ketch_spark.config import KetchConfig
from ketch_spark.consent.key_sets import hinted, plan_key_set
from ketch_spark.consent.snapshot import AsOf, check_sources, table_snapshot
from ketch_spark.policy import Purpose

__all__ = ["ConsentViews", "register_consent_views", "view_name"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsentViews:
    """Temp views registered by :func:`register_consent_views`.

    Attributes:
        consent_version: Delta version of consent/state behind every view.
        views: Purpose name -> view name (``consented_users_<p>`` for consent-basis
            purposes, ``objecting_users_<p>`` for legitimate-interest ones).
        strategies: Purpose name -> ``broadcast`` or ``shuffle`` (the hint in the view).
        consent_table_id: Delta table id of consent/state behind every view.
    """

    consent_version: int | None
    views: Mapping[str, str] = field(default_factory=dict)
    strategies: Mapping[str, str] = field(default_factory=dict)
    consent_table_id: str | None = None


def view_name(purpose: Purpose) -> str:
    """Name of a purpose's key-set view."""
    prefix = "consented_users" if purpose.legal_basis == "consent" else "objecting_users"
    return f"{prefix}_{purpose.name}"


def register_consent_views(
    spark: SparkSession,
    cfg: KetchConfig,
    purposes: Sequence[str] | None = None,
    *,
    as_of: AsOf | None = None,
) -> ConsentViews:
    """Registers one temp view per purpose so Spark SQL gets the filter's semantics.

    Consent-basis purposes get ``consented_users_<purpose>`` (org_id, user_id of
    the users who granted it): keep rows with a ``LEFT SEMI JOIN``.
    Legitimate-interest purposes get ``objecting_users_<purpose>`` (org_id,
    user_id of the users who objected): drop them with a ``LEFT ANTI JOIN`` and
    drop null and padded org ids, as the filter does. The views' ids are trimmed
    (consent ingest trims them), so compare them with the fact's trimmed user id.
    Each view carries the filter's broadcast or merge hint, and all views read
    the same version of consent/state. Works over Spark Connect too.

    The story's query, rewritten::

        SELECT e.event_site, COUNT(DISTINCT e.user_id) AS users
        FROM user_events e
        LEFT SEMI JOIN consented_users_analytics c
          ON e.org_id = c.org_id AND trim(e.user_id) = c.user_id
        WHERE e.org_id = '0x1F3A00C1' AND e.event_type = 'PAGE_VIEW'
          AND e.event_day >= date_sub(current_date(), 30)
        GROUP BY e.event_site

    A legitimate-interest purpose::

        SELECT e.* FROM user_events e
        LEFT ANTI JOIN objecting_users_product_improvement o
          ON e.org_id = o.org_id AND trim(e.user_id) = o.user_id
        WHERE e.org_id IS NOT NULL AND e.user_id IS NOT NULL AND e.org_id = trim(e.org_id)

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
    check_sources(cfg, None, None, as_of)
    policy = cfg.policy()
    chosen = [policy.purpose(name) for name in purposes] if purposes is not None else list(policy.active)
    snapshot = table_snapshot(spark, cfg, as_of)
    views: dict[str, str] = {}
    strategies: dict[str, str] = {}
    for item in chosen:
        planned = plan_key_set(spark, snapshot, item, cfg.filter)
        hinted(planned.key_df, planned.strategy).createOrReplaceTempView(view_name(item))
        views[item.name] = view_name(item)
        strategies[item.name] = planned.strategy
    logger.info("registered consent views %s on consent version %s", ", ".join(views.values()), snapshot.version)
    return ConsentViews(
        consent_version=snapshot.version, views=views, strategies=strategies, consent_table_id=snapshot.table_id
    )
