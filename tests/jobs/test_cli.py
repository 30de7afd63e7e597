"""The command line: parsing, --conf everywhere, demo end to end, errors as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketch_spark.cli import build_parser, main

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
