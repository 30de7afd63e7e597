"""Secrets and personal data stay out of output: every command, logged at DEBUG, on generated data.

The commands run in this process on the test session (cheap), with a config that
holds an S3 secret key, a JDBC password (also in the JDBC URL) and a receipt
secret in the environment, on data from ``ketch_spark.datagen``. Nothing they
print (stdout, stderr), log (ketch_spark's loggers at DEBUG), raise or store in
the catalog tables, the report or the receipts may hold a raw email, phone or
user id of the data, nor a secret of the config. One JDBC source is unreachable,
so its failure message is checked too.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F

from ketch_spark.cli import main
from ketch_spark.config import load_config
from ketch_spark.datagen import generate_profiles, generate_raw_logs, write_raw_consent

REPO = Path(__file__).resolve().parents[2]
S3_SECRET = "s3-secret-Kx9vQ2mZr7TtP4wL"
S3_ACCESS_KEY = "AKIAPRIVACYTEST42"
JDBC_PASSWORD = "jdbc-pass-Wq8nHs3Ld6Yc"
RECEIPT_SECRET = "receipt-secret-Zt5uMe1Rk0Xa9Bf"
PHONE = "+1 415 555 0142"
CATALOG_TABLES = ("catalog_assets", "catalog_columns", "catalog_changes", "catalog_labels")


def write_conf(tmp_path: Path, warehouse: Path) -> Path:
    """A config holding every kind of secret: S3 keys, a JDBC password (in the URL too), the receipt secret's env."""
    conf = tmp_path / "ketch.yaml"
    conf.write_text(yaml.safe_dump({
        "warehouse": str(warehouse),
        "policy": str(REPO / "conf" / "policy.yaml"),
        "dsr": {"receipt_secret_env": "KETCH_RECEIPT_SECRET", "default_phone_region": "US"},
        "connectors": {
            "s3": {"access_key_id": S3_ACCESS_KEY, "secret_access_key": S3_SECRET},
            "jdbc": [{"url": f"jdbc:postgresql://127.0.0.1:1/warehouse?user=reader&password={JDBC_PASSWORD}",
                      "user": "reader", "password": JDBC_PASSWORD}],
        },
    }))
    return conf


def generated_data(spark, cfg, n_users: int) -> dict[str, str]:
    """The demo's raw consent (JSON lines), profiles (Delta) and logs (gzip JSON lines), for ``n_users``."""
    paths = {name: cfg.path(f"{folder}/{name}") for folder, name in
             (("raw", "consent_json"), ("lake", "profiles"), ("raw", "logs"))}
    write_raw_consent(spark, cfg.policy(), paths["consent_json"], fmt="json", n_users=n_users)
    generate_profiles(spark, n_users=n_users).coalesce(1).write.format("delta").save(paths["profiles"])
    generate_raw_logs(spark, n_rows=n_users * 3, n_users=n_users).coalesce(1).write.option("compression", "gzip").json(
        paths["logs"])
    return paths


def personal_values(spark, paths: dict[str, str]) -> set[str]:
    """Every email (as written and lower-cased) and user id of the generated profiles and logs."""
    values: set[str] = {PHONE, PHONE.replace(" ", "")}
    for row in spark.read.format("delta").load(paths["profiles"]).select("email", "user_id").collect():
        values |= {v for v in (row.email, row.email and row.email.lower(), row.user_id) if v}  # null once obfuscated
    for row in spark.read.json(paths["logs"]).select("email", "user_id").collect():
        values |= {v for v in (row.email, row.user_id) if v}
    return values


def leaks(text: str, forbidden: set[str]) -> list[str]:
    """The forbidden values found in ``text`` (ids as whole tokens: u-1 is not found in u-12)."""
    found = []
    for value in forbidden:
        pattern = rf"(?<![\w.+-]){re.escape(value)}(?![\w-])"
        if re.search(pattern, text, flags=re.IGNORECASE):
            found.append(value)
    return sorted(found)


def requests_file(spark, paths: dict[str, str], path: Path) -> Path:
    """Requests for generated subjects: erasures by email and user id, an access, a phone, and an invalid email."""
    subjects = spark.read.format("delta").load(paths["profiles"]).orderBy("user_id").limit(3).collect()
    first, second, third = subjects
    lines = [
        {"request_id": "r-erase", "org_id": first.org_id, "kind": "erasure", "mode": "delete",
         "identities": {"email": f" {first.email.upper()} ", "user_id": first.user_id}},
        {"request_id": "r-obfuscate", "org_id": second.org_id, "kind": "erasure", "mode": "obfuscate",
         "identities": {"user_id": second.user_id, "phone": PHONE}},
        {"request_id": "r-access", "org_id": third.org_id, "kind": "access", "mode": "export",
         "identities": {"email": third.email}},
        {"request_id": "r-bad", "org_id": third.org_id, "kind": "erasure", "mode": "delete",
         "identities": {"email": third.email.replace("@", " at "), "user_id": third.user_id}},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def catalog_text(spark, cfg) -> str:
    """Every row of the catalog tables, as JSON lines."""
    from ketch_spark.tables import read_table, table_path

    texts = []
    for name in CATALOG_TABLES:
        if Path(table_path(cfg, name), "_delta_log").is_dir():
            df = read_table(spark, cfg, name)
            texts += [r[0] for r in df.select(F.to_json(F.struct(*df.columns))).collect()]
    return "\n".join(texts)


@pytest.fixture()
def restored_session_conf(spark):
    """The CLI applies the config's S3 settings to the shared session: they are taken off afterwards."""
    before = dict(spark.conf.getAll)
    yield
    for key, value in dict(spark.conf.getAll).items():
        if key not in before:
            spark.conf.unset(key)
        elif before[key] != value:
            spark.conf.set(key, before[key])


@pytest.mark.slow  # every command in turn, about 80 s: `make test-slow` (and CI) runs it
def test_no_secret_or_personal_value_reaches_output_logs_errors_or_the_catalog(
    spark, tmp_path, capsys, caplog, monkeypatch, restored_session_conf
):
    monkeypatch.setenv("KETCH_RECEIPT_SECRET", RECEIPT_SECRET)
    caplog.set_level(logging.DEBUG, logger="ketch_spark")
    warehouse = tmp_path / "wh"
    conf = write_conf(tmp_path, warehouse)
    cfg = load_config(conf)
    paths = generated_data(spark, cfg, n_users=30)
    forbidden = personal_values(spark, paths) | {S3_SECRET, S3_ACCESS_KEY, JDBC_PASSWORD, RECEIPT_SECRET}
    # the check finds what it looks for: the raw consent input holds the generated user ids
    raw_input = "".join(p.read_text() for p in Path(paths["consent_json"]).glob("part-*"))
    assert leaks(raw_input, forbidden)
    requests = requests_file(spark, paths, tmp_path / "requests.jsonl")
    report = tmp_path / "report.html"

    def run(name: str, argv: list[str]) -> tuple[int, str]:
        code = main(["-v", *argv, "--conf", str(conf)])
        captured = capsys.readouterr()
        summaries[name] = json.loads(captured.out.strip().splitlines()[-1])
        return code, captured.out + captured.err

    outputs, summaries = {}, {}
    commands = {
        "ingest json": ["consent", "ingest", "--input", paths["consent_json"], "--format", "json"],
        "compact": ["consent", "compact"],
        "scan": ["catalog", "scan", "--source", paths["profiles"], "--source", paths["logs"],
                 "--source", "jdbc:postgresql://127.0.0.1:1/warehouse"],
        "list": ["catalog", "list"],
        "submit": ["dsr", "submit", "--input", str(requests)],
        "run": ["dsr", "run"],
        "report": ["report", "--out", str(report)],
        # a failing command: a Spark failure on one of the data's files
        "failing ingest": ["consent", "ingest", "--input", paths["consent_json"], "--format", "parquet"],
    }
    codes = {}
    for name, argv in commands.items():
        codes[name], outputs[name] = run(name, argv)

    # the commands did their work: the checks below look at real output
    assert codes["ingest json"] == 0 and codes["compact"] == 0 and codes["report"] == 0, codes
    scan = summaries["scan"]
    assert scan["errors"] == 1 and "127.0.0.1:1" in json.dumps(scan["error_assets"]), scan
    assert "rejected r-bad" in outputs["submit"]
    run_summary = summaries["run"]
    assert run_summary["receipts"] and run_summary["exports"], run_summary
    assert codes["failing ingest"] == 1 and "is not a Parquet file" in outputs["failing ingest"]

    for name, text in outputs.items():
        assert not leaks(text, forbidden), (name, leaks(text, forbidden))
    logged = "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records)
    assert any(r.name.startswith("ketch_spark") for r in caplog.records)
    assert not leaks(logged, forbidden), leaks(logged, forbidden)
    assert not leaks(catalog_text(spark, cfg), forbidden), leaks(catalog_text(spark, cfg), forbidden)
    assert not leaks(report.read_text(), forbidden), leaks(report.read_text(), forbidden)
    for receipt in Path(warehouse, "dsr", "receipts").glob("*.json"):
        assert not leaks(receipt.read_text(), forbidden), (receipt.name, leaks(receipt.read_text(), forbidden))


@pytest.mark.slow  # the whole demo: a few minutes
def test_the_demo_prints_logs_and_catalogs_no_secret_or_personal_value(
    spark, tmp_path, capsys, caplog, monkeypatch, restored_session_conf
):
    monkeypatch.setenv("KETCH_RECEIPT_SECRET", RECEIPT_SECRET)
    caplog.set_level(logging.DEBUG, logger="ketch_spark")
    warehouse = tmp_path / "wh"
    conf = write_conf(tmp_path, warehouse)
    assert main(["-v", "demo", "--conf", str(conf), "--users", "300"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["status"] == "ok"
    cfg = load_config(conf)
    paths = {"profiles": cfg.path("lake/profiles"), "logs": cfg.path("raw/logs")}
    forbidden = personal_values(spark, paths) | {S3_SECRET, S3_ACCESS_KEY, JDBC_PASSWORD, RECEIPT_SECRET}
    logged = "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records)
    for name, text in (("stdout", captured.out), ("stderr", captured.err), ("logs", logged),
                       ("catalog", catalog_text(spark, cfg))):
        assert not leaks(text, forbidden), (name, leaks(text, forbidden))
    for receipt in Path(warehouse, "dsr", "receipts").glob("*.json"):
        assert not leaks(receipt.read_text(), forbidden), (receipt.name, leaks(receipt.read_text(), forbidden))
