"""Data-subject request intake: identity normalisation, validation, dsr/requests, `dsr submit` and `dsr status`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from pyspark.sql import types as T

from ketch_spark.cli import build_parser, main
from ketch_spark.config import DsrSettings
from ketch_spark.errors import InvalidRequestError, KetchError
from ketch_spark.rights.identities import identity_hash, normalise_identities, validate_request
from ketch_spark.rights.requests import (
    SubmitResult,
    read_request_file,
    read_requests,
    request_status,
    submit_requests,
    update_requests,
)
from ketch_spark.tables import table_exists, table_version

REPO = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 11, 26, 12, 0, 0)
SETTINGS = DsrSettings()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _request(**changes) -> dict:
    request = {
        "request_id": "r-1",
        "org_id": "0xDEADC0DE",
        "kind": "erasure",
        "mode": "delete",
        "identities": {"email": "Jane@Example.com", "user_id": "u-1"},
        "received_at": "2026-11-26T10:00:00Z",
    }
    request.update(changes)
    return {k: v for k, v in request.items() if v is not ...}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


# ---------------------------------------------------------------------- identities


def test_email_is_trimmed_lower_cased_and_brings_its_sha256():
    identities = normalise_identities({"email": "  Jane.DOE@Example.COM "}, None)
    assert identities == {"email": "jane.doe@example.com", "email_sha256": _sha("jane.doe@example.com")}


def test_unicode_email_is_kept_and_hashed_as_utf8():
    identities = normalise_identities({"email": "José.Müller@Exämple.com "}, None)
    assert identities["email"] == "josé.müller@exämple.com"
    assert identities["email_sha256"] == hashlib.sha256("josé.müller@exämple.com".encode()).hexdigest()


def test_given_email_sha256_is_normalised_and_may_agree_with_the_email():
    digest = _sha("jane@example.com")
    assert normalise_identities({"email_sha256": f" {digest.upper()} "}, None) == {"email_sha256": digest}
    both = normalise_identities({"email": "Jane@Example.com", "email_sha256": digest.upper()}, None)
    assert both["email_sha256"] == digest


@pytest.mark.parametrize(
    ("phone", "region", "expected"),
    [
        ("+1 (415) 555-0101", None, "+14155550101"),
        ("+1 (415) 555-0101", "GB", "+14155550101"),
        ("(415) 555-0101", "US", "+14155550101"),
        ("020 7946 0958", "GB", "+442079460958"),
    ],
)
def test_phone_is_formatted_e164(phone, region, expected):
    assert normalise_identities({"phone": phone}, region) == {"phone": expected}


def test_national_phone_without_default_region_is_rejected_with_the_fix():
    with pytest.raises(InvalidRequestError, match=r"\+country code.*dsr\.default_phone_region"):
        normalise_identities({"phone": "(415) 555-0101"}, None)


def test_identifiers_are_trimmed_and_integers_accepted():
    assert normalise_identities({"user_id": 12345, "device_id": "  dev 7  "}, None) == {
        "user_id": "12345",
        "device_id": "dev 7",
    }
    assert normalise_identities({"user_id": " u-1", "email": None}, None) == {"user_id": "u-1"}


def test_identity_hash_is_a_short_sha256_prefix():
    assert identity_hash("jane@example.com") == _sha("jane@example.com")[:16]
    assert len(identity_hash("x")) == 16


# ---------------------------------------------------------------------- validation


def test_valid_request_is_normalised_with_its_due_date():
    request = validate_request(_request(org_id=" 0xDEADC0DE "), SETTINGS, NOW)
    assert (request.request_id, request.org_id, request.kind, request.mode) == \
        ("r-1", "0xDEADC0DE", "erasure", "delete")
    assert request.identities == {"email": "jane@example.com", "email_sha256": _sha("jane@example.com"),
                                  "user_id": "u-1"}
    assert request.received_at == dt.datetime(2026, 11, 26, 10, 0)
    assert request.due_at == dt.datetime(2026, 12, 26, 10, 0)
    assert "jane" not in repr(request)


def test_due_days_is_configurable_and_received_at_defaults_to_now():
    request = validate_request(_request(received_at=...), DsrSettings(due_days=10), NOW)
    assert request.received_at == NOW and request.due_at == NOW + dt.timedelta(days=10)


@pytest.mark.parametrize(
    ("received_at", "expected"),
    [
        ("2026-11-26T12:00:00+02:00", dt.datetime(2026, 11, 26, 10, 0)),
        ("2026-11-26T10:00:00", dt.datetime(2026, 11, 26, 10, 0)),
        ("2026-11-26T10:00:00.250Z", dt.datetime(2026, 11, 26, 10, 0, 0, 250000)),
        (dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.timezone.utc), dt.datetime(2026, 11, 26, 10, 0)),
    ],
)
def test_received_at_is_read_as_utc(received_at, expected):
    assert validate_request(_request(received_at=received_at), SETTINGS, NOW).received_at == expected


@pytest.mark.parametrize(
    ("kind", "mode", "expected"),
    [
        ("erasure", ..., "delete"),
        ("erasure", None, "delete"),
        ("erasure", "obfuscate", "obfuscate"),
        ("access", ..., "export"),
        ("access", None, "export"),
        ("access", "export", "export"),
    ],
)
def test_mode_defaults_per_kind(kind, mode, expected):
    assert validate_request(_request(kind=kind, mode=mode), SETTINGS, NOW).mode == expected


_LONG_ID = "u" * 513
_REJECTIONS = [
    # (changes to the valid request, expected reason)
    ({"identities": {}}, "no identity"),
    ({"identities": {"email": None}}, "no identity"),
    ({"identities": ...}, "identities is required"),
    ({"identities": ["jane@example.com"]}, "identities must be an object"),
    ({"identities": {"ip": "10.0.0.1"}}, "unknown identity type(s) 'ip'; expected email, email_sha256, phone"),
    ({"kind": "delete"}, "unknown kind 'delete'; expected one of erasure, access"),
    ({"kind": ...}, "kind is required"),
    ({"mode": "export"}, "unknown mode 'export' for kind erasure"),
    ({"kind": "access", "mode": "delete"}, "unknown mode 'delete' for kind access"),
    ({"request_id": "x' OR '1'='1"}, "request_id is malformed"),
    ({"request_id": "-r"}, "request_id is malformed"),
    ({"request_id": "r" * 129}, "request_id is malformed"),
    ({"request_id": "   "}, "request_id is empty"),
    ({"request_id": 17}, "request_id must be a string, found int"),
    ({"request_id": ...}, "request_id is required"),
    ({"org_id": ...}, "org_id is required"),
    ({"org_id": "acme corp"}, "org_id is malformed"),
    ({"identities": {"email": "jane.example.com"}}, "identity email is not a valid email address"),
    ({"identities": {"email": "jane@example"}}, "identity email is not a valid email address"),
    ({"identities": {"email": "ja ne@example.com"}}, "identity email is not a valid email address"),
    ({"identities": {"email": "@example.com"}}, "identity email is not a valid email address"),
    ({"identities": {"email": "jane@doe@example.com"}}, "identity email is not a valid email address"),
    ({"identities": {"email": "jane@example..com"}}, "identity email is not a valid email address"),
    ({"identities": {"email": "j" * 250 + "@example.com"}}, "identity email is not a valid email address"),
    ({"identities": {"email": 42}}, "identity email must be a string, found int"),
    ({"identities": {"email_sha256": "abc123"}}, "identity email_sha256 is not a sha256 hex digest"),
    ({"identities": {"email_sha256": "z" * 64}}, "identity email_sha256 is not a sha256 hex digest"),
    ({"identities": {"phone": "+1 555 0101"}}, "identity phone is not a valid phone number"),
    ({"identities": {"phone": "+44 call me maybe"}}, "identity phone is not a"),
    ({"identities": {"phone": "4155550101"}}, "identity phone has no country code"),
    ({"identities": {"user_id": 1.5}}, "identity user_id must be a string or an integer, found float"),
    ({"identities": {"user_id": True}}, "identity user_id must be a string or an integer, found bool"),
    ({"identities": {"device_id": ["d-1"]}}, "identity device_id must be a string or an integer, found list"),
    ({"identities": {"user_id": "   "}}, "identity user_id is empty"),
    ({"identities": {"user_id": "u-1\x00x"}}, "identity user_id contains control characters"),
    ({"identities": {"user_id": _LONG_ID}}, "identity user_id is longer than 512 characters"),
    ({"identities": {"email": "jane@example.com", "email_sha256": _sha("john@example.com")}},
     "identities email and email_sha256 disagree"),
    ({"received_at": "2026-11-28T12:00:01Z"}, "received_at is more than 1 day in the future"),
    ({"received_at": "1999-12-31T23:59:59Z"}, "received_at is before 2000"),
    ({"received_at": "yesterday"}, "received_at is not an ISO-8601 timestamp"),
    ({"received_at": 1764151200}, "received_at must be an ISO-8601 string, found int"),
    ({"priority": "high"}, "unknown field(s) 'priority'; expected request_id"),
]


@pytest.mark.parametrize(("changes", "reason"), _REJECTIONS)
def test_invalid_requests_are_rejected_with_their_reason(changes, reason):
    raw = _request(**changes)
    with pytest.raises(InvalidRequestError) as caught:
        validate_request(raw, SETTINGS, NOW)
    message = str(caught.value)
    assert reason in message
    identities = raw.get("identities")
    for value in identities.values() if isinstance(identities, dict) else []:
        if isinstance(value, str) and len(value.strip()) >= 3:
            assert value not in message and value.strip().lower() not in message


@pytest.mark.parametrize("raw", ["r-1", ["r-1"], None, 7])
def test_a_request_that_is_not_an_object_is_rejected(raw):
    with pytest.raises(InvalidRequestError, match="request must be a JSON object"):
        validate_request(raw, SETTINGS, NOW)


def test_the_table_of_rejections_covers_every_identity_type():
    covered = {t for changes, _ in _REJECTIONS if isinstance(changes.get("identities"), dict)
               for t in changes["identities"]}
    assert covered >= {"email", "email_sha256", "phone", "user_id", "device_id"}


def test_request_file_keeps_bad_lines_as_rejections(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps(_request()) + "\n\n{not json\n[1, 2]\n  \n", encoding="utf-8")
    raws = read_request_file(path)
    assert len(raws) == 3 and raws[0]["request_id"] == "r-1"
    with pytest.raises(InvalidRequestError, match=r"^line 3 is not valid JSON"):
        validate_request(raws[1], SETTINGS, NOW)
    with pytest.raises(InvalidRequestError, match=r"^line 4 is not a JSON object"):
        validate_request(raws[2], SETTINGS, NOW)


def test_submit_refuses_a_single_dict_before_any_spark_work(cfg):
    with pytest.raises(TypeError, match="list of request dicts"):
        submit_requests(None, cfg, _request())


def test_update_requests_checks_its_input_before_any_spark_work(cfg):
    with pytest.raises(InvalidRequestError, match="unknown field.*owner"):
        update_requests(None, cfg, {"r-1": {"status": "done", "owner": "me"}}, run_id="run-1")
    with pytest.raises(InvalidRequestError, match="status must be a non-empty string"):
        update_requests(None, cfg, {"r-1": {"status": None}}, run_id="run-1")
    with pytest.raises(InvalidRequestError, match="run_id"):
        update_requests(None, cfg, {"r-1": {"status": "done"}}, run_id="")
    update_requests(None, cfg, {}, run_id="run-1")  # nothing to do: no Spark work


def test_submit_result_summary_is_json():
    result = SubmitResult(accepted=["a"], duplicates=["b"],
                          rejected=[{"index": 2, "request_id": None, "reason": "x"}])
    assert json.loads(json.dumps(result.summary())) == {
        "submitted": 3, "accepted": 1, "duplicates": 1, "rejected": 1,
        "rejections": [{"index": 2, "request_id": None, "reason": "x"}],
    }


# ---------------------------------------------------------------------- dsr/requests (Spark)


def _stored(spark, cfg) -> list[dict]:
    return sorted((r.asDict() for r in read_requests(spark, cfg).collect()), key=lambda r: r["request_id"])


def test_mixed_batch_stores_only_valid_requests_and_resubmitting_is_idempotent(spark, cfg):
    batch = [
        _request(request_id="r-1"),
        _request(request_id="r-bad", kind="forget-me"),
        _request(request_id="r-2", kind="access", mode=..., identities={"phone": "+1 (415) 555-0101"}),
        _request(request_id="r-1"),  # identical repeat: a duplicate
        _request(request_id="r-1", identities={"user_id": "u-9"}),  # same id, other content
        "not a request",
    ]
    result = submit_requests(spark, cfg, batch)

    assert result.accepted == ["r-1", "r-2"] and result.duplicates == ["r-1"]
    assert [(r["index"], r["request_id"]) for r in result.rejected] == [(1, "r-bad"), (4, "r-1"), (5, None)]
    assert result.rejected[1]["reason"] == "request_id given twice with different content"
    assert result.summary()["submitted"] == len(batch)

    rows = _stored(spark, cfg)
    assert [r["request_id"] for r in rows] == ["r-1", "r-2"]
    first, second = rows
    assert first["identities"] == {"email": "jane@example.com", "email_sha256": _sha("jane@example.com"),
                                   "user_id": "u-1"}
    assert (first["kind"], first["mode"], first["status"]) == ("erasure", "delete", "open")
    assert first["received_at"] == dt.datetime(2026, 11, 26, 10, 0)
    assert first["due_at"] == dt.datetime(2026, 12, 26, 10, 0)
    assert first["submitted_at"] == first["updated_at"]
    assert first["last_run_id"] is None and first["error"] is None and first["finished_at"] is None
    assert (second["kind"], second["mode"], second["identities"]) == ("access", "export", {"phone": "+14155550101"})

    version = table_version(spark, cfg, "dsr_requests")
    again = submit_requests(spark, cfg, [_request(request_id="r-2", identities={"user_id": "other"}),
                                         _request(request_id="r-1")])
    assert again.accepted == [] and sorted(again.duplicates) == ["r-1", "r-2"] and again.rejected == []
    assert table_version(spark, cfg, "dsr_requests") == version
    assert _stored(spark, cfg) == rows


def test_all_rejected_writes_nothing(spark, cfg):
    result = submit_requests(spark, cfg, [_request(kind="nope"), {}])
    assert result.accepted == [] and len(result.rejected) == 2
    assert result.summary() | {"rejections": []} == {"submitted": 2, "accepted": 0, "duplicates": 0, "rejected": 2,
                                                        "rejections": []}
    assert not table_exists(spark, cfg, "dsr_requests")


def test_dataframe_input_with_struct_or_map_identities(spark, cfg):
    struct_df = spark.createDataFrame(
        [
            ("s-1", "org-1", "erasure", None, ("Jane@Example.com", None), dt.datetime(2026, 11, 20, 8, 30,
                                                                                 tzinfo=dt.timezone.utc)),
            ("s-2", "org-1", "erasure", "obfuscate", (None, " u-7 "), None),
            ("s-3", "org-1", "access", "delete", (None, "u-8"), None),
        ],
        "request_id string, org_id string, kind string, mode string, "
        "identities struct<email: string, user_id: string>, received_at timestamp",
    )
    map_df = spark.createDataFrame(
        [("m-1", "org-2", "access", {"device_id": "d-1"}, "2026-11-21T00:00:00+01:00")],
        T.StructType([
            T.StructField("request_id", T.StringType()),
            T.StructField("org_id", T.StringType()),
            T.StructField("kind", T.StringType()),
            T.StructField("identities", T.MapType(T.StringType(), T.StringType())),
            T.StructField("received_at", T.StringType()),
        ]),
    )
    from_struct = submit_requests(spark, cfg, struct_df)
    from_map = submit_requests(spark, cfg, map_df)

    assert sorted(from_struct.accepted) == ["s-1", "s-2"] and from_map.accepted == ["m-1"]
    assert from_struct.rejected == [{"index": 2, "request_id": "s-3",
                                     "reason": "unknown mode 'delete' for kind access; expected one of export"}]
    rows = {r["request_id"]: r for r in _stored(spark, cfg)}
    assert rows["s-1"]["received_at"] == dt.datetime(2026, 11, 20, 8, 30)
    assert rows["s-1"]["identities"]["email"] == "jane@example.com"
    assert (rows["s-2"]["mode"], rows["s-2"]["identities"]) == ("obfuscate", {"user_id": "u-7"})
    assert rows["m-1"]["received_at"] == dt.datetime(2026, 11, 20, 23, 0)
    assert (rows["m-1"]["mode"], rows["m-1"]["identities"]) == ("export", {"device_id": "d-1"})


def test_request_status_flags_overdue_and_update_requests_records_progress(spark, cfg):
    now = _utc_now()
    iso = lambda d: d.isoformat() + "Z"  # noqa: E731
    submit_requests(spark, cfg, [
        _request(request_id="late", received_at=iso(now - dt.timedelta(days=40))),
        _request(request_id="late-done", received_at=iso(now - dt.timedelta(days=35))),
        _request(request_id="fresh", kind="access", mode=..., received_at=iso(now - dt.timedelta(days=1))),
    ])
    finished = now.replace(microsecond=0)
    update_requests(spark, cfg, {"late-done": {"status": "done", "finished_at": finished},
                                 "late": {"status": "failed", "error": "asset x unreachable"},
                                 "unknown-id": {"status": "done"}}, run_id="run-7")

    status_df = request_status(spark, cfg)
    assert "identities" not in status_df.columns
    assert status_df.columns == ["request_id", "org_id", "kind", "mode", "status", "received_at", "due_at", "overdue",
                                 "error", "finished_at"]
    rows = [r.asDict() for r in status_df.collect()]
    assert [(r["request_id"], r["status"], r["overdue"]) for r in rows] == [
        ("late", "failed", True), ("late-done", "done", False), ("fresh", "open", False)]
    assert rows[0]["error"] == "asset x unreachable" and rows[1]["finished_at"] == finished
    later = [r.overdue for r in request_status(spark, cfg, now=now + dt.timedelta(days=60)).collect()]
    assert later == [True, False, True]

    stored = {r["request_id"]: r for r in _stored(spark, cfg)}
    assert "unknown-id" not in stored
    assert stored["late"]["last_run_id"] == "run-7" and stored["late"]["updated_at"] > stored["late"]["submitted_at"]
    assert stored["late"]["finished_at"] is None  # not given: kept
    assert stored["fresh"]["last_run_id"] is None
    assert [r.request_id for r in read_requests(spark, cfg, statuses=["open", "failed"], kind="erasure").collect()] \
        == ["late"]
    with pytest.raises(InvalidRequestError, match="unknown kind"):
        read_requests(spark, cfg, kind="portability")


# ---------------------------------------------------------------------- command line


@pytest.mark.parametrize("argv", [["dsr", "submit", "--input", "r.jsonl", "--conf", "x.yaml"],
                                  ["dsr", "status", "--conf", "x.yaml"]])
def test_dsr_commands_take_conf(argv):
    assert build_parser().parse_args(argv).conf == "x.yaml"


def test_cli_dsr_submit_and_status_end_to_end(spark, tmp_path, capsys):
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {tmp_path / 'wh'}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    received = _utc_now().isoformat() + "Z"  # due in 30 days: never overdue while the test runs
    lines = [
        json.dumps(_request(request_id="c-1", received_at=received)),
        "{broken",
        json.dumps(_request(request_id="c-2", identities={"email": "secret.person@example"})),
        "",
        json.dumps(_request(request_id="c-3", kind="access", mode=..., identities={"user_id": "u-3"},
                            received_at=received)),
    ]
    requests_file = tmp_path / "requests.jsonl"
    requests_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    assert main(["dsr", "submit", "--input", str(requests_file), "--conf", str(conf)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[:2] == ["rejected #1: line 2 is not valid JSON (Expecting property name enclosed in double quotes "
                       "at column 2)",
                       "rejected c-2: identity email is not a valid email address"]
    summary = json.loads(out[-1])
    assert summary["command"] == "dsr submit" and summary["status"] == "ok"
    assert (summary["submitted"], summary["accepted"], summary["duplicates"], summary["rejected"]) == (4, 2, 0, 2)
    assert "secret.person" not in "\n".join(out)

    assert main(["dsr", "submit", "--input", str(requests_file), "--conf", str(conf)]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 2, 2)

    assert main(["dsr", "status", "--conf", str(conf)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:4] for line in out[:-1]] == [["c-1", "erasure", "delete", "open"],
                                                      ["c-3", "access", "export", "open"]]
    status = json.loads(out[-1])
    assert status["command"] == "dsr status" and status["status"] == "ok"
    assert (status["requests"], status["statuses"], status["overdue"]) == (2, {"open": 2}, 0)


def test_cli_dsr_submit_missing_file_is_a_json_error(spark, tmp_path, capsys):
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {tmp_path / 'wh'}\npolicy: {REPO / 'conf' / 'policy.yaml'}\n")
    assert main(["dsr", "submit", "--input", str(tmp_path / "missing.jsonl"), "--conf", str(conf)]) == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "error" and "missing.jsonl" in summary["error"]
    assert issubclass(InvalidRequestError, KetchError) and issubclass(InvalidRequestError, ValueError)
