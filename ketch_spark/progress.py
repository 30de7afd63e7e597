"""Progress of long steps, as log records that an entry point may show.

Library code calls :func:`report_progress` when a long step starts, advances or
ends. Nothing is printed here: each call is one INFO record of the
``ketch_spark.progress`` logger whose message says the step and what is done
(``classify records: 12,400 rows``); the command line shows them on stderr with
the time elapsed, a notebook or a job shows them only if it configures logging.
"""

from __future__ import annotations

import logging

__all__ = ["PROGRESS_LOGGER", "report_progress"]

#: Name of the logger that carries progress records.
PROGRESS_LOGGER = "ketch_spark.progress"


def report_progress(step: str, done: int | None = None, total: int | None = None, unit: str = "") -> None:
    """Reports that ``step`` has reached ``done`` (of ``total``) ``unit``.

    Args:
        step: What is being done, in a few words (``write events``).
        done: How many ``unit`` are done (rows, files, assets); ``None`` when the step just starts.
        total: How many there are in all, when known.
        unit: What ``done`` counts.
    """
    if done is None:
        text = step
    elif total is None:
        text = f"{step}: {done:,} {unit}".rstrip()
    else:
        text = f"{step}: {done:,}/{total:,} {unit}".rstrip()
    logging.getLogger(PROGRESS_LOGGER).info(text)
