"""Session settings for the statements run inside a block, restored afterwards."""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

from pyspark.sql import SparkSession

__all__ = ["session_conf"]


@contextlib.contextmanager
def session_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Sets ``settings`` on ``spark`` for the block; the previous values (or their absence) come back after it."""
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
