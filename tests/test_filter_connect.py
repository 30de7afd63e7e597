"""consent_filter, purpose, the SQL views and as_of over Spark Connect, with the classic session's results.

Every scenario below runs twice on the same kind of state (written through the
session itself: a Delta write, then a SQL UPDATE): on the run's classic session,
and on a Spark Connect client of a local server (``spark_connect_server`` in
tests/services.py), and must give the same rows both times.

A Connect client cannot share a Python process with a classic session: pyspark
refuses to make a remote session while a classic one runs, and a remote session
switches ``pyspark.sql.functions`` to Spark Connect for the whole process. So
``test_scenarios_over_spark_connect`` runs this file again in a child pytest
whose ``python_functions`` is ``connect_*``: there only the ``connect_*``
functions are tests, and they reach the parent's server through
``KETCH_SPARK_CONNECT_URL`` (run alone, the child starts a server of its own).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ketch_spark.consent.filter import consent_filter, last_filter_info, register_consent_views, release_key_sets
from ketch_spark.consent.purposes import purpose
from ketch_spark.errors import ConfigError, TableNotFoundError
from ketch_spark.session import is_connect_session
from ketch_spark.tables import delta_history, delta_table_version, table_path, table_spec
from state_rows import state_row

URL_ENV = "KETCH_SPARK_CONNECT_URL"
REPO = Path(__file__).resolve().parent.parent

ANALYTICS, DATA_SALE, PRODUCT = 1, 5, 6  # consent; legitimate interest; legitimate interest
ORG_A, ORG_B = "0x1F3A00C1", "0x1F3B00C2"
FACT_SCHEMA = "row int, org_id string, user_id string, event_site string"
FACTS = [
    (1, ORG_A, "granted", "s1"),
    (2, ORG_A, " granted ", "s2"),  # the same user, padded: ids are compared trimmed
    (3, ORG_A, "denied", "s1"),
    (4, ORG_A, "silent", "s1"),
    (5, ORG_A, "stranger", "s1"),  # unknown to the state
    (6, ORG_B, "granted", "s1"),
    (7, ORG_B, "changes", "s1"),  # grants analytics in version 0, denies it in version 1
    (8, ORG_A, None, "s1"),
    (9, None, "granted", "s1"),
    (10, f" {ORG_A}", "granted", "s1"),  # a padded org id is dropped
]
ANALYTICS_ROWS = [1, 2]
ANALYTICS_V0_ROWS = [1, 2, 7]
PRODUCT_ROWS = [1, 2, 4, 5, 6, 7]




STATE = [
    state_row(ORG_A, "granted", granted=[ANALYTICS, PRODUCT]),
    state_row(ORG_A, "denied", denied=[ANALYTICS, PRODUCT]),
    state_row(ORG_A, "silent", granted=[DATA_SALE]),
    state_row(ORG_B, "granted", denied=[ANALYTICS]),
    state_row(ORG_B, "changes", granted=[ANALYTICS]),
]


def write_state(spark, cfg, rows) -> str:
    """Version 0: ``rows``; version 1, a second later: ORG_B's "changes" denies analytics."""
    path = table_path(cfg, "consent_state")
    schema = table_spec("consent_state").schema
    spark.createDataFrame(rows, schema).write.format("delta").save(path)
    time.sleep(1.1)  # distinct commit times for as_of by timestamp
    spark.sql(f"UPDATE delta.`{path}` SET granted = array(0L, 0L) WHERE user_id = 'changes'")
    return path


def rows_of(df) -> list[int]:
    return sorted(r["row"] for r in df.select("row").collect())


# ----------------------------------------------------------------------------- scenarios, run on both sessions


def both_legal_bases(spark, cfg, tmp_path) -> None:
    facts_df = spark.createDataFrame(FACTS, FACT_SCHEMA)
    analytics = consent_filter("analytics", cfg)
    assert rows_of(facts_df.transform(analytics)) == ANALYTICS_ROWS
    info = analytics.info
    assert (info.join, info.strategy, info.consent_version) == ("left_semi", "broadcast", 1)
    assert info.consent_table_id == delta_table_version(spark, table_path(cfg, "consent_state")).table_id
    improvement = consent_filter("product_improvement", cfg)
    assert rows_of(facts_df.transform(improvement)) == PRODUCT_ROWS
    assert improvement.info.join == "left_anti" and last_filter_info() is improvement.info
    own_state_df = spark.createDataFrame(STATE, table_spec("consent_state").schema)  # a pipeline's own snapshot
    passed = consent_filter("analytics", consent=own_state_df, policy=cfg.policy())
    assert rows_of(facts_df.transform(passed)) == ANALYTICS_V0_ROWS and passed.info.consent_version is None


def as_of_a_version_or_a_timestamp(spark, cfg, tmp_path) -> None:
    facts_df = spark.createDataFrame(FACTS, FACT_SCHEMA)
    at_v0 = consent_filter("analytics", cfg, as_of=0)
    assert rows_of(facts_df.transform(at_v0)) == ANALYTICS_V0_ROWS and at_v0.info.consent_version == 0
    half_second_after_v0 = (
        delta_history(spark, table_path(cfg, "consent_state"))
        .where(F.col("version") == 0)
        .select(F.date_format(F.col("timestamp") + F.expr("INTERVAL 500 MILLISECONDS"), "yyyy-MM-dd HH:mm:ss.SSS"))
        .head()[0]
    )
    at_time = consent_filter("analytics", cfg, as_of=half_second_after_v0)
    assert rows_of(facts_df.transform(at_time)) == ANALYTICS_V0_ROWS and at_time.info.consent_version == 0
    with pytest.raises(ConfigError, match="versions go from 0 to 1"):
        facts_df.transform(consent_filter("analytics", cfg, as_of=9))
    with pytest.raises(ConfigError, match="not a timestamp"):
        facts_df.transform(consent_filter("analytics", cfg, as_of="last tuesday"))
    with pytest.raises(TableNotFoundError, match="ketch-spark consent compact"):
        facts_df.transform(consent_filter("analytics", cfg.with_warehouse(tmp_path / "empty")))


def sql_views_and_purpose_jobs(spark, cfg, tmp_path) -> None:
    facts_df = spark.createDataFrame(FACTS, FACT_SCHEMA)
    views = register_consent_views(spark, cfg, ["analytics", "product_improvement"])
    assert views.consent_version == 1 and views.strategies["analytics"] == "broadcast"
    facts_df.createOrReplaceTempView("connect_user_events")
    semi_df = spark.sql(
        "SELECT e.row FROM connect_user_events e LEFT SEMI JOIN consented_users_analytics c "
        "ON e.org_id = c.org_id AND trim(e.user_id) = c.user_id"
    )
    assert rows_of(semi_df) == ANALYTICS_ROWS
    anti_df = spark.sql(
        "SELECT e.row FROM connect_user_events e LEFT ANTI JOIN objecting_users_product_improvement o "
        "ON e.org_id = o.org_id AND trim(e.user_id) = o.user_id "
        "WHERE e.org_id IS NOT NULL AND e.user_id IS NOT NULL AND e.org_id = trim(e.org_id)"
    )
    assert rows_of(anti_df) == PRODUCT_ROWS

    events_path = str(tmp_path / "events")
    facts_df.write.format("delta").save(events_path)

    @purpose("analytics")
    def audience(job, cfg, path):
        return {"rows": rows_of(job.read(path))}  # the active session reads the path

    summary = audience(cfg, events_path)
    assert summary["rows"] == ANALYTICS_ROWS and summary["consent_version"] == 1
    with purpose("analytics", cfg, as_of=0) as job:
        assert rows_of(job.read(facts_df)) == ANALYTICS_V0_ROWS and job.consent_version == 0


def kept_key_sets(spark, cfg, tmp_path) -> None:
    release_key_sets()
    facts_df = spark.createDataFrame(FACTS, FACT_SCHEMA)
    for use in range(3):  # kept from the second use, served from the third
        f = consent_filter("analytics", cfg)
        assert rows_of(facts_df.transform(f)) == ANALYTICS_ROWS
        assert f.info.key_set_reused is (use == 2)
    if is_connect_session(spark):
        assert f.info.relation_kept is False  # no session extension over Connect
    assert release_key_sets() == 1


def rebuilt_state(spark, cfg, tmp_path) -> None:
    """The warehouse deleted and rebuilt at the same path: the filter follows the new table."""
    release_key_sets()
    own = cfg.with_warehouse(tmp_path / "rebuilt")
    facts_df = spark.createDataFrame([(1, ORG_A, "first", "s"), (2, ORG_A, "second", "s")], FACT_SCHEMA)
    write_state(spark, own, [state_row(ORG_A, "first", granted=[ANALYTICS])])
    for _ in range(3):
        before = consent_filter("analytics", own)
        assert rows_of(facts_df.transform(before)) == [1]
    shutil.rmtree(own.warehouse)
    write_state(spark, own, [state_row(ORG_A, "second", granted=[ANALYTICS])])
    after = consent_filter("analytics", own)
    assert rows_of(facts_df.transform(after)) == [2]
    assert after.info.consent_version == before.info.consent_version
    assert after.info.consent_table_id != before.info.consent_table_id
    release_key_sets()


SCENARIOS = [both_legal_bases, as_of_a_version_or_a_timestamp, sql_views_and_purpose_jobs, kept_key_sets, rebuilt_state]
IDS = [scenario.__name__ for scenario in SCENARIOS]


# ----------------------------------------------------------------------------- the classic session


@pytest.fixture(scope="module")
def classic_cfg(spark, base_config, tmp_path_factory):
    cfg = base_config.with_warehouse(tmp_path_factory.mktemp("filter-classic") / "warehouse")
    write_state(spark, cfg, STATE)
    return cfg


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_scenario_on_the_classic_session(spark, classic_cfg, tmp_path, scenario):
    scenario(spark, classic_cfg, tmp_path)


@pytest.mark.slow  # a Spark Connect server and a child pytest: minutes; `make test-slow` (and CI) runs it
def test_scenarios_over_spark_connect(spark_connect_server):
    """Runs the ``connect_*`` functions of this file in a child pytest, against the server."""
    command = [sys.executable, "-m", "pytest", str(Path(__file__)), "-q", "-o", "python_functions=connect_*"]
    env = {**os.environ, URL_ENV: spark_connect_server.url}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = done.stdout + done.stderr
    tail = "\n".join(output.splitlines()[-60:])
    server_log = spark_connect_server.log_tail()
    assert done.returncode == 0, f"Connect scenarios failed:\n{tail}\n--- server log:\n{server_log}"
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) == len(SCENARIOS), tail


# ----------------------------------------------------------------------------- Spark Connect (child process only)


@pytest.fixture(scope="module")
def remote_spark(request):
    """A Spark Connect client of the parent's server (or of one started here when run alone)."""
    url = os.environ.get(URL_ENV) or request.getfixturevalue("spark_connect_server").url
    session = SparkSession.builder.remote(url).getOrCreate()
    assert is_connect_session(session)
    yield session
    release_key_sets()
    session.stop()


@pytest.fixture(scope="module")
def remote_cfg(remote_spark, base_config, tmp_path_factory):
    cfg = base_config.with_warehouse(tmp_path_factory.mktemp("filter-connect") / "warehouse")
    write_state(remote_spark, cfg, STATE)
    return cfg


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def connect_scenario(remote_spark, remote_cfg, tmp_path, scenario):
    scenario(remote_spark, remote_cfg, tmp_path)
