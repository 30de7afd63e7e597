"""The command line and the jobs: parsing, --conf everywhere, every command end to end, errors as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ketch_spark.cli import build_parser, main
from ketch_spark.config import load_config
from ketch_spark.datagen import write_raw_consent
from ketch_spark.extensions import EXTENSION_CLASS, extension_jar
from ketch_spark.jars import default_jars_dir, installed_jar_paths

REPO = Path(__file__).resolve().parents[2]


def _last_json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--conf", "x.yaml"],
        ["--conf", "x.yaml", "demo"],
        ["consent", "ingest", "--input", "a", "--input", "b", "--format", "csv", "--conf", "x.yaml"],
        ["consent", "compact", "--full", "--conf", "x.yaml"],
        ["catalog", "scan", "--source", "s3a://b/p", "--conf", "x.yaml"],
    ],
)
def test_every_command_takes_conf(argv):
    assert build_parser().parse_args(argv).conf == "x.yaml"


def test_demo_end_to_end(spark, tmp_path, capsys):
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {tmp_path / 'wh'}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    assert main(["demo", "--conf", str(conf), "--users", "300"]) == 0
    summary = _last_json(capsys)
    assert summary["command"] == "demo" and summary["status"] == "ok"
    assert summary["warehouse"] == str(tmp_path / "wh")
    assert (tmp_path / "wh" / "consent" / "state" / "_delta_log").is_dir()
    assert (tmp_path / "wh" / "lake" / "user_events" / "_delta_log").is_dir()
    ingest = summary["ingest"]
    assert ingest["read"] == ingest["accepted"] + ingest["quarantined"] + ingest["duplicates"] and ingest["quarantined"] > 0
    assert summary["state"]["users"] > 0 and 0 < summary["filter"]["users_consented"] < summary["filter"]["users_all"]
    identities = summary["catalog"]["identities"]
    assert "email:email" in identities["<warehouse>/raw/logs"]
    assert "email_sha256:email_sha256" in identities["<warehouse>/lake/profiles"]


def test_bad_config_is_a_json_error(tmp_path, capsys):
    conf = tmp_path / "ketch.yaml"
    conf.write_text("warehouse: [1]\n")
    assert main(["demo", "--conf", str(conf)]) == 1
    summary = _last_json(capsys)
    assert summary["status"] == "error" and "warehouse" in summary["error"]


def test_consent_and_catalog_commands_print_their_summaries(spark, tmp_path, capsys):
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {tmp_path / 'wh'}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    policy = load_config(conf).policy()
    raw = write_raw_consent(spark, policy, tmp_path / "raw", fmt="json", n_users=60, defect_rate=0.1)

    assert main(["consent", "ingest", "--conf", str(conf), "--input", raw, "--batch-id", "day-1"]) == 0
    ingested = _last_json(capsys)
    assert ingested["command"] == "consent ingest" and ingested["status"] == "ok"
    assert ingested["read"] == ingested["accepted"] + ingested["quarantined"] + ingested["duplicates"]
    assert ingested["accepted"] > 0 and ingested["quarantined"] > 0

    assert main(["consent", "compact", "--conf", str(conf)]) == 0
    compacted = _last_json(capsys)
    assert compacted["committed"] and compacted["events_read"] == ingested["accepted"]
    assert main(["consent", "compact", "--conf", str(conf), "--batch-id", "day-1"]) == 0
    assert not _last_json(capsys)["committed"]  # already applied

    assert main(["catalog", "scan", "--conf", str(conf), "--source", str(tmp_path / "wh" / "consent")]) == 0
    scanned = _last_json(capsys)
    assert scanned["discovered"] >= 3 and scanned["errors"] == 0
    assert main(["catalog", "list", "--conf", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "consent/state" in out and json.loads(out.strip().splitlines()[-1])["assets"] == scanned["discovered"]


def test_jobs_run_under_spark_submit(spark, tmp_path):
    """jobs/*.py only wire the CLI: run two of them the way a cluster user does."""
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {tmp_path / 'wh'}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    raw = write_raw_consent(spark, load_config(conf).policy(), tmp_path / "raw", fmt="csv", n_users=40)
    submit = [
        str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]",
        "--jars", ",".join([*installed_jar_paths(default_jars_dir(), ["delta"]), str(extension_jar(default_jars_dir()))]),
        "--properties-file", str(REPO / "conf" / "spark-defaults.conf"),
        "--conf", f"spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension,{EXTENSION_CLASS}",
        "--conf", "spark.ui.enabled=false", "--conf", "spark.databricks.delta.snapshotPartitions=1",
    ]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    for job, args in (("ingest_consent.py", ["--input", raw, "--format", "csv"]), ("compact_consent.py", [])):
        done = subprocess.run(
            [*submit, str(REPO / "jobs" / job), "--conf", str(conf), *args],
            capture_output=True, text=True, env=env, timeout=600, check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["status"] == "ok", summary
    assert summary["command"] == "consent compact" and summary["committed"] and summary["events_read"] > 0
