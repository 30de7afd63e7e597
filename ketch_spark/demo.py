"""The end-to-end demo on the embedded default: generate data, create the tables, run every step."""

from __future__ import annotations

import logging
import time
from typing import TextIO

from pyspark.sql import SparkSession

from ketch_spark.config import KetchConfig
from ketch_spark.datagen import generate_demo_data
from ketch_spark.tables import TABLES, ensure_tables, table_path

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


class _Report:
    """Collects the human-readable report and the timings of each step."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.timings: dict[str, float] = {}

    def heading(self, text: str) -> None:
        print(f"\n== {text}", file=self.out)

    def line(self, text: str = "") -> None:
        print(f"   {text}", file=self.out)

    def timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.perf_counter() - started, 1)


def _generate(spark: SparkSession, cfg: KetchConfig, n_users: int, report: _Report) -> dict[str, str]:
    started = time.perf_counter()
    report.heading(f"1. synthetic data for {n_users:,} users under {cfg.warehouse}")
    paths = generate_demo_data(spark, cfg, n_users=n_users)
    for name, path in paths.items():
        report.line(f"{name:<17} {path}")
    report.timed("generate", started)
    return paths


def _create_tables(spark: SparkSession, cfg: KetchConfig, report: _Report) -> None:
    started = time.perf_counter()
    report.heading("2. Delta tables (created if missing)")
    ensure_tables(spark, cfg)
    for name, spec in TABLES.items():
        part = f"  partitioned by {', '.join(spec.partition_by)}" if spec.partition_by else ""
        report.line(f"{spec.relpath:<20} {table_path(cfg, name)}{part}")
    report.timed("tables", started)


def run_demo(spark: SparkSession, cfg: KetchConfig, *, n_users: int = 20_000, out: TextIO) -> dict:
    """Runs the demo and prints its report to ``out``.

    Args:
        spark: Delta-enabled session.
        cfg: Configuration (its warehouse receives the data and tables).
        n_users: Number of synthetic users.
        out: Where the human-readable report goes.

    Returns:
        The JSON-able summary: warehouse, users and seconds per step.
    """
    report = _Report(out)
    print(f"ketch-spark demo: warehouse {cfg.warehouse}", file=out)
    _generate(spark, cfg, n_users, report)
    _create_tables(spark, cfg, report)
    return {"warehouse": cfg.warehouse, "users": n_users, "timings": report.timings}
