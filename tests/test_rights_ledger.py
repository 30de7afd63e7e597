"""The erased-subject ledger: a restored or copied dataset is erased again; ingest keeps erased users' old events out."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from ketch_spark.catalog import AssetCatalog
from ketch_spark.clock import utc_now
from ketch_spark.consent.sources import IngestError, ingest_consent
from ketch_spark.rights.audit import read_audit
from ketch_spark.rights.engine import run_requests
from ketch_spark.rights.ledger import ledger_key
from ketch_spark.rights.requests import read_requests, submit_requests
from ketch_spark.tables import read_table

ORG, OTHER_ORG = "org-a", "org-b"
SECRET = "ledger-test-receipt-secret-0123456789"
CUSTOMERS = [
    (ORG, "u-1", "Ada.Lovelace@example.com", "Ada Lovelace"),
    (ORG, "u-2", "grace.hopper@example.com", "Grace Hopper"),
    (ORG, "u-3", "alan.turing@example.com", "Alan Turing"),
    (OTHER_ORG, "u-1", "someone.else@example.org", "Someone Else"),  # the same user id, another customer
    *((ORG, f"u-{100 + i}", f"filler{i}@example.com", f"Filler Person {i}") for i in range(40)),
]
SCHEMA = "org_id string, user_id string, email string, full_name string"


def _rows(spark, path: str, fmt: str = "delta") -> set[tuple]:
    return {tuple(r) for r in spark.read.format(fmt).load(path).select("org_id", "user_id", "email", "full_name").collect()}


@pytest.fixture(scope="module")
def ledger_env(spark, base_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("ledger")
    cfg = base_config.with_warehouse(root / "warehouse")
    customers = f"file://{root}/lake/customers"
    spark.createDataFrame(CUSTOMERS, SCHEMA).coalesce(1).write.format("delta").save(customers)
    os.environ["KETCH_RECEIPT_SECRET"] = SECRET
    try:
        scanned = AssetCatalog(spark, cfg).scan(customers)
        assert scanned.errors == 0
        submit_requests(spark, cfg, [{"request_id": "r-ada", "org_id": ORG, "kind": "erasure", "mode": "delete",
                                      "identities": {"user_id": "u-1", "email": "ADA.lovelace@example.com"}}])
        first = run_requests(spark, cfg)
        erased_at = utc_now()
        yield dict(cfg=cfg, root=root, customers=customers, first=first, erased_at=erased_at)
    finally:
        os.environ.pop("KETCH_RECEIPT_SECRET", None)


def test_a_finished_erasure_is_in_the_ledger_as_hmacs_only(spark, ledger_env):
    cfg = ledger_env["cfg"]
    assert ledger_env["first"].done == ["r-ada"]
    ledger = read_table(spark, cfg, "dsr_ledger").collect()
    assert {(r["org_id"], r["identity_type"], r["request_id"], r["mode"]) for r in ledger} == {
        (ORG, "user_id", "r-ada", "delete"), (ORG, "email", "r-ada", "delete"),
        (ORG, "email_sha256", "r-ada", "delete")}  # derived from the email at intake
    assert all(len(r["identity_hmac"]) == 64 and "u-1" not in r["identity_hmac"] for r in ledger)
    stored = json.dumps([r.asDict() for r in ledger], default=str).lower()
    assert "lovelace" not in stored and "\"u-1\"" not in stored
    assert _rows(spark, ledger_env["customers"]) == {r for r in CUSTOMERS if r[1:3] != ("u-1", "Ada.Lovelace@example.com")}


def test_a_restored_table_and_a_new_copy_are_erased_again_on_the_next_run(spark, ledger_env):
    cfg, root, customers = ledger_env["cfg"], ledger_env["root"], ledger_env["customers"]
    DeltaTable.forPath(spark, customers).restoreToVersion(0)  # a backup brings the subject back
    copy = f"file://{root}/lake/copy"
    spark.createDataFrame(CUSTOMERS, SCHEMA).write.parquet(copy)  # and an old export is copied into the lake
    os.environ["KETCH_RECEIPT_SECRET"] = SECRET
    try:
        assert AssetCatalog(spark, cfg).scan(customers, copy).errors == 0
        dry = run_requests(spark, cfg, dry_run=True)
        assert {(r["location"], r["status"]) for r in dry.resurrected} == {(customers, "dry-run"), (copy, "dry-run")}
        assert _rows(spark, customers) == set(CUSTOMERS)  # the dry run changed nothing

        swept = run_requests(spark, cfg)
        again = run_requests(spark, cfg)
    finally:
        os.environ.pop("KETCH_RECEIPT_SECRET", None)
    found = {r["location"]: r for r in swept.resurrected}
    assert set(found) == {customers, copy}
    assert all(r["status"] == "ok" and r["requests"] == ["r-ada"] and r["rows_changed"] == 1 for r in found.values())
    kept = {r for r in CUSTOMERS if r[:2] != (ORG, "u-1")}
    assert _rows(spark, customers) == kept and _rows(spark, copy, "parquet") == kept
    assert again.resurrected == []  # nothing came back since
    audit = read_audit(spark, cfg).where(F.array_contains("request_ids", "r-ada:resurrected")).collect()
    assert {(r["action"], r["status"]) for r in audit} == {("erase", "ok"), ("verify", "ok")}
    assert {r["request_id"]: r["status"] for r in read_requests(spark, cfg).collect()} == {"r-ada": "done"}
    assert "lovelace" not in json.dumps(swept.summary()).lower()


def test_ingest_quarantines_an_erased_users_events_from_before_the_erasure(spark, ledger_env, monkeypatch):
    cfg, root, erased_at = ledger_env["cfg"], ledger_env["root"], ledger_env["erased_at"]
    after = (utc_now() + dt.timedelta(seconds=1)).isoformat() + "Z"
    lines = [
        json.dumps({"org_id": ORG, "user_id": "u-1", "ts": "2026-11-20T10:00:00Z", "purposes": {"analytics": True}}),
        json.dumps({"org_id": ORG, "user_id": " u-1 ", "ts": "2026-11-21T10:00:00Z", "purposes": {"advertising": True}}),
        json.dumps({"org_id": ORG, "user_id": "u-1", "ts": after, "purposes": {"analytics": False}}),  # consents again
        json.dumps({"org_id": OTHER_ORG, "user_id": "u-1", "ts": "2026-11-20T10:00:00Z", "purposes": {"analytics": True}}),
        json.dumps({"org_id": ORG, "user_id": "u-2", "ts": "2026-11-20T10:00:00Z", "purposes": {"analytics": True}}),
    ]
    raw = root / "raw" / "replayed.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text("\n".join(lines) + "\n", encoding="utf-8")

    monkeypatch.delenv("KETCH_RECEIPT_SECRET", raising=False)
    with pytest.raises(IngestError, match="KETCH_RECEIPT_SECRET"):
        ingest_consent(spark, cfg, str(raw), fmt="json", validate=False)

    monkeypatch.setenv("KETCH_RECEIPT_SECRET", SECRET)
    result = ingest_consent(spark, cfg, str(raw), fmt="json", validate=False)
    assert result.reasons == {"erased_subject": 2}
    events = read_table(spark, cfg, "consent_events").where(F.col("batch_id") == result.batch_id).collect()
    assert sorted((r["org_id"], r["user_id"], r["purpose"]) for r in events) == [
        (ORG, "u-1", "analytics"), (ORG, "u-2", "analytics"), (OTHER_ORG, "u-1", "analytics")]
    assert [r["event_ts"] > erased_at for r in events if (r["org_id"], r["user_id"]) == (ORG, "u-1")] == [True]
    quarantined = read_table(spark, cfg, "consent_quarantine").where(F.col("batch_id") == result.batch_id).collect()
    assert {r["reason"] for r in quarantined} == {"erased_subject"}
    assert all("u-1" not in r["raw"] and "erased on" in r["detail"] for r in quarantined)
    assert len(ledger_key(cfg.dsr)) == 32
