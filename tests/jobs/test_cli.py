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
from ketch_spark.rights.receipts import sign_receipt
from readme_recipe import PACKAGES_ARGUMENT, offline_recipe, readme_recipe, recipe_checkout, plain_shell_env

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
        ["dsr", "run", "--dry-run", "--conf", "x.yaml"],
        ["dsr", "run", "--kind", "access", "--conf", "x.yaml"],
        ["dsr", "verify-receipt", "f", "--conf", "x.yaml"],
        ["dsr", "submit", "--input", "f", "--conf", "x.yaml"],
        ["dsr", "status", "--conf", "x.yaml"],
        ["report", "--out", "r.html", "--conf", "x.yaml"],
    ],
)
def test_every_command_takes_conf(argv):
    assert build_parser().parse_args(argv).conf == "x.yaml"


@pytest.mark.slow
def test_demo_end_to_end(spark, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KETCH_RECEIPT_SECRET", "x")
    monkeypatch.delenv("KETCH_RECEIPT_SECRET")  # unset: the demo uses its own key, for its process only
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
    rights = summary["rights"]
    assert rights["requests"] == 5 and len(rights["done"]) == rights["requests"] and rights["failed"] == []
    assert rights["rows_erased"] > 0 and len(rights["exports"]) == 1 and len(rights["receipts"]) == 4
    (folder,) = rights["exports"].values()
    assert (Path(folder) / "manifest.json").is_file()
    assert "KETCH_RECEIPT_SECRET" not in os.environ


def test_dsr_run_parses_kind_and_dry_run():
    args = build_parser().parse_args(["dsr", "run", "--kind", "erasure", "--dry-run"])
    assert (args.kind, args.dry_run, getattr(args, "needs_spark", True)) == ("erasure", True, True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dsr", "run", "--kind", "portability"])


def test_dsr_run_without_requests_says_so(spark, tmp_path, capsys):
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {tmp_path / 'wh'}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    assert main(["dsr", "run", "--dry-run", "--kind", "access", "--conf", str(conf)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "no open or failed requests of kind access"
    summary = json.loads(out[-1])
    assert summary["command"] == "dsr run" and summary["status"] == "ok"
    assert summary["dry_run"] is True and summary["requests"] == 0 and summary["assets"] == []


RECEIPT_SECRET = "cli-test-receipt-secret-0123456789"


def test_verify_receipt_checks_the_signature_without_spark(tmp_path, capsys, monkeypatch):
    import ketch_spark.session

    def no_spark(*args, **kwargs):
        raise AssertionError("verify-receipt must not start Spark")

    monkeypatch.setattr(ketch_spark.session, "spark_session", no_spark)
    monkeypatch.setenv("KETCH_RECEIPT_SECRET", RECEIPT_SECRET)
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {tmp_path / 'wh'}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    receipt = sign_receipt({"request_id": "r-1", "kind": "erasure", "rows_erased": 3}, RECEIPT_SECRET.encode())
    good = tmp_path / "r-1.json"
    good.write_text(json.dumps(receipt))

    assert main(["dsr", "verify-receipt", str(good), "--conf", str(conf)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "receipt r-1: valid"
    assert json.loads(out[-1]) | {"seconds": 0} == {
        "command": "dsr verify-receipt", "status": "ok", "file": str(good), "request_id": "r-1", "valid": True,
        "seconds": 0,
    }

    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps({**receipt, "rows_erased": 2}))
    assert main(["dsr", "verify-receipt", str(tampered), "--conf", str(conf)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "receipt r-1: INVALID (signature does not match)"
    assert json.loads(out[-1])["status"] == "invalid" and json.loads(out[-1])["valid"] is False

    monkeypatch.setenv("KETCH_RECEIPT_SECRET", "another-secret-0123456789")
    assert main(["dsr", "verify-receipt", str(good), "--conf", str(conf)]) == 1
    assert "INVALID" in capsys.readouterr().out

    not_json = tmp_path / "notes.txt"
    not_json.write_text("not a receipt\n")
    for path, expected in ((tmp_path / "missing.json", "cannot read the receipt"), (not_json, "not a JSON receipt"),
                           (tmp_path, "cannot read the receipt")):
        assert main(["dsr", "verify-receipt", str(path), "--conf", str(conf)]) == 1
        captured = capsys.readouterr()
        summary = json.loads(captured.out.strip().splitlines()[-1])
        assert summary["command"] == "dsr verify-receipt" and summary["status"] == "error"
        assert expected in summary["error"] and str(path) in summary["error"]
        assert "Traceback" not in captured.err

    monkeypatch.delenv("KETCH_RECEIPT_SECRET")
    assert main(["dsr", "verify-receipt", str(good), "--conf", str(conf)]) == 1
    assert "KETCH_RECEIPT_SECRET" in _last_json(capsys)["error"]


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
    captured = capsys.readouterr()
    ingested = json.loads(captured.out.strip().splitlines()[-1])
    # 10% defects against the 5% allowed per source: said in plain words on stderr
    assert "consent ingest: expectation failed:" in captured.err and "were quarantined" in captured.err
    assert ingested["expectations"]["success"] is False and ingested["expectations"]["messages"]
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


@pytest.mark.slow
def test_jobs_run_under_spark_submit(spark, tmp_path):
    """jobs/*.py only wire the CLI: run two of them the way a cluster user does."""
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {tmp_path / 'wh'}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    raw = write_raw_consent(spark, load_config(conf).policy(), tmp_path / "raw", fmt="csv", n_users=40)
    extension = extension_jar(default_jars_dir())  # optional: submitted next to Delta's when built
    submit = [
        str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]",
        "--jars", ",".join([*installed_jar_paths(default_jars_dir(), ["delta"]), *([str(extension)] if extension else [])]),
        "--properties-file", str(REPO / "conf" / "spark-defaults.conf"),
        "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" + (f",{EXTENSION_CLASS}" if extension else ""),
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


@pytest.mark.slow
def test_the_readmes_spark_submit_recipe_runs_as_written(spark, tmp_path):
    """The README's spark-submit block, run by bash in a fresh checkout, with one substitution.

    As written: ``make zip``, then the venv's spark-submit called by path with no venv on PATH and no
    PYTHONPATH (the block's own ``export PYSPARK_PYTHON`` is all it gets), so the jobs import ketch-spark
    from the zip; ``--conf ketch.yaml`` names the copy ``--files`` shipped (client mode: the driver finds
    it through ``spark.files``), and the policy is found next to it; no ``--master``, so spark-submit's
    default ``local[*]``.

    The substitution: ``--packages`` resolves from Maven Central, and ``python -m ketch_spark.jars install``
    keeps no Ivy cache (it resolves in a temporary folder), so offline it cannot work; the test passes the
    installed Delta jars with ``--jars`` (``python -m ketch_spark.jars path``) instead. Set
    ``KETCH_SPARK_TEST_PACKAGES=1`` to run ``--packages`` as written, over the network.
    """
    recipe = readme_recipe()
    assert recipe.startswith("make zip") and recipe.count(PACKAGES_ARGUMENT) == 2
    assert "jobs/ingest_consent.py --conf ketch.yaml --input drops/2026-11-26/" in recipe
    assert "--files conf/ketch.yaml,conf/policy.yaml" in recipe and "PYTHONPATH" not in recipe
    recipe = offline_recipe()
    checkout = recipe_checkout(tmp_path / "checkout", tmp_path / "wh")
    policy = load_config(checkout / "conf" / "ketch.yaml").policy()
    write_raw_consent(spark, policy, checkout / "drops" / "2026-11-26", fmt="json", n_users=40)

    done = subprocess.run(["bash", "-e", "-c", recipe], cwd=checkout, env=plain_shell_env(), capture_output=True,
                          text=True, timeout=1200, check=False)

    assert done.returncode == 0, done.stderr[-4000:]
    assert (checkout / "ketch_spark.zip").is_file()
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [s["command"] for s in summaries] == ["consent ingest", "consent compact"], done.stdout[-3000:]
    ingested, compacted = summaries
    assert ingested["status"] == compacted["status"] == "ok"
    assert ingested["accepted"] > 0 and ingested["read"] == ingested["accepted"] + ingested["quarantined"] + ingested["duplicates"]
    assert compacted["committed"] and compacted["events_read"] == ingested["accepted"]
    assert (tmp_path / "wh" / "consent" / "state" / "_delta_log").is_dir()
    assert not (checkout / "ketch-data").exists()


def _conf(tmp_path: Path, warehouse: Path | None = None) -> Path:
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {warehouse or tmp_path / 'wh'}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    return conf


def _subparsers(parser):
    """(name, parser) of every command and action."""
    for action in parser._subparsers._group_actions:  # noqa: SLF001
        for name, sub in action.choices.items():
            if sub._subparsers is None:  # noqa: SLF001
                yield name, sub
            else:
                yield from ((f"{name} {inner}", leaf) for inner, leaf in _subparsers(sub))


def test_help_is_written_for_people_with_an_example_per_command():
    parser = build_parser()
    top = parser.format_help()
    assert top.startswith("usage: ketch-spark") and "start here:" in top
    commands = dict(_subparsers(parser))
    assert {"demo", "consent ingest", "catalog columns", "catalog search", "dsr run"} <= set(commands)
    for name, sub in commands.items():
        text = sub.format_help()
        assert "examples:\n  ketch-spark " in text, name
        assert not any(markup in text for markup in (":func:", ":mod:", ":class:", "``")), name
    ingest = " ".join(commands["consent ingest"].format_help().split())
    assert "--format {json,csv,parquet,tcf,gpp}" in ingest and "header line then one choice per line" in ingest
    assert "same id with other records is refused" in ingest


def test_checks_that_need_no_spark_fail_before_it_starts(tmp_path, capsys, monkeypatch):
    import ketch_spark.session

    def no_spark(*args, **kwargs):
        raise AssertionError("the checks must fail before Spark starts")

    monkeypatch.setattr(ketch_spark.session, "spark_session", no_spark)
    conf = _conf(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    no_policy = tmp_path / "no-policy.yaml"
    no_policy.write_text(f"warehouse: {tmp_path / 'wh'}\npolicy: {tmp_path / 'missing-policy.yaml'}\n")
    (tmp_path / "x").mkdir(), (tmp_path / "y").mkdir()
    cases = [
        (["consent", "ingest", "--input", str(tmp_path / "drop"), "--conf", str(conf)], f"{tmp_path / 'drop'}: no such"),
        (["dsr", "submit", "--input", str(tmp_path / "r.jsonl"), "--conf", str(conf)], "r.jsonl: no such file"),
        (["consent", "compact", "--conf", str(_conf(tmp_path / "x", tmp_path / "afile"))],
         f"the warehouse {tmp_path / 'afile'} is a file"),
        (["catalog", "list", "--conf", str(_conf(tmp_path / "y", tmp_path / "afile" / "wh"))],
         f"lies under the file {tmp_path / 'afile'}"),
        (["consent", "compact", "--conf", str(no_policy)], "policy file not found"),
    ]
    for argv, expected in cases:
        assert main(argv) == 1, argv
        captured = capsys.readouterr()
        summary = json.loads(captured.out.strip().splitlines()[-1])
        assert summary["status"] == "error" and expected in summary["error"], (argv, summary)
        assert "Traceback" not in captured.err


def test_outside_the_repository_without_conf_it_says_which_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KETCH_SPARK_CONF", raising=False)
    assert main(["dsr", "verify-receipt", "r-1.json"]) == 1
    err = capsys.readouterr().err
    assert f"built-in defaults (warehouse {tmp_path / 'ketch-data'}, policy {REPO / 'conf' / 'policy.yaml'})" in err
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "ketch.yaml").write_text(f"policy: {REPO / 'conf' / 'policy.yaml'}\n")
    assert main(["dsr", "verify-receipt", "r-1.json"]) == 1
    assert f"config {tmp_path / 'conf' / 'ketch.yaml'} (no --conf given)" in capsys.readouterr().err
    assert main(["dsr", "verify-receipt", "r-1.json", "--conf", "conf/ketch.yaml"]) == 1
    assert "config" not in capsys.readouterr().err.split("error:")[0]


def test_a_spark_failure_is_one_line_and_a_json_error(spark, tmp_path, capsys):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "consent.json").write_text('{"org_id": "o-1", "user_id": "u-1", "ts": "2026-11-26T10:00:00Z"}\n')
    assert main(["consent", "ingest", "--input", str(drop), "--format", "parquet", "--conf", str(_conf(tmp_path))]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["status"] == "error" and f"{drop}/consent.json is not a Parquet file" in summary["error"]
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert errors == [f"ketch-spark consent ingest: error: {summary['error']}"] and "Traceback" not in captured.err


def test_every_record_quarantined_is_a_failed_run(spark, tmp_path, capsys):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "consent.json").write_text('{"org_id": "o-1", "ts": "2026-11-26T10:00:00Z", "purpose": "analytics", '
                                       '"granted": true}\nnot json\n')
    assert main(["consent", "ingest", "--input", str(drop), "--conf", str(_conf(tmp_path))]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["status"] == "failed" and summary["read"] == summary["quarantined"] == 2
    assert "every record was quarantined (" in captured.err and "missing_user_id 1" in captured.err


def test_a_scan_with_errors_is_partial(spark, tmp_path, capsys):
    good = tmp_path / "lake" / "contacts"
    spark.createDataFrame([("u-1", "jane@example.com")], "user_id string, email string").write.parquet(str(good))
    corrupt = tmp_path / "bad" / "corrupt"
    corrupt.mkdir(parents=True)
    (corrupt / "part-00000.parquet").write_bytes(b"PAR1 this is not a parquet file at all" * 10)
    assert main(["catalog", "scan", "--source", str(good), "--source", str(corrupt),
                 "--conf", str(_conf(tmp_path))]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["status"] == "partial" and summary["errors"] == 1 and summary["discovered"] == 2
    assert f"ketch-spark catalog scan: file://{corrupt}" in captured.err


def test_commands_show_progress_and_a_report_and_quiet_keeps_only_the_json(spark, tmp_path, capsys):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "consent.json").write_text(
        '{"org_id": "o-1", "user_id": "u-1", "ts": "2026-11-26T10:00:00Z", "purposes": {"analytics": true}}\n'
        '{"org_id": "o-1", "user_id": "u-2", "ts": "2026-11-26T10:00:00Z", "purposes": {"astrology": true}}\n')
    conf = _conf(tmp_path)
    assert main(["consent", "ingest", "--input", str(drop), "--conf", str(conf)]) == 0
    captured = capsys.readouterr()
    progress = [line.split("] ", 1)[1] for line in captured.err.splitlines() if line.startswith("ketch-spark consent ingest [")]
    assert progress[:3] == ["start Spark", "Spark ready (local[2])", "list inputs: 1 files"]
    assert "write events and quarantine: 2 rows" in progress
    out = captured.out.strip().splitlines()
    assert ["rows", "read", "2"] in [line.split() for line in out] and ["unknown_purpose", "1"] in [line.split() for line in out]
    assert json.loads(out[-1])["accepted"] == 1

    assert main(["consent", "compact", "--quiet", "--conf", str(conf)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 and json.loads(captured.out)["committed"] is True
    assert "ketch-spark consent compact [" not in captured.err


@pytest.mark.slow
def test_a_new_users_screen_has_no_spark_start_up_warnings(tmp_path):
    """A fresh process, as a person starts it: only ketch-spark's progress on stderr, a report and the JSON."""
    conf = _conf(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    done = subprocess.run([sys.executable, "-m", "ketch_spark.cli", "catalog", "list", "--conf", str(conf)],
                          capture_output=True, text=True, env=env, timeout=600, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for noise in ("NativeCodeLoader", "log4j profile", "loopback", "SPARK_LOCAL_IP", "Setting default log level",
                  "setLogLevel"):
        assert noise not in done.stderr, done.stderr
    assert "ketch-spark catalog list [" in done.stderr and "Spark ready" in done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["assets"] == 0
