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
Every point runs in ``make test``: the jobs of one kind start together (each on its own copy of the start
warehouse, a JVM each) and each is killed as it pauses, so their start-ups overlap instead of adding up.
"""

from __future__ import annotations

import contextlib
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
from services import SHORT_LIVED_JVM

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
#: How long the jobs of one kind, started together, may take to reach their points (a JVM start each and a few
#: tiny Spark jobs; generous for a busy machine: it only stops a job that hangs).
PAUSE_TIMEOUT_SECONDS = 600
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


def _job_conf(path: Path, warehouse: Path, point: str, log_store_classpath: str) -> Path:
    """The killed job's config: a small local Spark, and the pausing log store for a ``delta.commit:`` point."""
    spark = {"spark.master": "local[2]", "spark.sql.shuffle.partitions": "2", "spark.driver.memory": "1g",
             "spark.ui.enabled": "false", "spark.databricks.delta.snapshotPartitions": "1",
             "spark.driver.extraJavaOptions": SHORT_LIVED_JVM}
    if point.startswith(COMMIT_POINT):
        spark["spark.driver.extraClassPath"] = log_store_classpath
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


@dataclass(frozen=True)
class KilledJob:
    """A job killed at a point and what the test needs of it afterwards.

    Attributes:
        warehouse: Its warehouse, as the kill left it.
        written_before: Data files of the table a ``delta.commit:`` point names, before the job ran.
        failure: Why the job was not killed at its point (it ended, or did not get there in time), with its logs.
    """

    warehouse: Path
    written_before: frozenset[str]
    failure: str | None


def _start_paused_job(job: str, args: list[str], conf: Path, point: str, logs: Path) -> subprocess.Popen:
    logs.mkdir(parents=True, exist_ok=True)
    _scratch(logs).mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYSPARK_GATEWAY", "KETCH_SPARK_FAULTS"))}
    env.update({"PYTHONPATH": str(REPO), PAUSE_AT_ENV: point, PAUSE_FILE_ENV: str(logs / "paused"),
                # a killed JVM runs no shutdown hook: its scratch folder (a copy of every jar) is removed by the test
                "SPARK_LOCAL_DIRS": str(_scratch(logs))})
    with open(logs / "stdout.log", "w") as out, open(logs / "stderr.log", "w") as err:
        return subprocess.Popen([sys.executable, str(REPO / "jobs" / job), "--conf", str(conf), *args],
                                stdout=out, stderr=err, env=env, cwd=logs, start_new_session=True)


def _scratch(logs: Path) -> Path:
    """The killed job's Spark scratch folder (``SPARK_LOCAL_DIRS``), next to its logs."""
    return logs.parent / "spark-local"


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def kill_all_at(job: str, runs: dict[str, tuple[list[str], Path, Path]]) -> dict[str, str | None]:
    """Starts ``jobs/<job>`` once per point at the same time and SIGKILLs each process group as it pauses.

    Args:
        job: The job's file under jobs/.
        runs: Per point, the job's arguments, its config and its logs folder.

    Returns:
        Per point, ``None`` when the job was killed there, else why not (with its logs).
    """
    processes = {point: _start_paused_job(job, args, conf, point, logs) for point, (args, conf, logs) in runs.items()}
    outcome: dict[str, str | None] = {}
    deadline = time.monotonic() + PAUSE_TIMEOUT_SECONDS
    try:
        while len(outcome) < len(processes):
            for point, process in processes.items():
                if point in outcome:
                    continue
                logs = runs[point][2]
                if (logs / "paused").exists():
                    _kill_group(process)
                    killed = process.returncode == -signal.SIGKILL and _wait_gone(process.pid)
                    outcome[point] = None if killed else f"{job}'s group outlived SIGKILL at {point}"
                elif process.poll() is not None:
                    outcome[point] = f"{job} ended (exit {process.returncode}) without reaching {point}\n{_logs(logs)}"
                elif time.monotonic() > deadline:
                    outcome[point] = f"{job} did not reach {point} in {PAUSE_TIMEOUT_SECONDS} s\n{_logs(logs)}"
            time.sleep(0.1)
    finally:
        for process in processes.values():
            if process.poll() is None:
                _kill_group(process)
        for _, _, logs in runs.values():
            shutil.rmtree(_scratch(logs), ignore_errors=True)
    return outcome


def killed_jobs(job: str, points: list[str], start: Path, args: list[str], table: str, root: Path,
                classpath: str) -> dict[str, KilledJob]:
    """Each point's job killed there, all started at once, each on its own copy of the ``start`` warehouse."""
    runs, warehouses, written = {}, {}, {}
    for point in points:
        folder = root / point.replace(":", "-").replace("/", "-")
        warehouse = warehouses[point] = folder / "wh"
        shutil.copytree(start, warehouse)
        written[point] = frozenset(data_files(warehouse / table)) if (warehouse / table).exists() else frozenset()
        runs[point] = (args, _job_conf(folder / "job.yaml", warehouse, point, classpath), folder / "logs")
    outcome = kill_all_at(job, runs)
    return {point: KilledJob(warehouses[point], written[point], outcome[point]) for point in points}


def assert_written_not_committed(spark, table: Path, killed: KilledJob) -> None:
    """The killed job wrote data files into ``table`` and committed none of them."""
    assert data_files(table) - killed.written_before
    assert not committed_files(spark, table) - killed.written_before


def assert_killed(killed: KilledJob) -> Path:
    """The killed job's warehouse; fails the test with the job's logs when it was not killed at its point."""
    if killed.failure:
        pytest.fail(killed.failure)
    return killed.warehouse


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
    "consent.ingest.before_write",
    "delta.commit:consent/events",
    "consent.ingest.after_events_commit",  # events committed, quarantine not: the rerun writes only the quarantine
    "delta.commit:consent/quarantine",
    "consent.ingest.after_commit",
]


@pytest.fixture(scope="module")
def killed_ingests(consent_runs, log_store_classpath, tmp_path_factory) -> dict[str, KilledJob]:
    return killed_jobs("ingest_consent.py", INGEST_POINTS, consent_runs.before_ingest,
                       ["--input", str(consent_runs.day_2)], "consent/events",
                       tmp_path_factory.mktemp("killed-ingests"), log_store_classpath)


@pytest.mark.parametrize("point", INGEST_POINTS)
def test_an_ingest_killed_and_run_again_is_applied_once(spark, consent_runs, killed_ingests, point):
    killed = killed_ingests[point]
    warehouse = assert_killed(killed)
    events = warehouse / "consent" / "events"
    if point == "delta.commit:consent/events":
        assert_written_not_committed(spark, events, killed)
    run("consent", "ingest", "--conf", str(_conf(warehouse.parent / "rerun.yaml", warehouse)),
        "--input", str(consent_runs.day_2))
    assert_same_tables(spark, warehouse, consent_runs.ingested, ("consent_events", "consent_quarantine"))


#: Compaction commits once (its applied events version in the same commit).
COMPACT_POINTS = [
    "consent.compact.before_write",
    "delta.commit:consent/state",  # the MERGE's files written, not committed
    "consent.compact.after_commit",
]


@pytest.fixture(scope="module")
def killed_compactions(consent_runs, log_store_classpath, tmp_path_factory) -> dict[str, KilledJob]:
    return killed_jobs("compact_consent.py", COMPACT_POINTS, consent_runs.ingested, [], "consent/state",
                       tmp_path_factory.mktemp("killed-compactions"), log_store_classpath)


@pytest.mark.parametrize("point", COMPACT_POINTS)
def test_a_compaction_killed_and_run_again_is_applied_once(spark, compacted, killed_compactions, point):
    killed = killed_compactions[point]
    warehouse = assert_killed(killed)
    state = warehouse / "consent" / "state"
    if point == "delta.commit:consent/state":
        assert_written_not_committed(spark, state, killed)
    conf = _conf(warehouse.parent / "rerun.yaml", warehouse)
    run("consent", "compact", "--conf", str(conf))
    assert_same_tables(spark, warehouse, compacted, CONSENT_TABLES)
    from ketch_spark.config import load_config

    reference = load_config(_conf(warehouse.parent / "reference.yaml", compacted))
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
    "catalog.scan.before_write",
    "delta.commit:catalog/changes",
    "delta.commit:catalog/columns",  # changes recorded, columns not
    "catalog.scan.after_columns_commit",  # changes and columns committed, the asset rows not
    "delta.commit:catalog/assets",
    "catalog.scan.after_commit",
]


@pytest.fixture(scope="module")
def killed_scans(catalog_runs, log_store_classpath, tmp_path_factory) -> dict[str, KilledJob]:
    return killed_jobs("scan_catalog.py", CATALOG_POINTS, catalog_runs.before_scan,
                       ["--source", str(catalog_runs.lake)], "catalog/assets",
                       tmp_path_factory.mktemp("killed-scans"), log_store_classpath)


@pytest.mark.parametrize("point", CATALOG_POINTS)
def test_a_catalog_scan_killed_and_run_again_is_applied_once(spark, catalog_runs, killed_scans, point):
    warehouse = assert_killed(killed_scans[point])
    conf = _conf(warehouse.parent / "rerun.yaml", warehouse)
    assert main(["catalog", "scan", "--quiet", "--conf", str(conf), "--source", str(catalog_runs.lake)]) == 0
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
