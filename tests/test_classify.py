"""The classifier: detectors, names, nested paths, overrides, and accuracy on the labelled corpus."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import Row

from ketch_spark.catalog.classify import (
    CATEGORIES,
    IDENTITY_TYPES,
    ClassifierSettings,
    Override,
    apply_overrides,
    classify_column,
    classify_sample,
    identity_type_of,
    leaf_values,
    luhn_valid,
    name_tokens,
)
from ketch_spark.catalog.corpus import corpus_tables, valid_card_numbers
from ketch_spark.errors import ConfigError
from services import with_connectors

_SHA = [hashlib.sha256(f"user{i}@example.com".encode()).hexdigest() for i in range(6)]
_MD5 = [hashlib.md5(f"user{i}@example.com".encode()).hexdigest() for i in range(6)]

# (column path, sampled values, expected category)
_CASES = [
    ("email", ["jane@example.com", "bob.smith@mail.co.uk", None], "email"),
    ("contact", ["jane@example.com", "bob@example.org", "x.y@example.net"], "email"),
    ("customer.contactEmail", ["JANE@EXAMPLE.COM"], "email"),
    ("email_opt_in", [True, False, True, True], None),
    ("hashed_email", _SHA, "email_sha256"),
    ("email_md5", _MD5, "email_md5"),
    ("content_sha256", _SHA, None),
    ("checksum", _MD5, None),
    ("phone", ["+14155550123", "+4915112345678", "+33612345678"], "phone"),
    ("mobile", ["(415) 555-0123", "0151 1234567", "4155550123"], "phone"),
    ("primary_contact", ["+14155550123", "(212) 555-0188", "+442071234567"], "phone"),
    ("order_number", ["415-555-0123", "212-555-0188", "(646) 555-0143"], None),
    ("order_id", ["4155550123", "2125550188", "6465550143"], None),
    ("client_ip", ["10.0.0.1", "2001:db8::1", "192.168.1.20"], "ip_address"),
    ("last_seen_from", ["10.0.0.1", "172.16.4.4", "8.8.8.8"], "ip_address"),
    ("app_version", ["10.2.1.4", "1.0.0.3", "2.3.4.5"], None),
    ("user_id", ["u-1", "u-2", "u-3"], "user_id"),
    ("customerId", [1, 2, 3], "user_id"),
    ("user.id", ["u-1", "u-2"], "user_id"),
    ("order.id", ["o-1", "o-2"], None),
    ("idfa", ["6D92078A-8246-4BA4-AE5B-76104861E7DC"], "device_id"),
    ("event_id", ["6d92078a-8246-4ba4-ae5b-76104861e7dc", "0f8fad5b-d9cb-469f-a165-70867728950e"], None),
    ("first_name", ["Jane", "Bob", "Maria"], "person_name"),
    ("customer.name", ["Jane Doe", "Bob Smith"], "person_name"),
    ("product_name", ["Blue Widget", "Red Gadget"], None),
    ("shipping_address", ["12 Main Street, Springfield", "4 Elm Rd"], "postal_address"),
    ("location", ["12 Main Street, Springfield", "4 Elm Road, London", "7 Oak Lane"], "postal_address"),
    ("email_address", ["jane@example.com"], "email"),
    ("dob", ["1980-01-02", "1975-12-31", "31/12/1999"], "date_of_birth"),
    ("created_at", ["2020-01-02", "2021-12-31"], None),
    ("card_number", ["4111 1111 1111 1111", "5500-0000-0000-0004"], "credit_card"),
    ("payment_ref", valid_card_numbers(5), "credit_card"),
    ("gender", ["M", "F", "F"], "gender"),
    ("age_range", ["18-24", "25-34", "65+"], "age_range"),
    ("age", [23, 45, 67], "age_range"),
    ("income", ["50k-75k", "<25k", "150k+"], "income_band"),
    ("notes", ["great product", "mail me at a@b.com please", "ok", "fine", "left at door"], None),
    ("amount", [10.5, 3.0, 7.25], None),
    ("status", ["new", "paid", "shipped"], None),
]


@pytest.mark.parametrize(("path", "values", "expected"), _CASES, ids=[c[0] for c in _CASES])
def test_classify_column(path, values, expected):
    result = classify_column(path, values)
    assert result.category == expected, result
    assert result.identity_type == identity_type_of(expected)
    if expected is None:
        assert result.confidence == 0.0 and result.method is None
    else:
        assert 0.5 <= result.confidence <= 1.0
        assert set(result.method.split("+")) <= {"name", "value", "context", "cross-column"}


def test_name_only_evidence_and_contradicting_values():
    by_name = classify_column("date_of_birth", [None, None])
    assert (by_name.category, by_name.method) == ("date_of_birth", "name") and by_name.confidence < 0.8
    assert classify_column("phone", ["n/a", "unknown", "none", "tbd"]).category is None
    assert set(IDENTITY_TYPES) <= set(CATEGORIES)
    assert name_tokens("billingAddress_line1") == ("billing", "address", "line", "1")
    assert name_tokens("EmailAddress") == ("email", "address")


_local = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=20).filter(
    lambda s: s[0].isalnum())
_domain = st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9]{1,8})?\.[a-z]{2,6}", fullmatch=True)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(_local, _domain), min_size=1, max_size=8))
def test_any_plain_email_column_is_an_email_identity(pairs):
    result = classify_column("contact", [f"{local}@{domain}" for local, domain in pairs])
    assert (result.category, result.identity_type) == ("email", "email")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(alphabet="0123456789", min_size=14, max_size=14), min_size=3, max_size=8))
def test_card_numbers_need_the_luhn_check(bodies):
    valid = []
    for body in bodies:
        digits = "4" + body
        valid.append(digits + next(d for d in "0123456789" if luhn_valid(digits + d)))
    assert all(luhn_valid(v) for v in valid)
    assert classify_column("payment_ref", valid).category == "credit_card"
    broken = [v[:-1] + str((int(v[-1]) + 1) % 10) for v in valid]
    assert not any(luhn_valid(v) for v in broken)
    assert classify_column("payment_ref", broken).category is None


def test_nested_columns_are_reached_by_path(spark):
    rows = [
        Row(
            user=Row(contact=Row(email="jane@example.com", phone="+14155550101")),
            attributes={"device_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC", "plan": "gold"},
            orders=[Row(order_number="415-555-0134", shipping_address="12 Main Street, Springfield")],
            payload='{"client": {"ip": "10.0.0.1"}, "tags": ["a"]}',
            comment=None,
        ),
        Row(
            user=Row(contact=Row(email="bob@example.org", phone=None)),
            attributes={"device_id": "A1B2C3D4-1111-2222-3333-444455556666"},
            orders=[],
            payload='{"client": {"ip": "2001:db8::7"}}',
            comment="not json {",
        ),
    ]
    sample_df = spark.createDataFrame(rows)
    classes = {c.column: c for c in classify_sample(sample_df, location="file:///lake/x", name="x")}
    assert {p: c.category for p, c in classes.items()} == {
        "user.contact.email": "email",
        "user.contact.phone": "phone",
        "attributes.device_id": "device_id",
        "attributes.plan": None,
        "orders.order_number": None,
        "orders.shipping_address": "postal_address",
        "payload.client.ip": "ip_address",
        "payload.tags": None,
        "comment": None,
    }
    assert classes["user.contact.email"].data_type == "string"
    assert classes["payload.client.ip"].data_type.startswith("json:")
    assert leaf_values([{"a": None}], sample_df.select("comment").schema) == {"comment": ("string", [])}


def test_overrides_always_win(cfg):
    detected = [classify_column("email", ["jane@example.com"]), classify_column("notes", ["call me"])]
    overrides = [
        Override(asset="*/crm/*", column="email", exclude=True),
        Override(asset="*/crm/*", column="notes", category="phone"),
        Override(asset="public.users", column="contact.email", category="email"),
    ]
    applied = {c.column: c for c in apply_overrides(detected, overrides, "s3a://lake/crm/users", "users")}
    assert (applied["email"].category, applied["email"].method, applied["email"].identity_type) == (
        None, "override", None)
    assert (applied["notes"].category, applied["notes"].identity_type, applied["notes"].confidence) == (
        "phone", "phone", 1.0)
    assert "contact.email" not in applied  # that override names another asset
    added = {c.column: c for c in apply_overrides(detected, overrides, "jdbc:postgresql://h:1/db/public.users",
                                                  "public.users")}
    assert added["contact.email"].category == "email" and added["email"].category == "email"
    parsed = ClassifierSettings.from_config(with_connectors(cfg, {}, catalog={
        "sample_rows": 10, "overrides": [{"asset": "a*", "column": "x", "category": "gender"}]}))
    assert parsed.sample_rows == 10 and parsed.overrides[0] == Override("a*", "x", "gender", False)
    with pytest.raises(ConfigError, match="sample_rows"):
        ClassifierSettings.from_config(with_connectors(cfg, {}, catalog={"sample_rows": 0}))


def test_labelled_corpus_is_classified_accurately(spark):
    tables = corpus_tables(spark, tables=2, rows=40, seed=11)
    hits = misses = false_alarms = 0
    for table in tables:
        found = {c.column: c.category for c in classify_sample(table.df, ClassifierSettings(sample_rows=40))}
        assert set(table.labels) <= set(found)
        for path, label in table.labels.items():
            if label is not None:
                hits, misses = hits + (found[path] == label), misses + (found[path] != label)
            elif found[path] is not None:
                false_alarms += 1
    assert hits >= 18 and misses == 0 and false_alarms == 0
    decoys = {path.rsplit(".", 1)[-1] for table in tables for path, label in table.labels.items() if label is None}
    assert decoys & {"order_number", "content_sha256", "notes", "app_version", "session_digest"}
