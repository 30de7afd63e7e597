"""GPP strings through consent ingest: ``--format gpp`` and a ``gpp_string`` column in CSV and Parquet.

The strings are written by IAB Tech Lab's own encoder (the ``iab`` fixture);
the repository's policy maps their fields to purposes.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from ketch_spark.consent.sources import ingest_consent
from ketch_spark.errors import SchemaError
from ketch_spark.tables import read_table

ORG = "org-gpp"
TS = "2026-11-20T10:00:00Z"
AT = dt.datetime(2026, 11, 20, 10)


def _usnat(iab, **fields: int) -> str:
    model = iab()
    for name, value in fields.items():
        model.setFieldValue("usnat", name, value)
    return model.encode()


def _uspv1(iab, text: str) -> str:
    model = iab()
    model.decodeSection("uspv1", text)
    return model.encode()


@pytest.fixture(scope="module")
def strings(iab) -> dict[str, str]:
    return {
        "opted_out": _usnat(iab, SaleOptOut=1, MspaCoveredTransaction=1),
        "not_opted_out": _usnat(iab, SaleOptOut=2, SharingOptOut=2, TargetedAdvertisingOptOut=2, MspaCoveredTransaction=1),
        "uspv1_opt_out": _uspv1(iab, "1YYN"),
    }


@pytest.fixture()
def env(spark, cfg, tmp_path):
    return tmp_path, cfg


def _write(path: Path, lines: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _events(spark, cfg, batch_id: str) -> set[tuple]:
    rows = read_table(spark, cfg, "consent_events").where(F.col("batch_id") == batch_id).collect()
    return {(r["user_id"], r["purpose"], r["granted"], r["event_ts"]) for r in rows}


def _quarantine(spark, cfg, batch_id: str) -> dict[str, tuple[str, str]]:
    rows = read_table(spark, cfg, "consent_quarantine").where(F.col("batch_id") == batch_id).collect()
    return {json.loads(r["raw"]).get("user_id") if r["raw"].startswith("{") else r["raw"]: (r["reason"], r["detail"]) for r in rows}


def test_gpp_format_maps_sections_through_the_policy_and_quarantines_bad_strings(spark, env, strings):
    root, cfg = env
    lines = [
        json.dumps({"org_id": ORG, "user_id": "g-1", "ts": TS, "gpp_string": strings["opted_out"]}),
        json.dumps({"org_id": ORG, "user_id": "g-2", "ts": TS, "gpp_string": strings["not_opted_out"],
                    "purposes": {"analytics": True}}),
        json.dumps({"org_id": ORG, "user_id": "g-3", "ts": TS, "gpp_string": "DBABLA~BAAQ"}),
        json.dumps({"org_id": ORG, "user_id": "g-4", "gpp_string": strings["opted_out"]}),
        json.dumps({"org_id": ORG, "user_id": "g-5", "ts": TS, "gpp_string": strings["uspv1_opt_out"]}),
        json.dumps({"org_id": ORG, "user_id": "g-6", "ts": TS}),
        json.dumps({"org_id": ORG, "user_id": "g-7", "ts": TS, "gpp_string": "DBABLA~BAAQ<script>"}),
        json.dumps({"org_id": ORG, "user_id": 8, "ts": TS, "gpp_string": strings["opted_out"]}),
    ]
    result = ingest_consent(spark, cfg, _write(root / "gpp.jsonl", lines), fmt="gpp", validate=False)
    assert result.reasons == {"invalid_gpp_string": 2, "invalid_timestamp": 1, "malformed_record": 1, "invalid_user_id": 1}
    assert result.read == result.accepted + result.quarantined
    assert _events(spark, cfg, result.batch_id) == {
        ("g-1", "data_sale", False, AT),
        ("g-1", "advertising", False, AT),
        # "did not opt out" grants the legitimate-interest purpose only; advertising needs a consent
        ("g-2", "data_sale", True, AT),
        ("g-2", "analytics", True, AT),
        ("g-5", "data_sale", False, AT),
        ("g-5", "advertising", False, AT),
    }
    quarantined = _quarantine(spark, cfg, result.batch_id)
    assert quarantined["g-3"][0] == "invalid_gpp_string" and quarantined["g-3"][1].startswith("too_short: section 7 (usnat)")
    assert quarantined["g-7"][0] == "invalid_gpp_string" and quarantined["g-7"][1].startswith("bad_base64url")
    assert quarantined["g-6"] == ("malformed_record", "the record carries no purpose choice")


def test_json_format_quarantines_a_gpp_string_with_a_pointer_to_the_gpp_format(spark, env, strings):
    root, cfg = env
    line = json.dumps({"org_id": ORG, "user_id": "j-1", "ts": TS, "gpp_string": strings["opted_out"],
                       "purposes": {"analytics": True}})
    result = ingest_consent(spark, cfg, _write(root / "plain.jsonl", [line]), fmt="json", validate=False)
    assert (result.accepted, result.reasons) == (0, {"malformed_record": 1})
    reason, detail = _quarantine(spark, cfg, result.batch_id)["j-1"]
    assert "--format gpp" in detail


def test_csv_with_a_gpp_string_column_needs_no_purpose_columns(spark, env, strings):
    root, cfg = env
    lines = [
        "User_ID,gpp_string,org_id,ts",  # any order, any case
        f"c-1,{strings['opted_out']},{ORG},{TS}",
        f"c-2,,{ORG},{TS}",
        f"c-3,DBABLA~BAAQYAAAAg_A,{ORG},{TS}",
    ]
    result = ingest_consent(spark, cfg, _write(root / "csv" / "gpp.csv", lines), fmt="csv", validate=False)
    assert result.reasons == {"malformed_record": 1, "invalid_gpp_string": 1}
    assert _events(spark, cfg, result.batch_id) == {("c-1", "data_sale", False, AT), ("c-1", "advertising", False, AT)}
    both = [
        "org_id,user_id,ts,purpose,granted,gpp_string",
        f"{ORG},c-4,{TS},analytics,true,{strings['not_opted_out']}",
        f"{ORG},c-5,{TS},analytics,false,",
    ]
    result = ingest_consent(spark, cfg, _write(root / "csv2" / "both.csv", both), fmt="csv", validate=False)
    assert result.reasons == {}
    assert _events(spark, cfg, result.batch_id) == {
        ("c-4", "analytics", True, AT), ("c-4", "data_sale", True, AT), ("c-5", "analytics", False, AT),
    }
    with pytest.raises(SchemaError, match="gpp_string"):
        ingest_consent(spark, cfg, _write(root / "csv3" / "none.csv", ["org_id,user_id,ts", f"{ORG},x,{TS}"]), fmt="csv")


def test_parquet_with_only_a_gpp_string(spark, env, strings):
    root, cfg = env
    path = str(root / "pq")
    spark.createDataFrame(
        [(ORG, "p-1", AT, strings["uspv1_opt_out"]), (ORG, "p-2", AT, "~~~")],
        "org_id string, user_id string, ts timestamp, gpp_string string",
    ).write.parquet(path)
    result = ingest_consent(spark, cfg, path, fmt="parquet", validate=False)
    assert result.reasons == {"invalid_gpp_string": 1}
    assert _events(spark, cfg, result.batch_id) == {("p-1", "data_sale", False, AT), ("p-1", "advertising", False, AT)}
