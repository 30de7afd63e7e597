"""Consent ingest: every format, every quarantine reason, duplicates, idempotent re-ingest."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import time
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from ketch_spark.consent.sources import IngestError, ingest_consent, quarantine_breakdown
from ketch_spark.errors import SchemaError
from ketch_spark.tables import read_table
from tcf_encode import encode_tc

ORG = "0xDEADC0DE"
NOW = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _line(**fields) -> str:
    return json.dumps(fields)


JSON_LINES = [
    # valid: a signature and a single choice, plus a within-batch duplicate of the single choice
    _line(org_id=ORG, user_id="u-1", ts="2026-11-20T10:00:00Z", purposes={"analytics": True, "advertising": False}, source="api"),
    _line(org_id=ORG, user_id="u-2", ts="2026-11-20T11:00:00Z", purpose="email_marketing", granted=True, source="js_tag"),
    _line(org_id=ORG, user_id="u-2", ts="2026-11-20T11:00:00Z", purpose="email_marketing", granted=True, source="ios_sdk"),
    # a signature with one good, one unknown, one retired and one non-boolean choice
    _line(org_id=ORG, user_id="u-3", ts="2026-11-20T12:00:00Z",
          purposes={"personalization": True, "telepathy": True, "legacy_profiling": True, "analytics": "yes"}),
    '{"org_id": "0xDEADC0DE", "user_id": "u-4", "ts": "2026-11-20T1',
    "[1, 2, 3]",
    _line(user_id="u-5", ts="2026-11-20T10:00:00Z", purposes={"analytics": True}),
    _line(org_id="  ", user_id="u-5", ts="2026-11-20T10:00:00Z", purposes={"analytics": True}),
    _line(org_id=ORG, ts="2026-11-20T10:00:00Z", purposes={"analytics": True}),
    _line(org_id=ORG, user_id="u-6", ts="last tuesday", purposes={"analytics": True}),
    _line(org_id=ORG, user_id="u-7", purposes={"analytics": True}),
    _line(org_id=ORG, user_id="u-8", ts="2099-01-01T00:00:00Z", purposes={"analytics": True}),
    _line(org_id=ORG, user_id="u-9", ts="2026-11-20T10:00:00Z", purposes={}),
    "",
]
EXPECTED_JSON_REASONS = {
    "unknown_purpose": 1,
    "retired_purpose": 1,
    "invalid_choice": 1,
    "malformed_record": 3,
    "missing_org_id": 2,
    "missing_user_id": 1,
    "invalid_timestamp": 2,
    "future_timestamp": 1,
}


@pytest.fixture(scope="module")
def env(spark, base_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    return root, base_config.with_warehouse(root / "warehouse")


def _write(path: Path, lines: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _events(spark, cfg, batch_id):
    return read_table(spark, cfg, "consent_events").where(F.col("batch_id") == batch_id)


def test_json_reasons_counts_duplicates_and_reingest(spark, env):
    root, cfg = env
    path = _write(root / "raw" / "day1" / "consent.jsonl", JSON_LINES)

    first = ingest_consent(spark, cfg, path, fmt="json")
    assert first.read == first.accepted + first.quarantined + first.duplicates
    assert first.records == len(JSON_LINES) - 1  # the blank line is no record
    assert first.reasons == EXPECTED_JSON_REASONS
    assert (first.accepted, first.duplicates) == (4, 1)
    assert first.batch_id.startswith("b-") and not first.already_ingested
    assert first.expectations["rows_validated"] == 4
    # the events are sound; the record-less lines make the "<no source>" share fail
    assert [f.split(".")[0] for f in first.expectations["failed"]] == ["consent_sources"]
    assert first.expectations["quarantined_share_by_source"]["api"] == 0.0
    json.dumps(first.summary())

    expected = spark.createDataFrame(
        [
            (ORG, "u-1", "analytics", 1, True, dt.datetime(2026, 11, 20, 10)),
            (ORG, "u-1", "advertising", 3, False, dt.datetime(2026, 11, 20, 10)),
            (ORG, "u-2", "email_marketing", 4, True, dt.datetime(2026, 11, 20, 11)),
            (ORG, "u-3", "personalization", 2, True, dt.datetime(2026, 11, 20, 12)),
        ],
        "org_id string, user_id string, purpose string, purpose_bit int, granted boolean, event_ts timestamp",
    )
    stored = _events(spark, cfg, first.batch_id)
    assert_df_equality(stored.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)
    assert stored.where(F.to_date("event_ts") != F.col("event_date")).count() == 0

    quarantine = read_table(spark, cfg, "consent_quarantine").where(F.col("batch_id") == first.batch_id)
    raws = {r["raw"] for r in quarantine.collect()}
    assert JSON_LINES[4] in raws and "[1, 2, 3]" in raws
    assert quarantine.where(F.col("source_file").endswith("consent.jsonl")).count() == first.quarantined
    breakdown = {r["reason"]: r["count"] for r in quarantine_breakdown(spark, cfg, first.batch_id).collect()}
    assert breakdown == EXPECTED_JSON_REASONS

    # same files again: same batch id, nothing written twice
    again = ingest_consent(spark, cfg, path, fmt="json", validate=False)
    assert again.batch_id == first.batch_id and again.already_ingested
    assert (again.accepted, again.quarantined, again.duplicates) == (first.accepted, first.quarantined, first.duplicates)
    assert read_table(spark, cfg, "consent_events").count() == 4
    assert read_table(spark, cfg, "consent_quarantine").count() == first.quarantined

    # the same content under another file name is another batch: every valid row is a duplicate
    copy = root / "raw" / "day1-copy" / "consent.jsonl"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    other = ingest_consent(spark, cfg, str(copy), fmt="json", validate=False)
    assert other.batch_id != first.batch_id
    assert (other.accepted, other.duplicates) == (0, 5)
    assert other.read == other.accepted + other.quarantined + other.duplicates
    assert read_table(spark, cfg, "consent_events").count() == 4


def test_csv_parquet_and_errors(spark, env):
    root, cfg = env
    csv = _write(
        root / "raw" / "csv" / "consent.csv",
        [
            "org_id,user_id,ts,purpose,granted,source",
            f"{ORG},c-1,2026-11-21T08:00:00Z,analytics,true,file_drop",
            f"{ORG},c-1,2026-11-21T08:00:00Z,advertising,FALSE,file_drop",
            f"{ORG},c-2,2026-11-21T08:00:00Z,analytics,maybe,file_drop",
            ",c-3,2026-11-21T08:00:00Z,analytics,true,file_drop",
            f"{ORG},,2026-11-21T08:00:00Z,analytics,true,file_drop",
            f"{ORG},c-4,soon,analytics,true,file_drop",
            f"{ORG},c-5,2099-01-01T00:00:00Z,analytics,true,file_drop",
            f"{ORG},c-6,2026-11-21T08:00:00Z,telepathy,true,file_drop",
            f'{ORG},c-7,2026-11-21T08:00:00Z,analytics,true,file_drop,"unterminated',
        ],
    )
    result = ingest_consent(spark, cfg, csv, fmt="csv", batch_id="csv-1", validate=False)
    assert result.batch_id == "csv-1"
    assert (result.read, result.accepted, result.duplicates) == (9, 2, 0)
    assert result.reasons == {
        "invalid_choice": 1, "missing_org_id": 1, "missing_user_id": 1, "invalid_timestamp": 1,
        "future_timestamp": 1, "unknown_purpose": 1, "malformed_record": 1,
    }

    parquet_path = str(root / "raw" / "parquet")
    spark.createDataFrame(
        [
            (ORG, "p-1", dt.datetime(2026, 11, 22, 9), "analytics", True, "api"),
            (ORG, "p-2", dt.datetime(2026, 11, 22, 9), "telepathy", False, "api"),
            (ORG, "p-3", dt.datetime(2026, 11, 22, 9), "advertising", None, "api"),
        ],
        "org_id string, user_id string, ts timestamp, purpose string, granted boolean, source string",
    ).write.parquet(parquet_path)
    parquet = ingest_consent(spark, cfg, parquet_path, fmt="parquet", validate=False)
    assert (parquet.accepted, parquet.reasons) == (1, {"unknown_purpose": 1, "invalid_choice": 1})
    stored = _events(spark, cfg, parquet.batch_id).select("user_id", "purpose", "granted", "event_ts").collect()
    assert [tuple(r) for r in stored] == [("p-1", "analytics", True, dt.datetime(2026, 11, 22, 9))]

    with pytest.raises(IngestError):
        ingest_consent(spark, cfg, csv, fmt="xml")
    with pytest.raises(IngestError):
        ingest_consent(spark, cfg, str(root / "raw" / "nothing-here"), fmt="json")
    bad_parquet = str(root / "raw" / "bad-parquet")
    spark.createDataFrame([(1,)], "x int").write.parquet(bad_parquet)
    with pytest.raises(SchemaError):
        ingest_consent(spark, cfg, bad_parquet, fmt="parquet")


def test_tcf_records(spark, env, policy):
    root, cfg = env
    updated = dt.datetime(2026, 11, 23, 7, 30)
    all_granted = encode_tc(created=updated, last_updated=updated, purposes_consent=set(range(1, 11)))
    analytics_only = encode_tc(created=updated, last_updated=updated, purposes_consent={1, 8, 9},
                               purposes_li={10})
    lines = [
        _line(org_id=ORG, user_id="t-1", tc_string=all_granted, source="js_tag"),
        _line(org_id=ORG, user_id="t-2", tc_string=analytics_only, us_privacy="1YYN", ts="2026-11-23T09:00:00Z"),
        _line(org_id=ORG, user_id="t-3", us_privacy="1NNN", ts="2026-11-23T09:00:00Z"),
        _line(org_id=ORG, user_id="t-4", us_privacy="1---", ts="2026-11-23T09:00:00Z"),
        _line(org_id=ORG, user_id="t-5", tc_string="not*base64"),
        _line(org_id=ORG, user_id="t-6", tc_string="BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"),  # TCF v1: unsupported
        _line(org_id=ORG, user_id="t-7", us_privacy="2YNN", ts="2026-11-23T09:00:00Z"),
        _line(org_id=ORG, user_id="t-8", us_privacy="1YNN"),
        _line(org_id=ORG, user_id="t-9"),
    ]
    result = ingest_consent(spark, cfg, _write(root / "raw" / "tcf" / "signals.jsonl", lines), fmt="tcf", validate=True)
    assert result.reasons == {"invalid_tc_string": 2, "invalid_us_privacy": 1, "invalid_timestamp": 1, "malformed_record": 1}
    assert not [f for f in result.expectations["failed"] if not f.startswith("consent_sources.")]
    got = {
        (r["user_id"], r["purpose"]): (r["granted"], r["event_ts"])
        for r in _events(spark, cfg, result.batch_id).collect()
    }
    usp_ts = dt.datetime(2026, 11, 23, 9)
    expected = {
        ("t-1", "strictly_necessary"): (True, updated),
        ("t-1", "advertising"): (True, updated),
        ("t-1", "personalization"): (True, updated),
        ("t-1", "analytics"): (True, updated),
        ("t-1", "product_improvement"): (True, updated),
        ("t-2", "strictly_necessary"): (True, updated),
        ("t-2", "advertising"): (False, updated),
        ("t-2", "personalization"): (False, updated),
        ("t-2", "analytics"): (True, updated),
        ("t-2", "product_improvement"): (True, updated),  # legitimate interest: LI transparency bit set
        ("t-2", "data_sale"): (False, usp_ts),
        ("t-3", "data_sale"): (True, usp_ts),  # 'N': only legitimate-interest purposes are granted
    }
    # t-2's advertising: denied by the TC string (LastUpdated) and by the US opt-out (ts): two events
    assert {k: v for k, v in got.items() if k != ("t-2", "advertising")} == {
        k: v for k, v in expected.items() if k != ("t-2", "advertising")
    }
    advertising_t2 = _events(spark, cfg, result.batch_id).where("user_id = 't-2' AND purpose = 'advertising'")
    assert sorted(r["event_ts"] for r in advertising_t2.collect()) == [updated, usp_ts]
    assert result.read == result.accepted + result.quarantined + result.duplicates == 13 + 5


# ---------------------------------------------------------------- hostile inputs, one by one


@pytest.fixture()
def fresh(spark, base_config, tmp_path):
    return tmp_path, base_config.with_warehouse(tmp_path / "warehouse")


def _reasons_by_user(spark, cfg, batch_id):
    rows = read_table(spark, cfg, "consent_quarantine").where(F.col("batch_id") == batch_id).collect()
    return {json.loads(r["raw"]).get("user_id") if r["raw"].startswith("{") else r["raw"]: (r["reason"], r["detail"])
            for r in rows}


def test_ancient_timestamps_are_quarantined_and_the_rest_of_the_file_ingested(spark, fresh):
    root, cfg = fresh
    lines = [
        _line(org_id=ORG, user_id="year-999", ts="0999-06-01T00:00:00Z", purposes={"analytics": True}),
        _line(org_id=ORG, user_id="epoch-zero", ts="1970-01-01T00:00:00Z", purposes={"analytics": True}),
        _line(org_id=ORG, user_id="year-1", ts="0001-01-01T00:00:00Z", purposes={"analytics": True}),
        _line(org_id=ORG, user_id="ok-1", ts="2026-11-20T10:00:00Z", purposes={"analytics": True}),
        _line(org_id=ORG, user_id="ok-2", ts="2000-01-01T00:00:00Z", purposes={"analytics": False}),
    ]
    result = ingest_consent(spark, cfg, _write(root / "ancient.jsonl", lines), fmt="json", batch_id="ancient")
    assert result.reasons == {"ancient_timestamp": 3}
    assert result.accepted == 2
    assert sorted(r["user_id"] for r in _events(spark, cfg, "ancient").collect()) == ["ok-1", "ok-2"]
    reasons = _reasons_by_user(spark, cfg, "ancient")
    assert reasons["year-999"] == ("ancient_timestamp", "ts earlier than 2000-01-01: 0999-06-01T00:00:00Z")

    later = dataclasses.replace(cfg, consent=dataclasses.replace(cfg.consent, earliest_event_date=dt.date(2010, 1, 1)))
    strict = ingest_consent(spark, later, _write(root / "strict.jsonl", lines), fmt="json", batch_id="strict")
    assert (strict.reasons, strict.duplicates) == ({"ancient_timestamp": 4}, 1)  # ok-1 is stored already


def test_tc_strings_from_before_the_earliest_date_are_ancient(spark, fresh):
    root, cfg = fresh
    old = dt.datetime(1999, 5, 1)
    line = _line(org_id=ORG, user_id="tc-old", tc_string=encode_tc(created=old, last_updated=old, purposes_consent={1}))
    result = ingest_consent(spark, cfg, _write(root / "tc.jsonl", [line]), fmt="tcf", batch_id="tc-old")
    assert (result.reasons, result.accepted) == ({"ancient_timestamp": 1}, 0)


def test_a_reused_batch_id_with_other_records_is_refused(spark, fresh):
    root, cfg = fresh
    first = _write(root / "a" / "consent.jsonl", [
        _line(org_id=ORG, user_id="r-1", ts="2026-11-20T10:00:00Z", purposes={"analytics": True}),
    ])
    second = _write(root / "b" / "consent.jsonl", [
        _line(org_id=ORG, user_id="r-2", ts="2026-11-20T10:00:00Z", purposes={"analytics": False}),
    ])
    stored = ingest_consent(spark, cfg, first, fmt="json", batch_id="nightly")
    assert stored.accepted == 1 and not stored.already_ingested

    with pytest.raises(IngestError, match=r"batch id 'nightly' was already ingested with different records.*new batch id"):
        ingest_consent(spark, cfg, second, fmt="json", batch_id="nightly")
    assert read_table(spark, cfg, "consent_events").count() == 1
    assert [r["user_id"] for r in read_table(spark, cfg, "consent_events").collect()] == ["r-1"]

    # the same records again, even from another place, are the no-op they always were
    copy = root / "c" / "consent.jsonl"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    again = ingest_consent(spark, cfg, str(copy), fmt="json", batch_id="nightly")
    assert again.already_ingested and again.accepted == stored.accepted
    assert read_table(spark, cfg, "consent_events").count() == 1

    # the other records under a new id go in
    assert ingest_consent(spark, cfg, second, fmt="json", batch_id="nightly-2").accepted == 1


CSV_ROWS = [
    (ORG, "h-1", "2026-11-21T08:00:00Z", "analytics", "true", "file_drop"),
    (ORG, "h-2", "2026-11-21T08:00:00Z", "advertising", "0", "file_drop"),
]


def _csv_file(path: Path, header: list[str], rows: list[dict], *, bom: bool = False, quoted: bool = False) -> str:
    names = [f'"{h}"' if quoted else h for h in header]
    lines = [("\ufeff" if bom else "") + ",".join(names)] + [",".join(row.get(h, "") for h in header) for row in rows]
    return _write(path, lines)


def _as_dicts(rows):
    return [dict(zip(("org_id", "user_id", "ts", "purpose", "granted", "source"), row)) for row in rows]


def test_csv_columns_are_taken_by_header_name_in_any_order(spark, fresh):
    root, cfg = fresh
    rows = _as_dicts(CSV_ROWS)
    folder = root / "csv"
    _csv_file(folder / "a.csv", ["org_id", "user_id", "ts", "purpose", "granted", "source"], rows[:1])
    _csv_file(folder / "b.csv", ["user_id", "granted", "purpose", "ts", "org_id", "country", "source"],
              [{**rows[1], "country": "DE"}], bom=True, quoted=True)
    _csv_file(folder / "c.csv", [" Granted ", "PURPOSE", "ts", "User_Id", "org_id"],
              [{" Granted ": "false", "PURPOSE": "analytics", "ts": "2026-11-21T09:00:00Z", "User_Id": "h-3",
                "org_id": ORG}])
    result = ingest_consent(spark, cfg, str(folder), fmt="csv", batch_id="by-name", validate=False)
    assert result.quarantined == 0, result.reasons  # the header lines are not records
    assert result.ignored_columns == ("country",)
    got = {(r["org_id"], r["user_id"], r["purpose"], r["granted"], r["source"]) for r in _events(spark, cfg, "by-name").collect()}
    assert got == {
        (ORG, "h-1", "analytics", True, "file_drop"),
        (ORG, "h-2", "advertising", False, "file_drop"),
        (ORG, "h-3", "analytics", False, None),
    }


def test_csv_without_a_required_column_is_one_file_level_error_and_nothing_is_ingested(spark, fresh):
    root, cfg = fresh
    rows = _as_dicts(CSV_ROWS)
    folder = root / "csv"
    _csv_file(folder / "good.csv", ["org_id", "user_id", "ts", "purpose", "granted"], rows)
    _csv_file(folder / "no-ts.csv", ["org_id", "user_id", "purpose", "granted"], rows)
    _write(folder / "no-header.csv", [",".join(CSV_ROWS[0])])
    with pytest.raises(SchemaError) as caught:
        ingest_consent(spark, cfg, str(folder), fmt="csv", batch_id="missing")
    message = str(caught.value)
    assert "no-ts.csv: header lacks ts" in message and "nothing ingested" in message
    assert "no-header.csv: header lacks" in message and "good.csv" not in message
    assert "in any order" in message
    for table in ("consent_events", "consent_quarantine"):
        assert read_table(spark, cfg, table).count() == 0


def test_compressed_csv_and_a_huge_first_line(spark, fresh):
    root, cfg = fresh
    import gzip

    folder = root / "gz"
    folder.mkdir()
    text = "purpose,granted,ts,user_id,org_id\nanalytics,true,2026-11-21T08:00:00Z,gz-1," + ORG + "\n"
    (folder / "part.csv.gz").write_bytes(gzip.compress(text.encode()))
    result = ingest_consent(spark, cfg, str(folder), fmt="csv", batch_id="gz", validate=False)
    assert (result.accepted, result.quarantined) == (1, 0)

    huge = root / "huge"
    _write(huge / "big.csv", ["x" * 200_000])
    with pytest.raises(SchemaError, match="no line break within its first 65536 bytes"):
        ingest_consent(spark, cfg, str(huge), fmt="csv", batch_id="huge")


def test_non_string_and_overlong_ids_are_quarantined(spark, fresh):
    root, cfg = fresh
    ts = "2026-11-20T10:00:00Z"
    lines = [
        json.dumps({"org_id": ORG, "user_id": 12345, "ts": ts, "purposes": {"analytics": True}}),
        json.dumps({"org_id": ORG, "user_id": 1.5, "ts": ts, "purposes": {"analytics": True}}),
        json.dumps({"org_id": ORG, "user_id": {"id": "x"}, "ts": ts, "purposes": {"analytics": True}}),
        json.dumps({"org_id": ORG, "user_id": ["x"], "ts": ts, "purposes": {"analytics": True}}),
        json.dumps({"org_id": ORG, "user_id": True, "ts": ts, "purposes": {"analytics": True}}),
        json.dumps({"org_id": ORG, "user_id": None, "ts": ts, "purposes": {"analytics": True}}),
        json.dumps({"org_id": 42, "user_id": "n-1", "ts": ts, "purposes": {"analytics": True}}),
        json.dumps({"org_id": [ORG], "user_id": "n-2", "ts": ts, "purposes": {"analytics": True}}),
        json.dumps({"org_id": ORG, "user_id": "u" * 257, "ts": ts, "purposes": {"analytics": True}}),
        json.dumps({"org_id": "o" * 300, "user_id": "n-3", "ts": ts, "purposes": {"analytics": True}}),
        json.dumps({"org_id": ORG, "user_id": "u" * 256, "ts": ts, "purposes": {"analytics": True}}),
        json.dumps({"org_id": ORG, "user_id": "' OR 1=1; DROP TABLE users; --", "ts": ts, "purposes": {"analytics": True}}),
    ]
    result = ingest_consent(spark, cfg, _write(root / "ids.jsonl", lines), fmt="json", batch_id="ids")
    assert result.reasons == {"invalid_user_id": 5, "missing_user_id": 1, "invalid_org_id": 2, "id_too_long": 2}
    assert sorted(len(r["user_id"]) for r in _events(spark, cfg, "ids").collect()) == [30, 256]
    details = {r["detail"] for r in read_table(spark, cfg, "consent_quarantine").where("reason = 'invalid_user_id'").collect()}
    assert {"user_id is bigint, not a string", "user_id is boolean, not a string"} <= details
    assert any(d.startswith("user_id is object") for d in details) and any(d.startswith("user_id is array") for d in details)

    parquet = str(root / "typed-parquet")
    spark.createDataFrame(
        [(ORG, 7, dt.datetime(2026, 11, 22, 9), "analytics", True)],
        "org_id string, user_id bigint, ts timestamp, purpose string, granted boolean",
    ).write.parquet(parquet)
    typed = ingest_consent(spark, cfg, parquet, fmt="parquet", batch_id="typed", validate=False)
    assert (typed.reasons, typed.accepted) == ({"invalid_user_id": 1}, 0)

    # one drop, files of conflicting types: each file judged by its own types, no failure inside Spark's reader
    mixed = root / "mixed-parquet"
    spark.createDataFrame([(ORG, 8, "2026-11-22T09:00:00Z", "analytics", True)],
                          "org_id string, user_id bigint, ts string, purpose string, granted boolean"
                          ).write.parquet(str(mixed / "a"))
    spark.createDataFrame([(ORG, "p-1", "2026-11-22T09:00:00Z", "analytics", True, "sdk")],
                          "org_id string, user_id string, ts string, purpose string, granted boolean, source string"
                          ).write.parquet(str(mixed / "b"))
    both = ingest_consent(spark, cfg, [str(mixed / "a"), str(mixed / "b")], fmt="parquet", batch_id="mixed",
                          validate=False)
    assert (both.reasons, both.accepted) == ({"invalid_user_id": 1}, 1)
    assert [(r["user_id"], r["source"]) for r in _events(spark, cfg, "mixed").collect()] == [("p-1", "sdk")]

    shorter = dataclasses.replace(cfg, consent=dataclasses.replace(cfg.consent, max_id_length=8))
    capped = ingest_consent(spark, shorter, _write(root / "cap.jsonl", lines[-1:]), fmt="json", batch_id="cap")
    assert capped.reasons == {"id_too_long": 1}


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/Los_Angeles", "Pacific/Kiritimati"])
def test_future_check_and_ingest_time_are_utc_whatever_tz(spark, fresh, monkeypatch, zone):
    root, cfg = fresh
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        now = dt.datetime.now(dt.timezone.utc)
        hour_ago = (now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        in_ten_minutes = (now + dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines = [
            _line(org_id=ORG, user_id="hour-ago", ts=hour_ago, purposes={"analytics": True}),
            _line(org_id=ORG, user_id="ten-minutes-ahead", ts=in_ten_minutes, purposes={"analytics": True}),
        ]
        result = ingest_consent(spark, cfg, _write(root / "tz.jsonl", lines), fmt="json", batch_id="tz", validate=False)
        assert (result.accepted, result.reasons) == (1, {"future_timestamp": 1})
        lag = _events(spark, cfg, "tz").select((F.unix_timestamp("ingested_at") - F.lit(int(now.timestamp()))).alias("lag"))
        assert abs(lag.first()["lag"]) < 600
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_ids_are_trimmed_at_ingest(spark, fresh):
    root, cfg = fresh
    lines = [_line(org_id=f" {ORG} ", user_id="  x ", ts="2026-11-20T10:00:00Z", purposes={"analytics": False})]
    result = ingest_consent(spark, cfg, _write(root / "trim.jsonl", lines), fmt="json", batch_id="trim", validate=False)
    assert result.accepted == 1
    assert [(r["org_id"], r["user_id"]) for r in _events(spark, cfg, "trim").collect()] == [(ORG, "x")]


def test_batch_expectations_report_quarantine_share_per_source_in_plain_words(spark, fresh):
    root, cfg = fresh
    good = [
        _line(org_id=ORG, user_id=f"q-{i}", ts="2026-11-20T10:00:00Z", purposes={"analytics": True}, source="js_tag")
        for i in range(9)
    ]
    bad = _line(org_id=ORG, user_id="q-bad", ts="2026-11-20T10:00:00Z", purposes={"telepathy": True}, source="js_tag")
    api = [_line(org_id="org-2", user_id="a-1", ts="2026-11-21T10:00:00Z", purposes={"analytics": False}, source="api")]
    result = ingest_consent(spark, cfg, _write(root / "q.jsonl", [*good, bad, *api]), fmt="json", batch_id="q")
    report = result.expectations
    assert report["success"] is False
    assert report["failed"] == ["consent_sources.expect_column_values_to_be_between(quarantined_share)"]
    assert report["messages"] == [
        "10.0% of the rows from source 'js_tag' were quarantined (1 of 10; limit 5%); reasons: unknown_purpose 1"
    ]
    assert report["quarantined_share_by_source"] == {"api": 0.0, "js_tag": 0.1}
    assert report["quarantined_by_source_and_reason"] == [{"source": "js_tag", "reason": "unknown_purpose", "rows": 1}]
    assert report["org_days"] == 2 and report["suites"] == ["consent_sources", "consent_org_days", "consent_events"]

    lenient = dataclasses.replace(cfg, consent=dataclasses.replace(cfg.consent, max_quarantined_share=0.2))
    again = ingest_consent(spark, lenient, _write(root / "q2.jsonl", [*good, bad]), fmt="json", batch_id="q2")
    assert again.expectations["success"] is True and again.expectations["messages"] == []
