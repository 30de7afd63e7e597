"""The end-to-end demo on the embedded default: generate data, create the tables, run every step."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from typing import Iterator, TextIO

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

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
        print(f"\n== {text}", file=self.out, flush=True)

    def line(self, text: str = "") -> None:
        print(f"   {text}", file=self.out, flush=True)

    @contextlib.contextmanager
    def step(self, name: str, heading: str) -> Iterator[None]:
        """Prints ``heading``, then records the seconds the block took under ``name``."""
        started = time.perf_counter()
        self.heading(heading)
        yield
        self.timings[name] = round(time.perf_counter() - started, 1)


def _generate(spark: SparkSession, cfg: KetchConfig, n_users: int, report: _Report) -> dict[str, str]:
    with report.step("generate", f"1. synthetic data for {n_users:,} users under {cfg.warehouse}"):
        paths = generate_demo_data(spark, cfg, n_users=n_users)
        for name, path in paths.items():
            report.line(f"{name:<17} {path}")
    return paths


def _create_tables(spark: SparkSession, cfg: KetchConfig, report: _Report) -> None:
    with report.step("tables", "2. Delta tables (created if missing)"):
        ensure_tables(spark, cfg)
        for name, spec in TABLES.items():
            part = f"  partitioned by {', '.join(spec.partition_by)}" if spec.partition_by else ""
            report.line(f"{spec.relpath:<20} {table_path(cfg, name)}{part}")


def _ingest(spark: SparkSession, cfg: KetchConfig, paths: dict[str, str], report: _Report) -> dict:
    from ketch_spark.consent.sources import ingest_consent

    with report.step("ingest", "3. consent ingest: raw signals -> consent/events, bad records -> consent/quarantine"):
        totals: dict = {"read": 0, "accepted": 0, "quarantined": 0, "duplicates": 0, "reasons": {}}
        for fmt, key in (("json", "consent_json"), ("csv", "consent_csv")):
            result = ingest_consent(spark, cfg, [paths[key]], fmt=fmt)
            outcome = (result.expectations or {}).get("success")
            report.line(
                f"{fmt:<4} read {result.read:>8,}  accepted {result.accepted:>8,}  quarantined {result.quarantined:>6,}"
                f"  duplicates {result.duplicates:>6,}  expectations {'passed' if outcome else outcome}"
            )
            for field in ("read", "accepted", "quarantined", "duplicates"):
                totals[field] += getattr(result, field)
            for reason, count in result.reasons.items():
                totals["reasons"][reason] = totals["reasons"].get(reason, 0) + count
        report.line("quarantine breakdown:")
        for reason, count in sorted(totals["reasons"].items(), key=lambda kv: -kv[1]):
            report.line(f"  {reason:<22} {count:>6,}")
    return totals


def _compact(spark: SparkSession, cfg: KetchConfig, report: _Report) -> dict:
    from ketch_spark.consent.compact import compact_consent, consent_rates

    with report.step("compact", "4. consent compaction: consent/events -> consent/state (one bitmap row per user)"):
        result = compact_consent(spark, cfg)
        report.line(f"events read {result.events_read:,}, users written {result.users_changed:,}, state version {result.state_version}")
        again = compact_consent(spark, cfg)
        report.line(f"rerun: events read {again.events_read:,}, users written {again.users_changed:,} (nothing new to apply)")
        report.line(f"{'purpose':<20} {'basis':<20} {'known':>8} {'granted':>8} {'allowed':>8} {'rate':>6}")
        rates = {}
        for row in consent_rates(spark, cfg).collect():
            rates[row.purpose] = round(row.rate or 0.0, 3)
            report.line(
                f"{row.purpose:<20} {row.legal_basis:<20} {row.users_known:>8,} {row.users_granted:>8,}"
                f" {row.users_allowed:>8,} {row.rate or 0:>6.1%}"
            )
    return {"users": result.users_changed, "rates": rates}


def _story_query(events_df: DataFrame, org_id: str, last_day: dt.date) -> DataFrame:
    """The story's analytics query: distinct users per site, page views, the 30 days up to ``last_day``, one customer."""
    return (
        events_df.where((F.col("org_id") == org_id) & (F.col("event_type") == "PAGE_VIEW"))
        .where(F.col("event_day") > F.date_sub(F.lit(last_day), 30))
        .groupBy("event_site")
        .agg(F.countDistinct("user_id").alias("users"))
    )


def _filter(spark: SparkSession, cfg: KetchConfig, paths: dict[str, str], report: _Report) -> dict:
    from ketch_spark.consent.filter import consent_filter, last_filter_info

    with report.step("filter", "5. purpose limitation: the story's analytics query with consent_filter('analytics')"):
        events_df = spark.read.format("delta").load(paths["user_events"])
        org_id = events_df.groupBy("org_id").count().orderBy(F.desc("count")).head().org_id
        last_day = events_df.agg(F.max("event_day")).head()[0]
        consented_df = events_df.transform(consent_filter("analytics", cfg))
        unfiltered = {r.event_site: r.users for r in _story_query(events_df, org_id, last_day).collect()}
        filtered = {r.event_site: r.users for r in _story_query(consented_df, org_id, last_day).collect()}
        info = last_filter_info()
        report.line(f"customer {org_id}; join {info.join} by {info.strategy}, consent/state version {info.consent_version}")
        report.line(f"{'site':<10} {'all users':>10} {'consented':>10}")
        for site in sorted(unfiltered)[:6]:
            report.line(f"{site:<10} {unfiltered[site]:>10,} {filtered.get(site, 0):>10,}")
    return {"org_id": org_id, "strategy": info.strategy, "users_all": sum(unfiltered.values()), "users_consented": sum(filtered.values())}


def _catalog(spark: SparkSession, cfg: KetchConfig, paths: dict[str, str], report: _Report) -> dict:
    from ketch_spark.catalog import AssetCatalog

    with report.step("catalog", "6. catalog: discover and classify personal data in the lake and the raw logs"):
        catalog = AssetCatalog(spark, cfg)
        result = catalog.scan(cfg.path("lake"), paths["logs"])
        summary = result.summary()
        report.line(f"assets discovered {summary.get('discovered')}, sampled {summary.get('sampled')}, errors {summary.get('errors')}")
        found = catalog.search().select("location", "column", "category", "identity_type").orderBy("location", "column").collect()
        identities: dict[str, list[str]] = {}
        for row in found:
            location = row.location.removeprefix("file://").replace(cfg.warehouse.removeprefix("file://"), "<warehouse>")
            report.line(f"{location:<36} {row.column:<26} {row.category:<16} {row.identity_type or ''}")
            if row.identity_type:
                identities.setdefault(location, []).append(f"{row.column}:{row.identity_type}")
    return {"assets": summary.get("discovered"), "personal_columns": len(found), "identities": identities}


def run_demo(spark: SparkSession, cfg: KetchConfig, *, n_users: int = 20_000, out: TextIO) -> dict:
    """Runs the demo and prints its report to ``out``.

    Args:
        spark: Delta-enabled session.
        cfg: Configuration (its warehouse receives the data and tables).
        n_users: Number of synthetic users.
        out: Where the human-readable report goes.

    Returns:
        The JSON-able summary: counts of every step and its seconds.
    """
    report = _Report(out)
    print(f"ketch-spark demo: warehouse {cfg.warehouse}", file=out)
    paths = _generate(spark, cfg, n_users, report)
    _create_tables(spark, cfg, report)
    ingest = _ingest(spark, cfg, paths, report)
    state = _compact(spark, cfg, report)
    filtered = _filter(spark, cfg, paths, report)
    catalog = _catalog(spark, cfg, paths, report)
    return {
        "warehouse": cfg.warehouse,
        "users": n_users,
        "ingest": ingest,
        "state": state,
        "filter": filtered,
        "catalog": catalog,
        "timings": report.timings,
    }
