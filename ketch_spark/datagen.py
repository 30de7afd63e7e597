"""Synthetic but realistic data for the demo, the tests and the benchmarks.

Everything is built in Spark from ``spark.range`` with hash-based randomness, so
a given seed gives the same rows whatever the partitioning, and millions of rows
take seconds. Shapes follow the story: several customers (``org_id``) of very
different sizes, raw consent signals (JSON lines and CSV, with a small share of
defective records of every kind the ingest rejects), a ``user_events`` fact
table, a profile table with personal data, and gzip JSON-lines logs.

A user's organisation depends only on the user's index and ``n_orgs``, so every
generator agrees on who belongs to which customer.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ketch_spark.config import KetchConfig
from ketch_spark.policy import Policy

__all__ = [
    "org_ids",
    "generate_raw_consent",
    "write_raw_consent",
    "generate_user_events",
    "generate_profiles",
    "generate_raw_logs",
    "generate_demo_data",
    "DEFECT_KINDS",
    "EVENT_TYPES",
]

#: Kinds of defective raw consent record the generator mixes in.
DEFECT_KINDS = (
    "malformed_record",
    "missing_org_id",
    "missing_user_id",
    "unknown_purpose",
    "invalid_choice",
    "invalid_timestamp",
    "future_timestamp",
)
EVENT_TYPES = ("PAGE_VIEW", "PAGE_VIEW", "PAGE_VIEW", "PAGE_VIEW", "CLICK", "CLICK", "SEARCH", "ADD_TO_CART", "PURCHASE", "SIGNUP")
_SOURCES = ("js_tag", "ios_sdk", "android_sdk", "api", "file_drop")
#: Share of users granting each purpose when asked (the rest deny).
_GRANT_RATE = {
    "strictly_necessary": 0.99,
    "analytics": 0.72,
    "personalization": 0.55,
    "advertising": 0.44,
    "email_marketing": 0.31,
    "data_sale": 0.85,
    "product_improvement": 0.9,
}
_FIRST_NAMES = ("jane", "john", "maria", "wei", "amira", "lucas", "sofia", "noah", "yuki", "olga", "kwame", "ines")
_LAST_NAMES = ("doe", "smith", "garcia", "chen", "haddad", "martin", "rossi", "okafor", "tanaka", "novak", "silva")
_DOMAINS = ("example.com", "mail.example.org", "example.net", "corp.example.co.uk")
_GENDERS = ("female", "male", "non_binary", "unknown")
_AGE_RANGES = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_INCOMES = ("<25k", "25k-50k", "50k-75k", "75k-100k", "100k-150k", "150k+")
_STATUSES = ("prospect", "active", "active", "churned", "vip")


def org_ids(n_orgs: int) -> list[str]:
    """The org ids of ``n_orgs`` customers, e.g. ``0x1F3A00C1``."""
    return [f"0x{(0x1F3A00C1 + 0x10001 * i) & 0xFFFFFFFF:08X}" for i in range(n_orgs)]


def _uniform(seed: int, salt: str, *cols: Column | str) -> Column:
    """A deterministic pseudo-random double in [0, 1) from the given columns."""
    cols = cols or ("id",)
    h = F.xxhash64(F.lit(seed), F.lit(salt), *[F.col(c) if isinstance(c, str) else c for c in cols])
    return (F.pmod(h, F.lit(1_000_003)) / F.lit(1_000_003.0)).cast("double")


def _pick(values: Sequence[str], u: Column) -> Column:
    """Picks one of ``values`` uniformly with ``u`` in [0, 1)."""
    arr = F.array(*[F.lit(v) for v in values])
    return F.element_at(arr, (F.floor(u * len(values)) + 1).cast("int"))


def _org_of_user(n_orgs: int, user_index: Column) -> Column:
    """Skewed customer sizes: the first org holds ~45 % of users with 5 orgs."""
    u = _uniform(0, "org", user_index)
    index = F.least(F.floor(u * u * n_orgs), F.lit(n_orgs - 1)).cast("int")
    return F.element_at(F.array(*[F.lit(o) for o in org_ids(n_orgs)]), index + 1)


def _user_id(user_index: Column) -> Column:
    return F.concat(F.lit("u-"), user_index.cast("string"))


def _ts_string(ts: Column) -> Column:
    return F.date_format(ts, "yyyy-MM-dd'T'HH:mm:ss'Z'")


def _consent_choices(spark: SparkSession, policy: Policy, *, n_users: int, n_orgs: int, seed: int,
                     start: dt.date, days: int) -> DataFrame:
    """One row per (signal, purpose, choice) before rendering: the ground truth of the generator.

    Most users send one or two signals; a tenth change their minds later. A signal
    is either a full signature (every active purpose) or a single purpose choice.
    """
    purposes = [p.name for p in policy.active]
    users = spark.range(n_users).select(
        F.col("id").alias("user_index"),
        F.least(F.floor(-F.log(1 - _uniform(seed, "nsig") * 0.999) * 1.3) + 1, F.lit(6)).cast("int").alias("n_signals"),
    )
    signals = users.select(
        "user_index", F.explode(F.sequence(F.lit(1), F.col("n_signals"))).alias("signal")
    )
    start_ts = F.lit(dt.datetime.combine(start, dt.time()).isoformat()).cast("timestamp")
    seconds = (_uniform(seed, "ts", "user_index", "signal") * days * 86400).cast("long")
    signals = signals.select(
        "user_index",
        "signal",
        _org_of_user(n_orgs, F.col("user_index")).alias("org_id"),
        _user_id(F.col("user_index")).alias("user_id"),
        F.timestamp_seconds(F.unix_seconds(start_ts) + seconds).alias("ts"),
        _pick(_SOURCES, _uniform(seed, "src", "user_index", "signal")).alias("source"),
        (_uniform(seed, "sig", "user_index", "signal") < 0.4).alias("is_signature"),
        _pick(purposes, _uniform(seed, "one", "user_index", "signal")).alias("single_purpose"),
        (_uniform(seed, "flip", "user_index") < 0.1).alias("changes_mind"),
    )
    purpose_names = F.array(*[F.lit(p) for p in purposes])
    exploded = signals.select(
        "*",
        F.explode(F.when(F.col("is_signature"), purpose_names).otherwise(F.array("single_purpose"))).alias("purpose"),
    )
    rate = F.coalesce(
        F.element_at(F.create_map(*[x for name, r in _GRANT_RATE.items() for x in (F.lit(name), F.lit(r))]), F.col("purpose")),
        F.lit(0.5),
    )
    first_choice = _uniform(seed, "grant", "user_index", "purpose") < rate
    granted = F.when(F.col("changes_mind") & (F.col("signal") > 1), ~first_choice).otherwise(first_choice)
    return exploded.select("user_index", "signal", "org_id", "user_id", "ts", "source", "purpose", granted.alias("granted"))


def _json_purposes(choices: DataFrame) -> DataFrame:
    """Collects one signal's choices into the JSON text of its ``purposes`` object."""
    pair = F.concat(F.lit('"'), F.col("purpose"), F.lit('":'), F.when(F.col("granted"), "true").otherwise("false"))
    return choices.groupBy("user_index", "signal", "org_id", "user_id", "ts", "source").agg(
        F.concat(F.lit("{"), F.array_join(F.sort_array(F.collect_list(pair)), ","), F.lit("}")).alias("purposes_json")
    )


def _json_line(org: Column, user: Column, ts: Column, purposes: Column, source: Column) -> Column:
    def field(name: str, value: Column, quoted: bool = True) -> Column:
        rendered = F.concat(F.lit('"'), value, F.lit('"')) if quoted else value
        return F.when(value.isNull(), F.lit(None)).otherwise(F.concat(F.lit(f'"{name}":'), rendered))

    parts = F.array_compact(
        F.array(field("org_id", org), field("user_id", user), field("ts", ts), field("purposes", purposes, quoted=False), field("source", source))
    )
    return F.concat(F.lit("{"), F.array_join(parts, ", "), F.lit("}"))


def _defect_kind(seed: int, defect_rate: float, *key: str) -> Column:
    u = _uniform(seed, "defect", *key)
    kind = _pick(DEFECT_KINDS, _uniform(seed, "defect-kind", *key))
    return F.when(u < defect_rate, kind)


def generate_raw_consent(
    spark: SparkSession,
    policy: Policy,
    *,
    n_users: int,
    n_orgs: int = 5,
    seed: int = 7,
    start: dt.date = dt.date(2026, 10, 1),
    days: int = 30,
    defect_rate: float = 0.02,
) -> DataFrame:
    """Raw consent signals as JSON lines (column ``value``), in DESIGN's raw format.

    Args:
        spark: Session.
        policy: Policy whose active purposes the signals choose from.
        n_users: Number of distinct users (each sends 1-6 signals, mostly 1-2).
        n_orgs: Number of customers.
        seed: Seed; the same seed gives the same lines.
        start: First day of the signals.
        days: Number of days the signals span.
        defect_rate: Share of lines made defective (one kind of :data:`DEFECT_KINDS` each).
    """
    choices = _consent_choices(spark, policy, n_users=n_users, n_orgs=n_orgs, seed=seed, start=start, days=days)
    signals = _json_purposes(choices).withColumn("defect", _defect_kind(seed, defect_rate, "user_index", "signal"))
    defect = F.col("defect")
    org = F.when(defect == "missing_org_id", F.lit(None)).otherwise(F.col("org_id"))
    user = F.when(defect == "missing_user_id", F.lit(None)).otherwise(F.col("user_id"))
    ts = (
        F.when(defect == "invalid_timestamp", F.lit("last tuesday"))
        .when(defect == "future_timestamp", F.lit("2099-01-01T00:00:00Z"))
        .otherwise(_ts_string(F.col("ts")))
    )
    purposes = (
        F.when(defect == "unknown_purpose", F.lit('{"telepathy": true}'))
        .when(defect == "invalid_choice", F.lit('{"analytics": "maybe"}'))
        .otherwise(F.col("purposes_json"))
    )
    line = signals.withColumn("line", _json_line(org, user, ts, purposes, F.col("source")))
    truncated = F.expr("substring(line, 1, length(line) - 9)")
    return line.select(F.when(defect == "malformed_record", truncated).otherwise(F.col("line")).alias("value"))


def _csv_lines(choices: DataFrame, seed: int, defect_rate: float) -> DataFrame:
    defect = _defect_kind(seed, defect_rate, "user_index", "signal", "purpose")
    rows = choices.withColumn("defect", defect)
    d = F.col("defect")
    fields = [
        F.when(d == "missing_org_id", F.lit("")).otherwise(F.col("org_id")),
        F.when(d == "missing_user_id", F.lit("")).otherwise(F.col("user_id")),
        F.when(d == "invalid_timestamp", F.lit("soon"))
        .when(d == "future_timestamp", F.lit("2099-01-01T00:00:00Z"))
        .otherwise(_ts_string(F.col("ts"))),
        F.when(d == "unknown_purpose", F.lit("telepathy")).otherwise(F.col("purpose")),
        F.when(d == "invalid_choice", F.lit("maybe")).otherwise(F.when(F.col("granted"), "true").otherwise("false")),
        F.col("source"),
    ]
    line = F.concat_ws(",", *fields)
    line = F.when(d == "malformed_record", F.concat(line, F.lit(',"unterminated'))).otherwise(line)
    return rows.select(F.lit(1).alias("order"), line.alias("value"))


def write_raw_consent(
    spark: SparkSession,
    policy: Policy,
    path: str | Path,
    fmt: str = "json",
    *,
    n_users: int,
    n_orgs: int = 5,
    seed: int = 7,
    start: dt.date = dt.date(2026, 10, 1),
    days: int = 30,
    defect_rate: float = 0.02,
) -> str:
    """Writes raw consent signals under ``path`` and returns the path.

    ``fmt="json"`` writes JSON lines; ``fmt="csv"`` writes one purpose choice per
    line with the header ``org_id,user_id,ts,purpose,granted,source``. The other
    arguments are those of :func:`generate_raw_consent`.
    """
    path = str(path)
    shape = {"n_users": n_users, "n_orgs": n_orgs, "seed": seed, "start": start, "days": days}
    if fmt == "json":
        generate_raw_consent(spark, policy, defect_rate=defect_rate, **shape).write.mode("overwrite").text(path)
    elif fmt == "csv":
        choices = _consent_choices(spark, policy, **shape)
        header = spark.createDataFrame([(0, "org_id,user_id,ts,purpose,granted,source")], "order int, value string")
        lines = header.unionByName(_csv_lines(choices, seed, defect_rate))
        lines.orderBy("order").coalesce(1).select("value").write.mode("overwrite").text(path)
    else:
        raise ValueError(f"unknown raw consent format {fmt!r}; expected 'json' or 'csv'")
    return path


def generate_user_events(
    spark: SparkSession,
    *,
    n_rows: int,
    n_users: int,
    n_orgs: int = 5,
    seed: int = 7,
    end: dt.date = dt.date(2026, 11, 26),
    days: int = 60,
) -> DataFrame:
    """The story's ``user_events`` fact table: org_id, user_id, event_type, event_site, event_day.

    Users are drawn uniformly; each org has 12 sites; event_day spans ``days`` days
    ending at ``end``.
    """
    user_index = F.floor(_uniform(seed, "user") * n_users).cast("long")
    events = spark.range(n_rows).select("id", user_index.alias("user_index"))
    return events.select(
        _org_of_user(n_orgs, F.col("user_index")).alias("org_id"),
        _user_id(F.col("user_index")).alias("user_id"),
        _pick(EVENT_TYPES, _uniform(seed, "type")).alias("event_type"),
        F.concat(F.lit("site-"), F.lpad(F.floor(_uniform(seed, "site") * 12).cast("string"), 2, "0")).alias("event_site"),
        F.date_sub(F.lit(end.isoformat()).cast("date"), F.floor(_uniform(seed, "day") * days).cast("int")).alias("event_day"),
    )


def _email(seed: int) -> Column:
    first = _pick(_FIRST_NAMES, _uniform(seed, "first", "user_index"))
    last = _pick(_LAST_NAMES, _uniform(seed, "last", "user_index"))
    domain = _pick(_DOMAINS, _uniform(seed, "domain", "user_index"))
    local = F.concat(first, F.lit("."), last, F.col("user_index").cast("string"))
    return F.concat(F.when(_uniform(seed, "case", "user_index") < 0.2, F.initcap(local)).otherwise(local), F.lit("@"), domain)


def generate_profiles(spark: SparkSession, *, n_users: int, n_orgs: int = 5, seed: int = 7) -> DataFrame:
    """A profile table with personal data, one row per user.

    Columns: org_id, user_id, email, email_sha256 (sha256 of the trimmed,
    lower-cased email), gender, age_range, household_income, customer_status.
    """
    users = spark.range(n_users).select(F.col("id").alias("user_index"))
    email = _email(seed)
    return users.select(
        _org_of_user(n_orgs, F.col("user_index")).alias("org_id"),
        _user_id(F.col("user_index")).alias("user_id"),
        email.alias("email"),
        F.sha2(F.lower(F.trim(email)), 256).alias("email_sha256"),
        _pick(_GENDERS, _uniform(seed, "gender", "user_index")).alias("gender"),
        _pick(_AGE_RANGES, _uniform(seed, "age", "user_index")).alias("age_range"),
        _pick(_INCOMES, _uniform(seed, "income", "user_index")).alias("household_income"),
        _pick(_STATUSES, _uniform(seed, "status", "user_index")).alias("customer_status"),
    )


def generate_raw_logs(
    spark: SparkSession, *, n_rows: int, n_users: int, n_orgs: int = 5, seed: int = 7, end: dt.date = dt.date(2026, 11, 26)
) -> DataFrame:
    """Raw web/app log records holding user ids, IPs and, on logins, emails.

    Columns: ts, org_id, user_id, event, page, email (null except on logins) and
    a nested ``context`` struct with device_id, ip and user_agent. Written with
    ``DataFrame.write.json`` each record is one JSON line and null emails are left out.
    """
    user_index = F.floor(_uniform(seed, "log-user") * n_users).cast("long")
    rows = spark.range(n_rows).select("id", user_index.alias("user_index"))
    ip = F.concat_ws(
        ".", *[F.floor(_uniform(seed, f"ip{i}") * 254 + 1).cast("int").cast("string") for i in range(4)]
    )
    is_login = _uniform(seed, "login") < 0.05
    seconds = (_uniform(seed, "log-ts") * 86400 * 7).cast("long")
    end_ts = F.lit(dt.datetime.combine(end, dt.time()).isoformat()).cast("timestamp")
    return rows.select(
        _ts_string(F.timestamp_seconds(F.unix_seconds(end_ts) - seconds)).alias("ts"),
        _org_of_user(n_orgs, F.col("user_index")).alias("org_id"),
        _user_id(F.col("user_index")).alias("user_id"),
        F.when(is_login, "login").otherwise("page_view").alias("event"),
        F.concat(F.lit("/p/"), F.floor(_uniform(seed, "page") * 500).cast("string")).alias("page"),
        F.when(is_login, _email(seed)).alias("email"),
        F.struct(
            F.concat(F.lit("d-"), F.sha2(F.col("user_index").cast("string"), 256).substr(1, 16)).alias("device_id"),
            ip.alias("ip"),
            _pick(("Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (iPhone)", "okhttp/4.12"), _uniform(seed, "ua")).alias("user_agent"),
        ).alias("context"),
    )


def generate_demo_data(spark: SparkSession, cfg: KetchConfig, *, n_users: int = 20_000, seed: int = 7) -> dict[str, str]:
    """Writes the demo's inputs under ``<warehouse>/raw`` and ``<warehouse>/lake``.

    Returns:
        Paths by name: consent_json, consent_csv, user_events (Delta), profiles
        (Delta), profiles_parquet (Parquet partitioned by org_id), logs (gzip JSON lines).
    """
    policy = cfg.policy()
    paths = {
        "consent_json": cfg.path("raw/consent/json"),
        "consent_csv": cfg.path("raw/consent/csv"),
        "user_events": cfg.path("lake/user_events"),
        "profiles": cfg.path("lake/profiles"),
        "profiles_parquet": cfg.path("lake/profiles_parquet"),
        "logs": cfg.path("raw/logs"),
    }
    profiles = generate_profiles(spark, n_users=n_users, seed=seed)
    writes = [
        lambda: write_raw_consent(spark, policy, paths["consent_json"], fmt="json", n_users=n_users, seed=seed),
        lambda: write_raw_consent(spark, policy, paths["consent_csv"], fmt="csv", n_users=max(1, n_users // 10),
                                  seed=seed + 1),
        lambda: generate_user_events(spark, n_rows=n_users * 25, n_users=n_users, seed=seed).write.format(
            "delta").mode("overwrite").partitionBy("event_day").save(paths["user_events"]),
        lambda: profiles.write.format("delta").mode("overwrite").save(paths["profiles"]),
        lambda: profiles.write.mode("overwrite").partitionBy("org_id").parquet(paths["profiles_parquet"]),
        lambda: generate_raw_logs(spark, n_rows=n_users * 5, n_users=n_users, seed=seed).write.mode(
            "overwrite").option("compression", "gzip").json(paths["logs"]),
    ]
    # The datasets are independent: small jobs from several threads keep both cores busy
    # while each job's driver-side planning and commit run.
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="ketch-datagen") as pool:
        for done in [pool.submit(write) for write in writes]:
            done.result()
    return paths
