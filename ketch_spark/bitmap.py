"""Column expressions over consent bitmaps.

A bitmap is an ``array<bigint>``: word ``w`` holds bits ``64*w .. 64*w+63``, bit
``b`` of a word is ``(word >> b) & 1``. Two words hold 128 purposes; policies with
higher bits get more words. Every helper is a native Spark expression (no UDF),
and a word missing from a shorter array reads as zero, so bitmaps written under
an older policy stay readable.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

from ketch_spark.policy import WORD_BITS

__all__ = [
    "has_purpose",
    "has_bit",
    "bitmap_assign",
    "bitmap_with_bits",
    "pack_bits",
    "unpack_bits",
    "bitmap_literal",
    "bitmap_or",
    "bitmap_and_not",
    "empty_bitmap",
    "sql_word",
    "sql_word_bit",
    "sql_words_with_bits",
]


def _signed(word: int) -> int:
    """An unsigned 64-bit word as the signed bigint Spark holds."""
    word &= (1 << 64) - 1
    return word - (1 << 64) if word >= 1 << 63 else word


def _powers_of_two() -> Column:
    """``[1, 2, 4, ..., 2**63]`` as bigints (2**63 wraps to the sign bit): bit masks by offset."""
    return F.array(*[F.lit(_signed(1 << i)).cast("bigint") for i in range(WORD_BITS)])


def _mask(offset: Column) -> Column:
    """The one-bit mask for a bit offset (0-63) held in a column."""
    return F.element_at(_powers_of_two(), (offset + 1).cast("int"))


def _col(col: Column | str) -> Column:
    return F.col(col) if isinstance(col, str) else col


def _word(bitmap: Column, index: int) -> Column:
    """Word ``index`` of ``bitmap``; 0 when the array is shorter, null when the bitmap is null."""
    return F.when(bitmap.isNull(), F.lit(None).cast("bigint")).otherwise(
        F.coalesce(F.try_element_at(bitmap, F.lit(index + 1)), F.lit(0).cast("bigint"))
    )


def has_purpose(bitmap: Column | str, bit: int) -> Column:
    """Whether ``bit`` is set in ``bitmap`` (null for a null bitmap).

    Args:
        bitmap: An ``array<bigint>`` bitmap column or its name.
        bit: Purpose bit, 0 or more.
    """
    if bit < 0:
        raise ValueError(f"bit must be 0 or more, got {bit}")
    word = _word(_col(bitmap), bit // WORD_BITS)
    return F.shiftright(word, bit % WORD_BITS).bitwiseAND(F.lit(1).cast("bigint")) == 1


def has_bit(bitmap: Column | str, bit: Column | str) -> Column:
    """Whether the bit held in column ``bit`` is set in ``bitmap`` (null if either is null).

    The per-row counterpart of :func:`has_purpose`, for bits that come from data.
    """
    bitmap, bit = _col(bitmap), _col(bit)
    word = F.coalesce(F.try_element_at(bitmap, (F.floor(bit / WORD_BITS) + 1).cast("int")), F.lit(0).cast("bigint"))
    return F.when(bitmap.isNull() | bit.isNull(), F.lit(None).cast("boolean")).otherwise(
        word.bitwiseAND(_mask(bit % WORD_BITS)) != 0
    )


def bitmap_assign(bitmap: Column | str, assignments: Column | str, n_words: int) -> Column:
    """``bitmap`` with each assigned bit set or cleared.

    Args:
        bitmap: The bitmap to start from; a null bitmap gives null.
        assignments: ``array<struct<bit: int, value: boolean>>``; a null value clears the bit,
            a null array assigns nothing.
        n_words: Width of the result in words (a shorter input reads as zeros).

    One ``aggregate`` per word over the assignments: the expression stays small
    whatever the number of words, unlike nesting :func:`bitmap_or` and
    :func:`bitmap_and_not` over :func:`pack_bits`.
    """
    bitmap, assignments = _col(bitmap), F.coalesce(_col(assignments), F.array().cast("array<struct<bit:int,value:boolean>>"))
    words = []
    for w in range(n_words):
        start = F.coalesce(F.try_element_at(bitmap, F.lit(w + 1)), F.lit(0).cast("bigint"))
        words.append(
            F.aggregate(
                F.filter(assignments, _in_word_field(w)),
                start,
                lambda acc, a: F.when(
                    F.coalesce(a["value"], F.lit(False)), acc.bitwiseOR(_mask(a["bit"] % WORD_BITS))
                ).otherwise(acc.bitwiseAND(F.bitwise_not(_mask(a["bit"] % WORD_BITS)))),
            )
        )
    return F.when(bitmap.isNull(), F.lit(None)).otherwise(F.array(*words))


def _in_word_field(word: int):  # noqa: ANN202 - a one-argument lambda for F.filter
    return lambda a: a["bit"].isNotNull() & (F.floor(a["bit"] / WORD_BITS) == word)


def _in_word(word: int):  # noqa: ANN202 - a one-argument lambda for F.filter
    # Spark reads a lambda's arity: a default argument would make it (element, index).
    return lambda b: b.isNotNull() & (F.floor(b / WORD_BITS) == word)


def pack_bits(bits: Column | str, n_words: int) -> Column:
    """Packs an ``array<int>`` of bit positions into a bitmap of ``n_words`` words.

    Null positions are ignored; a null array gives a null bitmap; positions beyond
    ``n_words * 64`` are dropped.
    """
    bits = _col(bits)
    words = [
        F.aggregate(
            F.filter(bits, _in_word(w)),
            F.lit(0).cast("bigint"),
            lambda acc, b: acc.bitwiseOR(_mask(b % WORD_BITS)),
        )
        for w in range(n_words)
    ]
    return F.when(bits.isNull(), F.lit(None)).otherwise(F.array(*words))


def unpack_bits(bitmap: Column | str) -> Column:
    """The sorted ``array<int>`` of bit positions set in ``bitmap`` (null for null)."""
    bitmap = _col(bitmap)
    offsets = F.sequence(F.lit(0), F.lit(WORD_BITS - 1))
    return F.flatten(
        F.transform(
            bitmap,
            lambda word, w: F.transform(
                F.filter(offsets, lambda i: F.coalesce(word, F.lit(0).cast("bigint")).bitwiseAND(_mask(i)) != 0),
                lambda i: w * WORD_BITS + i,
            ),
        )
    )


def bitmap_literal(bits: Iterable[int], n_words: int) -> Column:
    """A constant bitmap with ``bits`` set."""
    words = [0] * n_words
    for bit in bits:
        words[bit // WORD_BITS] |= 1 << (bit % WORD_BITS)
    return F.array(*[F.lit(_signed(w)).cast("bigint") for w in words])


def bitmap_with_bits(bitmap: Column | str, values: Mapping[int, Column], n_words: int) -> Column:
    """``bitmap`` with each bit ``b`` of ``values`` set to ``values[b]`` (a null value clears it).

    Bits are known when the expression is built, so it is plain arithmetic on
    literal masks (code-generated, no lambda); other bits are kept. A null
    bitmap reads as empty.
    """
    bitmap = _col(bitmap)
    words = []
    for w in range(n_words):
        word = F.coalesce(_word(bitmap, w), F.lit(0).cast("bigint"))
        in_word, kept = _bits_in_word(values, w)
        if in_word:
            word = word.bitwiseAND(F.lit(kept).cast("bigint"))
            for bit, one in in_word:
                chosen = F.coalesce(values[bit], F.lit(False))
                word = word.bitwiseOR(F.when(chosen, F.lit(one).cast("bigint")).otherwise(F.lit(0).cast("bigint")))
        words.append(word)
    return F.array(*words)


def _bits_in_word(bits: Iterable[int], word: int) -> tuple[list[tuple[int, int]], int]:
    """The bits of ``bits`` in word ``word`` with their one-bit masks (sorted), and the mask keeping the other bits.

    Masks are the signed bigints Spark holds.
    """
    in_word = sorted(bit for bit in bits if bit // WORD_BITS == word)
    cleared = sum(1 << (bit % WORD_BITS) for bit in in_word)
    return [(bit, _signed(1 << (bit % WORD_BITS))) for bit in in_word], _signed(~cleared)


def empty_bitmap(n_words: int) -> Column:
    """A bitmap with no bit set."""
    return bitmap_literal((), n_words)


def _wordwise(left: Column | str, right: Column | str, n_words: int, op) -> Column:  # noqa: ANN001
    left, right = _col(left), _col(right)
    words = F.array(*[op(_word(left, w), _word(right, w)) for w in range(n_words)])
    return F.when(left.isNull() | right.isNull(), F.lit(None)).otherwise(words)


def bitmap_or(left: Column | str, right: Column | str, n_words: int) -> Column:
    """Bits set in either bitmap (null if either is null)."""
    return _wordwise(left, right, n_words, lambda a, b: a.bitwiseOR(b))


def bitmap_and_not(left: Column | str, right: Column | str, n_words: int) -> Column:
    """Bits set in ``left`` and not in ``right`` (null if either is null)."""
    return _wordwise(left, right, n_words, lambda a, b: a.bitwiseAND(F.bitwise_not(b)))


# SQL text forms, for plans built from many expressions: one ``selectExpr`` string per
# column instead of dozens of Column calls, each a round trip to the JVM.


def _sql_long(value: int) -> str:
    """A bigint literal in Spark SQL for a signed 64-bit value (the most negative one has no literal form)."""
    return "shiftleft(1L, 63)" if value == -(1 << 63) else f"{value}L"


def sql_word(bitmap_sql: str, index: int) -> str:
    """SQL for word ``index`` of a bitmap: 0 when the bitmap is null or shorter."""
    return f"coalesce(try_element_at({bitmap_sql}, {index + 1}), 0L)"


def sql_word_bit(word_sql: str, offset: int) -> str:
    """SQL for whether bit ``offset`` (0-63) of a bigint word is set; use :func:`sql_word` for a bitmap's word."""
    return f"((shiftright({word_sql}, {offset}) & 1L) = 1L)"


def sql_words_with_bits(word_sqls: Sequence[str], values: Mapping[int, str]) -> str:
    """SQL for a bitmap made of ``word_sqls`` with each bit of ``values`` set where its boolean SQL is true.

    Bits of ``values`` are cleared where their SQL is false or null; the other
    bits of the words are kept; bits beyond the words are ignored.
    """
    words = []
    for w, word in enumerate(word_sqls):
        in_word, kept = _bits_in_word(values, w)
        if in_word:
            parts = [f"({word} & {_sql_long(kept)})"]
            parts += [f"(CASE WHEN {values[bit]} THEN {_sql_long(one)} ELSE 0L END)" for bit, one in in_word]
            word = " | ".join(parts)
        words.append(word)
    return f"array({', '.join(words)})"
