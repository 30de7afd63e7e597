"""What the command line shows a person: small plain-text tables and progress lines.

Library code never prints; the command line formats what the library returns
and shows the progress records library code logs (:mod:`ketch_spark.progress`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any, Iterator, Sequence, TextIO

from ketch_spark.progress import PROGRESS_LOGGER

__all__ = ["format_table", "format_cell", "ProgressLines", "showing_progress"]


def format_cell(value: Any) -> str:
    """A value as a table cell: ``-`` for None, thousands separators for ints, two decimals for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_table(headers: Sequence[str] | None, rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: a header line and a rule (unless ``headers`` is None), then the rows.

    Args:
        headers: Column titles, or None for a table of rows only (a list of counts).
        rows: One sequence of values per row (formatted with :func:`format_cell`).

    Returns:
        The table's lines joined by newlines; numeric columns are right-aligned.
    """
    width = len(headers) if headers is not None else max((len(row) for row in rows), default=0)
    cells = [[format_cell(value) for value in row] for row in rows]
    numeric = [_is_numeric_column([row[i] for row in rows]) for i in range(width)]
    widths = [max([len(headers[i]) if headers is not None else 0, *(len(row[i]) for row in cells)])
              for i in range(width)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    head = [line(headers), line(["-" * w for w in widths])] if headers is not None else []
    return "\n".join([*head, *(line(row) for row in cells)])


def _is_numeric_column(values: Sequence[Any]) -> bool:
    """Numbers (and gaps) only, at least one number: right-aligned."""
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


class ProgressLines(logging.Handler):
    """Writes each progress record as ``<prefix> [elapsed] <step>: <done>`` on a stream."""

    def __init__(self, prefix: str, stream: TextIO | None = None) -> None:
        super().__init__(logging.INFO)
        self.prefix = prefix
        self.stream = stream
        self.started = time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        stream = self.stream or sys.stderr
        elapsed = time.perf_counter() - self.started
        stream.write(f"{self.prefix} [{_clock(elapsed)}] {record.getMessage()}\n")
        stream.flush()


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}" if minutes else f"{seconds:4.1f}s"


@contextlib.contextmanager
def showing_progress(prefix: str, stream: TextIO | None = None) -> Iterator[ProgressLines]:
    """Shows the progress records logged inside the block (on stderr by default), then stops."""
    progress_logger = logging.getLogger(PROGRESS_LOGGER)
    handler = ProgressLines(prefix, stream)
    previous = (progress_logger.level, progress_logger.propagate)
    progress_logger.addHandler(handler)
    progress_logger.setLevel(logging.INFO)
    progress_logger.propagate = False
    try:
        yield handler
    finally:
        progress_logger.removeHandler(handler)
        progress_logger.setLevel(previous[0])
        progress_logger.propagate = previous[1]
