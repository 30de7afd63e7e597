"""What the command line shows: tables, and progress lines from the library's progress records."""

from __future__ import annotations

import io
import logging

from ketch_spark.console import format_cell, format_table, showing_progress
from ketch_spark.progress import PROGRESS_LOGGER, report_progress


def test_tables_align_numbers_right_and_show_gaps():
    table = format_table(("asset", "rows", "confidence"), [("a", 1234, 0.5), ("bb", None, None)])
    assert table.splitlines() == [
        "asset   rows  confidence",
        "-----  -----  ----------",
        "a      1,234        0.50",
        "bb         -           -",
    ]
    assert format_table(None, [("rows read", 3), ("committed", True)]).splitlines() == ["rows read  3",
                                                                                        "committed  yes"]
    assert [format_cell(v) for v in (None, False, 1_000_000, 0.125, "x")] == ["-", "no", "1,000,000", "0.12", "x"]


def test_progress_is_shown_inside_the_block_only():
    stream = io.StringIO()
    progress_logger = logging.getLogger(PROGRESS_LOGGER)
    handlers = list(progress_logger.handlers)
    with showing_progress("ketch-spark consent ingest", stream):
        report_progress("start Spark")
        report_progress("list inputs", 3, unit="files")
        report_progress("scan s3a://lake/", 2, 14, unit="assets")
    report_progress("not shown", 1)
    lines = stream.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["start Spark", "list inputs: 3 files",
                                                          "scan s3a://lake/: 2/14 assets"]
    assert all(line.startswith("ketch-spark consent ingest [") and "s] " in line for line in lines)
    assert progress_logger.handlers == handlers and progress_logger.propagate
