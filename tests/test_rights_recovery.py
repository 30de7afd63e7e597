"""Rights under faults and with the story's soft delete: a run interrupted between staging and swap,
or around the Delta DELETE, then rerun, ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from ketch_spark.catalog import AssetCatalog
from ketch_spark.config import dsr_settings_from_mapping
from ketch_spark.cli import _dsr_run
from ketch_spark.faults import FAULTS_ENV
from ketch_spark.rights.audit import read_audit
from ketch_spark.rights.engine import run_requests
from ketch_spark.rights.requests import read_requests, submit_requests

SOFT_DELETE = {
    "categories": {"email_sha256": {"method": "sha256", "value": "deleted"}, "email": "null",
                   "gender": {"method": "constant", "value": "other"},
                   "age_range": {"method": "constant", "value": "other"},
                   "income_band": {"method": "constant", "value": "other"}},
    "columns": {"household_income": {"method": "constant", "value": "other"},
                "customer_status": {"method": "constant", "value": "other"},
                "is_deleted": {"method": "constant", "value": True}},
}


def _email(i: int) -> str:
    return f"person{i}@example.com"


def _build(spark, root: Path) -> None:
    people = [(f"org-{i % 2}", f"u-{i}", _email(i), hashlib.sha256(_email(i).encode()).hexdigest(),
               ["female", "male"][i % 2], "25-34", "50k-75k", "active", False) for i in range(40)]
    (spark.createDataFrame(people, "org_id string, user_id string, email string, email_sha256 string, gender string, "
                                   "age_range string, household_income string, customer_status string, "
                                   "is_deleted boolean")
     .repartition(4, "user_id").write.format("delta").option("delta.enableDeletionVectors", "true")
     .save(str(root / "profiles")))
    logs = root / "logs"
    logs.mkdir()
    for part in range(4):
        with gzip.open(logs / f"part-{part:04d}.json.gz", "wt", encoding="utf-8") as handle:
            for i in range(part * 10, part * 10 + 10):
                handle.write(json.dumps({"org_id": f"org-{i % 2}", "user": {"id": f"u-{i}", "email": _email(i)},
                                         "event": "login"}) + "\n")
    for country in ("US", "DE"):
        target = root / "signups" / f"country={country}"
        target.mkdir(parents=True)
        rows = [f"{_email(i)},basic" for i in range(40) if (i % 2 == 0) == (country == "US")]
        (target / "part-00000.csv").write_text("email,plan\n" + "\n".join(rows) + "\n", encoding="utf-8")


def _requests() -> list[dict]:
    return [
        {"request_id": "r-del-1", "org_id": "org-1", "kind": "erasure", "mode": "delete",
         "identities": {"email": _email(1).upper(), "user_id": "u-1"}},
        {"request_id": "r-del-12", "org_id": "org-0", "kind": "erasure", "mode": "delete",
         "identities": {"email": _email(12)}},
        {"request_id": "r-soft-25", "org_id": "org-1", "kind": "erasure", "mode": "obfuscate",
         "identities": {"email": _email(25), "user_id": "u-25"}},
        {"request_id": "r-wrong-org", "org_id": "org-0", "kind": "erasure", "mode": "delete",
         "identities": {"user_id": "u-3"}},  # u-3 belongs to org-1: nothing of it may go
    ]


def _setup(spark, cfg, root: Path, pristine: Path):
    shutil.copytree(pristine, root)
    uris = [f"file://{root}/profiles", f"file://{root}/logs", f"file://{root}/signups"]
    assert AssetCatalog(spark, cfg).scan(*uris).errors == 0
    submitted = submit_requests(spark, cfg, _requests())
    assert len(submitted.accepted) == 4


def _state(spark, root: Path) -> dict:
    return {
        "profiles": spark.read.format("delta").load(f"file://{root}/profiles"),
        "logs": spark.read.json(f"file://{root}/logs"),
        "signups": spark.read.option("header", True).csv(f"file://{root}/signups"),
    }


def _erased_rows(spark, cfg) -> dict[str, int]:
    """Rows changed per asset over every erase attempt (a failed attempt counts what it did change)."""
    rows = read_audit(spark, cfg).where(F.col("action") == "erase").collect()
    totals: dict[str, int] = {}
    for row in rows:
        name = row["location"].rstrip("/").rsplit("/", 1)[-1]
        totals[name] = totals.get(name, 0) + int(row["rows_changed"] or 0)
    return totals


@pytest.fixture(scope="module")
def pristine(spark, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recovery") / "pristine"
    root.mkdir()
    _build(spark, root)
    return root


def _cfg(base_config, warehouse: Path):
    settings = dsr_settings_from_mapping({"vacuum_retention_hours": 0, "allow_short_retention": True,
                                          "obfuscate": SOFT_DELETE})
    return dataclasses.replace(base_config.with_warehouse(warehouse), dsr=settings)


@pytest.fixture(scope="module")
def reference(spark, base_config, pristine, tmp_path_factory):
    """An uninterrupted run."""
    root = tmp_path_factory.mktemp("reference") / "lake"
    cfg = _cfg(base_config, root.parent / "wh")
    _setup(spark, cfg, root, pristine)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KETCH_RECEIPT_SECRET", "recovery-receipt-secret-0123")
        result = run_requests(spark, cfg)
    assert sorted(result.done) == ["r-del-1", "r-del-12", "r-soft-25", "r-wrong-org"], result.summary()
    return root, cfg


def test_uninterrupted_run_applies_the_story_soft_delete(spark, reference):
    root, _ = reference
    state = _state(spark, root)
    profiles = {r["user_id"]: r for r in state["profiles"].collect()}
    assert "u-1" not in profiles and "u-12" not in profiles and "u-3" in profiles and len(profiles) == 38
    soft = next(r for r in profiles.values() if r["user_id"] is None)
    assert soft["email_sha256"] == hashlib.sha256(b"deleted").hexdigest() and soft["email"] is None
    assert (soft["gender"], soft["age_range"], soft["household_income"], soft["customer_status"],
            soft["is_deleted"]) == ("other", "other", "other", "other", True)
    untouched = profiles["u-7"]
    assert (untouched["gender"], untouched["customer_status"], untouched["is_deleted"]) == ("male", "active", False)
    assert state["logs"].where(F.col("user.id").isin("u-1", "u-12")).count() == 0
    assert state["logs"].where(F.col("user.id") == "u-3").count() == 1
    assert state["signups"].where(F.col("email").isin(_email(1), _email(12))).count() == 0


@pytest.mark.parametrize("faults", [
    "rights.files.before_swap,rights.delta.before_delete",
    pytest.param("rights.files.mid_swap,rights.delta.after_delete", marks=pytest.mark.slow),  # make test's time
])
def test_fault_then_rerun_ends_like_an_uninterrupted_run(spark, base_config, pristine, reference, tmp_path,
                                                         monkeypatch, faults):
    root = tmp_path / "lake"
    cfg = _cfg(base_config, tmp_path / "wh")
    _setup(spark, cfg, root, pristine)
    monkeypatch.setenv("KETCH_RECEIPT_SECRET", "recovery-receipt-secret-0123")
    monkeypatch.setenv(FAULTS_ENV, faults)
    # through the command's own function: a run with failed requests is not "ok" (exit code 1)
    interrupted = _dsr_run(spark, cfg, argparse.Namespace(kind=None, dry_run=False))
    assert interrupted["failed"] and not {"r-del-1", "r-del-12"} & set(interrupted["done"])
    assert interrupted["status"] == ("partial" if interrupted["done"] else "failed")
    statuses = {r["request_id"]: r["status"] for r in read_requests(spark, cfg).collect()}
    assert statuses["r-del-1"] == "failed"
    errors = " ".join(r["error"] or "" for r in read_requests(spark, cfg).collect())
    assert "injected fault" in errors and _email(1) not in errors.lower()
    monkeypatch.delenv(FAULTS_ENV)
    rerun = run_requests(spark, cfg)
    assert sorted(rerun.done) == sorted(interrupted["failed"]), rerun.summary()
    assert not list((root / "logs").glob("_ketch_staging*")) and not list((root / "signups").glob("_ketch_staging*"))
    expected, got = _state(spark, reference[0]), _state(spark, root)
    for name in ("profiles", "logs", "signups"):
        assert_df_equality(got[name], expected[name], ignore_row_order=True, ignore_nullable=True)
    assert _erased_rows(spark, cfg) == _erased_rows(spark, reference[1])
