"""Rights over ketch-spark's own tables: consent/events (append-only), consent/state and consent/quarantine."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from ketch_spark.clock import utc_now
from ketch_spark.config import dsr_settings_from_mapping
from ketch_spark.consent.compact import compact_consent
from ketch_spark.consent.sources import ingest_consent
from ketch_spark.rights.engine import own_assets, run_requests
from ketch_spark.rights.requests import read_requests, submit_requests
from ketch_spark.tables import read_table, table_path

ORG, OTHER_ORG = "org-a", "org-b"
SECRET = "own-tables-receipt-secret-0123456789"
TS = "2026-11-20T10:00:00Z"


def _line(**fields) -> str:
    return json.dumps(fields)


def _state_rows(spark, cfg) -> set[tuple]:
    return {(r["org_id"], r["user_id"], bytes(r["granted"]) if isinstance(r["granted"], (bytes, bytearray)) else str(r["granted"]))
            for r in read_table(spark, cfg, "consent_state").collect()}


@pytest.fixture(scope="module")
def erased(spark, base_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("own-tables")
    settings = dsr_settings_from_mapping({"vacuum_retention_hours": 0, "allow_short_retention": True})
    cfg = dataclasses.replace(base_config.with_warehouse(root / "warehouse"), dsr=settings)
    lines = [
        _line(org_id=ORG, user_id="gone-1", ts=TS, purposes={"analytics": True, "advertising": True}, source="api"),
        _line(org_id=ORG, user_id="gone-1", ts="2026-11-21T10:00:00Z", purposes={"analytics": False}, source="api"),
        _line(org_id=ORG, user_id="x'); DROP TABLE users; --", ts=TS, purposes={"analytics": True}, source="api"),
        _line(org_id=ORG, user_id="stays-1", ts=TS, purposes={"analytics": True}, source="api"),
        _line(org_id=OTHER_ORG, user_id="gone-1", ts=TS, purposes={"analytics": True}, source="api"),  # same id, other org
        _line(org_id=ORG, user_id="gone-1", ts=TS, purposes={"telepathy": True}, source="api"),  # quarantined
        _line(org_id=ORG, user_id="stays-1", ts="2099-01-01T00:00:00Z", purposes={"analytics": True}),  # quarantined
        '{"org_id": "org-a", "user_id": "gone-1", "ts": ',  # malformed: only the raw text names the subject
    ]
    raw = root / "raw" / "consent.jsonl"
    raw.parent.mkdir(parents=True)
    raw.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ingest_consent(spark, cfg, str(raw), fmt="json", batch_id="day-1", validate=False)
    compact_consent(spark, cfg)
    before = {name: read_table(spark, cfg, name).count() for name in ("consent_events", "consent_state", "consent_quarantine")}
    submit_requests(spark, cfg, [
        {"request_id": "r-gone", "org_id": ORG, "kind": "erasure", "mode": "delete", "identities": {"user_id": " gone-1 "}},
        {"request_id": "r-injection", "org_id": ORG, "kind": "erasure", "mode": "obfuscate",
         "identities": {"user_id": "x'); DROP TABLE users; --"}},  # obfuscation deletes consent records
    ])
    os.environ["KETCH_RECEIPT_SECRET"] = SECRET
    try:
        result = run_requests(spark, cfg)
    finally:
        os.environ.pop("KETCH_RECEIPT_SECRET", None)
    return dict(cfg=cfg, root=root, before=before, result=result)


def test_own_tables_are_rights_assets(spark, erased):
    names = {a.name: a for a in own_assets(spark, erased["cfg"])}
    assert set(names) == {"consent/events", "consent/state", "consent/quarantine"}
    assert names["consent/events"].properties == {"ketch_spark_own_table": "true", "append_only_erasure": "lift"}


def test_the_subject_is_gone_from_every_own_table_and_nothing_else_is(spark, erased):
    cfg, before = erased["cfg"], erased["before"]
    assert erased["result"].summary()["failed"] == []
    statuses = {r["request_id"]: r["status"] for r in read_requests(spark, cfg).collect()}
    assert statuses == {"r-gone": "done", "r-injection": "done"}

    events = read_table(spark, cfg, "consent_events")
    assert {(r["org_id"], r["user_id"]) for r in events.select("org_id", "user_id").distinct().collect()} == {
        (ORG, "stays-1"), (OTHER_ORG, "gone-1")}
    assert events.count() == before["consent_events"] - 4  # gone-1: 3 choices; the injection id: 1

    state = read_table(spark, cfg, "consent_state")
    assert {(r["org_id"], r["user_id"]) for r in state.collect()} == {(ORG, "stays-1"), (OTHER_ORG, "gone-1")}

    quarantine = [r["raw"] for r in read_table(spark, cfg, "consent_quarantine").collect()]
    assert len(quarantine) == before["consent_quarantine"] - 2
    assert all("gone-1" not in raw for raw in quarantine) and any("stays-1" in raw for raw in quarantine)

    props = spark.sql(f"DESCRIBE DETAIL delta.`{table_path(cfg, 'consent_events')}`").head()["properties"]
    assert props.get("delta.appendOnly") == "true"
    with pytest.raises(Exception, match="(?i)append"):
        spark.sql(f"DELETE FROM delta.`{table_path(cfg, 'consent_events')}` WHERE user_id = 'stays-1'")


def test_compaction_after_erasure_stays_exactly_once_and_equal_to_a_rebuild(spark, erased, monkeypatch):
    cfg, root = erased["cfg"], erased["root"]
    assert not compact_consent(spark, cfg).users_changed  # the erasure's commits carry no new event

    after_erasure = utc_now().isoformat() + "Z"  # the subject comes back and consents again
    later = root / "raw" / "later.jsonl"
    later.write_text("\n".join([
        _line(org_id=ORG, user_id="gone-1", ts=after_erasure, purposes={"advertising": True}, source="api"),
        _line(org_id=ORG, user_id="gone-1", ts="2026-11-25T10:00:00Z", purposes={"analytics": True}, source="api"),
        _line(org_id=ORG, user_id="stays-1", ts="2026-11-25T10:00:00Z", purposes={"analytics": False}, source="api"),
    ]) + "\n", encoding="utf-8")
    monkeypatch.setenv("KETCH_RECEIPT_SECRET", SECRET)  # the ledger lists gone-1: ingest needs its key
    replay = ingest_consent(spark, cfg, str(later), fmt="json", batch_id="day-2", validate=False)
    assert replay.reasons == {"erased_subject": 1}  # an old event of the erased subject stays out
    incremental = compact_consent(spark, cfg)
    assert incremental.inserted == 1  # the erased subject's new consent makes a new state row
    after_incremental = _state_rows(spark, cfg)
    compact_consent(spark, cfg, full=True)
    assert _state_rows(spark, cfg) == after_incremental
    assert (ORG, "gone-1") in {(o, u) for o, u, _ in after_incremental}
