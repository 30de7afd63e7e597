"""Jobs killed with SIGKILL at named points, then run again, leave the tables as one uninterrupted run does.

Each job (jobs/ingest_consent.py, jobs/compact_consent.py, jobs/scan_catalog.py) runs as a process of its own
group, with ``KETCH_SPARK_PAUSE_AT`` naming a point: on reaching it the job creates ``KETCH_SPARK_PAUSE_FILE``
and sleeps; the test waits for that file and kills the group (the Python driver and its Spark JVM) with
SIGKILL. Points are of two kinds:

* ``fault_point`` names in the code (:mod:`ketch_spark.faults`): before a job's writes, right after a commit,
  after the last commit (before the summary);
* ``delta.commit:<table>``: the job's data files for that table are written and its Delta commit is not.
  Python cannot stop inside a Delta write, so a test-only Delta log store (:data:`PAUSING_LOG_STORE`,
  compiled here with the JDK's javac against the installed delta-storage jar, set with Delta's
  ``spark.delta.logStore.file.impl``) pauses in ``write()`` of the table's next commit file that adds files.

The rerun runs in this test process (its Spark session), through the same command line; the tables are then
compared with those of one uninterrupted run of the same job from the same start, run timestamps excluded.
By default one point of the ingest (between its two commits) and one of the catalog scan (between its columns
and its asset rows) run; the rest of the matrix is ``slow`` (each killed job starts a JVM of its own).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ketch_spark.catalog import AssetCatalog
from ketch_spark.catalog.classify import ColumnClass
from ketch_spark.catalog.review import record_changes
from ketch_spark.cli import main
from ketch_spark.consent.compact import applied_events_version
from ketch_spark.faults import PAUSE_AT_ENV, PAUSE_FILE_ENV
from ketch_spark.jars import default_jars_dir, installed_jar_paths
from ketch_spark.tables import table_path

REPO = Path(__file__).resolve().parent.parent
POLICY = REPO / "conf" / "policy.yaml"
#: How long a job may take to reach its pause point (a JVM start and a few tiny Spark jobs).
PAUSE_TIMEOUT_SECONDS = 300
#: Prefix of the points the test log store pauses at: ``delta.commit:consent/events``.
COMMIT_POINT = "delta.commit:"

PAUSING_LOG_STORE = """
package ketchtest;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;

/** Delta's log store for file: paths, pausing before the commit KETCH_SPARK_PAUSE_AT=delta.commit:<table> names. */
public class PausingLogStore extends io.delta.storage.HDFSLogStore {
    public PausingLogStore(Configuration conf) {
        super(conf);
    }

    @Override
    public void write(Path path, Iterator<String> actions, Boolean overwrite, Configuration conf) throws IOException {
        String point = System.getenv("KETCH_SPARK_PAUSE_AT");
        if (point != null && point.startsWith("delta.commit:") && path.getName().matches("[0-9]{20}[.]json")
                && path.getParent().toString().endsWith(point.substring("delta.commit:".length()) + "/_delta_log")) {
            List<String> lines = new ArrayList<>();
            actions.forEachRemaining(lines::add);
            if (lines.stream().anyMatch(line -> line.startsWith("{\\"add\\""))) {
                Files.writeString(Paths.get(System.getenv("KETCH_SPARK_PAUSE_FILE")), point);
                while (true) {
                    try {
                        Thread.sleep(3_600_000L);
                    } catch (InterruptedException ignored) {
                        // killed by the test, never woken
                    }
                }
            }
            actions = lines.iterator();
        }
        super.write(path, actions, overwrite, conf);
    }
}
"""

#: Columns holding the time of a run, left out of the comparison.
RUN_TIMES = {
    "consent_events": ("ingested_at",),
    "consent_quarantine": ("ingested_at",),
    "consent_state": ("updated_at",),
    "catalog_assets": ("scanned_at", "first_seen_at"),
    "catalog_columns": ("scanned_at",),
    "catalog_changes": ("detected_at",),
}
CONSENT_TABLES = ("consent_events", "consent_quarantine", "consent_state")
CATALOG_TABLES = ("catalog_assets", "catalog_columns", "catalog_changes")


@pytest.fixture(scope="module")
def log_store_classpath(tmp_path_factory) -> str:
    """The driver classpath that holds the pausing log store (and delta-storage, which it extends)."""
    javac = shutil.which("javac")
    if javac is None:
        pytest.fail("javac (a JDK) is needed to build the test's Delta log store")
    out = tmp_path_factory.mktemp("pausing-log-store")
    source = out / "ketchtest" / "PausingLogStore.java"
    source.parent.mkdir()
    source.write_text(PAUSING_LOG_STORE)
    (delta_storage,) = [p for p in installed_jar_paths(default_jars_dir(), ["delta"]) if "delta-storage-" in p]
    pyspark_jars = Path(__import__("pyspark").__file__).parent / "jars"
    classpath = os.pathsep.join([delta_storage, *map(str, pyspark_jars.glob("hadoop-client-api-*.jar"))])
    done = subprocess.run([javac, "--release", "17", "-cp", classpath, "-d", str(out), str(source)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return os.pathsep.join([delta_storage, str(out)])


def _conf(path: Path, warehouse: Path, spark: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {"warehouse": str(warehouse), "policy": str(POLICY), **({"spark": spark} if spark else {})}
    path.write_text(json.dumps(settings))
    return path


def _job_conf(path: Path, warehouse: Path, point: str, request: pytest.FixtureRequest) -> Path:
    """The killed job's config: a small local Spark, and the pausing log store for a ``delta.commit:`` point."""
    spark = {"spark.master": "local[2]", "spark.sql.shuffle.partitions": "2", "spark.driver.memory": "1g",
             "spark.ui.enabled": "false", "spark.databricks.delta.snapshotPartitions": "1"}
    if point.startswith(COMMIT_POINT):
        spark["spark.driver.extraClassPath"] = request.getfixturevalue("log_store_classpath")
        spark["spark.delta.logStore.file.impl"] = "ketchtest.PausingLogStore"
    return _conf(path, warehouse, spark)


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(folder.glob("*.log")))


def _wait_gone(group: int, seconds: float = 30) -> bool:
    """Whether every process of ``group`` has ended within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def kill_at(point: str, job: str, args: list[str], conf: Path, logs: Path) -> None:
    """Runs ``jobs/<job>`` in a process group of its own until it pauses at ``point``, then SIGKILLs the group."""
    logs.mkdir(parents=True, exist_ok=True)
    pause_file = logs / "paused"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYSPARK_GATEWAY", "KETCH_SPARK_FAULTS"))}
    env.update({"PYTHONPATH": str(REPO), PAUSE_AT_ENV: point, PAUSE_FILE_ENV: str(pause_file)})
    with open(logs / "stdout.log", "w") as out, open(logs / "stderr.log", "w") as err:
        process = subprocess.Popen([sys.executable, str(REPO / "jobs" / job), "--conf", str(conf), *args],
                                   stdout=out, stderr=err, env=env, cwd=logs, start_new_session=True)
    try:
        deadline = time.monotonic() + PAUSE_TIMEOUT_SECONDS
        while not pause_file.exists():
            if process.poll() is not None:
                pytest.fail(f"{job} ended (exit {process.returncode}) without reaching {point}\n{_logs(logs)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{job} did not reach {point} in {PAUSE_TIMEOUT_SECONDS} s\n{_logs(logs)}")
            time.sleep(0.1)
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert _wait_gone(process.pid), f"a process of {job}'s group (its JVM?) outlived SIGKILL"


def rows(spark, warehouse: Path, name: str) -> list[tuple]:
    """The rows of table ``name`` under ``warehouse`` without run times, sorted (as strings: maps and arrays too)."""
    from ketch_spark.config import load_config

    cfg = load_config(_conf(warehouse.parent / f"{warehouse.name}-read.yaml", warehouse))
    df = spark.read.format("delta").load(table_path(cfg, name)).drop(*RUN_TIMES[name])
    return sorted(tuple(repr(value) for value in row) for row in df.collect())


def assert_same_tables(spark, warehouse: Path, reference: Path, names: tuple[str, ...]) -> None:
    for name in names:
        got, expected = rows(spark, warehouse, name), rows(spark, reference, name)
        assert got == expected, f"{name} differs from an uninterrupted run:\n+{set(got) - set(expected)}\n" \
                                f"-{set(expected) - set(got)}\n(lengths {len(got)} vs {len(expected)})"


def run(*argv: str) -> None:
    """Runs a command in this process (this test session's Spark); it must succeed."""
    assert main([*argv, "--quiet"]) == 0, argv


def data_files(table: Path) -> set[str]:
    """Parquet files under a table's folder (committed or not)."""
    return {str(p.relative_to(table)) for p in table.rglob("*.parquet") if "_delta_log" not in p.parts}


def committed_files(spark, table: Path) -> set[str]:
    """Data files of the table's current version."""
    from urllib.parse import unquote, urlparse

    return {str(Path(unquote(urlparse(f).path)).relative_to(table))
            for f in spark.read.format("delta").load(str(table)).inputFiles()}


# ---------------------------------------------------------------- consent: ingest and compaction


def _json_lines(path: Path, records: list[dict | str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "consent.json").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def _choice(user: str, ts: str, **purposes: bool) -> dict:
    return {"org_id": "o-1", "user_id": user, "ts": ts, "purposes": purposes, "source": "web"}


@dataclass(frozen=True)
class ConsentRuns:
    """Raw drops and warehouses of the consent jobs' uninterrupted runs.

    Attributes:
        day_2: The drop the ingest under test reads.
        before_ingest: Day 1 ingested and compacted: where the ingest under test starts.
        ingested: ``before_ingest`` plus day 2 ingested: the ingest's reference, the compaction's start.
    """

    day_2: Path
    before_ingest: Path
    ingested: Path


@pytest.fixture(scope="module")
def consent_runs(spark, tmp_path_factory) -> ConsentRuns:
    root = tmp_path_factory.mktemp("crash-consent")
    day_1, day_2 = root / "drops" / "day-1", root / "drops" / "day-2"
    _json_lines(day_1, [
        _choice("u-1", "2026-11-25T10:00:00Z", analytics=True, advertising=False),
        _choice("u-2", "2026-11-25T11:00:00Z", analytics=False),
        _choice("u-3", "2026-11-25T12:00:00Z", advertising=True),
        "not json",
    ])
    _json_lines(day_2, [
        _choice("u-1", "2026-11-25T10:00:00Z", analytics=True),  # a duplicate of day 1
        _choice("u-1", "2026-11-26T09:00:00Z", advertising=True),
        _choice("u-2", "2026-11-26T09:30:00Z", analytics=True, astrology=True),  # one unknown purpose
        _choice("u-4", "2026-11-26T10:00:00Z", analytics=True, advertising=True),
        {"org_id": "o-1", "ts": "2026-11-26T10:00:00Z", "purposes": {"analytics": True}},  # no user
    ])
    before = root / "before-ingest"
    conf = _conf(root / "before-ingest.yaml", before)
    run("consent", "ingest", "--conf", str(conf), "--input", str(day_1))
    run("consent", "compact", "--conf", str(conf))
    ingested = root / "ingested"
    shutil.copytree(before, ingested)
    run("consent", "ingest", "--conf", str(_conf(root / "ingested.yaml", ingested)), "--input", str(day_2))
    return ConsentRuns(day_2, before, ingested)


@pytest.fixture(scope="module")
def compacted(spark, consent_runs, tmp_path_factory) -> Path:
    """``consent_runs.ingested`` plus a compaction: the compaction's reference."""
    compacted = tmp_path_factory.mktemp("crash-compacted") / "wh"
    shutil.copytree(consent_runs.ingested, compacted)
    run("consent", "compact", "--conf", str(_conf(compacted.parent / "compacted.yaml", compacted)))
    return compacted


INGEST_POINTS = [
    pytest.param("consent.ingest.before_write", marks=pytest.mark.slow),
    pytest.param("delta.commit:consent/events", marks=pytest.mark.slow),
    # events committed, quarantine not: the rerun writes only the quarantine (slow too, for make test's time:
    # Delta's transaction ids make every ingest point safe; the catalog's point stays in make test)
    pytest.param("consent.ingest.after_events_commit", marks=pytest.mark.slow),
    pytest.param("delta.commit:consent/quarantine", marks=pytest.mark.slow),
    pytest.param("consent.ingest.after_commit", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("point", INGEST_POINTS)
def test_an_ingest_killed_and_run_again_is_applied_once(spark, consent_runs, request, tmp_path, point):
    warehouse = tmp_path / "wh"
    shutil.copytree(consent_runs.before_ingest, warehouse)
    events = warehouse / "consent" / "events"
    written_before = data_files(events)
    args = ["--input", str(consent_runs.day_2)]

    kill_at(point, "ingest_consent.py", args, _job_conf(tmp_path / "job.yaml", warehouse, point, request),
            tmp_path / "logs")

    if point == "delta.commit:consent/events":  # files written, none committed
        assert data_files(events) - written_before and not committed_files(spark, events) - written_before
    run("consent", "ingest", "--conf", str(_conf(tmp_path / "rerun.yaml", warehouse)), *args)
    assert_same_tables(spark, warehouse, consent_runs.ingested, ("consent_events", "consent_quarantine"))


#: Compaction commits once (its applied events version in the same commit), so all of its points are slow.
COMPACT_POINTS = [
    pytest.param("consent.compact.before_write", marks=pytest.mark.slow),
    pytest.param("delta.commit:consent/state", marks=pytest.mark.slow),  # the MERGE's files written, not committed
    pytest.param("consent.compact.after_commit", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("point", COMPACT_POINTS)
def test_a_compaction_killed_and_run_again_is_applied_once(spark, consent_runs, compacted, request,
                                                           tmp_path, point):
    warehouse = tmp_path / "wh"
    shutil.copytree(consent_runs.ingested, warehouse)
    state = warehouse / "consent" / "state"
    written_before = data_files(state)

    kill_at(point, "compact_consent.py", [], _job_conf(tmp_path / "job.yaml", warehouse, point, request),
            tmp_path / "logs")

    if point == "delta.commit:consent/state":
        assert data_files(state) - written_before and not committed_files(spark, state) - written_before
    conf = _conf(tmp_path / "rerun.yaml", warehouse)
    run("consent", "compact", "--conf", str(conf))
    assert_same_tables(spark, warehouse, compacted, CONSENT_TABLES)
    from ketch_spark.config import load_config

    reference = load_config(_conf(tmp_path / "reference.yaml", compacted))
    assert applied_events_version(spark, load_config(conf)) == applied_events_version(spark, reference)


# ---------------------------------------------------------------- catalog scan


_EMAILS = [f"person{i}@example.com" for i in range(12)]


def _contacts(spark, folder: Path, emails: list[str], notes: list[str]) -> None:
    rows_ = [(1000 + i, email, note) for i, (email, note) in enumerate(zip(emails, notes))]
    spark.createDataFrame(rows_, "id long, email string, notes string").coalesce(1) \
        .write.mode("overwrite").parquet(str(folder))


@dataclass(frozen=True)
class CatalogRuns:
    """The lake a scan reads and the catalogs before and after an uninterrupted scan of it."""

    lake: Path
    before_scan: Path
    scanned: Path


@pytest.fixture(scope="module")
def catalog_runs(spark, base_config, tmp_path_factory) -> CatalogRuns:
    """A lake scanned once, a column labelled; then one asset changes (a column's class and a label drift),
    one goes and one comes: the scan under test has all of the catalog's writes to make."""
    root = tmp_path_factory.mktemp("crash-catalog")
    lake = root / "lake"
    _contacts(spark, lake / "contacts", _EMAILS, ["called back", "prefers mail", "vip"] * 4)
    spark.createDataFrame([(1, "A-1", 3)], "order_id long, sku string, qty int").write.parquet(str(lake / "orders"))
    before = root / "before-scan"
    cfg = base_config.with_warehouse(before)
    AssetCatalog(spark, cfg).scan(str(lake))
    AssetCatalog(spark, cfg).label(str(lake / "contacts"), "email", "email", labelled_by="dpo@example.com")
    _contacts(spark, lake / "contacts", ["opted out"] * 12, _EMAILS)
    shutil.rmtree(lake / "orders")
    spark.createDataFrame([("u-9", "jane@example.com")], "user_id string, email string").write.parquet(
        str(lake / "visitors"))
    scanned = root / "scanned"
    shutil.copytree(before, scanned)
    result = AssetCatalog(spark, base_config.with_warehouse(scanned)).scan(str(lake))
    assert (result.sampled, result.gone, result.changed_columns) == (2, 1, 2)  # the scan has every kind of write
    return CatalogRuns(lake, before, scanned)


CATALOG_POINTS = [
    pytest.param("catalog.scan.before_write", marks=pytest.mark.slow),
    pytest.param("delta.commit:catalog/changes", marks=pytest.mark.slow),
    pytest.param("delta.commit:catalog/columns", marks=pytest.mark.slow),  # changes recorded, columns not
    "catalog.scan.after_columns_commit",  # changes and columns committed, the asset rows not
    pytest.param("delta.commit:catalog/assets", marks=pytest.mark.slow),
    pytest.param("catalog.scan.after_commit", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("point", CATALOG_POINTS)
def test_a_catalog_scan_killed_and_run_again_is_applied_once(spark, catalog_runs, request, tmp_path,
                                                            point):
    warehouse = tmp_path / "wh"
    shutil.copytree(catalog_runs.before_scan, warehouse)
    args = ["--source", str(catalog_runs.lake)]

    kill_at(point, "scan_catalog.py", args, _job_conf(tmp_path / "job.yaml", warehouse, point, request),
            tmp_path / "logs")

    assert main(["catalog", "scan", "--quiet", "--conf", str(_conf(tmp_path / "rerun.yaml", warehouse)), *args]) == 0
    assert_same_tables(spark, warehouse, catalog_runs.scanned, CATALOG_TABLES)


def test_changes_a_killed_scan_recorded_are_not_recorded_by_the_scan_that_repeats_it(spark, base_config, tmp_path):
    cfg = base_config.with_warehouse(tmp_path / "wh")
    classes = {"a-1": [ColumnClass("notes", "string", "email", "email", 0.95, "value")]}
    previous = {"a-1|notes": {"category": None, "confidence": 0.0}}
    drifted = {"a-1": [("notes", "drift: labelled phone, the values now look like email")]}
    last_scan, killed, repeated, later = (dt.datetime(2026, 11, day) for day in (1, 2, 3, 4))

    def recorded() -> list[tuple]:
        return sorted((r["column"], r["reason"].split(":")[0], r["detected_at"]) for r in
                      spark.read.format("delta").load(table_path(cfg, "catalog_changes")).collect())

    assert record_changes(spark, cfg, classes, previous, drifted, killed, {"a-1": last_scan}) == 1
    # the asset's row still says last_scan: the next scan samples it again and finds the same change
    assert record_changes(spark, cfg, classes, previous, drifted, repeated, {"a-1": last_scan}) == 1
    assert recorded() == [("notes", "drift", killed)]
    # once a scan has written the asset's row, a change found by a later scan is a new one
    assert record_changes(spark, cfg, classes, previous, {}, later, {"a-1": repeated}) == 1
    assert recorded() == [("notes", "drift", killed), ("notes", "rescan", later)]
