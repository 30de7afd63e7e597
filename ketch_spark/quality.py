"""Great Expectations suites over each consent ingest batch, with failures in plain words.

Three suites, each on a small table the ingest computes from rows it already
holds in memory (no second read of the input):

* ``consent_sources``: per record ``source`` (api, js_tag, ...), rows read and
  the share quarantined; a source above ``consent.max_quarantined_share``
  (default 5%) fails: a broken SDK release or a changed file layout shows here
  first.
* ``consent_org_days``: accepted rows per (org_id, day of event_ts); every day
  within ``consent.earliest_event_date`` .. today, no org missing.
* ``consent_events``: the accepted events themselves (a bounded sample): keys
  present, purposes of the policy, ``event_ts`` neither null nor beyond the
  allowed future skew, one ``batch_id``.

The outcome also carries the profile a data engineer reads first: the
quarantined share per source and rows per reason and source. GE 1.x is imported
lazily (it is slow to import), runs in an ephemeral context on pandas frames
(GE's Spark engine runs one or more Spark jobs per expectation), and its
logging is left as the application configured it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ketch_spark.policy import Policy

__all__ = [
    "QualityLimits",
    "consent_events_expectations",
    "batch_profile",
    "validate_consent_batch",
    "SAMPLE_ROWS",
]

logger = logging.getLogger(__name__)

SAMPLE_ROWS = 100_000
_NO_SOURCE = "<no source>"


@dataclass(frozen=True)
class QualityLimits:
    """What a batch is checked against.

    Attributes:
        earliest: Earliest valid event time (naive UTC).
        latest: Latest valid event time (ingest time plus the future skew, naive UTC).
        max_quarantined_share: Largest share of a source's rows that may be quarantined.
    """

    earliest: dt.datetime
    latest: dt.datetime
    max_quarantined_share: float = 0.05


def consent_events_expectations(policy: Policy, limits: QualityLimits) -> list[Any]:
    """The expectations of the consent-events suite (GE 1.x expectation objects)."""
    import great_expectations as gx

    gxe = gx.expectations
    active = [p for p in policy.purposes.values() if not p.retired]
    expectations: list[Any] = [
        gxe.ExpectColumnValuesToNotBeNull(column=column)
        for column in ("org_id", "user_id", "purpose", "purpose_bit", "granted", "event_ts", "batch_id")
    ]
    expectations += [
        gxe.ExpectColumnValuesToBeInSet(column="granted", value_set=[True, False]),
        gxe.ExpectColumnValuesToBeInSet(column="purpose", value_set=[p.name for p in active]),
        gxe.ExpectColumnValuesToBeInSet(column="purpose_bit", value_set=[p.bit for p in active]),
        gxe.ExpectColumnValuesToBeBetween(column="event_ts", min_value=limits.earliest, max_value=limits.latest),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="batch_id", min_value=0, max_value=1),
        gxe.ExpectColumnValueLengthsToBeBetween(column="org_id", min_value=1),
        gxe.ExpectColumnValueLengthsToBeBetween(column="user_id", min_value=1),
    ]
    return expectations


def _sources_expectations(limits: QualityLimits) -> list[Any]:
    import great_expectations as gx

    gxe = gx.expectations
    return [
        gxe.ExpectColumnValuesToBeBetween(column="quarantined_share", min_value=0.0, max_value=limits.max_quarantined_share),
    ]


def _org_days_expectations(limits: QualityLimits) -> list[Any]:
    import great_expectations as gx

    gxe = gx.expectations
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="org_id"),
        gxe.ExpectColumnValuesToBeBetween(column="event_day", min_value=limits.earliest, max_value=limits.latest),
        gxe.ExpectColumnValuesToBeBetween(column="rows", min_value=1),
    ]


def batch_profile(rows_df: DataFrame) -> dict[str, Any]:
    """Per-source and per-(org, day) tables of a batch's classified rows (pandas), from two small jobs.

    Args:
        rows_df: One row per choice or rejected record, with ``source``, ``reason``
            (null when valid), ``org_id``, ``event_ts`` and ``no_row``.

    Returns:
        ``{"sources": pdf(source, rows, quarantined, quarantined_share),
        "reasons": pdf(source, reason, rows), "org_days": pdf(org_id, event_day, rows)}``.
    """
    rows = rows_df.where(~F.col("no_row"))
    source = F.coalesce(F.nullif(F.trim("source"), F.lit("")), F.lit(_NO_SOURCE)).alias("source")
    by_reason = rows.groupBy(source, "reason").count().toPandas()
    org_days = (
        rows.where(F.col("reason").isNull())
        .groupBy("org_id", F.to_date("event_ts").alias("event_day"))
        .agg(F.count(F.lit(1)).alias("rows"))
        .toPandas()
    )
    import pandas as pd

    by_reason = by_reason.rename(columns={"count": "rows"})
    totals = by_reason.groupby("source", as_index=False)["rows"].sum()
    quarantined = by_reason[by_reason["reason"].notna()].groupby("source", as_index=False)["rows"].sum()
    sources = totals.merge(quarantined.rename(columns={"rows": "quarantined"}), on="source", how="left")
    sources["quarantined"] = sources["quarantined"].fillna(0).astype("int64")
    sources["quarantined_share"] = sources["quarantined"] / sources["rows"]
    org_days["event_day"] = pd.to_datetime(org_days["event_day"])
    return {
        "sources": sources.sort_values("source").reset_index(drop=True),
        "reasons": by_reason[by_reason["reason"].notna()].sort_values(["source", "reason"]).reset_index(drop=True),
        "org_days": org_days,
    }


def _validate(context: Any, name: str, pdf: Any, expectations: list[Any]) -> Any:
    import great_expectations as gx

    source = context.data_sources.add_pandas(name=f"ketch_{name}")
    asset = source.add_dataframe_asset(name=name)
    batch = asset.add_batch_definition_whole_dataframe(name).get_batch(batch_parameters={"dataframe": pdf})
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    return batch.validate(suite)


def _context(gx: Any) -> Any:
    """An ephemeral GE context without progress bars."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _in_words(suite: str, result: Any, profile: dict[str, Any], limits: QualityLimits) -> list[str]:
    """Plain sentences for one failed expectation."""
    config = result.expectation_config
    column = config.kwargs.get("column", "")
    if suite == "consent_sources":
        over = profile["sources"][profile["sources"]["quarantined_share"] > limits.max_quarantined_share]
        return [
            f"{row.quarantined_share:.1%} of the rows from source {row.source!r} were quarantined"
            f" ({row.quarantined:,} of {row.rows:,}; limit {limits.max_quarantined_share:.0%}); reasons: "
            + ", ".join(
                f"{r.reason} {r.rows:,}"
                for r in profile["reasons"][profile["reasons"]["source"] == row.source].itertuples()
            )
            for row in over.itertuples()
        ]
    details = result.result or {}
    count, total = details.get("unexpected_count"), details.get("element_count")
    examples = ", ".join(str(v) for v in (details.get("partial_unexpected_list") or [])[:3])
    share = f"{count:,} of {total:,} " if count is not None and total else ""
    what = {
        "expect_column_values_to_not_be_null": "are empty",
        "expect_column_values_to_be_in_set": "are not allowed by the policy",
        "expect_column_values_to_be_between": (
            f"lie outside {config.kwargs.get('min_value')} .. {config.kwargs.get('max_value')}"
        ),
        "expect_column_value_lengths_to_be_between": "are empty strings",
        "expect_column_unique_value_count_to_be_between": "differ: a batch has one batch_id",
    }.get(config.type, f"fail {config.type}")
    table = {"consent_events": "accepted events", "consent_org_days": "(org, day) groups"}.get(suite, suite)
    return [f"{suite}: {share}{table}' {column} values {what}" + (f" (e.g. {examples})" if examples else "")]


def validate_consent_batch(
    rows_df: DataFrame, events_df: DataFrame, policy: Policy, limits: QualityLimits, *, sample_rows: int = SAMPLE_ROWS
) -> dict[str, Any]:
    """Runs the three suites on one ingest batch.

    Args:
        rows_df: The batch's classified rows (see :func:`batch_profile`).
        events_df: The events to be stored (consent/events columns).
        policy: Policy the purposes must belong to.
        limits: Time bounds and the quarantine share allowed per source.
        sample_rows: Largest number of events validated.

    Returns:
        ``{"suites", "success", "evaluated", "failed": [expectation(column)], "messages": [plain sentences],
        "rows_validated", "quarantined_share_by_source": {source: share}, "quarantined_by_source_and_reason":
        [{source, reason, rows}], "org_days": n}``.
    """
    import great_expectations as gx

    profile = batch_profile(rows_df)
    sample_pdf = events_df.limit(sample_rows).toPandas()
    context = _context(gx)
    runs = [
        ("consent_sources", profile["sources"], _sources_expectations(limits)),
        ("consent_org_days", profile["org_days"], _org_days_expectations(limits)),
        ("consent_events", sample_pdf, consent_events_expectations(policy, limits)),
    ]
    failed: list[str] = []
    messages: list[str] = []
    evaluated = 0
    for name, pdf, expectations in runs:
        if pdf.empty:
            continue
        outcome = _validate(context, name, pdf, expectations)
        evaluated += len(outcome.results)
        for result in outcome.results:
            if not result.success:
                failed.append(f"{name}.{result.expectation_config.type}({result.expectation_config.kwargs.get('column', '')})")
                messages.extend(_in_words(name, result, profile, limits))
    if messages:
        logger.warning("consent batch failed expectations: %s", "; ".join(messages))
    return {
        "suites": [name for name, _, _ in runs],
        "success": not failed,
        "evaluated": evaluated,
        "failed": sorted(failed),
        "messages": messages,
        "rows_validated": len(sample_pdf),
        "quarantined_share_by_source": {
            row.source: round(float(row.quarantined_share), 4) for row in profile["sources"].itertuples()
        },
        "quarantined_by_source_and_reason": [
            {"source": row.source, "reason": row.reason, "rows": int(row.rows)} for row in profile["reasons"].itertuples()
        ],
        "org_days": len(profile["org_days"]),
    }
