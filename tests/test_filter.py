"""consent_filter, purpose-declared jobs and SQL views: semantics, plans, errors, snapshots.

State rows are mostly built inline with the contract's schema (tables.py
"consent_state") and written with a Delta append, so these tests do not depend on
compaction; the tests of a rebuilt warehouse and of trimmed ids write the state
the way users do, with ingest_consent and compact_consent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import time

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from ketch_spark import tables
from ketch_spark.config import FilterSettings
from ketch_spark.consent.compact import compact_consent
from ketch_spark.consent.filter import (
    consent_filter,
    consent_key_set,
    last_filter_info,
    purpose,
    register_consent_views,
    release_key_sets,
)
from ketch_spark.extensions import KEPT_KEY_SET_PREFIX as KEPT
from ketch_spark.extensions import KEPT_RELATIONS_CONF, extension_active, kept_relation_count
from ketch_spark.consent.sources import ingest_consent
from ketch_spark.errors import ConfigError, SchemaError, TableNotFoundError, UnknownPurposeError
from ketch_spark.tables import ensure_table, read_table, table_path, table_spec
from conftest import needs_extension
from state_rows import state_row

ANALYTICS = 1  # consent basis
DATA_SALE = 5  # legitimate interest
PRODUCT = 6  # legitimate interest
ORG_A, ORG_B = "0x1F3A00C1", "0x1F3B00C2"
FACT_SCHEMA = "row int, org_id string, user_id string, event_site string"




def state_df(spark, rows):
    return spark.createDataFrame(rows, table_spec("consent_state").schema)


def append_state(spark, cfg, rows) -> None:
    ensure_table(spark, cfg, "consent_state")
    state_df(spark, rows).write.format("delta").mode("append").save(table_path(cfg, "consent_state"))


METADATA_LENGTH = "spark.sql.maxMetadataStringLength"


def plan_of(df) -> str:
    return df._jdf.queryExecution().executedPlan().toString()


def ran_no_job(spark, action) -> list[int]:
    """Runs ``action`` under a job group and returns the ids of the Spark jobs it started."""
    sc = spark.sparkContext
    group = f"no-job-{time.monotonic_ns()}"
    sc.setJobGroup(group, "errors must come before Spark work")
    try:
        action()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return list(sc.statusTracker().getJobIdsForGroup(group))


# Users of the module's state table (version 1) and what they chose.
STATE_V1 = [
    state_row(ORG_A, "granted", granted=[ANALYTICS, PRODUCT]),  # allowed for both
    state_row(ORG_A, "denied", denied=[ANALYTICS, PRODUCT]),  # objects to product_improvement
    state_row(ORG_A, "silent", granted=[DATA_SALE]),  # never chose analytics nor product_improvement
    state_row(ORG_B, "granted", denied=[ANALYTICS]),  # same user id, other org: denied
    state_row(ORG_B, "changes", granted=[ANALYTICS]),  # becomes a denial in version 2
]

FACTS = [
    (1, ORG_A, "granted", "s1"),
    (2, ORG_A, "granted", "s2"),  # duplicates are kept
    (3, ORG_A, "denied", "s1"),
    (4, ORG_A, "silent", "s1"),
    (5, ORG_A, "stranger", "s1"),  # unknown to the state
    (6, ORG_B, "granted", "s1"),
    (7, ORG_B, "changes", "s1"),
    (8, ORG_A, None, "s1"),  # null user
    (9, None, "granted", "s1"),  # null org
]


@pytest.fixture(scope="module")
def state_cfg(base_config, tmp_path_factory, spark):
    """A warehouse whose consent/state has version 1 (STATE_V1) and version 2 ("changes" denied analytics)."""
    cfg = base_config.with_warehouse(tmp_path_factory.mktemp("filter") / "warehouse")
    append_state(spark, cfg, STATE_V1)
    time.sleep(1.1)  # distinct commit timestamps for the as_of timestamp test
    DeltaTable.forPath(spark, table_path(cfg, "consent_state")).update(
        F.col("user_id") == "changes", {"granted": F.array(F.lit(0).cast("bigint"), F.lit(0).cast("bigint"))}
    )
    return cfg


@pytest.fixture(scope="module")
def facts_df(spark):
    return spark.createDataFrame(FACTS, FACT_SCHEMA)


def rows_of(df) -> list[int]:
    return sorted(r["row"] for r in df.select("row").collect())


def test_both_legal_bases_broadcast_plans_and_recorded_info(spark, state_cfg, facts_df):
    analytics = consent_filter("analytics", state_cfg)
    allowed_df = facts_df.transform(analytics)
    assert_df_equality(
        allowed_df, spark.createDataFrame([f for f in FACTS if f[0] in (1, 2)], FACT_SCHEMA), ignore_row_order=True
    )
    info = analytics.info
    assert info is last_filter_info()
    assert (info.purpose, info.legal_basis, info.join, info.strategy) == ("analytics", "consent", "left_semi", "broadcast")
    assert info.consent_version == 2 and info.state_location == table_path(state_cfg, "consent_state")
    assert info.estimate_source == "state_rows_upper_bound" and info.key_set_rows == len(STATE_V1)
    plan = plan_of(allowed_df)
    assert "BroadcastHashJoin" in plan and "LeftSemi" in plan and "SortMergeJoin" not in plan

    improvement = consent_filter("product_improvement", state_cfg)
    kept_df = facts_df.transform(improvement)
    # Objectors are dropped; users who never chose and strangers are kept; null ids are dropped.
    assert rows_of(kept_df) == [1, 2, 4, 5, 6, 7]
    assert (improvement.info.join, improvement.info.strategy) == ("left_anti", "broadcast")
    plan = plan_of(kept_df)
    assert "BroadcastHashJoin" in plan and "LeftAnti" in plan
    # One pass over the fact table: a single scan of its rows in the plan.
    assert plan.count("Scan ExistingRDD") + plan.count("LocalTableScan [row") == 1


def test_a_query_on_one_org_reads_only_that_org_of_the_state(state_cfg, facts_df):
    """Spark infers the query's org predicate onto the state scan, so Delta can skip other customers' files."""
    release_key_sets()  # a kept key set of the same version would stand in for the state scan
    not_kept = dataclasses.replace(state_cfg, filter=FilterSettings(key_set_cache_entries=0))
    one_org_df = facts_df.where(F.col("org_id") == ORG_A).transform(consent_filter("analytics", not_kept))
    spark = one_org_df.sparkSession
    spark.conf.set(METADATA_LENGTH, "10000")  # a scan's location is cut at 100 characters: long temp paths lose it
    try:
        plan = plan_of(one_org_df)
    finally:
        spark.conf.unset(METADATA_LENGTH)
    state_scan = [line for line in plan.splitlines() if "PushedFilters" in line and "consent/state" in line]
    assert state_scan and f"EqualTo(org_id,{ORG_A})" in state_scan[0]


def test_key_set_is_kept_from_its_second_use_per_state_version(spark, state_cfg, facts_df):
    release_key_sets()
    first = consent_filter("analytics", state_cfg)
    first_df = facts_df.transform(first)
    assert rows_of(first_df) == [1, 2] and first.info.key_set_reused is False
    assert KEPT not in plan_of(first_df)  # a one-query job reads (and prunes) the state only
    assert first.info.relation_kept is False

    second = consent_filter("analytics", state_cfg)
    second_df = facts_df.transform(second)
    assert second.info.key_set_reused is False and KEPT in plan_of(second_df)
    assert second.info.relation_kept is extension_active(spark)
    assert rows_of(second_df) == [1, 2]  # reads the state and fills the kept key set

    again = consent_filter("analytics", state_cfg)
    again_df = facts_df.where(F.col("org_id") == ORG_A).transform(again)
    assert again.info.key_set_reused is True and again.info.consent_version == 2
    plan = plan_of(again_df)
    assert f"KeptBroadcast {KEPT}" in plan and "BroadcastHashJoin" in plan and "LeftSemi" in plan
    assert "BroadcastExchange" not in plan
    assert rows_of(again_df) == [1, 2]

    # SQL views of the same version share it.
    register_consent_views(spark, state_cfg, ["analytics"])
    assert KEPT in plan_of(spark.table("consented_users_analytics"))
    facts_df.createOrReplaceTempView("kept_facts")
    sql_df = spark.sql(
        "SELECT f.* FROM kept_facts f LEFT SEMI JOIN consented_users_analytics c "
        "ON f.org_id = c.org_id AND f.user_id = c.user_id"
    )
    assert f"KeptBroadcast {KEPT}" in plan_of(sql_df) and rows_of(sql_df) == [1, 2]
    swapped_df = spark.sql(  # keys in the other order: a relation hashed on (user, org)
        "SELECT f.* FROM kept_facts f LEFT SEMI JOIN consented_users_analytics c "
        "ON f.user_id = c.user_id AND f.org_id = c.org_id"
    )
    assert f"KeptBroadcast {KEPT}" in plan_of(swapped_df) and rows_of(swapped_df) == [1, 2]

    # Another version (or purpose) has its own key set, with its own rows.
    for _ in range(3):
        at_v1 = consent_filter("analytics", state_cfg, as_of=1)
        assert rows_of(facts_df.transform(at_v1)) == [1, 2, 7]
        anti = consent_filter("product_improvement", state_cfg)
        assert rows_of(facts_df.transform(anti)) == [1, 2, 4, 5, 6, 7]
    assert at_v1.info.key_set_reused is True and anti.info.key_set_reused is True

    release_key_sets()
    off = dataclasses.replace(state_cfg, filter=FilterSettings(key_set_cache_entries=0))
    for _ in range(3):
        f = consent_filter("analytics", off)
        assert rows_of(facts_df.transform(f)) == [1, 2]
    assert f.info.key_set_reused is False and KEPT not in plan_of(facts_df.transform(f))

    # One entry: keeping version 1 dropped version 2.
    one = dataclasses.replace(state_cfg, filter=FilterSettings(key_set_cache_entries=1))
    for as_of in (2, 2, 1, 1, 2):
        f = consent_filter("analytics", one, as_of=as_of)
        facts_df.transform(f)
    assert f.info.key_set_reused is False
    assert release_key_sets() == 1  # version 1's key set was still kept


@needs_extension
def test_kept_key_set_serves_one_broadcast_relation_per_org_until_released(
    spark, base_config, state_cfg, facts_df, tmp_path
):
    release_key_sets()
    assert kept_relation_count(spark) == 0

    def one_org(org, cfg=state_cfg, purpose_name="analytics"):
        f = consent_filter(purpose_name, cfg)
        return f, facts_df.where(F.col("org_id") == org).transform(f)

    for _ in range(2):
        rows_of(one_org(ORG_A)[1])  # the second use keeps the key set and builds ORG_A's relation
    assert kept_relation_count(spark) == 1
    f, org_a_df = one_org(ORG_A)
    assert f.info.key_set_reused and f.info.relation_kept
    assert rows_of(org_a_df) == [1, 2] and kept_relation_count(spark) == 1  # probed, not rebuilt
    assert rows_of(one_org(ORG_B)[1]) == [] and kept_relation_count(spark) == 2  # another build-side filter

    anti, anti_df = one_org(ORG_A, purpose_name="product_improvement")
    rows_of(anti_df)
    anti, anti_df = one_org(ORG_A, purpose_name="product_improvement")
    assert "LeftAnti" in plan_of(anti_df) and f"KeptBroadcast {KEPT}" in plan_of(anti_df)
    assert rows_of(anti_df) == [1, 2, 4, 5] and kept_relation_count(spark) == 3

    # The session setting turns kept relations off: Spark's own broadcast, same rows.
    spark.conf.set(KEPT_RELATIONS_CONF, "false")
    try:
        f, off_df = one_org(ORG_A)
        assert f.info.key_set_reused and not f.info.relation_kept
        assert "BroadcastExchange" in plan_of(off_df) and "KeptBroadcast" not in plan_of(off_df)
        assert rows_of(off_df) == [1, 2]
    finally:
        spark.conf.unset(KEPT_RELATIONS_CONF)

    # Key sets leaving the LRU take their relations along; a new state version gets new ones.
    own = dataclasses.replace(
        base_config.with_warehouse(tmp_path / "warehouse"), filter=FilterSettings(key_set_cache_entries=1)
    )
    append_state(spark, own, STATE_V1)
    for _ in range(2):
        f, own_df = one_org(ORG_A, cfg=own)
        assert rows_of(own_df) == [1, 2]
    assert kept_relation_count(spark) == 1  # the three relations of state_cfg's key sets are gone
    append_state(spark, own, [state_row(ORG_A, "stranger", granted=[ANALYTICS])])
    for _ in range(3):
        g, new_df = one_org(ORG_A, cfg=own)
        assert rows_of(new_df) == [1, 2, 5]
    assert g.info.consent_version == f.info.consent_version + 1 and g.info.relation_kept
    assert kept_relation_count(spark) == 1
    assert release_key_sets() == 1 and kept_relation_count(spark) == 0


def test_shuffle_join_above_the_bound_and_exact_measure_between(spark, state_cfg, facts_df):
    tiny = dataclasses.replace(state_cfg, filter=FilterSettings(broadcast_max_bytes=1))
    shuffled = consent_filter("analytics", tiny)
    shuffled_df = facts_df.transform(shuffled)
    assert (shuffled.info.strategy, shuffled.info.estimate_source) == ("shuffle", "key_set_scan")
    assert shuffled.info.key_set_rows == 1  # only ("0x1F3A00C1", "granted") grants analytics in version 2
    plan = plan_of(shuffled_df)
    assert "SortMergeJoin" in plan and "LeftSemi" in plan and "BroadcastHashJoin" not in plan
    assert rows_of(shuffled_df) == [1, 2]

    anti = consent_filter("product_improvement", tiny)
    anti_df = facts_df.transform(anti)
    assert "SortMergeJoin" in plan_of(anti_df) and "LeftAnti" in plan_of(anti_df)
    assert rows_of(anti_df) == [1, 2, 4, 5, 6, 7]

    # Between the exact size and the rough upper bound: measured, then broadcast.
    exact = shuffled.info.key_set_bytes
    middle = dataclasses.replace(state_cfg, filter=FilterSettings(broadcast_max_bytes=exact))
    measured = consent_filter("analytics", middle)
    measured_df = facts_df.transform(measured)
    assert (measured.info.strategy, measured.info.estimate_source, measured.info.key_set_bytes) == (
        "broadcast", "key_set_scan", exact,
    )
    assert "BroadcastHashJoin" in plan_of(measured_df)


def test_as_of_pins_a_version_or_timestamp(spark, state_cfg, facts_df):
    history = {
        r.version: r.timestamp
        for r in DeltaTable.forPath(spark, table_path(state_cfg, "consent_state")).history().collect()
    }
    at_v1 = consent_filter("analytics", state_cfg, as_of=1)
    assert rows_of(facts_df.transform(at_v1)) == [1, 2, 7]
    assert at_v1.info.consent_version == 1
    assert rows_of(facts_df.transform(consent_filter("analytics", state_cfg))) == [1, 2]

    at_time = consent_filter("analytics", state_cfg, as_of=str(history[1] + dt.timedelta(milliseconds=500)))
    assert rows_of(facts_df.transform(at_time)) == [1, 2, 7]
    assert at_time.info.consent_version == 1 == last_filter_info().consent_version

    with pytest.raises(ConfigError, match="versions go from 0 to 2"):
        facts_df.transform(consent_filter("analytics", state_cfg, as_of=9))
    with pytest.raises(ConfigError, match="not a timestamp"):
        facts_df.transform(consent_filter("analytics", state_cfg, as_of="last tuesday"))
    with pytest.raises(ConfigError, match="before the first version"):
        facts_df.transform(consent_filter("analytics", state_cfg, as_of="2001-01-01 00:00:00"))
    with pytest.raises(TypeError, match="as_of"):
        consent_filter("analytics", state_cfg, as_of=1.5)


def test_errors_come_before_any_spark_job(spark, cfg, state_cfg, facts_df, policy):
    with pytest.raises(UnknownPurposeError, match="telepathy.*advertising, analytics"):
        consent_filter("telepathy", state_cfg)
    with pytest.raises(TypeError, match="cfg=KetchConfig, or both consent="):
        consent_filter("analytics")
    with pytest.raises(TypeError, match="cfg=KetchConfig, or both consent="):
        consent_filter("analytics", consent=state_df(spark, STATE_V1))
    with pytest.raises(TypeError, match="KetchConfig"):
        consent_filter("analytics", spark)
    with pytest.raises(ConfigError, match="as_of"):
        consent_filter("analytics", consent=state_df(spark, STATE_V1), policy=policy, as_of=1)

    def missing_column():
        with pytest.raises(SchemaError, match=r"needs column\(s\) uid .*found: row, org_id, user_id, event_site"):
            facts_df.transform(consent_filter("analytics", state_cfg, user_col="uid"))

    def missing_table():
        with pytest.raises(TableNotFoundError, match="ketch-spark consent compact"):
            facts_df.transform(consent_filter("analytics", cfg))

    def bad_state_frame():
        with pytest.raises(SchemaError, match="granted, known"):
            facts_df.transform(consent_filter("analytics", consent=facts_df, policy=policy))

    for action in (missing_column, missing_table, bad_state_frame):
        assert ran_no_job(spark, action) == []


def test_custom_columns_integer_ids_and_state_dataframe(spark, policy):
    consent = state_df(spark, [state_row("7", "42", granted=[ANALYTICS]), state_row("7", "43", denied=[DATA_SALE])])
    facts = spark.createDataFrame([(7, 42, "a"), (7, 43, "b"), (8, 42, "c"), (7, None, "d")], "org int, uid bigint, v string")
    analytics = consent_filter("analytics", consent=consent, policy=policy, user_col="uid", org_col="org")
    assert_df_equality(
        facts.transform(analytics), spark.createDataFrame([(7, 42, "a")], "org int, uid bigint, v string"),
        ignore_row_order=True,
    )
    assert analytics.info.consent_version is None and analytics.info.state_location is None
    sale = consent_filter("data_sale", consent=consent, policy=policy, user_col="UID", org_col="Org")
    assert sorted(r.v for r in facts.transform(sale).collect()) == ["a", "c"]
    with pytest.raises(SchemaError, match="string or an integer"):
        spark.createDataFrame([(1.5, "x")], "org_id double, user_id string").transform(consent_filter("analytics", consent=consent, policy=policy))


def test_purpose_decorator_and_context(spark, state_cfg, facts_df, tmp_path):
    events_path = str(tmp_path / "events")
    facts_df.write.format("delta").save(events_path)

    @purpose("analytics")
    def site_audience(job, spark, cfg, path):
        events_df = job.read(path, spark=spark)
        again_df = job.read(facts_df)
        assert job.consent_version == 2
        return {"rows": events_df.count(), "again": again_df.count()}

    summary = site_audience(spark, state_cfg, events_path)
    assert summary["rows"] == 2 and summary["again"] == 2
    assert (summary["purpose"], summary["legal_basis"], summary["consent_version"]) == ("analytics", "consent", 2)
    assert [i["source"] for i in summary["inputs"]] == [events_path, "<DataFrame>"]
    assert {i["join"] for i in summary["inputs"]} == {"left_semi"}

    # A context pinned to version 1 reads every input at version 1.
    with purpose("analytics", state_cfg, as_of=1) as job:
        assert rows_of(job.read(facts_df)) == [1, 2, 7]
        renamed_df = facts_df.withColumnRenamed("user_id", "uid")
        assert sorted(r["row"] for r in job.apply(renamed_df, user_col="uid").collect()) == [1, 2, 7]
        assert job.summary({"purpose": "ignored"})["purpose"] == "analytics"
        assert job.consent_version == 1

    with pytest.raises(UnknownPurposeError):
        purpose("telepathy", state_cfg)

    @purpose("analytics")
    def no_cfg(job, df):
        return {"rows": job.read(df).count()}

    with pytest.raises(TypeError, match="cfg=KetchConfig"):
        no_cfg(facts_df)


def test_sql_views_give_the_filter_semantics(spark, state_cfg, facts_df):
    views = register_consent_views(spark, state_cfg, ["analytics", "product_improvement"])
    assert views.consent_version == 2
    assert views.views == {"analytics": "consented_users_analytics", "product_improvement": "objecting_users_product_improvement"}
    assert views.strategies == {"analytics": "broadcast", "product_improvement": "broadcast"}
    facts_df.createOrReplaceTempView("user_events")

    story_sql = spark.sql(
        """
        SELECT e.event_site, COUNT(DISTINCT e.user_id) AS users
        FROM user_events e
        LEFT SEMI JOIN consented_users_analytics c ON e.org_id = c.org_id AND trim(e.user_id) = c.user_id
        WHERE e.org_id = '0x1F3A00C1'
        GROUP BY e.event_site
        """
    )
    story_df = (
        facts_df.transform(consent_filter("analytics", state_cfg))
        .where(F.col("org_id") == ORG_A)
        .groupBy("event_site")
        .agg(F.countDistinct("user_id").alias("users"))
    )
    assert_df_equality(story_sql, story_df, ignore_row_order=True, ignore_nullable=True)
    assert "BroadcastHashJoin" in plan_of(story_sql)

    anti_sql = spark.sql(
        """
        SELECT e.* FROM user_events e
        LEFT ANTI JOIN objecting_users_product_improvement o ON e.org_id = o.org_id AND trim(e.user_id) = o.user_id
        WHERE e.org_id IS NOT NULL AND e.user_id IS NOT NULL AND e.org_id = trim(e.org_id)
        """
    )
    assert_df_equality(
        anti_sql, facts_df.transform(consent_filter("product_improvement", state_cfg)), ignore_row_order=True
    )

    tiny = dataclasses.replace(state_cfg, filter=FilterSettings(broadcast_max_bytes=1))
    assert register_consent_views(spark, tiny, ["analytics"], as_of=1).strategies == {"analytics": "shuffle"}
    old_sql = spark.sql(
        "SELECT e.row FROM user_events e LEFT SEMI JOIN consented_users_analytics c "
        "ON e.org_id = c.org_id AND e.user_id = c.user_id"
    )
    assert rows_of(old_sql) == [1, 2, 7]
    assert "SortMergeJoin" in plan_of(old_sql)


# ----------------------------------------------------------------------------- state written by the library


def consent_record(user, org=ORG_A, **purposes):
    """One raw consent event (the JSON shape of DESIGN), an hour ago."""
    ts = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"org_id": org, "user_id": user, "ts": ts, "purposes": purposes, "source": "api"}


def ingest_and_compact(spark, cfg, folder, records) -> None:
    """Writes ``records`` as a JSON-lines file in ``folder``, ingests and compacts them."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "consent.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    ingest_consent(spark, cfg, str(source), fmt="json", validate=False)
    compact_consent(spark, cfg)


def test_a_warehouse_rebuilt_at_the_same_path_never_gets_the_old_key_set(spark, cfg, tmp_path):
    """A notebook rerunning the demo: same path, same version numbers, another table (issue 14, item 1)."""
    release_key_sets()
    facts = spark.createDataFrame([(1, ORG_A, "first", "s"), (2, ORG_A, "second", "s")], FACT_SCHEMA)
    ingest_and_compact(spark, cfg, tmp_path / "run1", [consent_record("first", analytics=True),
                                                        consent_record("second", analytics=False)])
    for _ in range(3):  # the second use keeps the key set, the third is served from it
        before = consent_filter("analytics", cfg)
        assert rows_of(facts.transform(before)) == [1]
    assert before.info.key_set_reused

    shutil.rmtree(cfg.warehouse)
    ingest_and_compact(spark, cfg, tmp_path / "run2", [consent_record("first", analytics=False),
                                                        consent_record("second", analytics=True)])
    state = tables.current_version(spark, cfg, "consent_state")
    assert tables._version_from_sql(spark, state.location) == state  # the Connect reader names it alike
    for use in range(3):
        after = consent_filter("analytics", cfg)
        assert rows_of(facts.transform(after)) == [2], use
        assert after.info.key_set_reused is (use == 2)
    assert after.info.consent_version == before.info.consent_version  # the version number repeated
    assert after.info.consent_table_id == state.table_id != before.info.consent_table_id
    assert release_key_sets() == 1  # the old table's key set was dropped when the new one was seen


def test_user_ids_are_compared_trimmed_and_padded_org_ids_dropped(spark, cfg, tmp_path):
    """The identifier rule on the filter side: ingest trims, the filter trims the fact's user id."""
    ingest_and_compact(spark, cfg, tmp_path / "in", [
        consent_record(" x ", product_improvement=False),  # an objection, ingested from a padded id
        consent_record("g", analytics=True),  # a grant for "g"
    ])
    facts = spark.createDataFrame(
        [(1, ORG_A, "x", "s"), (2, ORG_A, " x ", "s"), (3, ORG_A, "y", "s"), (4, ORG_A, " g ", "s"),
         (5, ORG_A, "g", "s"), (6, f" {ORG_A}", "y", "s"), (7, f"{ORG_A} ", "g", "s")],
        FACT_SCHEMA,
    )
    objections_df = facts.transform(consent_filter("product_improvement", cfg))
    assert rows_of(objections_df) == [3, 4, 5]  # "x" and " x " removed; padded org ids dropped
    grants_df = facts.transform(consent_filter("analytics", cfg))
    assert rows_of(grants_df) == [4, 5]  # the grant for "g" keeps " g "
    for plan in (plan_of(objections_df), plan_of(grants_df)):
        assert "BroadcastHashJoin" in plan and "trim(user_id" in plan and "SortMergeJoin" not in plan
    one_org_df = facts.where(F.col("org_id") == ORG_A).transform(
        consent_filter("analytics", dataclasses.replace(cfg, filter=FilterSettings(key_set_cache_entries=0)))
    )
    # The org still narrows the state read (its scan is the one reading the bitmaps; long paths are cut in plans).
    state_scan = [line for line in plan_of(one_org_df).splitlines() if "PushedFilters" in line and "granted" in line]
    assert state_scan and f"EqualTo(org_id,{ORG_A})" in state_scan[0]


# ----------------------------------------------------------------------------- property test

ORGS = ["o1", "o2", None]
USERS = ["u1", "u2", "u3", "u4", "stranger", None]
bits_strategy = st.sets(st.sampled_from([ANALYTICS, PRODUCT]))
state_strategy = st.dictionaries(
    st.tuples(st.sampled_from(ORGS[:2]), st.sampled_from(USERS[:4])),
    st.tuples(bits_strategy, bits_strategy),  # (known, granted-among-known)
    max_size=8,
)
facts_strategy = st.lists(st.tuples(st.sampled_from(ORGS), st.sampled_from(USERS)), max_size=12)


def oracle(state, facts, bit, legal_basis) -> list[int]:
    """Rows a purpose may process, computed in plain Python from DESIGN's semantics."""
    kept = []
    for row, (org, user) in enumerate(facts):
        if org is None or user is None:
            continue
        known, granted = state.get((org, user), (set(), set()))
        chose, grant = bit in known, bit in (granted & known)
        allowed = grant if legal_basis == "consent" else not (chose and not grant)
        if allowed:
            kept.append(row)
    return kept


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=state_strategy, facts=facts_strategy)
def test_filter_equals_python_oracle(spark, policy, state, facts):
    rows = [state_row(org, user, granted=known & granted, denied=known - granted) for (org, user), (known, granted) in state.items()]
    consent = state_df(spark, rows)
    facts_df = spark.createDataFrame([(i, o, u, "s") for i, (o, u) in enumerate(facts)], FACT_SCHEMA)
    for name, bit, basis in (("analytics", ANALYTICS, "consent"), ("product_improvement", PRODUCT, "legitimate_interest")):
        kept = facts_df.transform(consent_filter(name, consent=consent, policy=policy))
        assert rows_of(kept) == oracle(state, facts, bit, basis), name


def test_key_set_of_each_basis(spark, policy):
    consent = state_df(spark, STATE_V1)
    grants = consent_key_set(consent, policy.purpose("analytics"))
    objections = consent_key_set(consent, policy.purpose("product_improvement"))
    assert sorted(tuple(r) for r in grants.collect()) == [(ORG_A, "granted"), (ORG_B, "changes")]
    assert sorted(tuple(r) for r in objections.collect()) == [(ORG_A, "denied")]


def test_compaction_records_key_set_sizes_so_a_first_filter_need_not_measure(spark, cfg, tmp_path, facts_df):
    from ketch_spark.consent.sources import append_events

    warehouse_cfg = cfg.with_warehouse(tmp_path / "warehouse")
    t0 = dt.datetime(2026, 11, 1, 12)
    policy = warehouse_cfg.policy()

    def events(rows, batch_id):
        data = [(org, user, purpose, policy.purposes[purpose].bit, granted, t0 + dt.timedelta(minutes=minute), "test",
                 batch_id, t0, t0.date()) for org, user, purpose, granted, minute in rows]
        schema = ("org_id string, user_id string, purpose string, purpose_bit int, granted boolean, event_ts timestamp, "
                  "source string, batch_id string, ingested_at timestamp, event_date date")
        append_events(spark, warehouse_cfg, spark.createDataFrame(data, schema), batch_id)

    events([(ORG_A, f"user-{i}", "analytics", i % 3 == 0, 1) for i in range(30)], "b-1")
    compact_consent(spark, warehouse_cfg)
    events([(ORG_A, "user-0", "analytics", False, 2), (ORG_A, "granted", "analytics", True, 2),
            (ORG_B, "granted", "analytics", True, 2)], "b-2")
    compact_consent(spark, warehouse_cfg)
    release_key_sets()

    def first_filter(bound):
        settings = dataclasses.replace(warehouse_cfg, filter=FilterSettings(broadcast_max_bytes=bound))
        f = consent_filter("analytics", settings)
        return f, rows_of(facts_df.transform(f))

    # 11 grants (user-3 .. user-27 but user-0 withdrew, plus "granted" in both orgs) of 32 rows:
    # the row-count bound (32 x 104 bytes) is above 1,000 bytes, the recorded size is not
    recorded, rows = first_filter(1_000)
    assert (recorded.info.strategy, recorded.info.estimate_source) == ("broadcast", "recorded_by_compaction")
    assert recorded.info.key_set_rows == 11 and rows == [1, 2, 6]
    measured_bytes = (read_table(spark, warehouse_cfg, "consent_state")
                      .where(F.col("user_id").isin("granted", *[f"user-{i}" for i in range(3, 30, 3)]))
                      .agg(F.sum(40 + F.ceil(F.octet_length("org_id") / 8) * 8 + F.ceil(F.octet_length("user_id") / 8) * 8))
                      .head()[0])
    assert recorded.info.key_set_bytes == measured_bytes

    # an erasure (DELETE) leaves the recorded size an upper bound; another writer's commit does not
    delta_state = DeltaTable.forPath(spark, table_path(warehouse_cfg, "consent_state"))
    delta_state.delete(F.col("user_id") == "user-3")
    assert first_filter(1_000)[0].info.estimate_source == "recorded_by_compaction"
    delta_state.update(F.col("user_id") == "user-6", {"updated_at": F.current_timestamp()})
    after_update, rows = first_filter(1_000)
    assert after_update.info.estimate_source == "key_set_scan" and rows == [1, 2, 6]
