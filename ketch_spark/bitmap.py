"""Column expressions over consent bitmaps.

A bitmap is an ``array<bigint>``: word ``w`` holds bits ``64*w .. 64*w+63``, bit
``b`` of a word is ``(word >> b) & 1``. Two words hold 128 purposes; policies with
higher bits get more words. Every helper is a native Spark expression (no UDF),
and a word missing from a shorter array reads as zero, so bitmaps written under
an older policy stay readable.
"""

from __future__ import annotations

from typing import Iterable

from pyspark.sql import Column
from pyspark.sql import functions as F

from ketch_spark.policy import WORD_BITS

__all__ = [
    "has_purpose",
    "pack_bits",
    "unpack_bits",
    "bitmap_literal",
    "bitmap_or",
    "bitmap_and_not",
    "empty_bitmap",
]


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


def pack_bits(bits: Column | str, n_words: int) -> Column:
    """Packs an ``array<int>`` of bit positions into a bitmap of ``n_words`` words.

    Null positions are ignored; a null array gives a null bitmap; positions beyond
    ``n_words * 64`` are dropped.
    """
    bits = _col(bits)
    words = [
        F.aggregate(
            F.filter(bits, lambda b, w=w: b.isNotNull() & (F.floor(b / WORD_BITS) == w)),
            F.lit(0).cast("bigint"),
            lambda acc, b: acc.bitwiseOR(F.shiftleft(F.lit(1).cast("bigint"), (b % WORD_BITS).cast("int"))),
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
                F.filter(offsets, lambda i: F.shiftright(F.coalesce(word, F.lit(0).cast("bigint")), i).bitwiseAND(1) == 1),
                lambda i: w * WORD_BITS + i,
            ),
        )
    )


def bitmap_literal(bits: Iterable[int], n_words: int) -> Column:
    """A constant bitmap with ``bits`` set."""
    words = [0] * n_words
    for bit in bits:
        words[bit // WORD_BITS] |= 1 << (bit % WORD_BITS)
    signed = [w - (1 << 64) if w >= 1 << 63 else w for w in words]
    return F.array(*[F.lit(w).cast("bigint") for w in signed])


def empty_bitmap(n_words: int) -> Column:
    """A bitmap with no bit set."""
    return bitmap_literal((), n_words)


def _wordwise(left: Column | str, right: Column | str, n_words: int, op) -> Column:  # noqa: ANN001
    left, right = _col(left), _col(right)
    return F.array(*[op(_word(left, w), _word(right, w)) for w in range(n_words)])


def bitmap_or(left: Column | str, right: Column | str, n_words: int) -> Column:
    """Bits set in either bitmap (null if either is null)."""
    return _wordwise(left, right, n_words, lambda a, b: a.bitwiseOR(b))


def bitmap_and_not(left: Column | str, right: Column | str, n_words: int) -> Column:
    """Bits set in ``left`` and not in ``right`` (null if either is null)."""
    return _wordwise(left, right, n_words, lambda a, b: a.bitwiseAND(F.bitwise_not(b)))
