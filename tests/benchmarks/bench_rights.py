"""Rights benchmark: erasing 1 subject, 1,000 subjects in one batch, 100 subjects one run each.

Data (generated with Spark, written once under ``<workdir>/pristine``):

* ``events``: a Delta table with deletion vectors on, 10M rows in 100 files
  (org_id, user_id, email, event_ts, page, amount), each file a slice of time
  as an event table written by time would be, so a user's rows are spread over
  several files;
* ``logs``: gzip JSON lines, 2M rows in 100 ``part-*.json.gz`` files, nested
  ``user: {id, contact: {email}}`` with org_id, ts, event.

2M users: every user has exactly 5 rows in ``events`` and 1 in ``logs``; a
fifth of the emails are stored capitalised (matching normalises them). Each
measurement copies the pristine folders to a fresh place, catalogues them with
``AssetCatalog.scan`` into a fresh warehouse (so the engine finds the identity
columns as a user gets them) and times ``run_requests`` only; submission is
timed apart, the copy and the scan are not timed. Delta's default retention
(168 h) stays: nothing is vacuumed away, as in production.

* warm-up: the job's first run (1 subject, its own copy), reported as
  ``first_run_seconds``: it pays the JVM's and Spark's first use;
* (a) 1 subject; (b) 1,000 subjects in one run; (c) 100 subjects as 100
  separate runs on one copy (submit one request, run, repeat), as per-request
  tools work;
* (b)'s audit gives, per asset, the files holding a subject, the files
  rewritten and the bytes; the files holding a subject are also counted
  independently from the pristine data (``_metadata.file_path``), and the
  erased subjects are checked gone from both datasets.

While a run is timed, the engine's and connectors' main steps are wrapped by a
clock (:class:`timing.StepClock`, restored afterwards) so the notes can say where the
time went; a step that no longer exists is reported as not measured.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import random
import shutil
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ketch_spark.catalog import AssetCatalog
from ketch_spark.config import KetchConfig, dsr_settings_from_mapping
from ketch_spark.datagen import org_ids
from ketch_spark.rights.audit import read_audit
from ketch_spark.rights.engine import rights_assets, run_requests
from ketch_spark.rights.requests import read_requests, submit_requests

from timing import RunTiming, ratio

logger = logging.getLogger(__name__)

SEED = 29
N_ORGS = 5
START = dt.datetime(2026, 8, 1)
DAYS = 90
#: Benchmark-only key that signs the receipts of the runs.
RECEIPT_SECRET = "ketch-bench-rights-receipt-secret-0123456789"
_FIRST = ("jane", "john", "maria", "wei", "amira", "lucas", "sofia", "noah", "yuki", "olga", "kwame", "ines")
_LAST = ("doe", "smith", "garcia", "chen", "haddad", "martin", "rossi", "okafor", "tanaka", "novak", "silva")
_DOMAINS = ("example.com", "mail.example.org", "example.net", "corp.example.co.uk")
_EVENTS = ("login", "page_view", "page_view", "page_view", "purchase", "logout")
_ORGS = org_ids(N_ORGS)
_LOGS_SCHEMA = "user struct<id: string, contact: struct<email: string>>, org_id string, ts string, event string"


class _Shape(NamedTuple):
    delta_rows: int
    delta_files: int
    json_rows: int
    json_files: int
    n_users: int
    batch: int
    separate: int


_FULL = _Shape(delta_rows=10_000_000, delta_files=100, json_rows=2_000_000, json_files=100, n_users=2_000_000,
               batch=1000, separate=100)
_QUICK = _Shape(delta_rows=200_000, delta_files=20, json_rows=50_000, json_files=10, n_users=40_000,
                batch=100, separate=10)


# ---------------------------------------------------------------------- subjects and data


def subject_email(index: int) -> str:
    """The email of user ``index`` as a request gives it (lower case)."""
    return f"{_FIRST[index % 12]}.{_LAST[(index // 12) % 11]}{index}@{_DOMAINS[index % 4]}"


def subject_org(index: int) -> str:
    """The org of user ``index``."""
    return _ORGS[index % N_ORGS]


def _at(values: tuple[str, ...], index: Column) -> Column:
    return F.element_at(F.array(*[F.lit(v) for v in values]), (index % len(values) + 1).cast("int"))


def _email_column(index: Column) -> Column:
    """:func:`subject_email` in Spark; a fifth of the addresses capitalised."""
    local = F.concat(_at(_FIRST, index), F.lit("."), _at(_LAST, F.floor(index / 12)), index.cast("string"))
    local = F.when(_uniform("case", index) < 0.2, F.initcap(local)).otherwise(local)
    return F.concat(local, F.lit("@"), _at(_DOMAINS, index))


def _uniform(salt: str, column: Column) -> Column:
    return F.pmod(F.xxhash64(F.lit(SEED), F.lit(salt), column), F.lit(1_000_003)) / F.lit(1_000_003.0)


def _timestamp(salt: str) -> Column:
    seconds = (_uniform(salt, F.col("id")) * DAYS * 86400).cast("long")
    return F.timestamp_seconds(F.lit(int(START.replace(tzinfo=dt.timezone.utc).timestamp())) + seconds)


def events_frame(spark: SparkSession, shape: _Shape) -> DataFrame:
    """The Delta table's rows: user ``id % n_users``, so every user has the same number of rows."""
    index = F.col("id") % shape.n_users
    return spark.range(shape.delta_rows).select(
        _at(_ORGS, index).alias("org_id"),
        F.concat(F.lit("u-"), index.cast("string")).alias("user_id"),
        _email_column(index).alias("email"),
        _timestamp("event_ts").alias("event_ts"),
        F.concat(F.lit("/p/"), F.floor(_uniform("page", F.col("id")) * 500).cast("string")).alias("page"),
        F.round(_uniform("amount", F.col("id")) * 250, 2).alias("amount"),
    )


def logs_frame(spark: SparkSession, shape: _Shape) -> DataFrame:
    """The JSON-lines dataset's rows, user nested as ``user: {id, contact: {email}}``."""
    index = F.col("id") % shape.n_users
    return spark.range(shape.json_rows).select(
        F.struct(
            F.concat(F.lit("u-"), index.cast("string")).alias("id"),
            F.struct(_email_column(index).alias("email")).alias("contact"),
        ).alias("user"),
        _at(_ORGS, index).alias("org_id"),
        F.date_format(_timestamp("ts"), "yyyy-MM-dd'T'HH:mm:ss'Z'").alias("ts"),
        _at(_EVENTS, F.floor(_uniform("event", F.col("id")) * len(_EVENTS)).cast("long")).alias("event"),
    )


def _data_files(folder: Path, suffix: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix) and not p.name.startswith((".", "_"))]


def _write_pristine(spark: SparkSession, shape: _Shape, root: Path) -> dict[str, Any]:
    """Writes both datasets under ``root``; returns their sizes."""
    events, logs = root / "events", root / "logs"
    (
        events_frame(spark, shape)
        .repartitionByRange(shape.delta_files, "event_ts")
        .sortWithinPartitions("event_ts")
        .write.format("delta")
        .option("delta.enableDeletionVectors", "true")
        .save(str(events))
    )
    (
        logs_frame(spark, shape)
        .repartition(shape.json_files)
        .write.option("compression", "gzip")
        .json(str(logs))
    )
    delta_files, json_files = _data_files(events, ".parquet"), _data_files(logs, ".json.gz")
    if len(delta_files) < shape.delta_files or len(json_files) < shape.json_files:
        raise RuntimeError(f"expected >= {shape.delta_files} Delta and >= {shape.json_files} JSON files, wrote "
                           f"{len(delta_files)} and {len(json_files)}")
    properties = spark.sql(f"SHOW TBLPROPERTIES delta.`{events}`").collect()
    if not any(r["key"] == "delta.enableDeletionVectors" and r["value"] == "true" for r in properties):
        raise RuntimeError(f"deletion vectors are not enabled on {events}")
    return {
        "events": events, "logs": logs,
        "delta_files": len(delta_files), "delta_bytes": sum(p.stat().st_size for p in delta_files),
        "json_files": len(json_files), "json_bytes": sum(p.stat().st_size for p in json_files),
    }


# ---------------------------------------------------------------------- timing of the engine's steps


# (module or class path, attribute, label); labels of nested steps start with "  ".
_STEP_TARGETS: tuple[tuple[str, str, str], ...] = (
    ("ketch_spark.rights.engine", "_requests", "read requests"),
    ("ketch_spark.rights.engine", "completed_work", "read audit (completed work)"),
    ("ketch_spark.rights.engine", "rights_assets", "read catalog"),
    ("ketch_spark.rights.engine", "_rows_by_request", "per-request row counts"),
    ("ketch_spark.connectors.files:FileConnector", "erase", "{format} erase"),
    ("ketch_spark.connectors.delta_rights:DeltaEraser", "_purge", "  delta purge (REORG)"),
    ("ketch_spark.connectors.delta_rights:DeltaEraser", "_vacuum", "  delta vacuum"),
    ("ketch_spark.connectors.delta_rights:DeltaEraser", "_retained_files_holding", "  delta retained-file check"),
    ("ketch_spark.connectors.rewrite:FileSetEraser", "matched_files", "  json find files"),
    ("ketch_spark.connectors.rewrite:FileSetEraser", "_stage", "  json stage and check rewrite"),
    ("ketch_spark.connectors.files:FileConnector", "verify", "{format} verify"),
    ("ketch_spark.rights.engine", "append_audit", "audit appends"),
    ("ketch_spark.rights.engine", "_finish", "finish (request updates, receipts)"),
    ("ketch_spark.rights.engine", "_write_receipt", "  receipts"),
)
_TOP_LEVEL_FORMATS = ("delta", "json")


# ---------------------------------------------------------------------- phases


class _Phase(NamedTuple):
    name: str
    root: Path
    cfg: KetchConfig
    formats: dict[str, str]  # asset_id -> format


def _timing() -> RunTiming:
    return RunTiming(_STEP_TARGETS, _TOP_LEVEL_FORMATS)


def _prepare(spark: SparkSession, cfg: KetchConfig, pristine: dict[str, Any], workdir: Path, name: str) -> _Phase:
    """A fresh copy of the pristine datasets, catalogued in a fresh warehouse (not timed)."""
    root = workdir / name
    shutil.copytree(pristine["events"], root / "events")
    shutil.copytree(pristine["logs"], root / "logs")
    phase_cfg = cfg.with_warehouse(root / "warehouse")
    catalog = AssetCatalog(spark, phase_cfg)
    scanned = catalog.scan(f"file://{root / 'events'}", f"file://{root / 'logs'}")
    if scanned.errors or scanned.discovered != 2:
        raise RuntimeError(f"catalog scan of {root}: {scanned.summary()}")
    assets = rights_assets(spark, phase_cfg)
    found = {a.format: sorted((c.column, c.identity_type) for c in a.identity_columns) for a in assets}
    expected = {"delta": ("email", "email"), "json": ("user.contact.email", "email")}
    missing = [f"{fmt} {column}" for fmt, (column, kind) in expected.items() if (column, kind) not in found.get(fmt, [])]
    if missing:
        raise RuntimeError(f"the catalog did not find the identity column(s) {', '.join(missing)}; found {found}")
    return _Phase(name, root, phase_cfg, {a.asset_id: a.format for a in assets})


def _request(phase: str, number: int, index: int) -> dict[str, Any]:
    return {"request_id": f"bench-{phase}-{number:05d}", "org_id": subject_org(index), "kind": "erasure",
            "mode": "delete", "identities": {"email": subject_email(index)}}


def _failures(spark: SparkSession, phase: _Phase) -> str:
    errors = (read_requests(spark, phase.cfg, statuses="failed").select("request_id", "error")
              .limit(3).collect())
    return "; ".join(f"{r['request_id']}: {r['error']}" for r in errors) or "(no error recorded)"


def _erase(spark: SparkSession, phase: _Phase, subjects: list[int], timing: RunTiming, first_number: int = 0) -> None:
    """Submits one erasure request per subject (timed apart), then times one ``run_requests``."""
    requests = [_request(phase.name, first_number + n, index) for n, index in enumerate(subjects)]
    started = time.perf_counter()
    submitted = submit_requests(spark, phase.cfg, requests)
    timing.submit_seconds += time.perf_counter() - started
    if len(submitted.accepted) != len(requests):
        raise RuntimeError(f"phase {phase.name}: submit accepted {len(submitted.accepted)} of {len(requests)}: "
                           f"{submitted.summary()}")
    result = timing.run(lambda: run_requests(spark, phase.cfg))
    if result.failed or len(result.done) != len(requests):
        raise RuntimeError(f"phase {phase.name}: {len(result.done)} of {len(requests)} request(s) done, "
                           f"{len(result.failed)} failed: {_failures(spark, phase)}")


def _erase_audit(spark: SparkSession, phase: _Phase) -> dict[str, dict[str, Any]]:
    """Sums of the phase's ``erase`` audit rows, per asset format."""
    rows = read_audit(spark, phase.cfg).where(F.col("action") == "erase").collect()
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(phase.formats[row["asset_id"]], defaultdict(int))
        for key in ("rows_matched", "rows_changed", "files_matched", "files_rewritten", "bytes_read",
                    "bytes_rewritten"):
            entry[key] += int(row[key] or 0)
        entry["duration_seconds"] += float(row["duration_seconds"] or 0.0)
    return out


def _holding(spark: SparkSession, pristine: dict[str, Any], subjects: list[int]) -> dict[str, dict[str, int]]:
    """Rows and distinct files of the pristine datasets holding one of ``subjects`` (independent of the engine)."""
    keys = [f"{subject_org(i)}|{subject_email(i)}" for i in subjects]
    events_df = spark.read.format("delta").load(str(pristine["events"]))
    logs_df = spark.read.schema(_LOGS_SCHEMA).json(str(pristine["logs"]))
    counted = {}
    for fmt, df, email in (("delta", events_df, F.col("email")), ("json", logs_df, F.col("user.contact.email"))):
        key = F.concat_ws("|", F.col("org_id"), F.lower(F.trim(email)))
        row = df.where(key.isin(keys)).agg(
            F.count(F.lit(1)).alias("rows"), F.countDistinct(F.col("_metadata.file_path")).alias("files")).head()
        counted[fmt] = {"rows": int(row["rows"]), "files": int(row["files"])}
    return counted


def _remaining(spark: SparkSession, phase: _Phase, subjects: list[int]) -> int:
    """Rows of ``subjects`` still readable in the phase's datasets (current versions)."""
    emails = [subject_email(i) for i in subjects]
    events = spark.read.format("delta").load(str(phase.root / "events"))
    logs = spark.read.schema(_LOGS_SCHEMA).json(str(phase.root / "logs"))
    return (events.where(F.lower(F.trim("email")).isin(emails)).count()
            + logs.where(F.lower(F.trim("user.contact.email")).isin(emails)).count())


def _delta_file_count(spark: SparkSession, table: Path) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, str(table)).detail().head()["numFiles"])


def _row_counts(spark: SparkSession, root: Path) -> tuple[int, int]:
    return (spark.read.format("delta").load(str(root / "events")).count(),
            spark.read.schema(_LOGS_SCHEMA).json(str(root / "logs")).count())


# ---------------------------------------------------------------------- the report


def _biggest(seconds: dict[str, float], nested: bool, count: int, per: float = 1.0, signed: bool = False) -> str:
    """The ``count`` largest steps (top-level or nested ones) as ``label seconds``."""
    chosen = sorted(((s / per, k) for k, s in seconds.items() if k.startswith(" ") == nested), reverse=True)[:count]
    return ", ".join(f"{k.strip()} {s:{'+' if signed else ''}.1f} s" for s, k in chosen)


def _why_batch(single: RunTiming, batch: RunTiming, n_batch: int) -> str:
    grown = {k: s - single.clock.seconds.get(k, 0.0) for k, s in batch.clock.seconds.items()}
    return (
        f"Why batch_1000_over_single misses 3 ({n_batch:,} subjects): the steps that grew most from (a) to (b):"
        f" {_biggest(grown, False, 4, signed=True)}; within them: {_biggest(grown, True, 3, signed=True)}."
    )


def _why_separate(separate: RunTiming, n_separate: int, batch_per_subject: float) -> str:
    per_run = separate.total / n_separate
    return (
        f"Why per_subject_speedup misses 100: one separate run costs {per_run:.1f} s on average against"
        f" {batch_per_subject:.2f} s per subject in the batch. A run's biggest steps, per run:"
        f" {_biggest(separate.clock.seconds, False, 4, n_separate)}; within them:"
        f" {_biggest(separate.clock.seconds, True, 3, n_separate)}. These are paid once per run whatever the"
        " number of subjects (each run also reads the whole of both datasets at least twice)."
    )


#: Caps the separate runs of (c) (each is a whole job run: 100 at full size take hours on 2 cores).
SEPARATE_ENV = "KETCH_BENCH_RIGHTS_SEPARATE"


def run(spark: SparkSession, cfg: KetchConfig, workdir: Path, quick: bool) -> dict:
    shape = _QUICK if quick else _FULL
    if os.environ.get(SEPARATE_ENV):
        shape = shape._replace(separate=min(shape.separate, int(os.environ[SEPARATE_ENV])))
    dsr = dsr_settings_from_mapping({"vacuum_retention_hours": 168})  # Delta's default: nothing vacuumed away
    cfg = dataclasses.replace(cfg, dsr=dsr)
    previous_secret = os.environ.get(dsr.receipt_secret_env)
    os.environ[dsr.receipt_secret_env] = RECEIPT_SECRET
    try:
        return _run(spark, cfg, workdir, shape, quick)
    finally:
        if previous_secret is None:
            os.environ.pop(dsr.receipt_secret_env, None)
        else:
            os.environ[dsr.receipt_secret_env] = previous_secret


def _run(spark: SparkSession, cfg: KetchConfig, workdir: Path, shape: _Shape, quick: bool) -> dict:
    started = time.perf_counter()
    pristine = _write_pristine(spark, shape, workdir / "pristine")
    logger.info("rights bench: data written in %.0f s: %s", time.perf_counter() - started,
                {k: v for k, v in pristine.items() if k not in ("events", "logs")})
    picked = random.Random(SEED).sample(range(shape.n_users), 2 + shape.batch + shape.separate)
    warm_subject, single_subject = picked[0], picked[1]
    batch_subjects = picked[2:2 + shape.batch]
    separate_subjects = picked[2 + shape.batch:]

    warm = _timing()
    phase = _prepare(spark, cfg, pristine, workdir, "warmup")
    _erase(spark, phase, [warm_subject], warm)
    shutil.rmtree(phase.root)
    logger.info("rights bench: first run %.1f s: %s", warm.total, warm.clock.describe(warm.total))

    single = _timing()
    phase = _prepare(spark, cfg, pristine, workdir, "single")
    _erase(spark, phase, [single_subject], single)
    single_audit = _erase_audit(spark, phase)
    shutil.rmtree(phase.root)
    logger.info("rights bench: (a) 1 subject %.1f s: %s", single.total, single.clock.describe(single.total))

    batch = _timing()
    phase = _prepare(spark, cfg, pristine, workdir, "batch")
    _erase(spark, phase, batch_subjects, batch)
    logger.info("rights bench: (b) %d subjects %.1f s: %s", shape.batch, batch.total, batch.clock.describe(batch.total))
    batch_audit = _erase_audit(spark, phase)
    holding = _holding(spark, pristine, batch_subjects)
    logger.info("rights bench: (b) audit %s; holding %s", {k: dict(v) for k, v in batch_audit.items()}, holding)
    remaining = _remaining(spark, phase, batch_subjects)
    statuses = {r["status"]: r["count"] for r in read_requests(spark, phase.cfg).groupBy("status").count().collect()}
    rows_after = _row_counts(spark, phase.root)
    if remaining or statuses != {"done": shape.batch}:
        raise RuntimeError(f"after (b): {remaining} row(s) of erased subjects remain; request statuses {statuses}")
    for fmt, rows_before, after in (("delta", shape.delta_rows, rows_after[0]), ("json", shape.json_rows,
                                                                                rows_after[1])):
        erased = batch_audit[fmt]["rows_changed"]
        if erased != holding[fmt]["rows"] or after != rows_before - erased:
            raise RuntimeError(f"after (b), {fmt}: {erased} rows erased by the audit, {holding[fmt]['rows']} rows held"
                               f" the subjects, {rows_before} rows before and {after} after")
    shutil.rmtree(phase.root)

    separate = _timing()
    phase = _prepare(spark, cfg, pristine, workdir, "separate")
    for number, subject in enumerate(separate_subjects):
        _erase(spark, phase, [subject], separate, first_number=number)
        logger.info("rights bench: (c) run %d/%d %.1f s", number + 1, shape.separate, separate.run_seconds[-1])
        if (number + 1) % 10 == 0:
            logger.info("rights bench: (c) so far, per run: %s",
                        separate.clock.describe(separate.total, number + 1))
    if _remaining(spark, phase, separate_subjects):
        raise RuntimeError("after (c): rows of erased subjects remain")
    separate_audit = _erase_audit(spark, phase)
    delta_files_after = _delta_file_count(spark, phase.root / "events")
    shutil.rmtree(phase.root)

    batch_per_subject = batch.total / shape.batch
    separate_per_subject = separate.total / shape.separate
    delta_b, json_b = batch_audit["delta"], batch_audit["json"]
    figures = {
        "batch_1000_over_single": ratio(batch.total, single.total),
        "per_subject_speedup": ratio(separate_per_subject, batch_per_subject),
        "files_rewritten_equals_files_holding": json_b["files_rewritten"] == holding["json"]["files"],
        "first_run_seconds": round(warm.total, 2),
        "single_seconds": round(single.total, 2),
        "batch_seconds": round(batch.total, 2),
        "batch_seconds_per_subject": round(batch_per_subject, 3),
        "separate_seconds_total": round(separate.total, 2),
        "separate_seconds_per_subject": round(separate_per_subject, 2),
        "separate_first_run_seconds": round(separate.run_seconds[0], 2),
        "separate_last_run_seconds": round(separate.run_seconds[-1], 2),
        "batch_submit_seconds": round(batch.submit_seconds, 2),
        "separate_submit_seconds_total": round(separate.submit_seconds, 2),
        "json_files_holding": holding["json"]["files"],
        "json_files_matched": json_b["files_matched"],
        "json_files_rewritten": json_b["files_rewritten"],
        "json_bytes_read": json_b["bytes_read"],
        "json_bytes_rewritten": json_b["bytes_rewritten"],
        "json_rows_changed": json_b["rows_changed"],
        "delta_files_holding": holding["delta"]["files"],
        "delta_files_matched": delta_b["files_matched"],
        "delta_files_rewritten": delta_b["files_rewritten"],
        "delta_bytes_read": delta_b["bytes_read"],
        "delta_bytes_rewritten": delta_b["bytes_rewritten"],
        "delta_rows_changed": delta_b["rows_changed"],
        "single_delta_files_rewritten": single_audit["delta"]["files_rewritten"],
        "single_json_files_rewritten": single_audit["json"]["files_rewritten"],
        "separate_delta_bytes_rewritten_total": separate_audit["delta"]["bytes_rewritten"],
        "separate_json_bytes_rewritten_total": separate_audit["json"]["bytes_rewritten"],
        "separate_delta_files_after": delta_files_after,
    }
    notes = [
        f"Data: Delta table (deletion vectors on) of {shape.delta_rows:,} rows in {pristine['delta_files']} files"
        f" ({pristine['delta_bytes'] / 1e6:,.0f} MB); gzip JSON lines of {shape.json_rows:,} rows in"
        f" {pristine['json_files']} files ({pristine['json_bytes'] / 1e6:,.0f} MB); {shape.n_users:,} users, each"
        f" with {shape.delta_rows // shape.n_users} Delta rows spread over time-sliced files and"
        f" {shape.json_rows / shape.n_users:.2g} JSON row(s) on average; {N_ORGS} orgs."
        + (" Quick sizes: figure names keep the full run's (batch of 1,000, 100 separate runs)." if quick else ""),
        f"Requests (erasure, delete, by email): warm-up 1; (a) 1; (b) {shape.batch:,} in one run; (c)"
        f" {shape.separate} runs of 1"
        + (f" (capped by {SEPARATE_ENV}; the per-subject figure is the mean of these runs)"
           if shape.separate < (_QUICK if quick else _FULL).separate else "")
        + ". Only run_requests is timed (single timings on a shared 2-core machine);"
        " each phase starts from a fresh copy of the same data, catalogued by AssetCatalog.scan in a fresh"
        " warehouse (not timed). Delta retention is the default 168 h, so nothing is vacuumed away.",
        f"first_run_seconds is the job's first run_requests (after the first catalog scan): {warm.total:.1f} s"
        f" against {single.total:.1f} s for the same work warmed up.",
        f"(b) files: JSON {json_b['files_matched']} files matched by the engine, {holding['json']['files']} hold a"
        f" subject (counted from the pristine data), {json_b['files_rewritten']} rewritten"
        f" ({json_b['bytes_rewritten'] / 1e6:,.1f} MB written, {json_b['bytes_read'] / 1e6:,.1f} MB read)."
        f" Delta: {delta_b['files_matched']} files got deletion vectors ({holding['delta']['files']} hold a"
        f" subject), REORG PURGE wrote {delta_b['files_rewritten']} file(s)"
        f" ({delta_b['bytes_rewritten'] / 1e6:,.1f} MB"
        + ("; the purge bin-packs the files it rewrites into fewer, larger ones"
           if delta_b["files_rewritten"] < delta_b["files_matched"] else "")
        + f"), audit bytes_read"
        f" {delta_b['bytes_read']:,} (the DELETE's numRemovedBytes: a deletion-vector DELETE removes no file, and"
        " the purge's read is not counted).",
        f"(b) checks: {delta_b['rows_changed']:,} Delta and {json_b['rows_changed']:,} JSON rows erased, equal to"
        " the rows holding the subjects in the pristine data; none left in the current data; every request done."
        " The files replaced by the purge stay on disk until the 168 h retention passes (receipts say so).",
        f"(c) runs: first {separate.run_seconds[0]:.1f} s, median {statistics.median(separate.run_seconds):.1f} s,"
        f" last {separate.run_seconds[-1]:.1f} s. Over the {shape.separate} runs the engine wrote"
        f" {separate_audit['delta']['bytes_rewritten'] / 1e6:,.1f} MB of Delta files and"
        f" {separate_audit['json']['bytes_rewritten'] / 1e6:,.1f} MB of JSON files (the batch of {shape.batch:,}:"
        f" {delta_b['bytes_rewritten'] / 1e6:,.1f} and {json_b['bytes_rewritten'] / 1e6:,.1f} MB); the Delta table"
        f" went from {pristine['delta_files']} to {delta_files_after} files. Each run's retained-file check reads"
        " every file earlier runs replaced (kept 168 h).",
        f"Where the time went (s): (a) {single.total:.1f} s: {single.clock.describe(single.total)}.",
        f"(b) {batch.total:.1f} s: {batch.clock.describe(batch.total)}.",
        f"(c) per run: {separate.clock.describe(separate.total, shape.separate)}.",
    ]
    missing = sorted(set(single.clock.missing))
    if missing:
        notes.append(f"Steps not measured (not found in this version of the engine): {', '.join(missing)}.")
    if figures["batch_1000_over_single"] > 3:
        notes.append(_why_batch(single, batch, shape.batch))
    if figures["per_subject_speedup"] < 100:
        notes.append(_why_separate(separate, shape.separate, batch_per_subject))
    return {
        "figures": figures,
        "targets": {
            "batch_1000_over_single": "<= 3",
            "per_subject_speedup": ">= 100",
            "files_rewritten_equals_files_holding": "True",
        },
        "notes": notes,
    }
