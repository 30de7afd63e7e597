"""Signed erasure receipts: signing, verification, keys, and private atomic files."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import stat
from pathlib import Path

import pytest

from ketch_spark.config import DsrSettings
from ketch_spark.errors import ConfigError
from ketch_spark.rights.receipts import (
    canonical_json,
    read_receipt,
    read_receipt_file,
    receipt_key,
    sign_receipt,
    verify_receipt,
    write_receipt,
)

KEY = b"receipt-key-for-tests-0123456789"
RECEIPT = {
    "request_id": "req-0001",
    "org_id": "acme",
    "kind": "erasure",
    "completed_at": "2025-03-01T12:00:00Z",
    "assets": [
        {"asset": "s3a://lake/customers", "mode": "obfuscate", "counts": {"rows_matched": 3, "rows_changed": 3}},
        {"asset": "postgres/public.orders", "mode": "delete", "counts": {"rows_matched": 1, "rows_changed": 1}},
    ],
    "note": "Zoë — 東京 ✓",
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sign_then_verify_round_trip():
    signed = sign_receipt(RECEIPT, KEY)
    assert signed["signature"]["algorithm"] == "HMAC-SHA256"
    expected = hmac.new(KEY, canonical_json(RECEIPT), hashlib.sha256).hexdigest()
    assert signed["signature"]["value"] == expected
    assert verify_receipt(signed, KEY)
    assert "signature" not in RECEIPT  # the input is not changed


def test_signature_covers_the_canonical_json():
    body = json.dumps(RECEIPT, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert canonical_json(sign_receipt(RECEIPT, KEY)) == body


def test_signed_copy_is_independent_of_the_input():
    source = copy.deepcopy(RECEIPT)
    signed = sign_receipt(source, KEY)
    source["assets"][0]["counts"]["rows_changed"] = 0
    assert verify_receipt(signed, KEY)


def test_resigning_replaces_the_signature():
    signed = sign_receipt(RECEIPT, KEY)
    assert sign_receipt(signed, KEY) == signed


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: r["assets"][0]["counts"].__setitem__("rows_changed", 2),
        lambda r: r.__setitem__("completed_at", "2025-03-01T12:00:01Z"),
        lambda r: r.__setitem__("request_id", "req-0002"),
        lambda r: r.__setitem__("extra", None),
        lambda r: r["assets"].pop(),
        lambda r: r.pop("note"),
        lambda r: r["signature"].__setitem__("value", r["signature"]["value"].upper()),
    ],
    ids=["nested count", "timestamp", "request id", "added field", "removed asset", "removed field", "hex case"],
)
def test_any_change_breaks_verification(tamper):
    signed = sign_receipt(RECEIPT, KEY)
    tampered = copy.deepcopy(signed)
    tamper(tampered)
    assert not verify_receipt(tampered, KEY)


def test_wrong_key_fails():
    assert not verify_receipt(sign_receipt(RECEIPT, KEY), b"another-key-0123456789")


@pytest.mark.parametrize(
    "signature",
    [None, "deadbeef", {}, {"algorithm": "HMAC-SHA256"}, {"algorithm": "HMAC-SHA256", "value": 12},
     {"algorithm": "HMAC-SHA1", "value": "00"}, {"algorithm": "HMAC-SHA256", "value": "é"}],
)
def test_missing_or_malformed_signature_fails(signature):
    receipt = dict(RECEIPT)
    if signature is not None:
        receipt["signature"] = signature
    assert not verify_receipt(receipt, KEY)


def test_wrong_algorithm_with_right_value_fails():
    signed = sign_receipt(RECEIPT, KEY)
    signed["signature"]["algorithm"] = "HMAC-SHA512"
    assert not verify_receipt(signed, KEY)


def test_unserialisable_receipt_is_a_type_error():
    with pytest.raises(TypeError):
        sign_receipt({"when": object()}, KEY)


def test_receipt_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("TEST_RECEIPT_SECRET", "a-long-enough-secret")
    assert receipt_key(DsrSettings(receipt_secret_env="TEST_RECEIPT_SECRET")) == b"a-long-enough-secret"


def test_receipt_key_missing_names_the_variable(monkeypatch):
    monkeypatch.delenv("TEST_RECEIPT_SECRET", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable TEST_RECEIPT_SECRET"):
        receipt_key(DsrSettings(receipt_secret_env="TEST_RECEIPT_SECRET"))


def test_receipt_key_too_short(monkeypatch):
    monkeypatch.setenv("TEST_RECEIPT_SECRET", "short")
    with pytest.raises(ConfigError, match=r"TEST_RECEIPT_SECRET holds 5 bytes.*at least 16"):
        receipt_key(DsrSettings(receipt_secret_env="TEST_RECEIPT_SECRET"))


def test_local_write_is_private_and_reads_back(spark, tmp_path):
    target = tmp_path / "receipts" / "2025" / "req-0001.json"
    signed = sign_receipt(RECEIPT, KEY)
    write_receipt(spark, str(target), signed)
    assert _mode(target) == 0o600
    assert _mode(target.parent) == 0o700 and _mode(target.parent.parent) == 0o700
    assert sorted(p.name for p in target.parent.iterdir()) == ["req-0001.json"]  # no temp file left
    read = read_receipt(spark, str(target))
    assert read == signed
    assert read["note"] == "Zoë — 東京 ✓"
    assert verify_receipt(read, KEY)
    assert "Zoë — 東京 ✓" in target.read_text(encoding="utf-8")  # UTF-8, not \\u escapes


def test_existing_folders_keep_their_mode(spark, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    write_receipt(spark, str(folder / "r.json"), RECEIPT)
    assert _mode(folder) == 0o755
    assert _mode(folder / "r.json") == 0o600


def test_file_uri_and_overwrite(spark, tmp_path):
    target = tmp_path / "r.json"
    write_receipt(spark, target.as_uri(), {"n": 1})
    write_receipt(spark, target.as_uri(), {"n": 2})
    assert read_receipt(spark, target.as_uri()) == {"n": 2}
    assert read_receipt_file(target) == {"n": 2}
    assert read_receipt_file(f"file:{target}") == {"n": 2}


def test_read_receipt_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_receipt_file(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="expected an object"):
        read_receipt_file(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(ValueError, match="not a JSON receipt"):
        read_receipt_file(tmp_path / "bad.json")


def test_s3a_write_and_read(s3a_spark, moto_server):
    moto_server.client("s3").create_bucket(Bucket="receipts-test")
    uri = "s3a://receipts-test/dsr/receipts/req-0001.json"
    signed = sign_receipt(RECEIPT, KEY)
    write_receipt(s3a_spark, uri, signed)
    body = moto_server.client("s3").get_object(Bucket="receipts-test", Key="dsr/receipts/req-0001.json")["Body"]
    assert json.loads(body.read().decode("utf-8")) == signed
    read = read_receipt(s3a_spark, uri)
    assert read == signed and verify_receipt(read, KEY)
    with pytest.raises(FileNotFoundError):
        read_receipt(s3a_spark, "s3a://receipts-test/dsr/receipts/missing.json")
