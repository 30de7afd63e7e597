"""UTC time for the library: one notion of "now", and timestamps handed to Spark without the local zone.

Spark sessions of ketch-spark run in UTC and store naive UTC timestamps. A naive
``datetime`` passed to ``F.lit`` or ``createDataFrame`` is read by PySpark in the
Python process's local zone (``TZ``), so literals go through epoch microseconds.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column
from pyspark.sql import functions as F

__all__ = ["utc_now", "utc_micros", "utc_timestamp"]

_EPOCH = dt.datetime(1970, 1, 1)


def utc_now() -> dt.datetime:
    """Now, as the naive UTC timestamp Spark stores."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def utc_micros(value: dt.datetime) -> int:
    """Microseconds since the epoch of a naive UTC (or an aware) datetime, exactly."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return (value - _EPOCH) // dt.timedelta(microseconds=1)


def utc_timestamp(value: dt.datetime) -> Column:
    """A timestamp literal for ``value`` (naive UTC or aware), whatever the process's ``TZ``."""
    return F.timestamp_micros(F.lit(utc_micros(value)))
