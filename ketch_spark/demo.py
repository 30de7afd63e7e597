"""The end-to-end demo on the embedded default: generate data, create the tables, run every step."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
from typing import Any, Iterator, TextIO

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ketch_spark.config import KetchConfig
from ketch_spark.datagen import generate_demo_data
from ketch_spark.errors import KetchError
from ketch_spark.progress import report_progress
from ketch_spark.tables import TABLES, ensure_tables, table_path

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)

#: Receipt key the demo uses, in its own process only, when ``dsr.receipt_secret_env`` is unset.
DEMO_RECEIPT_SECRET = "ketch-spark-demo-only-receipt-key"


class _Report:
    """Collects the human-readable report and the timings of each step."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.timings: dict[str, float] = {}

    def heading(self, text: str) -> None:
        report_progress(f"demo: {text}")
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


_EXPECTATION_OUTCOMES = {True: "passed", False: "failed (see the warning)", None: "not run"}


def _ingest(spark: SparkSession, cfg: KetchConfig, paths: dict[str, str], report: _Report) -> dict:
    from ketch_spark.consent.sources import ingest_consent

    with report.step("ingest", "3. consent ingest: raw signals -> consent/events, bad records -> consent/quarantine"):
        totals: dict = {"read": 0, "accepted": 0, "quarantined": 0, "duplicates": 0, "reasons": {}}
        for fmt, key in (("json", "consent_json"), ("csv", "consent_csv")):
            result = ingest_consent(spark, cfg, [paths[key]], fmt=fmt)
            outcome = (result.expectations or {}).get("success")
            report.line(
                f"{fmt:<4} read {result.read:>8,}  accepted {result.accepted:>8,}  quarantined {result.quarantined:>6,}"
                f"  duplicates {result.duplicates:>6,}  expectations {_EXPECTATION_OUTCOMES[outcome]}"
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


def _short(cfg: KetchConfig, location: str) -> str:
    """``location`` with the warehouse root written ``<warehouse>``."""
    return location.removeprefix("file://").replace(cfg.warehouse.removeprefix("file://"), "<warehouse>")


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
            location = _short(cfg, row.location)
            report.line(f"{location:<36} {row.column:<26} {row.category:<16} {row.identity_type or ''}")
            if row.identity_type:
                identities.setdefault(location, []).append(f"{row.column}:{row.identity_type}")
    return {"assets": summary.get("discovered"), "personal_columns": len(found), "identities": identities}


def _demo_requests(spark: SparkSession, paths: dict[str, str]) -> list[dict[str, Any]]:
    """Requests for real subjects of lake/profiles: two deletes, one obfuscation, one access, one unknown email."""
    subjects = (
        spark.read.format("delta").load(paths["profiles"])
        .where(F.col("email").isNotNull() & F.col("user_id").isNotNull())
        .select("org_id", "user_id", "email")
        .orderBy("user_id")
        .limit(4)
        .collect()
    )
    if len(subjects) < 4:
        raise KetchError(f"the data-subject requests step needs at least 4 users, found {len(subjects)}; raise --users")
    tag = f"demo-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}"
    erase_1, erase_2, obfuscate, access = subjects
    return [
        # The email as a person might type it: intake trims and lower-cases it (and matches its sha256).
        {"request_id": f"{tag}-erase-1", "org_id": erase_1.org_id, "kind": "erasure", "mode": "delete",
         "identities": {"email": f" {erase_1.email.upper()} ", "user_id": erase_1.user_id}},
        {"request_id": f"{tag}-erase-2", "org_id": erase_2.org_id, "kind": "erasure", "mode": "delete",
         "identities": {"user_id": erase_2.user_id}},
        {"request_id": f"{tag}-obfuscate", "org_id": obfuscate.org_id, "kind": "erasure", "mode": "obfuscate",
         "identities": {"email": obfuscate.email, "user_id": obfuscate.user_id}},
        {"request_id": f"{tag}-access", "org_id": access.org_id, "kind": "access", "mode": "export",
         "identities": {"email": access.email, "user_id": access.user_id}},
        {"request_id": f"{tag}-unknown", "org_id": erase_1.org_id, "kind": "erasure", "mode": "delete",
         "identities": {"email": "nobody@example.invalid"}},
    ]


@contextlib.contextmanager
def _receipt_secret(cfg: KetchConfig, report: _Report) -> Iterator[None]:
    """Sets :data:`DEMO_RECEIPT_SECRET` in this process while the block runs, if no secret is set."""
    name = cfg.dsr.receipt_secret_env
    if os.environ.get(name):
        yield
        return
    report.line(f"{name} is not set: this demo process signs receipts with a demo-only key "
                f"({name}={DEMO_RECEIPT_SECRET}); production must set its own secret")
    os.environ[name] = DEMO_RECEIPT_SECRET
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _rights(spark: SparkSession, cfg: KetchConfig, paths: dict[str, str], report: _Report) -> dict:
    from ketch_spark.rights.engine import run_requests
    from ketch_spark.rights.receipts import read_receipt, receipt_key, verify_receipt
    from ketch_spark.rights.requests import submit_requests
    from ketch_spark.rights.storage import read_private

    with report.step("rights", "7. data-subject requests: erasure and access for real subjects of the lake"):
        requests = _demo_requests(spark, paths)
        ours = [r["request_id"] for r in requests]
        submitted = submit_requests(spark, cfg, requests)
        report.line(f"submitted {submitted.submitted}: accepted {len(submitted.accepted)}, "
                    f"rejected {len(submitted.rejected)}")
        for request in requests:
            report.line(f"  {request['request_id']:<34} {request['kind']:<8} {request['mode']:<9} "
                        f"by {', '.join(request['identities'])}")
        dry = run_requests(spark, cfg, dry_run=True)
        report.line("dry run (nothing changed): rows each request would touch")
        for request_id in ours:
            found = {loc: n for loc, n in dry.would_touch.get(request_id, {}).items() if n}
            where = ", ".join(f"{_short(cfg, loc)} {n:,}" for loc, n in sorted(found.items())) or "found nowhere"
            report.line(f"  {request_id:<34} {where}")
        result = run_requests(spark, cfg)
        key = receipt_key(cfg.dsr)
        report.line(f"run {result.run_id}: {len(result.requests)} request(s), one pass per asset and action")
        for asset in result.assets:
            counts = f"matched {asset.get('rows_matched') or 0:>6,} changed {asset.get('rows_changed') or 0:>6,}"
            error = f"  error: {asset['error']}" if asset.get("error") else ""
            report.line(f"  {asset['action']:<7} {asset.get('mode') or '-':<9} {counts} {asset['status']:<6} "
                        f"{_short(cfg, asset['location'])}{error}")
        rows_erased = 0
        receipts: dict[str, str] = {}
        for request_id in ours:
            if request_id not in result.receipts:
                continue
            path = receipts[request_id] = result.receipts[request_id]
            receipt = read_receipt(spark, path)
            rows_erased += int(receipt.get("rows_erased", 0))
            verified = sum(1 for a in receipt["assets"] if a.get("verified"))
            report.line(f"  {request_id:<34} erased {receipt.get('rows_erased', 0):>5,} row(s), verified on "
                        f"{verified} asset(s), physically removed by {receipt.get('physically_removed_by')}")
            report.line(f"  {'':<34} receipt {_short(cfg, path)} "
                        f"(signature {'valid' if verify_receipt(receipt, key) else 'INVALID'})")
        exports = {r: result.exports[r] for r in ours if r in result.exports}
        for request_id, folder in exports.items():
            manifest = json.loads(read_private(spark, f"{folder}/manifest.json"))
            report.line(f"  {request_id:<34} exported {manifest['total_rows']:,} row(s) from "
                        f"{len(manifest['assets'])} asset(s) to {_short(cfg, folder)}/ (manifest.json, {request_id}.zip)")
        done = sorted(set(result.done) & set(ours))
        failed = sorted(set(result.failed) & set(ours))
        for request_id in failed:
            report.line(f"  {request_id:<34} FAILED (see ketch-spark dsr status and dsr/audit)")
        report.line(f"done {len(done)} of {len(ours)}, failed {len(failed)}; "
                    f"check a receipt: ketch-spark dsr verify-receipt FILE")
    return {"requests": len(ours), "done": done, "failed": failed, "rows_erased": rows_erased,
            "exports": exports, "receipts": receipts}


def run_demo(spark: SparkSession, cfg: KetchConfig, *, n_users: int = 20_000, out: TextIO) -> dict:
    """Runs the demo and prints its report to ``out``.

    Args:
        spark: Delta-enabled session.
        cfg: Configuration (its warehouse receives the data and tables).
        n_users: Number of synthetic users.
        out: Where the human-readable report goes.

    When the variable ``cfg.dsr.receipt_secret_env`` is unset, the demo signs its
    erasure receipts (step 7) and keys the erased-subject ledger with
    :data:`DEMO_RECEIPT_SECRET`, in this process only, and says so in the report
    (a rerun on the same warehouse finds the first run's ledger: ingest and the
    rights run both need its key).

    Returns:
        The JSON-able summary: counts of every step and its seconds.
    """
    report = _Report(out)
    print(f"ketch-spark demo: warehouse {cfg.warehouse}", file=out)
    with _receipt_secret(cfg, report):
        paths = _generate(spark, cfg, n_users, report)
        _create_tables(spark, cfg, report)
        ingest = _ingest(spark, cfg, paths, report)
        state = _compact(spark, cfg, report)
        filtered = _filter(spark, cfg, paths, report)
        catalog = _catalog(spark, cfg, paths, report)
        rights = _rights(spark, cfg, paths, report)
    return {
        "warehouse": cfg.warehouse,
        "users": n_users,
        "ingest": ingest,
        "state": state,
        "filter": filtered,
        "catalog": catalog,
        "rights": rights,
        "timings": report.timings,
    }
