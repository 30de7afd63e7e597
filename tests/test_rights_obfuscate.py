"""Obfuscation expressions: each method, nested leaves, composition, the soft-delete story."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ketch_spark.config import DsrSettings, ObfuscationRule
from ketch_spark.connectors.base import PersonalColumn
from ketch_spark.errors import KetchError, ObfuscationError
from ketch_spark.rights.obfuscate import (
    assign_nested,
    hmac_key_from_env,
    obfuscate_rows,
    obfuscated_value,
    obfuscation_assignments,
)

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STRING_SCHEMA = T.StructType([T.StructField("id", T.IntegerType()), T.StructField("s", T.StringType())])


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _hmac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _apply(spark, rows, schema, data_type, rule, key=None):
    df = spark.createDataFrame(rows, schema)
    value = obfuscated_value(F.col("s"), data_type, rule, key, "s")
    return {r["id"]: r["s"] for r in df.select("id", value.alias("s")).collect()}


# --- each method, with a null row ---------------------------------------------------------


def test_null_method_nulls_every_row(spark):
    out = _apply(spark, [(1, "a"), (2, None)], STRING_SCHEMA, T.StringType(), ObfuscationRule("null"))
    assert out == {1: None, 2: None}


def test_null_method_keeps_the_type(spark):
    df = spark.createDataFrame([(1, 5), (2, None)], "id int, n bigint")
    out_df = df.select(obfuscated_value(F.col("n"), T.LongType(), ObfuscationRule("null"), None, "n").alias("n"))
    assert out_df.schema["n"].dataType == T.LongType()
    assert [r["n"] for r in out_df.collect()] == [None, None]


def test_constant_replaces_nulls_too(spark):
    rule = ObfuscationRule("constant", "other")
    out = _apply(spark, [(1, "female"), (2, None)], STRING_SCHEMA, T.StringType(), rule)
    assert out == {1: "other", 2: "other"}


@pytest.mark.parametrize(
    ("value", "ddl", "data_type", "expected"),
    [
        (True, "boolean", T.BooleanType(), True),
        ("yes", "boolean", T.BooleanType(), True),
        (0, "int", T.IntegerType(), 0),
        ("-1", "int", T.IntegerType(), -1),
        ("2.5", "double", T.DoubleType(), 2.5),
    ],
)
def test_constant_is_cast_to_the_column_type(spark, value, ddl, data_type, expected):
    df = spark.createDataFrame([(1, None)], f"id int, c {ddl}")
    rule = ObfuscationRule("constant", value)
    out_df = df.select(obfuscated_value(F.col("c"), data_type, rule, None, "c").alias("c"))
    assert out_df.schema["c"].dataType == data_type
    assert out_df.first()["c"] == expected


@pytest.mark.parametrize(
    ("value", "data_type"),
    [
        ("other", T.IntegerType()),
        ("1.5", T.LongType()),
        ("other", T.DoubleType()),
        ("other", T.DecimalType(10, 2)),
        ("maybe", T.BooleanType()),
        (True, T.DateType()),
        (True, T.TimestampType()),
        (3, T.DateType()),
        ("other", T.DateType()),
        ("other", T.StructType([T.StructField("a", T.StringType())])),
    ],
)
def test_constant_that_cannot_be_cast_is_refused_up_front(value, data_type):
    with pytest.raises(ObfuscationError, match=r"column c .*constant"):
        obfuscated_value(F.col("c"), data_type, ObfuscationRule("constant", value), None, "c")


def test_sha256_of_the_value_keeps_null_null(spark):
    rows = [(1, "alice@example.com"), (2, None), (3, ""), (4, "zoë 東京")]
    out = _apply(spark, rows, STRING_SCHEMA, T.StringType(), ObfuscationRule("sha256"))
    assert out == {1: _sha256("alice@example.com"), 2: None, 3: _sha256(""), 4: _sha256("zoë 東京")}


def test_sha256_of_a_constant_is_the_same_for_every_row(spark):
    rows = [(1, "a"), (2, None), (3, "b")]
    out = _apply(spark, rows, STRING_SCHEMA, T.StringType(), ObfuscationRule("sha256", "deleted"))
    assert out == {1: _sha256("deleted"), 2: _sha256("deleted"), 3: _sha256("deleted")}


@pytest.mark.parametrize("key_length", [10, 64, 100])
def test_hmac_equals_python_hmac(spark, key_length):
    key = bytes((i * 37 + 11) % 256 for i in range(key_length))
    messages = ["alice@example.com", "", "zoë 東京 🙂", "x" * 200]
    rows = [(i, m) for i, m in enumerate(messages)] + [(len(messages), None)]
    out = _apply(spark, rows, STRING_SCHEMA, T.StringType(), ObfuscationRule("hmac"), key)
    assert out == {**{i: _hmac(key, m) for i, m in enumerate(messages)}, len(messages): None}


def test_hmac_with_a_text_key_from_the_environment(spark, monkeypatch):
    monkeypatch.setenv("TEST_OBF_HMAC", "s3cret-ключ")
    key = hmac_key_from_env(DsrSettings(hmac_secret_env="TEST_OBF_HMAC"))
    assert key == "s3cret-ключ".encode("utf-8")
    out = _apply(spark, [(1, "bob")], STRING_SCHEMA, T.StringType(), ObfuscationRule("hmac"), key)
    assert out == {1: _hmac(key, "bob")}


def test_hmac_key_from_env_is_none_when_unset(monkeypatch):
    monkeypatch.delenv("TEST_OBF_HMAC", raising=False)
    assert hmac_key_from_env(DsrSettings(hmac_secret_env="TEST_OBF_HMAC")) is None


def test_random_gives_a_fresh_uuid_per_row_nulls_included(spark):
    out = _apply(spark, [(1, "a"), (2, None), (3, "a")], STRING_SCHEMA, T.StringType(), ObfuscationRule("random"))
    assert all(UUID.fullmatch(v) for v in out.values())
    assert len(set(out.values())) == 3


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["hmac", "sha256", "random"])
def test_string_only_methods_refuse_other_types(method):
    with pytest.raises(ObfuscationError) as info:
        obfuscated_value(F.col("age"), T.IntegerType(), ObfuscationRule(method), b"k" * 32, "profile.age")
    message = str(info.value)
    assert "profile.age" in message and "int" in message and "null or constant" in message
    assert isinstance(info.value, KetchError) and isinstance(info.value, ValueError)


def test_hmac_without_key_names_the_variable():
    with pytest.raises(ObfuscationError, match="set the environment variable MY_HMAC_ENV"):
        obfuscated_value(F.col("s"), T.StringType(), ObfuscationRule("hmac"), None, "s", secret_env="MY_HMAC_ENV")


def test_missing_hmac_key_surfaces_through_assignments():
    schema = T.StructType([T.StructField("email", T.StringType())])
    settings = DsrSettings(hmac_secret_env="SOME_HMAC_ENV", obfuscate_default=ObfuscationRule("hmac"))
    with pytest.raises(ObfuscationError, match="SOME_HMAC_ENV"):
        obfuscation_assignments(schema, [PersonalColumn("email", "email", "email")], settings, None)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nope", "no field 'nope' in the schema"),
        ("user.nope", r"no field 'nope' in user \(struct"),
        ("user.name.first", "user.name is string, not a struct"),
        ("user..name", "not a dot path"),
        ("grid.x", "grid is an array of arrays"),
    ],
)
def test_bad_paths_are_refused(path, message):
    schema = T.StructType(
        [
            T.StructField("user", T.StructType([T.StructField("name", T.StringType())])),
            T.StructField(
                "grid", T.ArrayType(T.ArrayType(T.StructType([T.StructField("x", T.StringType())])))
            ),
        ]
    )
    with pytest.raises(ObfuscationError, match=message):
        assign_nested(schema, path, lambda value, data_type: F.lit(None).cast(data_type))


# --- nested leaves ----------------------------------------------------------------------

CONTACT = T.StructType([T.StructField("email", T.StringType()), T.StructField("phone", T.StringType())])
USER = T.StructType(
    [T.StructField("name", T.StringType()), T.StructField("contact", CONTACT), T.StructField("age", T.IntegerType())]
)
USER_SCHEMA = T.StructType([T.StructField("id", T.IntegerType()), T.StructField("user", USER)])
USER_ROWS = [
    (1, ("Ann", ("ann@example.com", "+1555"), 31)),
    (2, ("Bob", None, 40)),  # null parent struct
    (3, None),  # null top-level struct
    (4, ("Cy", (None, "+1666"), None)),  # null leaf
]


def _masked(value, data_type):
    return F.when(value.isNotNull(), F.lit("***").cast(data_type))


def test_nested_leaf_is_replaced_in_place(spark):
    df = spark.createDataFrame(USER_ROWS, USER_SCHEMA)
    name, expression = assign_nested(df.schema, "user.contact.email", _masked)
    assert name == "user"
    out_df = df.withColumn(name, expression)
    expected_df = spark.createDataFrame(
        [
            (1, ("Ann", ("***", "+1555"), 31)),
            (2, ("Bob", None, 40)),
            (3, None),
            (4, ("Cy", (None, "+1666"), None)),
        ],
        USER_SCHEMA,
    )
    assert_df_equality(out_df, expected_df, ignore_row_order=True, ignore_nullable=True)


def test_two_leaves_under_one_struct_compose_into_one_expression(spark):
    df = spark.createDataFrame(USER_ROWS, USER_SCHEMA)
    settings = DsrSettings(
        obfuscate_categories={"email": ObfuscationRule("sha256"), "name": ObfuscationRule("constant", "x")}
    )
    personal = [
        PersonalColumn("user.contact.email", "email", "email"),
        PersonalColumn("user.name", "name"),
        PersonalColumn("user.contact.phone", "phone", "phone"),
    ]
    assignments = obfuscation_assignments(df.schema, personal, settings, None)
    assert list(assignments) == ["user"]
    out_df = obfuscate_rows(df, F.lit(True), assignments)
    expected_df = spark.createDataFrame(
        [
            (1, ("x", (_sha256("ann@example.com"), None), 31)),
            (2, ("x", None, 40)),
            (3, None),
            (4, ("x", (None, None), None)),
        ],
        USER_SCHEMA,
    )
    assert_df_equality(out_df, expected_df, ignore_row_order=True, ignore_nullable=True)


def test_whole_struct_rule_wins_over_its_leaves(spark):
    df = spark.createDataFrame(USER_ROWS, USER_SCHEMA)
    settings = DsrSettings(obfuscate_columns={"user.contact": ObfuscationRule("null")})
    personal = [PersonalColumn("user.contact.email", "email", "email")]
    assignments = obfuscation_assignments(df.schema, personal, settings, None)
    out = {r["id"]: r["user"] for r in obfuscate_rows(df, F.lit(True), assignments).collect()}
    assert out[1]["contact"] is None and out[1]["name"] == "Ann"
    assert out[3] is None


ITEM = T.StructType([T.StructField("sku", T.StringType()), T.StructField("card_number", T.StringType())])
ORDER_SCHEMA = T.StructType(
    [
        T.StructField("id", T.IntegerType()),
        T.StructField("items", T.ArrayType(ITEM)),
        T.StructField("tags", T.ArrayType(T.StringType())),
    ]
)


def test_array_of_structs_is_mapped_element_by_element(spark):
    df = spark.createDataFrame(
        [
            (1, [("a", "4111"), ("b", None), None], ["x"]),
            (2, None, None),
            (3, [], []),
        ],
        ORDER_SCHEMA,
    )
    name, expression = assign_nested(df.schema, "items.card_number", _masked)
    assert name == "items"
    expected_df = spark.createDataFrame(
        [
            (1, [("a", "***"), ("b", None), None], ["x"]),
            (2, None, None),
            (3, [], []),
        ],
        ORDER_SCHEMA,
    )
    assert_df_equality(df.withColumn(name, expression), expected_df, ignore_row_order=True, ignore_nullable=True)


def test_array_of_scalars_at_the_leaf_is_mapped(spark):
    df = spark.createDataFrame([(1, None, ["a@x.io", None]), (2, None, None)], ORDER_SCHEMA)
    settings = DsrSettings(obfuscate_default=ObfuscationRule("sha256"))
    assignments = obfuscation_assignments(df.schema, [PersonalColumn("tags", "email", "email")], settings, None)
    out = {r["id"]: r["tags"] for r in obfuscate_rows(df, F.lit(True), assignments).collect()}
    assert out == {1: [_sha256("a@x.io"), None], 2: None}


def test_special_characters_in_names(spark):
    inner = T.StructType(
        [T.StructField("e-mail", T.StringType()), T.StructField("we`ird", T.StringType()),
         T.StructField("keep", T.StringType())]
    )
    schema = T.StructType([T.StructField("id", T.IntegerType()), T.StructField("the user", inner)])
    df = spark.createDataFrame([(1, ("a@x.io", "w", "k")), (2, None)], schema)
    settings = DsrSettings(obfuscate_default=ObfuscationRule("constant", "gone"))
    personal = [PersonalColumn("the user.e-mail", "email", "email"), PersonalColumn("the user.we`ird", "other")]
    assignments = obfuscation_assignments(schema, personal, settings, None)
    assert list(assignments) == ["the user"]
    expected_df = spark.createDataFrame([(1, ("gone", "gone", "k")), (2, None)], schema)
    assert_df_equality(obfuscate_rows(df, F.lit(True), assignments), expected_df, ignore_row_order=True,
                       ignore_nullable=True)


# --- the story's soft delete ------------------------------------------------------------

STORY_SCHEMA = T.StructType(
    [
        T.StructField("customer_id", T.StringType()),
        T.StructField("email_sha256", T.StringType()),
        T.StructField("gender", T.StringType()),
        T.StructField("age_range", T.StringType()),
        T.StructField("income_band", T.StringType()),
        T.StructField("household_income", T.StringType()),
        T.StructField("customer_status", T.StringType()),
        T.StructField("is_deleted", T.BooleanType()),
        T.StructField("visits", T.IntegerType()),
    ]
)
STORY_SETTINGS = DsrSettings(
    obfuscate_categories={
        "email_sha256": ObfuscationRule("sha256", "deleted"),
        "gender": ObfuscationRule("constant", "other"),
        "age_range": ObfuscationRule("constant", "other"),
        "income_band": ObfuscationRule("constant", "other"),
    },
    obfuscate_columns={
        "household_income": ObfuscationRule("constant", "other"),
        "customer_status": ObfuscationRule("constant", "other"),
        "is_deleted": ObfuscationRule("constant", True),
        "not_in_this_table": ObfuscationRule("null"),
    },
)
STORY_PERSONAL = [
    PersonalColumn("email_sha256", "email_sha256", "email_sha256"),
    PersonalColumn("gender", "gender"),
    PersonalColumn("age_range", "age_range"),
    PersonalColumn("income_band", "income_band"),
]


def test_story_soft_delete_changes_only_the_matched_rows(spark):
    h1, h2 = _sha256("one@example.com"), _sha256("two@example.com")
    df = spark.createDataFrame(
        [
            ("c1", h1, "female", "25-34", "high", "100k+", "gold", False, 7),
            ("c2", h2, "male", "35-44", "low", "<25k", "silver", False, 3),
            ("c3", None, None, None, None, None, None, None, None),
            ("c4", None, None, None, None, None, None, None, 1),
        ],
        STORY_SCHEMA,
    )
    assignments = obfuscation_assignments(df.schema, STORY_PERSONAL, STORY_SETTINGS, None)
    assert set(assignments) == {
        "email_sha256", "gender", "age_range", "income_band", "household_income", "customer_status", "is_deleted"
    }
    out_df = obfuscate_rows(df, F.col("customer_id").isin("c1", "c4"), assignments)
    assert out_df.columns == df.columns
    deleted = _sha256("deleted")
    expected_df = spark.createDataFrame(
        [
            ("c1", deleted, "other", "other", "other", "other", "other", True, 7),
            ("c2", h2, "male", "35-44", "low", "<25k", "silver", False, 3),
            ("c3", None, None, None, None, None, None, None, None),
            ("c4", deleted, "other", "other", "other", "other", "other", True, 1),
        ],
        STORY_SCHEMA,
    )
    assert_df_equality(out_df, expected_df, ignore_row_order=True, ignore_nullable=True)


def test_null_condition_keeps_the_row(spark):
    df = spark.createDataFrame([("c1", "female"), ("c2", "male")], "customer_id string, gender string")
    assignments = {"gender": F.lit("other")}
    condition = F.when(F.col("customer_id") == "c1", F.lit(True))  # null for c2
    out = {r["customer_id"]: r["gender"] for r in obfuscate_rows(df, condition, assignments).collect()}
    assert out == {"c1": "other", "c2": "male"}


def test_obfuscate_rows_refuses_unknown_columns(spark):
    df = spark.createDataFrame([("c1",)], "customer_id string")
    with pytest.raises(ObfuscationError, match="gender"):
        obfuscate_rows(df, F.lit(True), {"gender": F.lit("other")})


def test_unresolvable_personal_columns_are_skipped():
    schema = T.StructType([T.StructField("payload", T.StringType())])
    personal = [PersonalColumn("payload.email", "email", "email")]
    assert obfuscation_assignments(schema, personal, DsrSettings(), None) == {}


def test_columns_without_a_rule_are_left_alone():
    settings = DsrSettings(obfuscate_columns={"gender": ObfuscationRule("null")})
    assignments = obfuscation_assignments(STORY_SCHEMA, [], settings, None)
    assert list(assignments) == ["gender"]
