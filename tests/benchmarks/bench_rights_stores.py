"""Rights benchmark over the warehouse and the key-value store: 1 subject, 1,000 in one run, 20 one at a time.

Servers, started here and stopped at the end (tests/services.py): PostgreSQL from
the Debian binaries and moto's DynamoDB in server mode, both on loopback.

Data, written once by the servers themselves:

* PostgreSQL ``shop.customers``: 1,000,000 rows (id primary key, org_id,
  user_id, email, phone, full_name, plan, created_at) and ``shop.orders``:
  1,000,000 rows (id primary key, org_id, user_id, buyer_email, amount,
  ordered_at), generated with ``generate_series``; no index on the identity
  columns (as in a Redshift-like warehouse); a fifth of the emails capitalised.
* DynamoDB ``bench_profiles``: 50,000 items keyed by a profile id with the email
  nested (``contact.email``), so an erasure scans the table (paginated Scan);
  ``bench_sessions``: 50,000 items keyed by ``user_id`` (erased by key).

Both stores are catalogued once by ``AssetCatalog.scan`` (not timed), as a user
gets them. Every phase erases its own subjects (disjoint sets) from the same
data, so a phase sees the tables less the earlier phases' subjects (at most
0.2% of the rows). Each measured run is one ``run_requests`` over the whole
batch, with the erased-subject ledger sweep that every run does (it reads the
identity columns of every asset: the ledger holds the earlier phases'
subjects), as users pay it:

* warm-up: the job's first run (1 subject), ``first_run_seconds``;
* (a) 1 subject; (b) 1,000 subjects in one run; (c) 20 subjects as 20
  separate runs (submit one request, run, repeat), as per-request tools work.

The engine's and connectors' main steps are timed by a step clock; erased
subjects are checked gone and the row/item counts checked against what the
audit says was erased.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from pyspark.sql import SparkSession

from ketch_spark.catalog import AssetCatalog
from ketch_spark.config import KetchConfig, dsr_settings_from_mapping
from ketch_spark.rights.audit import read_audit
from ketch_spark.rights.engine import rights_assets, run_requests
from ketch_spark.rights.requests import read_requests, submit_requests

from timing import RunTiming, ratio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/services.py: the servers

logger = logging.getLogger(__name__)

SEED = 31
ORGS = ("org-001", "org-002", "org-003", "org-004")
RECEIPT_SECRET = "ketch-bench-stores-receipt-secret-0123456789"
PROFILES, SESSIONS = "bench_profiles", "bench_sessions"
SCHEMA = "shop"
_DOMAINS = ("example.com", "mail.example.org", "example.net", "corp.example.co.uk")

_STEP_TARGETS: tuple[tuple[str, str, str], ...] = (
    ("ketch_spark.rights.engine", "_requests", "read requests"),
    ("ketch_spark.rights.engine", "completed_work", "read audit (completed work)"),
    ("ketch_spark.rights.engine", "rights_assets", "read catalog"),
    ("ketch_spark.rights.engine", "_sweep_ledger", "ledger sweep"),
    ("ketch_spark.connectors.jdbc:JdbcConnector", "identity_values", "  postgres identity values"),
    ("ketch_spark.connectors.dynamodb:DynamoDbConnector", "identity_values", "  dynamodb identity values"),
    ("ketch_spark.connectors.jdbc:JdbcConnector", "erase_all", "postgres erase (one transaction)"),
    ("ketch_spark.connectors.jdbc:JdbcConnector", "verify", "postgres verify"),
    ("ketch_spark.connectors.dynamodb:DynamoDbConnector", "erase", "dynamodb erase"),
    ("ketch_spark.connectors.dynamodb:DynamoDbConnector", "verify", "dynamodb verify"),
    ("ketch_spark.rights.engine", "append_audit", "audit appends"),
    ("ketch_spark.rights.engine", "_finish", "finish (ledger, request updates, receipts)"),
)


class _Shape(NamedTuple):
    pg_rows: int
    dynamo_items: int
    batch: int
    separate: int


#: Caps the separate runs of (c): each is a whole run with its ledger sweep (about 5 minutes here, most of it
#: moto's Scan of the DynamoDB tables), so 20 take well over an hour on 2 cores.
SEPARATE_ENV = "KETCH_BENCH_STORES_SEPARATE"
_FULL = _Shape(pg_rows=1_000_000, dynamo_items=50_000, batch=1000, separate=20)
_QUICK = _Shape(pg_rows=20_000, dynamo_items=2_000, batch=50, separate=3)


def subject_email(index: int) -> str:
    """Customer ``index``'s email as a request gives it (lower case)."""
    return f"customer{index}@{_DOMAINS[index % 4]}"


def subject_org(index: int) -> str:
    return ORGS[index % len(ORGS)]


# ---------------------------------------------------------------------- data


def _email_sql(index: str) -> str:
    """SQL of :func:`subject_email` of the integer ``index`` (capitalised for a fifth of the customers)."""
    domains = "ARRAY[" + ", ".join(f"'{d}'" for d in _DOMAINS) + "]"
    return (f"(CASE WHEN {index} % 5 = 0 THEN 'Customer' ELSE 'customer' END) || {index} || '@' || "
            f"({domains})[{index} % 4 + 1]")


def _seed_postgres(server: Any, shape: _Shape, reader: str) -> None:
    orgs = "ARRAY[" + ", ".join(f"'{o}'" for o in ORGS) + "]"
    server.execute(
        f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
        f"CREATE SCHEMA {SCHEMA}",
        f"CREATE TABLE {SCHEMA}.customers (id bigint PRIMARY KEY, org_id text, user_id text, email text, "
        "phone text, full_name text, plan text, created_at timestamptz)",
        f"INSERT INTO {SCHEMA}.customers SELECT i, ({orgs})[i % {len(ORGS)} + 1], 'u-' || i, {_email_sql('i')}, "
        "'+1 415 ' || lpad((i % 10000000)::text, 7, '0'), 'Customer ' || i, "
        "(ARRAY['free', 'pro', 'team'])[i % 3 + 1], timestamptz '2025-01-01' + (i % 500) * interval '1 day' "
        f"FROM generate_series(0::bigint, {shape.pg_rows - 1}) AS i",
        f"CREATE TABLE {SCHEMA}.orders (id bigint PRIMARY KEY, org_id text, user_id text, buyer_email text, "
        "amount numeric(10, 2), ordered_at timestamptz)",
        f"INSERT INTO {SCHEMA}.orders SELECT o, ({orgs})[c % {len(ORGS)} + 1], 'u-' || c, "
        f"{_email_sql('c')}, "
        "(o % 50000) / 100.0, timestamptz '2025-06-01' + (o % 180) * interval '1 day' "
        f"FROM (SELECT o, (o * 7919) % {shape.pg_rows} AS c FROM generate_series(0::bigint, {shape.pg_rows - 1}) AS o) s",
        f"ANALYZE {SCHEMA}.customers",
        f"ANALYZE {SCHEMA}.orders",
        f"GRANT USAGE ON SCHEMA {SCHEMA} TO {reader}",
        f"GRANT SELECT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {SCHEMA} TO {reader}",
    )


def _profile_items(shape: _Shape) -> Iterator[dict[str, Any]]:
    for i in range(shape.dynamo_items):
        email = subject_email(i) if i % 5 else subject_email(i).capitalize()
        yield {"pk": {"S": f"p-{(i * 7919) % 1_000_003:07d}-{i}"}, "org_id": {"S": subject_org(i)},
               "user_id": {"S": f"u-{i}"}, "contact": {"M": {"email": {"S": email},
                                                             "phone": {"S": f"+1 415 {i:07d}"}}},
               "full_name": {"S": f"Customer {i}"}, "visits": {"N": str(i % 97)}}


def _session_items(shape: _Shape) -> Iterator[dict[str, Any]]:
    for i in range(shape.dynamo_items):
        yield {"user_id": {"S": f"u-{i}"}, "org_id": {"S": subject_org(i)}, "last_page": {"S": f"/p/{i % 500}"},
               "n": {"N": str(i % 13)}}


def _seed_dynamodb(moto: Any, shape: _Shape) -> None:
    client = moto.client("dynamodb")
    for table, key, items in ((PROFILES, "pk", _profile_items(shape)), (SESSIONS, "user_id", _session_items(shape))):
        if table in client.list_tables()["TableNames"]:
            client.delete_table(TableName=table)
        client.create_table(TableName=table, KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
        chunk: list[dict[str, Any]] = []
        for item in items:
            chunk.append({"PutRequest": {"Item": item}})
            if len(chunk) == 25:
                _write(client, table, chunk)
                chunk = []
        if chunk:
            _write(client, table, chunk)


def _write(client: Any, table: str, requests: list[dict[str, Any]]) -> None:
    while requests:
        requests = client.batch_write_item(RequestItems={table: requests}).get("UnprocessedItems", {}).get(table, [])


def _pg_count(server: Any, table: str) -> int:
    with server.connect() as conn:
        return int(conn.execute(f"SELECT count(*) FROM {SCHEMA}.{table}").fetchone()[0])


def _pg_remaining(server: Any, emails: list[str]) -> int:
    with server.connect() as conn:
        return sum(int(conn.execute(f"SELECT count(*) FROM {SCHEMA}.{table} WHERE lower({column}) = ANY(%s)",
                                    (emails,)).fetchone()[0])
                   for table, column in (("customers", "email"), ("orders", "buyer_email")))


def _dynamo_count(moto: Any, table: str) -> int:
    paginator = moto.client("dynamodb").get_paginator("scan")
    return sum(page["Count"] for page in paginator.paginate(TableName=table, Select="COUNT"))


# ---------------------------------------------------------------------- runs


def _timing() -> RunTiming:
    return RunTiming(_STEP_TARGETS)


def _request(phase: str, number: int, index: int) -> dict[str, Any]:
    return {"request_id": f"stores-{phase}-{number:05d}", "org_id": subject_org(index), "kind": "erasure",
            "mode": "delete", "identities": {"email": subject_email(index), "user_id": f"u-{index}"}}


def _erase(spark: SparkSession, cfg: KetchConfig, phase: str, subjects: list[int], timing: RunTiming,
           first_number: int = 0) -> None:
    requests = [_request(phase, first_number + n, index) for n, index in enumerate(subjects)]
    submitted = submit_requests(spark, cfg, requests)
    if len(submitted.accepted) != len(requests):
        raise RuntimeError(f"{phase}: submit accepted {len(submitted.accepted)} of {len(requests)}")
    result = timing.run(lambda: run_requests(spark, cfg))
    if result.failed or len(result.done) != len(requests):
        errors = read_requests(spark, cfg, statuses="failed").select("error").limit(2).collect()
        raise RuntimeError(f"{phase}: {len(result.done)} of {len(requests)} done: {[r['error'] for r in errors]}")


def _erased_by_asset(spark: SparkSession, cfg: KetchConfig, prefix: str) -> dict[str, int]:
    """Rows erased per asset name by the requests whose id starts with ``prefix`` (from the audit)."""
    from pyspark.sql import functions as F

    rows = (read_audit(spark, cfg).where((F.col("action") == "erase") & (F.col("status") == "ok"))
            .select("location", "request_ids", "rows_changed").collect())
    out: dict[str, int] = {}
    for row in rows:
        if all(r.startswith(prefix) for r in row["request_ids"]):
            name = row["location"].rsplit("/", 1)[-1]
            out[name] = out.get(name, 0) + int(row["rows_changed"] or 0)
    return out


def run(spark: SparkSession, cfg: KetchConfig, workdir: Path, quick: bool) -> dict:
    from services import PG_USER, connectors_section, running_moto, running_postgres, with_connectors

    shape = _QUICK if quick else _FULL
    if os.environ.get(SEPARATE_ENV):
        shape = shape._replace(separate=min(shape.separate, int(os.environ[SEPARATE_ENV])))
    previous = os.environ.get("KETCH_RECEIPT_SECRET")
    with running_postgres() as server, running_moto() as moto:
        started = time.perf_counter()
        _seed_postgres(server, shape, PG_USER)
        pg_seconds = time.perf_counter() - started
        started = time.perf_counter()
        _seed_dynamodb(moto, shape)
        dynamo_seconds = time.perf_counter() - started
        logger.info("stores bench: PostgreSQL seeded in %.0f s, DynamoDB in %.0f s", pg_seconds, dynamo_seconds)
        bench_cfg = dataclasses.replace(with_connectors(cfg, connectors_section(server, moto)),
                                        dsr=dsr_settings_from_mapping({}))
        os.environ[bench_cfg.dsr.receipt_secret_env] = RECEIPT_SECRET
        try:
            return _measure(spark, bench_cfg, server, moto, shape, quick, pg_seconds, dynamo_seconds)
        finally:
            if previous is None:
                os.environ.pop(bench_cfg.dsr.receipt_secret_env, None)
            else:
                os.environ[bench_cfg.dsr.receipt_secret_env] = previous


def _measure(spark: SparkSession, cfg: KetchConfig, server: Any, moto: Any, shape: _Shape, quick: bool,
             pg_seconds: float, dynamo_seconds: float) -> dict:
    from services import AWS_REGION

    scanned = AssetCatalog(spark, cfg).scan(f"{server.jdbc_url}/{SCHEMA}", f"dynamodb://{AWS_REGION}/bench_")
    if scanned.errors or scanned.discovered != 4:
        raise RuntimeError(f"catalog scan: {scanned.summary()}")
    found = {a.name: sorted((c.column, c.identity_type) for c in a.identity_columns) for a in rights_assets(spark, cfg)}
    logger.info("stores bench: identity columns %s", found)
    expected = {f"{SCHEMA}.customers": ("email", "email"), f"{SCHEMA}.orders": ("buyer_email", "email"),
                PROFILES: ("contact.email", "email"), SESSIONS: ("user_id", "user_id")}
    missing = [f"{name} {column}" for name, (column, kind) in expected.items() if (column, kind) not in found.get(name, [])]
    if missing:
        raise RuntimeError(f"the catalog missed {missing}; found {found}")
    before = {"customers": _pg_count(server, "customers"), "orders": _pg_count(server, "orders"),
              PROFILES: _dynamo_count(moto, PROFILES), SESSIONS: _dynamo_count(moto, SESSIONS)}

    picked = random.Random(SEED).sample(range(shape.dynamo_items), 2 + shape.batch + shape.separate)
    warm, single, batch, separate = _timing(), _timing(), _timing(), _timing()
    _erase(spark, cfg, "warmup", picked[:1], warm)
    logger.info("stores bench: first run %.1f s: %s", warm.total, warm.clock.describe(warm.total))
    _erase(spark, cfg, "single", picked[1:2], single)
    logger.info("stores bench: (a) %.1f s: %s", single.total, single.clock.describe(single.total))
    batch_subjects = picked[2:2 + shape.batch]
    _erase(spark, cfg, "batch", batch_subjects, batch)
    logger.info("stores bench: (b) %.1f s: %s", batch.total, batch.clock.describe(batch.total))
    for number, subject in enumerate(picked[2 + shape.batch:]):
        _erase(spark, cfg, "separate", [subject], separate, first_number=number)
        logger.info("stores bench: (c) run %d/%d %.1f s", number + 1, shape.separate, separate.run_seconds[-1])

    emails = [subject_email(i) for i in picked]
    remaining = _pg_remaining(server, emails)
    after = {"customers": _pg_count(server, "customers"), "orders": _pg_count(server, "orders"),
             PROFILES: _dynamo_count(moto, PROFILES), SESSIONS: _dynamo_count(moto, SESSIONS)}
    erased = {name.split(".")[-1]: n for name, n in _erased_by_asset(spark, cfg, "stores-").items()}
    if remaining or any(before[t] - after[t] != erased.get(t, 0) for t in before):
        raise RuntimeError(f"{remaining} PostgreSQL row(s) of erased subjects remain; before {before}, after {after},"
                           f" erased by the audit {erased}")
    if after[PROFILES] != before[PROFILES] - len(picked) or after[SESSIONS] != before[SESSIONS] - len(picked):
        raise RuntimeError(f"DynamoDB: {len(picked)} subjects erased but items went {before} -> {after}")
    batch_erased = _erased_by_asset(spark, cfg, "stores-batch-")

    per_subject_batch = batch.total / shape.batch
    per_subject_separate = separate.total / shape.separate
    figures = {
        "batch_1000_over_single": ratio(batch.total, single.total),
        "per_subject_speedup": ratio(per_subject_separate, per_subject_batch),
        "first_run_seconds": round(warm.total, 2),
        "single_seconds": round(single.total, 2),
        "batch_seconds": round(batch.total, 2),
        "batch_seconds_per_subject": round(per_subject_batch, 4),
        "separate_seconds_total": round(separate.total, 2),
        "separate_seconds_per_subject": round(per_subject_separate, 2),
        "postgres_rows": before["customers"] + before["orders"],
        "dynamodb_items": before[PROFILES] + before[SESSIONS],
        "batch_rows_erased": sum(batch_erased.values()),
    }
    notes = [
        f"Data: PostgreSQL {SCHEMA}.customers and {SCHEMA}.orders, {shape.pg_rows:,} rows each (seeded in"
        f" {pg_seconds:.0f} s), no index on the identity columns; DynamoDB {PROFILES} ({shape.dynamo_items:,}"
        f" items, email nested under contact: erased after a paginated Scan) and {SESSIONS}"
        f" ({shape.dynamo_items:,} items keyed by user_id: erased by key), seeded in {dynamo_seconds:.0f} s through"
        " moto's server on loopback. Catalogued once by AssetCatalog.scan (not timed)."
        + (" Quick sizes: figure names keep the full run's." if quick else ""),
        f"Requests (erasure, delete, by email and user_id): warm-up 1; (a) 1; (b) {shape.batch:,} in one run; (c)"
        f" {shape.separate} runs of 1"
        + (f" (capped by {SEPARATE_ENV}; the per-subject figure is the mean of these runs)"
           if shape.separate < (_QUICK if quick else _FULL).separate else "")
        + ". Phases erase disjoint subjects from the same tables. Only run_requests is"
        " timed; each run includes the erased-subject ledger sweep (identity columns of every asset read once),"
        " which the ledger makes part of every run from the second on.",
        f"(b) erased rows per asset (audit): {dict(sorted(batch_erased.items()))}; afterwards no row of an erased"
        " subject is left, and every table's count fell by exactly the audit's rows_changed.",
        f"(c) runs: first {separate.run_seconds[0]:.1f} s, median {statistics.median(separate.run_seconds):.1f} s,"
        f" last {separate.run_seconds[-1]:.1f} s.",
        f"Where the time went (s): first run {warm.total:.1f}: {warm.clock.describe(warm.total)}.",
        f"(a) {single.total:.1f}: {single.clock.describe(single.total)}.",
        f"(b) {batch.total:.1f}: {batch.clock.describe(batch.total)}.",
        f"(c) per run: {separate.clock.describe(separate.total, shape.separate)}.",
    ]
    missing_steps = sorted(set(single.clock.missing))
    if missing_steps:
        notes.append(f"Steps not measured (not found in this version): {', '.join(missing_steps)}.")
    return {
        "figures": figures,
        "targets": {"batch_1000_over_single": "<= 3", "per_subject_speedup": ">= 100"},
        "notes": notes,
    }
