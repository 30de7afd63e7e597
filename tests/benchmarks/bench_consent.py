"""Consent benchmark: incremental vs full compaction, history growth, TC decode native vs UDF.

Shape (the story's tag and SDKs): a signature rides on many hits, so most
events repeat the user's current choice. Every hit carries the full signature
(one event row per active purpose); users' activity is skewed (a few heavy
users, a long tail); each (user, purpose) changes its mind every 20-200 days,
so a few percent of the events are real changes. Daily batches of history, a
new day compacted after 10, 30 and 90 days.

(a) incremental compaction of a new day vs a full rebuild, at 33 and 93 days, ratio;
(b) incremental compaction of one day after 30 and after 90 days vs after 10 days, ratio;
(c) decoding TC strings: a Python UDF with iab-tcf vs native expressions, ratio;
(floor) the least an incremental run must do, as plain Spark jobs on the same
    new day (read its events once through the change feed, reduce them per
    user, join the touched users' state rows, write the changed rows as
    Parquet), timed just before the incremental run; the run over the floor, ratio.

Each point of (a), (b) and (floor) is the median of three runs: three new days,
each appended then compacted (and three full rebuilds of the same history).

(c) runs a Python UDF whose workers import iab_tcf: run.py points
``PYSPARK_PYTHON`` at its own interpreter (the project's virtualenv).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import statistics
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ketch_spark.clock import utc_now
from ketch_spark.config import KetchConfig
from ketch_spark.consent.compact import applied_events_version, apply_choices, compact_consent, user_choices
from ketch_spark.consent.sources import append_events
from ketch_spark.consent.tcf import tc_fields
from ketch_spark.datagen import org_ids
from ketch_spark.tables import read_table, table_path, table_version
from timing import RunTiming

START = dt.date(2026, 10, 1)
#: New days compacted at each history length (and full rebuilds of each history): figures are their medians.
DAYS_PER_POINT = 3
_SOURCES = ("js_tag", "ios_sdk", "android_sdk", "api")


def _uniform(salt: str, *cols) -> F.Column:
    h = F.xxhash64(F.lit(salt), *cols)
    return F.pmod(h, F.lit(1_000_003)) / F.lit(1_000_003.0)


def signal_events(spark: SparkSession, cfg: KetchConfig, *, day: int, n_users: int, events_per_day: int, n_orgs: int = 5) -> DataFrame:
    """One day of consent events (consent_events columns) shaped like tag/SDK traffic."""
    policy = cfg.policy()
    purposes = policy.active
    hits = events_per_day // len(purposes)
    day_start = dt.datetime.combine(START + dt.timedelta(days=day), dt.time())
    orgs = F.array(*[F.lit(o) for o in org_ids(n_orgs)])
    u = _uniform(f"user-{day}", F.col("id"))
    user_index = F.floor(u * u * n_users).cast("long")  # skewed: heavy users and a long tail
    hit_df = spark.range(hits).select(
        user_index.alias("user_index"),
        (F.lit(day_start) + F.make_dt_interval(secs=(_uniform(f"ts-{day}", F.col("id")) * 86399).cast("int"))).alias("event_ts"),
        F.element_at(F.array(*[F.lit(s) for s in _SOURCES]), (F.pmod(F.col("id"), F.lit(len(_SOURCES))) + 1).cast("int")).alias("source"),
    )
    purpose_arr = F.array(*[F.struct(F.lit(p.name).alias("name"), F.lit(p.bit).alias("bit")) for p in purposes])
    rows = hit_df.select("*", F.explode(purpose_arr).alias("p"))
    period = (F.floor(_uniform("period", F.col("user_index"), F.col("p.bit")) * 180) + 20).cast("int")
    offset = F.floor(_uniform("offset", F.col("user_index"), F.col("p.bit")) * 200).cast("int")
    flips = F.floor((F.lit(day) + offset) / period).cast("int")
    base = _uniform("base", F.col("user_index"), F.col("p.bit")) < 0.6
    granted = F.when(flips % 2 == 0, base).otherwise(~base)
    org = F.element_at(orgs, (F.pmod(F.col("user_index"), F.lit(n_orgs)) + 1).cast("int"))
    return rows.select(
        org.alias("org_id"),
        F.concat(F.lit("u-"), F.col("user_index").cast("string")).alias("user_id"),
        F.col("p.name").alias("purpose"),
        F.col("p.bit").cast("int").alias("purpose_bit"),
        granted.alias("granted"),
        F.col("event_ts"),
        F.col("source"),
        F.lit(f"day-{day:03d}").alias("batch_id"),
        F.lit(day_start + dt.timedelta(days=1)).alias("ingested_at"),
        F.to_date("event_ts").alias("event_date"),
    )


def _append_day(spark: SparkSession, cfg: KetchConfig, day: int, n_users: int, events_per_day: int) -> None:
    append_events(spark, cfg, signal_events(spark, cfg, day=day, n_users=n_users, events_per_day=events_per_day), f"day-{day:03d}")


def _floor_seconds(spark: SparkSession, cfg: KetchConfig, out: Path) -> float:
    """Seconds of the floor of the next incremental run (see the module docstring); commits nothing."""
    policy = cfg.policy()
    bits = sorted(p.bit for p in policy.purposes.values())
    applied, upto = applied_events_version(spark, cfg), table_version(spark, cfg, "consent_events")
    started = time.perf_counter()
    events = (
        spark.read.format("delta").option("readChangeFeed", "true")
        .option("startingVersion", applied + 1).option("endingVersion", upto)
        .load(table_path(cfg, "consent_events")).where(F.col("_change_type") == "insert")
        .select("org_id", "user_id", "purpose_bit", "granted", "event_ts")
    )
    rows = apply_choices(user_choices(events, bits), read_table(spark, cfg, "consent_state"), bits, policy.n_words, utc_now())
    rows.where("changed").drop("is_new", "events", "changed").write.mode("overwrite").parquet(str(out))
    return time.perf_counter() - started


def _timed(fn):
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def _tc_strings(n_distinct: int) -> list[str]:
    path = Path(__file__).resolve().parent.parent / "tcf_encode.py"
    spec = importlib.util.spec_from_file_location("ketch_bench_tcf_encode", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base = dt.datetime(2026, 1, 1)
    return [
        module.encode_tc(
            created=base + dt.timedelta(minutes=i),
            last_updated=base + dt.timedelta(minutes=2 * i),
            purposes_consent={p for p in range(1, 12) if (i >> p) & 1},
            purposes_li={p for p in range(2, 12) if (i >> (p + 1)) & 1},
            cmp_id=i % 4000,
        )
        for i in range(n_distinct)
    ]


def _decode_benchmark(spark: SparkSession, n_strings: int) -> tuple[float, float]:
    from pyspark.sql.functions import udf

    strings = _tc_strings(1000)
    source = spark.range(n_strings).select(
        F.element_at(F.array(*[F.lit(s) for s in strings]), (F.col("id") % len(strings) + 1).cast("int")).alias("tc_string")
    ).localCheckpoint()
    source.count()

    def native() -> tuple:
        tc = tc_fields("tc_string")
        return tuple(source.select(tc.alias("tc")).agg(
            F.sum("tc.purposes_consent"), F.sum("tc.purposes_li_transparency"), F.max("tc.last_updated"), F.sum(F.col("tc.valid").cast("int"))
        ).head())

    @udf("struct<valid:boolean,purposes_consent:int,purposes_li_transparency:int,last_updated:timestamp>")
    def decode_udf(value):
        from iab_tcf import decode_v2

        try:
            consent = decode_v2(value)
        except Exception:  # noqa: BLE001 - the reference decoder raises many kinds
            return (False, None, None, None)
        bits = lambda flags: sum(1 << (24 - p) for p, on in flags.items() if on)  # noqa: E731
        return (consent.version == 2, bits(consent.purposes_consent), bits(consent.purposes_legitimate_interests), consent.last_updated)

    def with_udf() -> tuple:
        return tuple(source.select(decode_udf("tc_string").alias("tc")).agg(
            F.sum("tc.purposes_consent"), F.sum("tc.purposes_li_transparency"), F.max("tc.last_updated"), F.sum(F.col("tc.valid").cast("int"))
        ).head())

    native()  # warm-up: code generation
    native_seconds, native_value = _timed(native)
    udf_seconds, udf_value = _timed(with_udf)
    assert native_value[:2] == udf_value[:2] and native_value[3] == udf_value[3], (native_value, udf_value)
    return native_seconds, udf_seconds


def _why_a(late_seconds: float, late_result, full_seconds: float, full_result, days: int) -> str:  # noqa: ANN001
    """Where the incremental run's time goes, and the history at which (a) would reach 10."""
    commit = late_result.commit_seconds
    per_day = full_seconds / days
    return (
        f"Where the incremental run's time goes ({days} days): of its {late_seconds:.1f} s, {commit:.1f} s is the Delta"
        f" MERGE of {late_result.users_changed:,} changed rows into a {full_result.users_changed:,}-row state (three"
        " passes over the state: find the touched files, write the changed rows, write the deletion vectors; at this"
        " size each is bound by per-job fixed costs, not data); the other steps are in the note above. The floor"
        " computes and writes the same rows without a commit, so the MERGE alone costs about the floor again. The"
        " rebuild is one hash aggregate over"
        f" {full_result.events_read:,} events plus an overwrite ({full_seconds:.1f} s, ~{per_day:.2f} s per day of"
        " history). The incremental run does not grow with the history (b) while the rebuild grows linearly, so at"
        f" this event rate (a) reaches 10 at about {10 * late_seconds / per_day:.0f} days of history (a linear"
        " estimate from this run)."
    )


#: Steps of an incremental run timed by the step clock (see the notes).
_COMPACT_STEPS = (
    ("ketch_spark.consent.compact", "_applied", "applied version (Delta log)"),
    ("ketch_spark.consent.compact", "_incremental_rows", "change feed read, reduced, joined to the state, checkpointed"),
    ("ketch_spark.consent.compact", "_counts", "counts and key-set size changes"),
    ("ketch_spark.consent.compact", "recorded_state", "sizes recorded by the last commit (history)"),
    ("ketch_spark.consent.compact", "_merge_changes", "MERGE"),
    ("ketch_spark.consent.compact", "_compact_state_files", "OPTIMIZE check"),
)


def _compact_new_day(spark: SparkSession, cfg: KetchConfig, day: int, n_users: int, events_per_day: int,
                     workdir: Path, timing: RunTiming | None = None) -> dict:
    """Appends ``day``, measures the floor, then the incremental run that applies it (under ``timing``'s clock)."""
    _append_day(spark, cfg, day, n_users, events_per_day)
    floor = _floor_seconds(spark, cfg, workdir / f"floor-{day}")
    def compact() -> object:
        return compact_consent(spark, cfg)

    seconds, result = _timed(compact if timing is None else lambda: timing.run(compact))
    return {"seconds": seconds, "result": result, "floor": floor}


def _compact_new_days(spark: SparkSession, cfg: KetchConfig, first_day: int, n_users: int, events_per_day: int,
                      workdir: Path) -> dict:
    """:data:`DAYS_PER_POINT` new days, each appended and compacted: medians of their runs.

    ``result`` is the run of the median time; ``over_floor`` the median of the
    per-day ratios (each day's run over the floor measured just before it);
    ``steps`` the seconds of each step, mean per run.
    """
    timing = RunTiming(_COMPACT_STEPS)
    runs = [_compact_new_day(spark, cfg, day, n_users, events_per_day, workdir, timing)
            for day in range(first_day, first_day + DAYS_PER_POINT)]
    middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {
        "steps": timing.clock.describe(timing.total, runs=len(runs)),
        "seconds": middle["seconds"],
        "result": middle["result"],
        "floor": statistics.median(r["floor"] for r in runs),
        "over_floor": statistics.median(r["seconds"] / r["floor"] for r in runs),
        "all": [round(r["seconds"], 2) for r in runs],
    }


def _full_rebuilds(spark: SparkSession, cfg: KetchConfig) -> tuple[float, object]:
    """Median seconds of :data:`DAYS_PER_POINT` full rebuilds of the same history, and the last one's result."""
    runs = [_timed(lambda: compact_consent(spark, cfg, full=True)) for _ in range(DAYS_PER_POINT)]
    return statistics.median(seconds for seconds, _ in runs), runs[-1][1]


def _append_days(spark: SparkSession, cfg: KetchConfig, days: range, n_users: int, events_per_day: int) -> None:
    """Appends ``days``, compacting every 10 days as a daily job would have (untimed)."""
    for day in days:
        _append_day(spark, cfg, day, n_users, events_per_day)
        if day % 10 == 9:
            compact_consent(spark, cfg)
    compact_consent(spark, cfg)


def run(spark: SparkSession, cfg: KetchConfig, workdir: Path, quick: bool) -> dict:
    n_users, events_per_day, n_strings = (5_000, 14_000, 50_000) if quick else (200_000, 400_000, 1_000_000)
    early, mid, late = (3, 6, 9) if quick else (10, 30, 90)
    spark.conf.set("spark.sql.shuffle.partitions", "4")
    _append_days(spark, cfg, range(early - 1), n_users, events_per_day)
    # warm-up: the first incremental run (and the floor's jobs) also pay Spark's code generation
    _compact_new_day(spark, cfg, early - 1, n_users, events_per_day, workdir)
    runs = {early: _compact_new_days(spark, cfg, early, n_users, events_per_day, workdir)}
    fulls, history = {}, {}
    for start, end in ((early + DAYS_PER_POINT, mid), (mid + DAYS_PER_POINT, late)):
        _append_days(spark, cfg, range(start, end), n_users, events_per_day)
        runs[end] = _compact_new_days(spark, cfg, end, n_users, events_per_day, workdir)
        history[end] = end + DAYS_PER_POINT
        fulls[end] = _full_rebuilds(spark, cfg)
    native_seconds, udf_seconds = _decode_benchmark(spark, n_strings)
    figures: dict[str, object] = {}
    for days in (mid, late):
        figures[f"a_full_over_incremental_{history[days]}_days"] = round(fulls[days][0] / runs[days]["seconds"], 3)
    for days in (mid, late):
        figures[f"b_incremental_after_{days}_over_after_{early}_days"] = round(runs[days]["seconds"] / runs[early]["seconds"], 3)
    for days in (early, mid, late):
        figures[f"incremental_over_floor_after_{days}_days"] = round(runs[days]["over_floor"], 3)
    figures["c_tc_decode_udf_over_native"] = round(udf_seconds / native_seconds, 3)
    for days in (early, mid, late):
        figures[f"incremental_seconds_after_{days}_days"] = round(runs[days]["seconds"], 2)
        figures[f"incremental_merge_seconds_after_{days}_days"] = round(runs[days]["result"].commit_seconds, 2)
        figures[f"floor_seconds_after_{days}_days"] = round(runs[days]["floor"], 2)
    for days in (mid, late):
        figures[f"full_seconds_{history[days]}_days"] = round(fulls[days][0], 2)
    figures["tc_native_seconds"] = round(native_seconds, 2)
    figures["tc_udf_seconds"] = round(udf_seconds, 2)
    notes = [
        f"{n_users:,} users, {events_per_day:,} event rows a day (a full signature per hit), history up to"
        f" {history[late]} days, compacted every 10 days; {n_strings:,} TC strings (1,000 distinct) for (c).",
    ]
    for days in (early, mid, late):
        r = runs[days]["result"]
        notes.append(
            f"new days after {days} days ({DAYS_PER_POINT} days, each appended then compacted: {runs[days]['all']} s;"
            f" the median's run): {r.events_read:,} events, {r.users_touched:,} users touched,"
            f" {r.users_changed:,} state rows written ({r.users_changed / max(1, r.users_touched):.0%}: a repeat with a"
            " later event_ts moves purpose_ts, so it is a change of the row); seconds per step, mean per run:"
            f" {runs[days]['steps']}."
        )
    for days in (mid, late):
        notes.append(f"full rebuild at {history[days]} days (median of {DAYS_PER_POINT}) read"
                     f" {fulls[days][1].events_read:,} events into {fulls[days][1].users_changed:,} rows.")
    notes += [
        f"Each figure is the median of {DAYS_PER_POINT} runs on a shared 2-core machine (compaction cannot be repeated"
        " on the same batch, it is idempotent: each run applies a new day); the floor ratio is the median of each"
        " day's run over the floor measured just before it. The timed runs come after an untimed incremental run,"
        " so none pays Spark's first code generation.",
        _why_a(runs[late]["seconds"], runs[late]["result"], fulls[late][0], fulls[late][1], history[late]),
    ]
    return {
        "figures": figures,
        "targets": {
            f"a_full_over_incremental_{history[late]}_days": ">= 10",
            f"b_incremental_after_{late}_over_after_{early}_days": "<= 1.3",
            f"b_incremental_after_{mid}_over_after_{early}_days": "<= 1.3",
            f"incremental_over_floor_after_{late}_days": "<= 1.5",
            f"incremental_over_floor_after_{mid}_days": "<= 1.5",
            "c_tc_decode_udf_over_native": ">= 5",
        },
        "notes": notes,
    }
