"""Great Expectations suites for ketch-spark inputs.

The consent-events suite checks what the ingest promises about every accepted
event: keys present, ``granted`` a boolean, ``purpose`` and ``purpose_bit``
declared in the policy, ``event_ts`` neither before 2000 nor beyond the allowed
future skew, one ``batch_id``. Great Expectations 1.x is imported lazily (it is
slow to import) and runs in an ephemeral context.

It validates a bounded sample of the events (``sample_rows``, default 100 000):
GE's Spark engine runs one or more Spark jobs per expectation, too slow for a
daily job on big batches; the sample goes through GE's pandas engine after one
Spark job. The ingest's own checks already hold for every row; the suite is the
independent second look the job reports on.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pyspark.sql import DataFrame

from ketch_spark.policy import Policy

__all__ = ["consent_events_expectations", "validate_consent_events", "SAMPLE_ROWS"]

logger = logging.getLogger(__name__)

SAMPLE_ROWS = 100_000
_EARLIEST = dt.datetime(2000, 1, 1)
_SUITE = "consent_events"


def consent_events_expectations(policy: Policy, max_ts: dt.datetime) -> list[Any]:
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
        gxe.ExpectColumnValuesToBeBetween(column="event_ts", min_value=_EARLIEST, max_value=max_ts),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="batch_id", min_value=0, max_value=1),
        gxe.ExpectColumnValueLengthsToBeBetween(column="org_id", min_value=1),
        gxe.ExpectColumnValueLengthsToBeBetween(column="user_id", min_value=1),
    ]
    return expectations


def _quiet_ge_loggers() -> None:
    """GE sets some of its loggers to INFO itself (one per ephemeral docs site made); WARNING is enough."""
    ge_logger = logging.getLogger("great_expectations")
    if ge_logger.level == logging.NOTSET:
        ge_logger.setLevel(logging.WARNING)
    for name, child in list(logging.root.manager.loggerDict.items()):
        if name.startswith("great_expectations.") and isinstance(child, logging.Logger) and 0 < child.level < logging.WARNING:
            child.setLevel(logging.WARNING)


def _quiet_context(gx: Any) -> Any:
    """An ephemeral GE context without progress bars; GE's INFO chatter stays out of job logs."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_ge_loggers()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def validate_consent_events(
    events_df: DataFrame, policy: Policy, *, max_ts: dt.datetime, sample_rows: int = SAMPLE_ROWS
) -> dict[str, Any]:
    """Runs the consent-events suite on (a bounded sample of) ``events_df``.

    Args:
        events_df: Rows shaped like consent/events.
        policy: Policy the purposes must belong to.
        max_ts: Latest allowed event time (ingest time plus the future skew).
        sample_rows: Largest number of rows validated.

    Returns:
        ``{"suite", "success", "evaluated", "failed": [expectation types], "rows_validated"}``.
    """
    import great_expectations as gx

    sample_pdf = events_df.limit(sample_rows).toPandas()
    context = _quiet_context(gx)
    source = context.data_sources.add_pandas(name="ketch_consent")
    asset = source.add_dataframe_asset(name="consent_events")
    batch = asset.add_batch_definition_whole_dataframe("sample").get_batch(batch_parameters={"dataframe": sample_pdf})
    suite = context.suites.add(gx.ExpectationSuite(name=_SUITE))
    for expectation in consent_events_expectations(policy, max_ts):
        suite.add_expectation(expectation)
    outcome = batch.validate(suite)
    failed = sorted(
        f"{r.expectation_config.type}({r.expectation_config.kwargs.get('column', '')})"
        for r in outcome.results
        if not r.success
    )
    result = {
        "suite": _SUITE,
        "success": bool(outcome.success),
        "evaluated": len(outcome.results),
        "failed": failed,
        "rows_validated": len(sample_pdf),
    }
    if failed:
        logger.warning("consent events failed expectations: %s", ", ".join(failed))
    return result
