"""Reviewed labels survive rescans, the rights engine uses them, and the review queue lists low-confidence,
context-inferred and changed classifications (library and command line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketch_spark.catalog import AssetCatalog
from ketch_spark.cli import main
from ketch_spark.errors import ConfigError
from ketch_spark.rights.engine import rights_assets

REPO = Path(__file__).resolve().parent.parent
_EMAILS = [f"person{i}@example.com" for i in range(12)]


def _write_contacts(spark, folder: Path, emails: list[str], notes: list[str], mode: str = "overwrite") -> None:
    rows = [(1000 + i, email, f"A-{i:04d}", note) for i, (email, note) in enumerate(zip(emails, notes))]
    spark.createDataFrame(rows, "id long, email string, account_ref string, notes string") \
        .coalesce(1).write.mode(mode).parquet(str(folder))


@pytest.fixture()
def scanned(spark, cfg, tmp_path):
    folder = tmp_path / "lake" / "contacts"
    _write_contacts(spark, folder, _EMAILS, ["called back", "prefers mail", "vip"] * 4)
    catalog = AssetCatalog(spark, cfg)
    assert catalog.scan(f"file://{folder}").errors == 0
    return catalog, folder


def _columns(catalog: AssetCatalog) -> dict[str, tuple]:
    return {r["column"]: (r["category"], r["method"]) for r in catalog.columns().collect()}


def test_labels_win_survive_rescans_and_reach_the_rights_engine(spark, cfg, scanned):
    catalog, folder = scanned
    first = _columns(catalog)
    assert first["id"][0] == "user_id" and first["id"][1].startswith("context")  # a contacts table's id
    assert first["account_ref"][0] == "user_id"
    queued = {r["column"]: r["reason"] for r in catalog.review().collect()}
    assert "id" in queued and "inferred" in queued["id"]

    catalog.label(str(folder), "account_ref", None, labelled_by="dpo@example.com", note="a CRM account, a company")
    catalog.label("contacts", "id", "user_id", labelled_by="dpo@example.com")
    after_label = _columns(catalog)
    assert after_label["account_ref"] == (None, "label") and after_label["id"] == ("user_id", "label")
    assert "id" not in {r["column"] for r in catalog.review().collect()}
    identity = {c.column for a in rights_assets(spark, cfg) for c in a.identity_columns}
    assert "account_ref" not in identity and {"id", "email"} <= identity

    _write_contacts(spark, folder, _EMAILS, _EMAILS)  # new files: the asset is sampled again
    result = catalog.scan(f"file://{folder}")
    assert result.sampled == 1 and result.changed_columns == 1
    again = _columns(catalog)
    assert again["account_ref"] == (None, "label") and again["id"] == ("user_id", "label")  # kept
    assert again["notes"][0] == "email"
    changes = {r["column"]: r["reason"] for r in catalog.review().collect()}
    assert "rescan" in changes["notes"] and "was not personal" in changes["notes"]
    labels = {r["column"]: r for r in catalog.labels().collect()}
    assert labels["account_ref"]["labelled_by"] == "dpo@example.com" and labels["account_ref"]["labelled_at"]


def test_a_labelled_column_whose_values_drift_is_reported(spark, scanned):
    catalog, folder = scanned
    catalog.label(str(folder), "email", "email", labelled_by="dpo@example.com")
    _write_contacts(spark, folder, ["opted out"] * 12, ["x"] * 12)
    catalog.scan(f"file://{folder}")
    assert _columns(catalog)["email"] == ("email", "label")  # the label still wins
    reasons = {r["column"]: r["reason"] for r in catalog.review().collect()}
    assert reasons["email"].startswith("drift: labelled email")
    catalog.label(str(folder), "email", "email", labelled_by="dpo@example.com", note="checked: legacy rows")
    assert "email" not in {r["column"] for r in catalog.review().collect()}  # settled by the later label


def test_label_errors_say_what_to_do(scanned):
    catalog, folder = scanned
    with pytest.raises(ConfigError, match="unknown category 'mail'"):
        catalog.label(str(folder), "email", "mail")
    with pytest.raises(ConfigError, match="no catalogued asset"):
        catalog.label("nowhere", "email", "email")
    with pytest.raises(ConfigError, match="did you mean email"):
        catalog.label(str(folder), "e-mail", "email")


def test_cli_review_and_label(spark, tmp_path, capsys):
    folder = tmp_path / "lake" / "customers"
    _write_contacts(spark, folder, _EMAILS, ["n"] * 12)
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {tmp_path / 'wh'}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    assert main(["catalog", "scan", "--source", f"file://{folder}", "--conf", str(conf)]) == 0
    capsys.readouterr()
    assert main(["catalog", "review", "--conf", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "id" in out and json.loads(out.strip().splitlines()[-1])["to_review"] >= 1
    assert main(["catalog", "label", "--asset", str(folder), "--column", "id", "--as", "user_id", "--by", "me",
                 "--conf", str(conf)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["category"] == "user_id" and summary["labelled_by"] == "me"
    assert main(["catalog", "label", "--asset", str(folder), "--column", "nope", "--not-personal",
                 "--conf", str(conf)]) == 1
