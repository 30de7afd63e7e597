"""The README's spark-submit recipe on a real cluster: a Spark standalone master and one worker on loopback.

The jobs run in executors of their own JVM, started by the worker, which have only what spark-submit shipped:
the jars of ``--jars`` (Delta), the package in ``ketch_spark.zip`` (``--py-files``), the config of ``--files``.
Their Python (and the driver's) is a venv like a cluster node's: ketch-spark's dependencies, not ketch-spark,
so nothing can come from this checkout's editable install. The tables equal those of a local run of the input.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import pyspark
import pytest
from readme_recipe import EXPORT_PYTHON, REPO, offline_recipe, plain_shell_env, recipe_checkout
from services import SHORT_LIVED_JVM, free_port

from ketch_spark.cli import main
from ketch_spark.config import load_config
from ketch_spark.datagen import write_raw_consent
from ketch_spark.jars import default_jars_dir, installed_jar_paths
from ketch_spark.tables import table_path


#: pyspark's own Spark installation: its bin/spark-class starts the master and the worker.
SPARK_HOME = Path(pyspark.__file__).parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
START_TIMEOUT_SECONDS = 180

#: Submitted after the recipe: where the driver and the executors import ketch-spark from.
PROBE_JOB = """
import json

from pyspark.sql import SparkSession


def package_file(_):
    import ketch_spark.consent.sources  # the package and its dependencies, as a job's code needs them

    return ketch_spark.__file__


spark = SparkSession.builder.appName("ketch-spark-probe").getOrCreate()
import ketch_spark

executors = spark.sparkContext.parallelize([0, 1], 2).map(package_file).collect()
print(json.dumps({"master": spark.sparkContext.master, "driver": ketch_spark.__file__, "executors": executors}))
spark.stop()
"""


@dataclass(frozen=True)
class Cluster:
    """A running standalone cluster: its master URL, the folder of its logs and the worker's work folder."""

    url: str
    logs: Path
    work: Path

    def log_tails(self) -> str:
        """The end of the master's and worker's logs and of every executor's stderr, for a failure message."""
        files = [self.logs / "master.log", self.logs / "worker.log", *sorted(self.work.glob("app-*/*/stderr"))]
        return "\n".join(f"--- {path}\n{path.read_text(errors='replace')[-3000:]}" for path in files if path.exists())


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_for_line(process: subprocess.Popen, log: Path, text: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{log.stem} did not log {text!r} (exit {process.poll()}):\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    """Ends ``process`` and its process group (the JVM, and for the worker its executors)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)
            return


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    work = root / "work"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYSPARK_", "SPARK_"))}
    env.update({"SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_DIRS": str(root / "local"),
                "SPARK_DAEMON_JAVA_OPTS": SHORT_LIVED_JVM})  # master and worker; the recipe starts its own JVMs
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    processes = []
    try:
        master = _start([str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                         "--port", str(port), "--webui-port", str(free_port())], root / "master.log", env)
        processes.append(master)
        _wait_for_line(master, root / "master.log", "I have been elected leader")
        worker = _start([str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                         "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()), "--work-dir", str(work)],
                        root / "worker.log", env)
        processes.append(worker)
        _wait_for_line(worker, root / "worker.log", "Successfully registered with master")
        yield Cluster(url, root, work)
    finally:
        for process in reversed(processes):
            _stop(process)


@pytest.fixture(scope="module")
def cluster_python(tmp_path_factory) -> Path:
    """A Python as a cluster node has one: ketch-spark's dependencies importable, ketch-spark itself not.

    A venv whose site-packages names this venv's site-packages in a ``.pth`` line: the packages there are
    importable, but the ``.pth`` files there (the editable install of ketch-spark is one) are not run.
    """
    folder = tmp_path_factory.mktemp("cluster-python")
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    deps = subprocess.run([str(python), "-c", "import yaml, pandas, pyarrow, great_expectations, pyspark"],
                          capture_output=True, text=True, env=env, cwd=folder, check=False)
    assert deps.returncode == 0, deps.stderr
    ours = subprocess.run([str(python), "-c", "import ketch_spark"], capture_output=True, text=True, env=env,
                          cwd=folder, check=False)
    assert "No module named 'ketch_spark'" in ours.stderr
    return python


def _table_rows(spark, cfg, name: str, run_times: tuple[str, ...]) -> list[tuple]:
    df = spark.read.format("delta").load(table_path(cfg, name)).drop(*run_times)
    return sorted(tuple(repr(value) for value in row) for row in df.collect())


def _loopback(env: dict[str, str]) -> dict[str, str]:
    """``env`` with Spark's driver bound to loopback, as the master and the worker are."""
    return {**env, "SPARK_LOCAL_IP": "127.0.0.1"}


def _summaries(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_the_readmes_recipe_runs_on_a_standalone_cluster(spark, cluster, cluster_python, tmp_path):
    """The recipe as written but for the master (``--master spark://...``), the jars (installed, with
    ``--jars``, instead of ``--packages``) and the Python (the cluster's, as the README says)."""
    recipe = offline_recipe()
    assert recipe.count(EXPORT_PYTHON) == 1 and recipe.count(".venv/bin/spark-submit \\\n") == 2
    recipe = recipe.replace(EXPORT_PYTHON, f'export PYSPARK_PYTHON="{cluster_python}"')
    recipe = recipe.replace(".venv/bin/spark-submit \\\n", f".venv/bin/spark-submit --master {cluster.url} \\\n")
    checkout = recipe_checkout(tmp_path / "checkout", tmp_path / "wh")
    cfg = load_config(checkout / "conf" / "ketch.yaml")
    drop = checkout / "drops" / "2026-11-26"
    write_raw_consent(spark, cfg.policy(), drop, fmt="json", n_users=40)

    done = subprocess.run(["bash", "-e", "-c", recipe], cwd=checkout, env=_loopback(plain_shell_env()),
                          capture_output=True, text=True, timeout=1200, check=False)

    assert done.returncode == 0, f"{done.stderr[-4000:]}\n{cluster.log_tails()}"
    summaries = _summaries(done.stdout)
    assert [s["command"] for s in summaries] == ["consent ingest", "consent compact"], done.stdout[-3000:]
    assert all(s["status"] == "ok" for s in summaries), summaries
    assert done.stderr.count(f"Connecting to master {cluster.url}") == 2, done.stderr[-3000:]
    apps = sorted(cluster.work.glob("app-*"))
    assert len(apps) == 2 and all(list(app.glob("*/stderr")) for app in apps), cluster.log_tails()  # executors

    local = load_config(checkout / "conf" / "ketch.yaml").with_warehouse(tmp_path / "local-wh")
    local_conf = tmp_path / "local.yaml"
    local_conf.write_text(f"warehouse: {local.warehouse}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    assert main(["consent", "ingest", "--quiet", "--conf", str(local_conf), "--input", str(drop),
                 "--format", "json"]) == 0
    assert main(["consent", "compact", "--quiet", "--conf", str(local_conf)]) == 0
    for name, run_times in (("consent_events", ("ingested_at",)), ("consent_state", ("updated_at",))):
        on_cluster, locally = _table_rows(spark, cfg, name, run_times), _table_rows(spark, local, name, run_times)
        assert on_cluster == locally and on_cluster, name

    probe = tmp_path / "probe.py"
    probe.write_text(PROBE_JOB)
    env = {**_loopback(plain_shell_env()), "PYSPARK_PYTHON": str(cluster_python)}
    jars = ",".join(installed_jar_paths(default_jars_dir(), ["delta"]))
    done = subprocess.run([".venv/bin/spark-submit", "--master", cluster.url, "--jars", jars,
                           "--py-files", "ketch_spark.zip", str(probe)],
                          cwd=checkout, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n{cluster.log_tails()}"
    (found,) = _summaries(done.stdout)
    assert found["master"] == cluster.url
    # the driver imports the zip too (spark-submit's copy, or SparkFiles' one), never this checkout's package
    assert found["driver"].endswith("/ketch_spark.zip/ketch_spark/__init__.py"), found
    assert len(found["executors"]) == 2 and all(
        path.endswith("/ketch_spark.zip/ketch_spark/__init__.py") and not path.startswith(str(checkout))
        for path in found["executors"]), found
