"""Bit readers for GPP and TC strings: base64url text to integers, and the GPP header's Fibonacci-coded section ids.

Base64url text is decoded to bytes once (``unbase64`` after mapping ``-_`` to
``+/`` and padding with ``A``, zero bits), the bytes written as hex, and hex
windows of 15 digits read as 60-bit integers (:func:`hex_words`). A field is
then a shift and a mask of one of those integers (:func:`field`): a handful of
string functions per section instead of one per field.

The header's entries are read from one 64-bit integer holding the bits after
its fixed 24, reversed so that the first bit is the least significant
(:func:`reversed_entry_bits`): a Fibonacci codeword then ends at the lowest
``11`` pair, found with ``x & (x >> 1)`` and the lowest set bit. Each entry is
two small projections (:func:`codeword`), so no expression is copied into
another more than once. Headers whose entries do not fit that integer, or that
list more than :data:`FAST_ENTRIES` entries, take a general path
(:func:`general_header`) that reads the header's bits as text with regular
expressions and a lambda.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

__all__ = [
    "ALPHABET",
    "WORD_BITS",
    "FAST_ENTRIES",
    "FAST_HEADER_CHARS",
    "MAX_CODEWORD_BITS",
    "base64url_hex",
    "hex_word",
    "field",
    "first_sextet",
    "fibonacci_table",
    "reverse_table",
    "reversed_entry_bits",
    "codeword",
    "fibonacci_value",
    "general_header",
]

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: Bits of each integer read from hex (15 hex digits: always a positive bigint).
WORD_BITS = 60
#: Headers of at most this many characters, with at most FAST_ENTRIES entries, take the fast path.
FAST_HEADER_CHARS = 14
FAST_ENTRIES = 6
#: A Fibonacci codeword's length limit, its closing ``1`` included (as in IAB's decoders).
MAX_CODEWORD_BITS = 24
_FIXED_CHARS = 4  # the header's Type (6 bits), Version (6) and entry count (12)
_FIBONACCI = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765, 10946,
              17711, 28657, 46368, 75025)  # fmt: skip
_ENTRY = r"\G(0(?:0|10)*11|1(?:0|10)*11(?:0|10)*11)"
_FIRST_CODEWORD = r"^[01]((?:0|10)*11)"
_SECOND_CODEWORD = r"^1(?:0|10)*11((?:0|10)*11)$"


def _call(name: str, *args: Column) -> Column:
    return F.call_function(name, *args)


def base64url_hex(text: Column, n_chars: int) -> Column:
    """Hex digits of the first ``n_chars`` (a multiple of 4) characters of base64url text, zero bits past its end.

    ``text`` must hold base64url characters only (``.`` is read as ``A``).
    """
    assert n_chars % 4 == 0
    standard = F.replace(F.replace(F.replace(text, F.lit("-"), F.lit("+")), F.lit("_"), F.lit("/")), F.lit("."), F.lit("A"))
    return F.hex(F.unbase64(F.rpad(standard, n_chars, "A")))


def hex_word(hex_text: Column, index: int) -> Column:
    """The ``index``-th :data:`WORD_BITS`-bit integer of hex digits (bits ``60 * index`` on, first bit highest)."""
    digits = WORD_BITS // 4
    return F.conv(F.substring(hex_text, digits * index + 1, digits), 16, 10).cast("bigint")


def field(words: list[Column], offset: int, length: int) -> Column:
    """Unsigned integer of ``length`` bits at bit ``offset`` of the bits ``words`` hold, as an int when it fits.

    A field across two words joins the low bits of the first and the high bits of the second.
    """
    index = offset // WORD_BITS
    in_first = min(length, WORD_BITS - offset % WORD_BITS)
    shift = WORD_BITS - offset % WORD_BITS - in_first
    word = words[index]
    value = (F.shiftright(word, shift) if shift else word).bitwiseAND(F.lit((1 << in_first) - 1))
    if in_first < length:
        rest = length - in_first
        value = F.shiftleft(value, rest).bitwiseOR(F.shiftright(words[index + 1], WORD_BITS - rest))
    return value.cast("int") if length < 32 else value


def first_sextet(text: Column) -> Column:
    """The 6 bits of the first character of base64url text; 0 for an empty text."""
    # instr finds the empty string at 1: an empty text reads as 'A', zero bits.
    return F.instr(F.lit(ALPHABET), F.substring(text, 1, 1)) - 1


def fibonacci_table() -> Column:
    """array<bigint> of 256: entry ``64 k + s`` weighs the 6 bits ``s`` of a codeword's value bits ``6k`` to ``6k + 5``."""
    table = [
        sum(_FIBONACCI[6 * k + i] for i in range(6) if s >> i & 1) for k in range(4) for s in range(64)
    ]
    return F.array(*(F.lit(v) for v in table)).cast("array<bigint>")


def reverse_table() -> Column:
    """array<bigint> of 256: each byte with its bits reversed."""
    return F.array(*(F.lit(int(f"{b:08b}"[::-1], 2)) for b in range(256))).cast("array<bigint>")


def _lookup(table: Column, index: Column) -> Column:
    # index is never null (its inputs are coalesced) and within the table
    return F.element_at(table, (index + 1).cast("int"))


def reversed_entry_bits(header_hex: Column, reverse: Column) -> Column:
    """The 64 header bits after the fixed 24, first bit least significant (zeros past the header's end)."""
    forward = F.coalesce(F.conv(F.substring(header_hex, 7, 16), 16, -10).cast("bigint"), F.lit(0).cast("bigint"))
    result = None
    for b in range(8):
        byte = F.shiftrightunsigned(forward, 8 * b).bitwiseAND(F.lit(255)) if b else forward.bitwiseAND(F.lit(255))
        term = F.shiftleft(_lookup(reverse, byte), 8 * (7 - b))
        result = term if result is None else result.bitwiseOR(term)
    return result


def codeword(bits: Column) -> tuple[Column, Column, Column]:
    """The Fibonacci codeword that starts at bit 0 of ``bits`` (reversed: first bit least significant).

    Returns:
        ``end`` (the position of its closing ``1``, minus one: 64 when no ``11``
        closes it), ``value_bits`` (its value bits, bits 0 to ``end``) and
        ``rest`` (the bits after it, shifted down).
    """
    pairs = bits.bitwiseAND(F.shiftrightunsigned(bits, 1))
    lowest = pairs.bitwiseAND(F.lit(0) - pairs)  # pairs >= 0: bit 63 of bits is 0 (see callers)
    end = F.bit_count(lowest - 1)
    value_bits = bits.bitwiseAND(lowest.bitwiseOR(lowest - 1))
    rest = _call("shiftrightunsigned", bits, end + 2)
    return end, value_bits, rest


def fibonacci_value(table: Column, value_bits: Column) -> Column:
    """Sum of the Fibonacci weights (1, 2, 3, 5, ...) of ``value_bits`` (at most 24 bits), through ``table``."""
    total = None
    for k in range(4):
        sextet = F.shiftrightunsigned(value_bits, 6 * k).bitwiseAND(F.lit(63)) if k else value_bits.bitwiseAND(F.lit(63))
        term = _lookup(table, sextet + 64 * k)
        total = term if total is None else total + term
    return total


# --- general path: the header's bits as text ------------------------------------


def _bit_string(text: Column) -> Column:
    """``0``/``1`` characters of base64url text from character 4 (0-based) on, through a lambda."""
    last = F.greatest(F.length(text), F.lit(_FIXED_CHARS + 1))

    def sextet(i: Column) -> Column:
        return F.instr(F.lit(ALPHABET), F.substring(text, i + 1, F.lit(1))) - 1

    sextets = F.transform(F.sequence(F.lit(_FIXED_CHARS), last - 1), lambda i: F.lpad(F.bin(sextet(i)), 6, "0"))
    return F.array_join(sextets, "")


def _text_fibonacci(codeword_text: Column) -> Column:
    """Value of a codeword written as ``0``/``1`` text (first bit weight 1, closing ``1`` included)."""
    value_bits = F.rpad(F.substring(codeword_text, F.lit(1), F.length(codeword_text) - 1), MAX_CODEWORD_BITS, "0")
    return F.aggregate(
        F.sequence(F.lit(1), F.lit(MAX_CODEWORD_BITS)),
        F.lit(0).cast("bigint"),
        lambda acc, i: acc
        + F.when(F.substring(value_bits, i, F.lit(1)) == "1", F.element_at(F.lit(list(_FIBONACCI)), i)).otherwise(0),
    )


def _text_entry(entry: Column) -> Column:
    first = F.regexp_extract(entry, _FIRST_CODEWORD, 1)
    second = F.regexp_extract(entry, _SECOND_CODEWORD, 1)
    return F.struct(
        _text_fibonacci(first).alias("gap"),
        F.when(entry.startswith("1"), _text_fibonacci(second)).otherwise(F.lit(0).cast("bigint")).alias("run"),
        ((F.length(first) <= MAX_CODEWORD_BITS) & (F.length(second) <= MAX_CODEWORD_BITS)).alias("ok"),
    )


def general_header(header_text: Column, count: Column, n_sections: Column) -> Column:
    """``struct<listed, ids, ok>`` of any header: null when it holds fewer entries than ``count``.

    ``ids`` holds the ids while they number at most ``n_sections`` (a hostile range may list millions).
    """
    entries = F.regexp_extract_all(_bit_string(header_text), F.lit(_ENTRY), 1)
    start = F.struct(
        F.lit(0).cast("bigint").alias("end"),
        F.lit(0).cast("bigint").alias("listed"),
        F.array().cast("array<int>").alias("ids"),
        F.lit(True).alias("ok"),
    )

    def step(acc: Column, entry: Column) -> Column:
        first, last = acc["end"] + entry["gap"], acc["end"] + entry["gap"] + entry["run"]
        listed = acc["listed"] + entry["run"] + 1
        keep = acc["ok"] & entry["ok"] & (listed <= n_sections)
        ids = F.when(keep, F.concat(acc["ids"], F.sequence(first.cast("int"), last.cast("int")))).otherwise(acc["ids"])
        return F.struct(last.alias("end"), listed.alias("listed"), ids.alias("ids"), (acc["ok"] & entry["ok"]).alias("ok"))

    decoded = F.aggregate(F.transform(F.slice(entries, 1, count), _text_entry), start, step)
    return F.when(F.size(entries) >= count, F.struct(decoded["listed"].alias("listed"), decoded["ids"].alias("ids"), decoded["ok"].alias("ok")))
