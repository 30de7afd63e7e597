"""Reviewed labels survive rescans, the rights engine uses them, and the review queue lists low-confidence,
context-inferred and changed classifications (library and command line).

One catalog goes through the sequence a reviewer lives: scan, review, label, new data, rescan, review again,
label again; the assertions look at each step (the steps are recorded once, in a module fixture)."""

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


def _write_customers(spark, folder: Path, emails: list[str], notes: list[str]) -> None:
    rows = [(1000 + i, email, f"A-{i:04d}", note) for i, (email, note) in enumerate(zip(emails, notes))]
    spark.createDataFrame(rows, "id long, email string, account_ref string, notes string") \
        .coalesce(1).write.mode("overwrite").parquet(str(folder))


def _columns(catalog: AssetCatalog) -> dict[str, tuple]:
    return {r["column"]: (r["category"], r["method"]) for r in catalog.columns().collect()}


def _queue(catalog: AssetCatalog) -> dict[str, str]:
    return {r["column"]: r["reason"] for r in catalog.review().collect()}


@pytest.fixture(scope="module")
def lifecycle(spark, base_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog-review")
    cfg = base_config.with_warehouse(root / "wh")
    folder = root / "lake" / "customers"
    _write_customers(spark, folder, _EMAILS, ["called back", "prefers mail", "vip"] * 4)
    catalog = AssetCatalog(spark, cfg)
    steps = {"first_scan": catalog.scan(f"file://{folder}")}
    steps["first"], steps["first_queue"] = _columns(catalog), _queue(catalog)
    catalog.label(str(folder), "account_ref", None, labelled_by="dpo@example.com", note="a reseller account, a company")
    catalog.label("customers", "id", "user_id", labelled_by="dpo@example.com")
    catalog.label(str(folder), "email", "email", labelled_by="dpo@example.com")
    steps["labelled"], steps["labelled_queue"] = _columns(catalog), _queue(catalog)
    steps["identity"] = {c.column for a in rights_assets(spark, cfg) for c in a.identity_columns}
    _write_customers(spark, folder, ["opted out"] * 12, _EMAILS)  # new files: the asset is sampled again
    steps["rescan"] = catalog.scan(f"file://{folder}")
    steps["again"], steps["again_queue"] = _columns(catalog), _queue(catalog)
    catalog.label(str(folder), "email", "email", labelled_by="dpo@example.com", note="checked: legacy rows")
    steps["settled_queue"] = _queue(catalog)
    steps["labels"] = {r["column"]: r for r in catalog.labels().collect()}
    return catalog, folder, cfg, steps


def test_first_scan_queues_what_was_inferred(lifecycle):
    _, _, _, steps = lifecycle
    assert steps["first_scan"].errors == 0
    assert steps["first"]["id"][0] == "user_id" and steps["first"]["id"][1].startswith("context")  # a customers id
    assert steps["first"]["account_ref"][0] == "user_id"
    assert "inferred" in steps["first_queue"]["id"]


def test_labels_win_at_once_and_reach_the_rights_engine(lifecycle):
    _, _, _, steps = lifecycle
    assert steps["labelled"]["account_ref"] == (None, "label") and steps["labelled"]["id"] == ("user_id", "label")
    assert "id" not in steps["labelled_queue"]
    assert "account_ref" not in steps["identity"] and {"id", "email"} <= steps["identity"]
    label = steps["labels"]["account_ref"]
    assert label["labelled_by"] == "dpo@example.com" and label["labelled_at"] and label["note"].startswith("a reseller")


def test_a_rescan_keeps_labels_and_records_changes_and_drift(lifecycle):
    _, _, _, steps = lifecycle
    assert steps["rescan"].sampled == 1 and steps["rescan"].changed_columns == 2
    assert steps["again"]["account_ref"] == (None, "label") and steps["again"]["id"] == ("user_id", "label")
    assert steps["again"]["email"] == ("email", "label")  # the label still wins over drifted values
    assert steps["again"]["notes"][0] == "email"
    assert "rescan" in steps["again_queue"]["notes"] and "was not personal" in steps["again_queue"]["notes"]
    assert steps["again_queue"]["email"].startswith("drift: labelled email")
    assert "email" not in steps["settled_queue"] and "notes" in steps["settled_queue"]  # a later label settles it


def test_label_errors_say_what_to_do(lifecycle):
    catalog, folder, _, _ = lifecycle
    with pytest.raises(ConfigError, match="unknown category 'mail'"):
        catalog.label(str(folder), "email", "mail")
    with pytest.raises(ConfigError, match="no catalogued asset"):
        catalog.label("nowhere", "email", "email")
    with pytest.raises(ConfigError, match="did you mean email"):
        catalog.label(str(folder), "e-mail", "email")


def test_cli_review_and_label(lifecycle, tmp_path, capsys):
    _, folder, cfg, _ = lifecycle
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {cfg.warehouse}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    assert main(["catalog", "review", "--conf", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "notes" in out and json.loads(out.strip().splitlines()[-1])["to_review"] >= 1
    assert main(["catalog", "label", "--asset", str(folder), "--column", "notes", "--as", "email", "--by", "me",
                 "--conf", str(conf)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["category"] == "email" and summary["labelled_by"] == "me"
    assert main(["catalog", "label", "--asset", str(folder), "--column", "nope", "--not-personal",
                 "--conf", str(conf)]) == 1


def test_personal_columns_and_search_return_what_the_catalog_found(lifecycle):
    catalog, folder, _, _ = lifecycle
    found = {r["column"]: r for r in catalog.personal_columns().collect()}
    assert set(found) == {"id", "email", "notes"}  # account_ref was labelled not personal
    assert (found["id"]["identity_type"], found["id"]["method"], found["id"]["confidence"]) == ("user_id", "label", 1.0)
    assert found["email"]["location"] == f"file://{folder}"
    assert {r["column"] for r in catalog.personal_columns(identity_type="email").collect()} == {"email", "notes"}
    assert catalog.personal_columns(asset="customers").count() == 3
    assert catalog.personal_columns(asset=str(folder), identity_type="user_id").count() == 1
    assert catalog.personal_columns(asset="elsewhere").count() == 0
    assert catalog.columns(asset=str(folder)).count() == 4  # the table's rows, personal or not
    assert [r["column"] for r in catalog.columns(identity_type="user_id").collect()] == ["id"]
    assert {r["column"] for r in catalog.search("EMAIL").collect()} == {"email", "notes"}  # category, column
    assert {r["column"] for r in catalog.search("User_Id").collect()} == {"id"}  # identity type
    assert catalog.search("lake/CUSTOMERS").count() == 3  # asset location
    assert catalog.search("no such thing").count() == 0


def test_cli_columns_and_search_print_a_table(lifecycle, tmp_path, capsys):
    _, folder, cfg, _ = lifecycle
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {cfg.warehouse}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    assert main(["catalog", "columns", "--identity-type", "email", "--conf", str(conf)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["asset", "column", "category", "identity", "type", "confidence", "method"]
    rows = [line.split() for line in lines[2:-1]]
    assert {(row[0], row[1], row[3]) for row in rows} == {(f"file://{folder}", "email", "email"),
                                                        (f"file://{folder}", "notes", "email")}
    assert json.loads(lines[-1]) | {"seconds": 0} == {"command": "catalog columns", "status": "ok", "columns": 2,
                                                      "assets": 1, "seconds": 0}
    assert main(["catalog", "columns", "--asset", "elsewhere", "--conf", str(conf)]) == 0
    assert capsys.readouterr().out.startswith("no personal columns found in asset elsewhere")
    assert main(["catalog", "search", "user_id", "--conf", str(conf)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in lines[2:-1]] == [[f"file://{folder}", "id"]]
    assert json.loads(lines[-1])["columns"] == 1 and json.loads(lines[-1])["text"] == "user_id"
    with pytest.raises(SystemExit):
        main(["catalog", "columns", "--identity-type", "mail", "--conf", str(conf)])  # refused before Spark starts
