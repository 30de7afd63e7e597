"""Session settings for the statements run inside a block, restored afterwards."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Mapping

from pyspark.sql import SparkSession

__all__ = ["session_conf"]

# A session's settings are shared by all its threads: two blocks at once (two compactions in
# threads of one session) would each restore what the other set, and could leave a setting such
# as Delta's txnAppId behind, silently skipping a later write. Blocks of one process take turns.
_BLOCKS = threading.RLock()


@contextlib.contextmanager
def session_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Sets ``settings`` on ``spark`` for the block; the previous values (or their absence) come back after it.

    Blocks run one at a time per process (other threads wait), so their settings never mix.
    """
    with _BLOCKS:
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
