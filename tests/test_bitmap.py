"""Bitmap column helpers: native expressions, null rows, bits up to 127 and beyond."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from ketch_spark.bitmap import (
    bitmap_and_not,
    bitmap_literal,
    bitmap_or,
    bitmap_with_bits,
    has_purpose,
    pack_bits,
    sql_word,
    sql_word_bit,
    sql_words_with_bits,
    unpack_bits,
)


def test_pack_unpack_has_purpose_with_null_row(spark):
    df = spark.createDataFrame(
        [(1, [0, 1, 63, 64, 127]), (2, []), (3, None), (4, [5, None, 5])], "id int, bits array<int>"
    )
    out = {
        r.id: r
        for r in df.select(
            "id",
            unpack_bits(pack_bits("bits", 2)).alias("round_trip"),
            has_purpose(pack_bits("bits", 2), 127).alias("b127"),
            has_purpose(pack_bits("bits", 2), 63).alias("b63"),
            has_purpose(pack_bits("bits", 2), 200).alias("b200"),
        ).collect()
    }
    assert out[1].round_trip == [0, 1, 63, 64, 127] and out[1].b127 and out[1].b63 and out[1].b200 is False
    assert out[2].round_trip == [] and out[2].b127 is False
    assert out[3].round_trip is None and out[3].b127 is None
    assert out[4].round_trip == [5]


def test_wordwise_operations_and_literals(spark):
    df = spark.createDataFrame([([1, 2, 100], [2]), (None, [1])], "a array<int>, b array<int>")
    row, null_row = df.select(
        unpack_bits(bitmap_or(pack_bits("a", 2), pack_bits("b", 2), 2)).alias("or_"),
        unpack_bits(bitmap_and_not(pack_bits("a", 2), pack_bits("b", 2), 2)).alias("and_not"),
        unpack_bits(bitmap_literal([3, 127], 2)).alias("lit"),
    ).collect()
    assert row.or_ == [1, 2, 100] and row.and_not == [1, 100] and row.lit == [3, 127]
    assert null_row.or_ is None and null_row.and_not is None


def test_shorter_bitmap_reads_missing_words_as_zero(spark):
    row = spark.range(1).select(has_purpose(F.array(F.lit(1).cast("bigint")), 100).alias("b")).head()
    assert row.b is False


@settings(max_examples=20, deadline=None)
@given(st.lists(st.sets(st.integers(min_value=0, max_value=191), max_size=12), min_size=1, max_size=5))
def test_pack_unpack_round_trip_property(spark, bit_sets):
    df = spark.createDataFrame([(i, sorted(s)) for i, s in enumerate(bit_sets)], "id int, bits array<int>")
    got = {r.id: r.bits for r in df.select("id", unpack_bits(pack_bits("bits", 3)).alias("bits")).collect()}
    assert got == {i: sorted(s) for i, s in enumerate(bit_sets)}


def test_bitmap_with_bits_sets_clears_and_keeps_the_rest(spark):
    df = spark.createDataFrame([(1, [3, 63, 64, 100]), (2, None)], "id int, bits array<int>")
    values = {0: F.lit(True), 63: F.lit(False), 127: F.col("id") == 1, 64: F.lit(None).cast("boolean")}
    out = {
        r.id: r.bits
        for r in df.select("id", unpack_bits(bitmap_with_bits(pack_bits("bits", 2), values, 2)).alias("bits")).collect()
    }
    assert out[1] == [0, 3, 100, 127]
    assert out[2] == [0]


def test_sql_text_helpers_match_the_column_helpers(spark):
    df = spark.createDataFrame([(1, [3, 63, 64, 100]), (2, None), (3, [0])], "id int, bits array<int>")
    df = df.select("id", pack_bits("bits", 2).alias("bm"))
    values = {0: "true", 63: "false", 127: "(id = 1)", 64: "CAST(NULL AS BOOLEAN)"}
    words = [sql_word("bm", w) for w in range(2)]
    out = {
        r.id: r
        for r in df.selectExpr(
            "id", f"{sql_word_bit(sql_word('bm', 0), 63)} AS b63", f"{sql_word_bit(sql_word('bm', 3), 8)} AS b200",
            f"{sql_words_with_bits(words, values)} AS bm2",
        ).select("id", "b63", "b200", unpack_bits("bm2").alias("bits")).collect()
    }
    assert out[1].b63 is True and out[1].b200 is False and out[1].bits == [0, 3, 100, 127]
    assert out[2].b63 is False and out[2].bits == [0]  # a null bitmap reads as empty
    assert out[3].b63 is False and out[3].bits == [0]
