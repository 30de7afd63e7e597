"""A warehouse on s3a:// (moto on loopback): the whole chain as on a local disk, commits arbitrated in DynamoDB.

Delta reads its log store class from the SparkConf. The run's one session gets
it (with :func:`ketch_spark.log_store.log_store_settings` of an s3a config) for
this module's tables only: the setting is added to the live context's
configuration while the module runs and removed after it, so the s3a tables of
other modules keep Delta's default log store. The two-driver test starts its own
sessions with :func:`ketch_spark.session.spark_session`, as a job would.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F

from ketch_spark.catalog import AssetCatalog
from ketch_spark.config import DeltaSettings, LogStoreSettings
from ketch_spark.consent.compact import applied_events_version, compact_consent
from ketch_spark.consent.filter import consent_filter
from ketch_spark.consent.sources import ingest_consent
from ketch_spark.log_store import LOG_STORE_CLASS, LOG_STORE_SCHEME_KEY, log_store_settings
from ketch_spark.tables import delta_table, read_table, table_version

from services import AWS_ACCESS_KEY_ID, AWS_REGION, AWS_SECRET_ACCESS_KEY, SHORT_LIVED_JVM
from test_compact import write_wide_policy, T0, _state, oracle

REPO = Path(__file__).resolve().parent.parent
BUCKET = "ketch-warehouse"
LOCK_TABLE = "ketch_delta_log_tests"
USERS = [f"u{j}" for j in range(6)]


def _s3_section(endpoint: str) -> dict:
    return {"endpoint": endpoint, "region": AWS_REGION, "access_key_id": AWS_ACCESS_KEY_ID,
            "secret_access_key": AWS_SECRET_ACCESS_KEY, "path_style_access": True, "ssl_enabled": False}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("s3-warehouse")


@pytest.fixture(scope="module")
def wide_policy(root: Path) -> str:
    return write_wide_policy(root / "policy.yaml")


def _s3_cfg(base_config, moto_server, wide_policy: str, prefix: str):
    cfg = base_config.with_warehouse(f"s3a://{BUCKET}/{prefix}")
    delta = DeltaSettings(commit_backoff_seconds=0.2,
                          log_store=LogStoreSettings(table_name=LOCK_TABLE, endpoint=moto_server.endpoint))
    sections = {**cfg.sections, "connectors": {"s3": _s3_section(moto_server.endpoint)}}
    return dataclasses.replace(cfg, policy_path=wide_policy, delta=delta, sections=sections)


@pytest.fixture(scope="module")
def s3_log_store(s3a_spark, moto_server, base_config, wide_policy):
    """The test session commits s3a tables through the DynamoDB log store while this module runs."""
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    spark = s3a_spark
    settings = log_store_settings(_s3_cfg(base_config, moto_server, wide_policy, "any"))
    assert settings[LOG_STORE_SCHEME_KEY] == LOG_STORE_CLASS
    spark_conf = spark.sparkContext._jsc.sc().conf()  # the live SparkConf, which Delta reads its log store from
    spark_conf.set(LOG_STORE_SCHEME_KEY, settings.pop(LOG_STORE_SCHEME_KEY))
    for key, value in settings.items():
        spark.conf.set(key, value)
    yield spark
    spark_conf.remove(LOG_STORE_SCHEME_KEY)
    for key in settings:
        spark.conf.unset(key)
    # the catalog's DynamoDB scans of other modules list every table of the server
    moto_server.client("dynamodb").delete_table(TableName=LOCK_TABLE)


def _batch(i: int) -> list[tuple]:
    """Batch ``i``: every user chooses alpha at minute ``i``, granted for the first ``i + 1`` users."""
    return [("o1", user, "alpha", j <= i, i) for j, user in enumerate(USERS)]


def _write_batch(root: Path, i: int) -> str:
    path = root / "raw" / f"b{i}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"org_id": org, "user_id": user, "purpose": purpose, "granted": granted,
                         "ts": (T0 + dt.timedelta(minutes=minute)).isoformat() + "Z"})
             for org, user, purpose, granted, minute in _batch(i)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _write_customers(spark, location: str) -> None:
    rows = [(f"u{j}", f"person{j}@example.com", f"+1 202 555 01{j:02d}", j * 10) for j in range(6)]
    df = spark.createDataFrame(rows, "user_id string, email string, phone string, orders int")
    df.coalesce(1).write.mode("overwrite").parquet(location)


def _chain(spark, cfg, root: Path, lake: str) -> dict:
    """ingest -> compact -> ingest -> compact -> consent filter -> catalog scan; what each step gave."""
    results = {"ingest": [], "compact": []}
    for i in (0, 1):
        ingested = ingest_consent(spark, cfg, _write_batch(root, i), fmt="json", batch_id=f"b{i}", validate=False)
        results["ingest"].append((ingested.read, ingested.accepted, ingested.quarantined, ingested.duplicates))
        compacted = compact_consent(spark, cfg)
        results["compact"].append((compacted.events_read, compacted.users_changed, compacted.inserted))
    results["state"] = _state(spark, cfg)
    facts = spark.createDataFrame([("o1", user, n) for n, user in enumerate(USERS)], "org_id string, user_id string, n int")
    results["kept"] = sorted(tuple(r) for r in facts.transform(consent_filter("alpha", cfg)).collect())
    catalog = AssetCatalog(spark, cfg)
    scan = catalog.scan(lake)
    results["scan"] = (scan.discovered, scan.sampled, scan.errors, scan.personal_columns)
    results["columns"] = sorted(
        (r["column"], r["category"], r["identity_type"]) for r in catalog.columns().collect()
    )
    return results


def test_the_chain_on_s3_equals_the_chain_on_a_local_disk(s3_log_store, moto_server, base_config, wide_policy, root):
    spark = s3_log_store
    s3_cfg = _s3_cfg(base_config, moto_server, wide_policy, "chain")
    local_cfg = dataclasses.replace(s3_cfg, warehouse=str(root / "local-warehouse"), warehouse_as_written=None)
    _write_customers(spark, f"s3a://{BUCKET}/lake/customers")
    _write_customers(spark, str(root / "lake" / "customers"))

    on_s3 = _chain(spark, s3_cfg, root, f"s3a://{BUCKET}/lake/customers")
    on_disk = _chain(spark, local_cfg, root, str(root / "lake" / "customers"))

    assert on_s3 == on_disk
    assert on_s3["state"] == oracle(_batch(0) + _batch(1))
    assert on_s3["kept"] == [("o1", "u0", 0), ("o1", "u1", 1)]
    assert on_s3["scan"][2] == 0 and {"email", "phone"} <= {column for column, category, _ in on_s3["columns"] if category}
    # every commit of the s3a warehouse's tables went through the lock table, and is complete
    items = moto_server.client("dynamodb").scan(TableName=LOCK_TABLE)["Items"]
    state_path = s3_cfg.path("consent/state")
    state_commits = {item["fileName"]["S"] for item in items if item["tablePath"]["S"] == state_path}
    assert len(state_commits) == table_version(spark, s3_cfg, "consent_state") + 1
    assert all(item["complete"]["S"] == "true" for item in items)
    tables = {item["tablePath"]["S"].removeprefix(s3_cfg.warehouse + "/") for item in items}
    assert {"consent/events", "consent/state", "consent/quarantine", "catalog/assets", "catalog/columns"} <= tables


CHILD = """
import json, sys, time
from pathlib import Path
from ketch_spark.config import load_config
from ketch_spark.consent.compact import compact_consent
from ketch_spark.errors import KetchError
from ketch_spark.session import spark_session

config, ready, go, out, java_options = sys.argv[1:6]
spark = spark_session(load_config(config), app_name="ketch-spark-s3-compaction",
                      extra={"spark.master": "local[1]", "spark.ui.enabled": "false",
                             "spark.sql.shuffle.partitions": "2", "spark.driver.extraJavaOptions": java_options})
Path(ready).touch()
deadline = time.monotonic() + 600
while not Path(go).exists() and time.monotonic() < deadline:
    time.sleep(0.01)
try:
    result = compact_consent(spark, load_config(config))
    Path(out).write_text(json.dumps({"result": result.summary()}))
except KetchError as exc:
    Path(out).write_text(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
spark.stop()
"""


def _start_driver(script: Path, config: Path, root: Path, n: int, env: dict) -> subprocess.Popen:
    argv = [sys.executable, str(script), str(config), str(root / f"ready{n}"), str(root / "go"), str(root / f"out{n}"),
            SHORT_LIVED_JVM]
    with (root / f"err{n}").open("w", encoding="utf-8") as err:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)


def _driver_stderr(root: Path, n: int) -> str:
    """The end of what driver ``n`` wrote to stderr."""
    return (root / f"err{n}").read_text(encoding="utf-8")[-3000:]


def _drivers_ready(script: Path, config: Path, root: Path, env: dict) -> list[subprocess.Popen]:
    """Two drivers waiting at the start line; one that dies while starting its JVM is started once more.

    The test is about two commits racing, not about a JVM starting on a busy
    machine, so a start-up death is retried once (its stderr shown as a warning).
    """
    children = [_start_driver(script, config, root, n, env) for n in (0, 1)]
    restarts = [0, 0]
    deadline = time.monotonic() + 600
    while not all((root / f"ready{n}").exists() for n in (0, 1)):
        for n, child in enumerate(children):
            if child.poll() is not None and not (root / f"ready{n}").exists():
                stderr = _driver_stderr(root, n)
                if restarts[n]:
                    for other in children:
                        other.kill()
                    pytest.fail(f"driver {n} did not start twice: {stderr}")
                warnings.warn(f"driver {n} died while starting, started again: {stderr}")
                restarts[n] += 1
                children[n] = _start_driver(script, config, root, n, env)
        if time.monotonic() > deadline:
            for child in children:
                child.kill()
            pytest.fail("the drivers did not start in 10 minutes")
        time.sleep(0.1)
    return children


def _config_file(cfg, path: Path) -> Path:
    store = cfg.delta.log_store
    data = {
        "warehouse": cfg.warehouse,
        "policy": cfg.policy_path,
        "spark": {"spark.driver.memory": "1g"},
        "connectors": cfg.sections["connectors"],
        "delta": {"commit_retries": cfg.delta.commit_retries, "commit_backoff_seconds": cfg.delta.commit_backoff_seconds,
                  "log_store": {"table_name": store.table_name, "endpoint": store.endpoint}},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _commit_versions(moto_server, cfg, table: str) -> list[int]:
    prefix = cfg.path(table).removeprefix(f"s3a://{BUCKET}/") + "/_delta_log/"
    listed = moto_server.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    names = [obj["Key"].removeprefix(prefix) for obj in listed]
    return sorted(int(name[:20]) for name in names if len(name) == 25 and name.endswith(".json"))


def test_two_drivers_compacting_at_once_commit_once(s3_log_store, moto_server, base_config, wide_policy, root):
    spark = s3_log_store
    cfg = _s3_cfg(base_config, moto_server, wide_policy, "two-drivers")
    for i in (0, 1):
        ingest_consent(spark, cfg, _write_batch(root, i), fmt="json", batch_id=f"b{i}", validate=False)
        if i == 0:
            compact_consent(spark, cfg)
    before = table_version(spark, cfg, "consent_state")
    config = _config_file(cfg, root / "two-drivers.yaml")
    script = root / "compact_child.py"
    script.write_text(CHILD, encoding="utf-8")
    go = root / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    children = _drivers_ready(script, config, root, env)
    try:
        go.touch()
        for child in children:
            child.wait(timeout=600)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for n in (0, 1):
        if not (root / f"out{n}").exists():
            pytest.fail(f"driver {n} ended without an outcome: {_driver_stderr(root, n)}")
    outcomes = [json.loads((root / f"out{n}").read_text()) for n in (0, 1)]
    committed = [o["result"] for o in outcomes if "result" in o and o["result"]["users_changed"]]
    assert committed, outcomes
    for outcome in outcomes:  # the other one found the events applied, or gave up with a clear message
        assert "result" in outcome or ("consent/state" in outcome["message"] and outcome["error"] == "CommitConflictError")

    versions = _commit_versions(moto_server, cfg, "consent/state")
    assert versions == list(range(versions[-1] + 1))  # no gap, no version written twice over
    for version in versions:
        assert read_table(spark, cfg, "consent_state", version=version).count() >= 0
    history = delta_table(spark, cfg, "consent_state").history()
    assert history.where((F.col("version") > before) & (F.col("operation") == "MERGE")).count() == 1
    assert applied_events_version(spark, cfg) == table_version(spark, cfg, "consent_events")
    state = _state(spark, cfg)
    assert state == oracle(_batch(0) + _batch(1))
    compact_consent(spark, cfg, full=True)
    assert _state(spark, cfg) == state
