"""IAB GPP strings (Global Privacy Platform), decoded with native Spark expressions.

A GPP string is a header and its sections joined by ``~``, for example
``DBABzw~1YN-~BAAQYAAAAgBA.YA`` (header, uspv1, usnat). Every part is base64url
without padding; a section may hold sub-sections separated by ``.`` (its core
first). Everything here is a Spark column expression: no Python UDF, no JVM
call, so it runs on classic and Spark Connect sessions alike.

The header holds Type Int(6) = 3, Version Int(6) = 1 and SectionIds, a
Fibonacci-coded range: Int(12) entries, each a flag bit (0: one id, 1: a range)
then one or two Fibonacci codewords (Zeckendorf bits, least significant first,
closed by an extra ``1``), each the distance from the previous id. The n-th id
names the n-th section after the header.

Sections decoded (by id; other ids are skipped when well formed):

* 2 ``tcfeuv2``: a TC string, decoded by :func:`ketch_spark.consent.tcf.tc_fields`;
* 6 ``uspv1``: the four characters of a US Privacy string;
* 7 ``usnat``, 8 ``usca``, 9 ``usva``, 10 ``usco``, 11 ``usut``, 12 ``usct``:
  Version Int(6), then Int(2) and N-Bitfield(2, n) fields (see :data:`US_SECTIONS`);
  usnat, usca, usco and usct may carry a GPC sub-section (SubsectionType Int(2)
  = 1, Gpc Boolean). usnat has two layouts: version 1 of its specification
  (SensitiveDataProcessing of 12 entries, KnownChildSensitiveDataConsents of 2;
  60 bits) and version 2 (16 and 3; 70 bits). As in IAB's own libraries (whose
  Java encoder writes the 70-bit layout with Version 1), the length of the core
  segment chooses the layout, not its Version field.

A string is invalid (``valid`` false; ``reason``, a key of :data:`GPP_REASONS`,
and ``detail`` say why) when it is blank, holds characters outside base64url,
``~`` and ``.``, has a bad header, an empty section, a section count other than
the header's, or a supported section that cannot be decoded. Surrounding
whitespace is ignored.

The decoding runs in stages (split, header entries, header, section texts,
tcfeuv2, one per US section, verdict, result), each reading earlier ones'
outputs; base64url is read a character at a time, never decoded to bytes.
:func:`with_gpp_fields` makes each stage a column of its own, so Spark computes
every intermediate once in generated code: use it on large data.
:func:`gpp_fields` is the same stages in one column expression, each bound to a
lambda variable (Spark evaluates lambda bodies without code generation, so it
is slower, and its plan takes longer to build).

How a decoded string becomes consent choices (:func:`gpp_choices`): the
policy's ``gpp`` section maps US-section fields to our purposes. A field's
``1`` (opted out, no consent) denies, ``2`` grants, ``0`` (not applicable)
gives no choice. For an opt-out field (SaleOptOut, SharingOptOut,
TargetedAdvertisingOptOut, and SensitiveDataProcessing in usca and usut) ``2``
means "did not opt out" and, as for the US Privacy string, grants only purposes
with legal basis ``legitimate_interest``; for a consent field
(SensitiveDataProcessing elsewhere, KnownChildSensitiveDataConsents,
PersonalDataConsents) ``2`` is a consent and grants any purpose. A bitfield
denies if any entry is ``1``, else grants if any is ``2``. Gpc set denies the
purposes mapped to ``gpc``. Over all US sections of a string there is one
choice per purpose, a denial winning. These choices and those of the uspv1
section (exactly as a US Privacy string) take the record's time; the tcfeuv2
section's choices are its TC string's, at its LastUpdated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ketch_spark.consent.tcf import CHOICE_TYPE, tc_choices, tc_fields, us_privacy_choices, us_privacy_valid
from ketch_spark.policy import Policy

__all__ = [
    "GPP_REASONS",
    "US_SECTIONS",
    "UsSection",
    "gpp_fields",
    "with_gpp_fields",
    "gpp_choices",
]

#: Why a GPP string is invalid: ``reason`` -> what it means (``detail`` says more).
GPP_REASONS: Mapping[str, str] = {
    "empty": "the string is empty or blank",
    "bad_base64url": "the string holds characters outside base64url, '~' and '.'",
    "bad_header": "the header is not a GPP v1 header (too short, wrong type or version, malformed section ids)",
    "empty_section": "a section after '~' is empty",
    "section_count_mismatch": "the header lists a different number of sections than the string holds",
    "too_short": "a supported section's core segment is shorter than its layout",
    "unsupported_version": "a supported section's Version is not one decoded here",
    "bad_field_value": "a 2-bit field of a supported section holds 3",
    "bad_subsection": "the sub-section after '.' is not a GPC sub-section",
    "bad_tcf_section": "the tcfeuv2 section is not a valid TC string (TCF v2)",
    "bad_uspv1_section": "the uspv1 section is not a US Privacy string",
}

Layout = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class UsSection:
    """Layout of a US GPP section's core segment.

    Attributes:
        section_id: GPP section id.
        name: Client-side API prefix (``usnat``), also the struct field's name.
        layouts: Field layouts, shortest first: (field, n) pairs, n = 0 for an
            Int(2) and n > 0 for an N-Bitfield(2, n). The longest layout that
            the core segment holds is used.
        versions: Version values decoded.
        gpc: Whether the section defines a GPC sub-section.
        opt_out_fields: Fields whose ``2`` means "did not opt out" rather than a consent.
    """

    section_id: int
    name: str
    layouts: tuple[Layout, ...]
    versions: tuple[int, ...] = (1,)
    gpc: bool = False
    opt_out_fields: frozenset[str] = frozenset({"sale_opt_out", "sharing_opt_out", "targeted_advertising_opt_out"})

    @property
    def fields(self) -> Layout:
        """Fields of the longest layout, in order (the layouts share names and order)."""
        return self.layouts[-1]

    @property
    def where(self) -> str:
        """How messages name the section."""
        return f"section {self.section_id} ({self.name})"


_MSPA: Layout = (("mspa_covered_transaction", 0), ("mspa_opt_out_option_mode", 0), ("mspa_service_provider_mode", 0))
_OPT_OUTS = frozenset({"sale_opt_out", "sharing_opt_out", "targeted_advertising_opt_out"})
_STATE_NOTICES = ("sharing_notice", "sale_opt_out_notice", "targeted_advertising_opt_out_notice")


def _usnat_layout(sensitive: int, child: int) -> Layout:
    notices = ("sharing", "sale_opt_out", "sharing_opt_out", "targeted_advertising_opt_out",
               "sensitive_data_processing_opt_out", "sensitive_data_limit_use")  # fmt: skip
    return (
        *((f"{notice}_notice", 0) for notice in notices),
        ("sale_opt_out", 0),
        ("sharing_opt_out", 0),
        ("targeted_advertising_opt_out", 0),
        ("sensitive_data_processing", sensitive),
        ("known_child_sensitive_data_consents", child),
        ("personal_data_consents", 0),
        *_MSPA,
    )


def _state_layout(notices: tuple[str, ...], sensitive: int, child: int) -> Layout:
    return (
        *((notice, 0) for notice in notices),
        ("sale_opt_out", 0),
        ("targeted_advertising_opt_out", 0),
        ("sensitive_data_processing", sensitive),
        ("known_child_sensitive_data_consents", child),
        *_MSPA,
    )


_USCA_LAYOUT: Layout = (
    ("sale_opt_out_notice", 0),
    ("sharing_opt_out_notice", 0),
    ("sensitive_data_limit_use_notice", 0),
    ("sale_opt_out", 0),
    ("sharing_opt_out", 0),
    ("sensitive_data_processing", 9),
    ("known_child_sensitive_data_consents", 2),
    ("personal_data_consents", 0),
    *_MSPA,
)
_USUT_NOTICES = (*_STATE_NOTICES, "sensitive_data_processing_opt_out_notice")

#: The US sections decoded here, by section id.
US_SECTIONS: Mapping[int, UsSection] = {
    7: UsSection(7, "usnat", (_usnat_layout(12, 2), _usnat_layout(16, 3)), versions=(1, 2), gpc=True),
    8: UsSection(8, "usca", (_USCA_LAYOUT,), gpc=True, opt_out_fields=_OPT_OUTS | {"sensitive_data_processing"}),
    9: UsSection(9, "usva", (_state_layout(_STATE_NOTICES, 8, 0),)),
    10: UsSection(10, "usco", (_state_layout(_STATE_NOTICES, 7, 0),), gpc=True),
    11: UsSection(11, "usut", (_state_layout(_USUT_NOTICES, 8, 0),), opt_out_fields=_OPT_OUTS | {"sensitive_data_processing"}),
    12: UsSection(12, "usct", (_state_layout(_STATE_NOTICES, 8, 3),), gpc=True),
}
_TCF_ID, _USP_ID = 2, 6
_TCF_WHERE, _USP_WHERE = "section 2 (tcfeuv2)", "section 6 (uspv1)"

_CHARSET = r"^[A-Za-z0-9_~.-]+$"
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_WHITESPACE = " \t\r\n"
_HEADER_TYPE, _HEADER_VERSION = 3, 1
_HEADER_FIXED_CHARS = 4  # Type (6 bits), Version (6) and the entry count (12)
# Headers of at most this many characters after the fixed ones, with at most two entries
# (IAB's encoders write one per run of consecutive ids), decode without a lambda.
_SHORT_HEADER_CHARS = 8
_SHORT_HEADER_ENTRIES = 2
_MAX_CODEWORD_BITS = 24  # as in IAB's decoders
_ENTRY = r"\G(0(?:0|10)*11|1(?:0|10)*11(?:0|10)*11)"
_FIRST_CODEWORD = r"^[01]((?:0|10)*11)"
_SECOND_CODEWORD = r"^1(?:0|10)*11((?:0|10)*11)$"
_FIBONACCI = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765, 10946,
              17711, 28657, 46368, 75025)  # fmt: skip
_VERSION_BITS = 6

Env = Mapping[str, Column]


def _col(col: Column | str) -> Column:
    return F.col(col) if isinstance(col, str) else col


def _any(conditions: list[Column]) -> Column:
    result = conditions[0]
    for condition in conditions[1:]:
        result = result | condition
    return result


def _fails(ok: Column) -> Column:
    """True unless ``ok`` is true (null counts as a failure)."""
    return ~F.coalesce(ok, F.lit(False))


# --- bits -----------------------------------------------------------------------
# Base64url text is read a character (6 bits) at a time, without decoding it to
# bytes: every 2-bit field after a 6-bit Version sits inside one character.


def _sextet(text: Column, index: int | Column) -> Column:
    """The 6 bits of character ``index`` (0-based) of base64url text (checked beforehand); 0 past its end."""
    position = index + 1 if isinstance(index, int) else index + F.lit(1)
    # instr finds the empty string at 1: a character past the end reads as 'A', zero bits.
    return F.instr(F.lit(_ALPHABET), F.substring(text, position, F.lit(1))) - 1


def _bits(text: Column, offset: int, length: int) -> Column:
    """Unsigned integer of ``length`` bits (within one character) at bit ``offset`` of base64url text."""
    shift = 6 - offset % 6 - length
    assert shift >= 0, "a field straddles two characters"
    return F.shiftright(_sextet(text, offset // 6), shift).bitwiseAND(F.lit((1 << length) - 1))


#: Per 2-bit pair of a character (bits 5-4, 3-2, 1-0), the pair's value for each base64url character.
_PAIR_DIGITS = tuple("".join(str(v >> (4 - 2 * pair) & 3) for v in range(64)) for pair in range(3))
_MAX_US_CHARS = 12  # the longest US layout (usnat version 2, 70 bits) in characters


def _pair_strings(core: Column) -> list[Column]:
    """Per pair of bits, a string of digits 0-3, one per character of ``core`` (zeros past its end).

    A 2-bit field after the Version then reads as one digit: field at bit ``o`` is
    digit ``o // 6`` of string ``(o % 6) // 2``.
    """
    return [F.rpad(F.translate(core, _ALPHABET, digits), _MAX_US_CHARS, "0") for digits in _PAIR_DIGITS]


def _pair(pairs: Column, offset: int) -> Column:
    """The 2-bit field at bit ``offset`` (even, after the Version) of a section's pair strings."""
    # try_cast: a character outside base64url (the whole string is then invalid) stays as is.
    return F.substring(pairs[f"p{offset % 6 // 2}"], offset // 6 + 1, 1).try_cast("int")


def _bit_string(text: Column, first_char: int, n_chars: int | None = None) -> Column:
    """``0``/``1`` characters of base64url text from character ``first_char`` (0-based) on.

    With ``n_chars``, of that many characters (zeros past the end), without a lambda.
    """
    if n_chars is not None:
        return F.concat(*(F.lpad(F.bin(_sextet(text, i)), 6, "0") for i in range(first_char, first_char + n_chars)))
    last = F.greatest(F.length(text), F.lit(first_char + 1))
    sextets = F.transform(F.sequence(F.lit(first_char), last - 1), lambda i: F.lpad(F.bin(_sextet(text, i)), 6, "0"))
    return F.array_join(sextets, "")


def _fibonacci_byte_tables() -> list[list[int]]:
    """Per byte of a codeword's value bits (first bit = weight 1), each byte value's share of the total."""
    tables = []
    for first in range(0, _MAX_CODEWORD_BITS, 8):
        weights = _FIBONACCI[first : first + 8]
        tables.append([sum(w for j, w in enumerate(weights) if byte >> (7 - j) & 1) for byte in range(256)])
    return tables


_FIBONACCI_BYTES = _fibonacci_byte_tables()


def _fibonacci_value(codeword: Column) -> Column:
    """Value of a Fibonacci codeword of at most :data:`_MAX_CODEWORD_BITS` bits (its value bits, weighted).

    The value bits are read as one number, then weighted a byte at a time
    through lookup tables: three array reads instead of a sum of 24 terms.
    """
    value_bits = F.rpad(F.substring(codeword, F.lit(1), F.length(codeword) - 1), _MAX_CODEWORD_BITS, "0")
    number = F.conv(value_bits, 2, 10).cast("int")
    n_bytes = len(_FIBONACCI_BYTES)
    total = None
    for k, table in enumerate(_FIBONACCI_BYTES):
        byte = F.shiftright(number, 8 * (n_bytes - 1 - k)).bitwiseAND(F.lit(255))
        term = F.element_at(F.lit(table), byte + 1)
        total = term if total is None else total + term
    return total.cast("bigint")


# --- stages -------------------------------------------------------------------


def _split_stage(env: Env) -> Column:
    """The trimmed string, its parts, the header's fixed fields and the bits of a short header's entries."""
    value = F.trim(env["raw"], F.lit(_WHITESPACE))
    parts = F.split(value, "~", -1)
    header_text = F.element_at(parts, 1)
    short_bits = _bit_string(header_text, _HEADER_FIXED_CHARS, _SHORT_HEADER_CHARS)
    return F.struct(
        value.alias("value"),
        parts.alias("parts"),
        (F.size(parts) - 1).alias("n_sections"),
        header_text.alias("header_text"),
        _sextet(header_text, 0).alias("type"),
        _sextet(header_text, 1).alias("version"),
        (_sextet(header_text, 2) * 64 + _sextet(header_text, 3)).alias("count"),
        F.regexp_extract_all(short_bits, F.lit(_ENTRY), 1).alias("short_entries"),
    )


def _entry(entry: Column) -> Column:
    """One section-id entry: ``gap`` to its first id, ``run`` of ids after that one, ``ok`` (codewords fit)."""
    first = F.regexp_extract(entry, _FIRST_CODEWORD, 1)
    second = F.regexp_extract(entry, _SECOND_CODEWORD, 1)
    return F.struct(
        _fibonacci_value(first).alias("gap"),
        F.when(entry.startswith("1"), _fibonacci_value(second)).otherwise(F.lit(0).cast("bigint")).alias("run"),
        ((F.length(first) <= _MAX_CODEWORD_BITS) & (F.length(second) <= _MAX_CODEWORD_BITS)).alias("ok"),
    )


def _entries_stage(env: Env) -> Column:
    """The first entries of a short header, decoded without a lambda."""
    entries = env["split"]["short_entries"]
    return F.array(*(_entry(F.try_element_at(entries, F.lit(j))) for j in range(1, _SHORT_HEADER_ENTRIES + 1)))


def _ids_of(entries: Column, count: Column, n_sections: Column) -> Column:
    """``ids``, ``listed``, ``ok`` from decoded entries, through a lambda (any number of entries)."""
    start = F.struct(
        F.lit(0).cast("bigint").alias("end"),
        F.lit(0).cast("bigint").alias("listed"),
        F.array().cast("array<int>").alias("ids"),
        F.lit(True).alias("ok"),
    )

    def step(acc: Column, entry: Column) -> Column:
        first, last = acc["end"] + entry["gap"], acc["end"] + entry["gap"] + entry["run"]
        listed = acc["listed"] + entry["run"] + 1
        # Materialise ids only while they can match the sections present: a hostile range may list millions.
        keep = acc["ok"] & entry["ok"] & (listed <= n_sections)
        ids = F.when(keep, F.concat(acc["ids"], F.sequence(first.cast("int"), last.cast("int")))).otherwise(acc["ids"])
        return F.struct(last.alias("end"), listed.alias("listed"), ids.alias("ids"), (acc["ok"] & entry["ok"]).alias("ok"))

    return F.aggregate(F.slice(entries, 1, count), start, step)


def _short_ids_of(entries: Column, count: Column, n_sections: Column) -> Column:
    """What :func:`_ids_of` gives for at most :data:`_SHORT_HEADER_ENTRIES` entries, without a lambda."""
    end, listed, ok, ranges = F.lit(0).cast("bigint"), F.lit(0).cast("bigint"), F.lit(True), []
    for j in range(1, _SHORT_HEADER_ENTRIES + 1):
        entry, used = F.element_at(entries, j), F.lit(j) <= count
        first, last = end + entry["gap"], end + entry["gap"] + entry["run"]
        listed = listed + F.when(used, entry["run"] + 1).otherwise(0)
        ok = ok & (~used | entry["ok"])
        ranges.append(F.when(used, F.sequence(first.cast("int"), last.cast("int"))).otherwise(F.array().cast("array<int>")))
        end = last
    ids = F.when(ok & (listed <= n_sections), F.concat(*ranges)).otherwise(F.array().cast("array<int>"))
    return F.struct(end.alias("end"), listed.alias("listed"), ids.alias("ids"), ok.alias("ok"))


def _header_stage(env: Env) -> Column:
    """The header's section ids (null when malformed or more than the sections present) and how many it lists."""
    split = env["split"]
    count, n_sections, header_text = split["count"], split["n_sections"], split["header_text"]
    short = (F.length(header_text) <= _HEADER_FIXED_CHARS + _SHORT_HEADER_CHARS) & (count <= _SHORT_HEADER_ENTRIES)
    found = F.when(short, F.size(split["short_entries"])).otherwise(
        F.size(F.regexp_extract_all(_bit_string(header_text, _HEADER_FIXED_CHARS), F.lit(_ENTRY), 1))
    )
    long_entries = F.transform(F.regexp_extract_all(_bit_string(header_text, _HEADER_FIXED_CHARS), F.lit(_ENTRY), 1), _entry)
    decoded = F.when(found < count, F.lit(None)).when(
        short, _short_ids_of(env["entries"], count, n_sections)
    ).otherwise(_ids_of(long_entries, count, n_sections))
    ok = F.coalesce(decoded["ok"], F.lit(False))
    return F.struct(
        F.when(ok & (decoded["listed"] <= n_sections), decoded["ids"]).alias("ids"),
        decoded["listed"].alias("listed"),
        ok.alias("ok"),
    )


def _us_texts(text: Column) -> Column:
    """A US section's core segment and the sub-section after it (null when none); null when absent."""
    # substring_index, not split_part: Spark's split_part compiles a regex per call.
    subsection = F.when(F.instr(text, ".") > 0, F.substring_index(F.substring_index(text, ".", 2), ".", -1))
    core = F.substring_index(text, ".", 1)
    return F.when(
        text.isNotNull(),
        F.struct(
            core.alias("core"),
            *(digits.alias(f"p{pair}") for pair, digits in enumerate(_pair_strings(core))),
            subsection.alias("subsection"),
            _bits(subsection, 0, 2).alias("subsection_type"),
            (_bits(subsection, 2, 1) == 1).alias("gpc"),
        ),
    )


def _texts_stage(env: Env) -> Column:
    """Each supported section's text, found through the header's ids (null when absent)."""
    parts, ids = env["split"]["parts"], env["header"]["ids"]

    def text(section_id: int) -> Column:
        position = F.array_position(ids, section_id)
        return F.when(position > 0, F.element_at(parts, (position + 1).cast("int")))

    return F.struct(
        text(_TCF_ID).alias("tcfeuv2"),
        text(_USP_ID).alias("uspv1"),
        *(_us_texts(text(sid)).alias(section.name) for sid, section in US_SECTIONS.items()),
    )


def _tcf_stage(env: Env) -> Column:
    """The tcfeuv2 section decoded as a TC string (``valid`` null when absent)."""
    return tc_fields(env["texts"]["tcfeuv2"])


def _layout_bits(layout: Layout) -> int:
    return _VERSION_BITS + 2 * sum(max(1, n) for _, n in layout)


def _layout_values(pairs: Column, layout: Layout) -> dict[str, Column]:
    """Each field of the layout: an int, or an array<int> for a bitfield."""
    values: dict[str, Column] = {}
    offset = _VERSION_BITS
    for name, n in layout:
        entries = [_pair(pairs, offset + 2 * i) for i in range(max(1, n))]
        values[name] = entries[0] if n == 0 else F.array(*entries)
        offset += 2 * max(1, n)
    return values


def _holds_three(pairs: Column, layout: Layout) -> Column:
    """Whether a 2-bit field of the layout holds 3: a digit 3 where the layout has a field."""
    last_char = {pair: 0 for pair in range(3)}
    for offset in range(_VERSION_BITS, _layout_bits(layout), 2):
        last_char[offset % 6 // 2] = offset // 6
    return _any([F.instr(F.substring(pairs[f"p{pair}"], 2, last), "3") > 0 for pair, last in last_char.items() if last])


def _by_layout(section: UsSection, texts: Column, build: Callable[[Column, Layout], object]) -> list:
    """(whether the core holds the layout, ``build`` of it) per layout of the section."""
    return [(F.length(texts["core"]) * 6 >= _layout_bits(layout), build(texts, layout)) for layout in section.layouts]


def _version(texts: Column) -> Column:
    return _pair(texts, 0) * 16 + _pair(texts, 2) * 4 + _pair(texts, 4)


def _pick(options: list) -> Column:
    """The value of the last option whose condition holds, else the first's."""
    result = options[0][1]
    for condition, value in options[1:]:
        result = F.when(condition, value).otherwise(result)
    return result


def _first_problem(problems: list[tuple[Column, str, Column]]) -> tuple[Column, Column]:
    """``reason`` and ``detail`` of the first problem whose condition holds (nulls when none does)."""
    (condition, name, text), rest = problems[0], problems[1:]
    reason, detail = F.when(condition, F.lit(name)), F.when(condition, text)
    for condition, name, text in rest:
        reason, detail = reason.when(condition, F.lit(name)), detail.when(condition, text)
    return reason, detail


def _us_problems(section: UsSection, texts: Column) -> list[tuple[Column, str, Column]]:
    core, where = texts["core"], section.where
    n_bits, version = F.length(core) * 6, _version(texts)
    shortest = _layout_bits(section.layouts[0])
    supported = ", ".join(map(str, section.versions))
    problems = [
        (n_bits < shortest, "too_short", F.format_string(f"{where}: core segment of %d bits, under the {shortest} of its layout", n_bits)),
        (~version.isin(*section.versions), "unsupported_version", F.format_string(f"{where}: version %d is not decoded (only {supported})", version)),
        (_pick(_by_layout(section, texts, _holds_three)), "bad_field_value", F.lit(f"{where}: a 2-bit field holds 3 (only 0, 1 and 2 are defined)")),
    ]
    if section.gpc:
        subsection = texts["subsection"]
        bad = subsection.isNotNull() & ((subsection == "") | (texts["subsection_type"] != 1))
        problems.append((bad, "bad_subsection", F.lit(f"{where}: the sub-section after '.' is not a GPC sub-section")))
    return problems


def _us_stage(section: UsSection) -> Callable[[Env], Column]:
    """The stage decoding one US section: its ``reason`` and ``detail`` when it cannot be, else its ``value``."""

    def stage(env: Env) -> Column:
        texts = env["texts"][section.name]
        reason, detail = _first_problem(_us_problems(section, texts))
        per_layout = _by_layout(section, texts, _layout_values)
        columns = [_version(texts).alias("version")]
        columns += [_pick([(holds, values[name]) for holds, values in per_layout]).alias(name) for name, _ in section.fields]
        if section.gpc:
            columns.append(F.when(texts["subsection"].isNotNull(), texts["gpc"]).alias("gpc"))
        value = F.when(texts.isNotNull() & reason.isNull(), F.struct(*columns))
        return F.when(texts.isNotNull(), F.struct(reason.alias("reason"), detail.alias("detail"), value.alias("value")))

    return stage


def _usp_value(text: Column) -> Column:
    return F.when(
        text.isNotNull(),
        F.struct(
            F.substring(text, 1, 1).cast("int").alias("version"),
            F.substring(text, 2, 1).alias("notice"),
            F.substring(text, 3, 1).alias("opt_out_sale"),
            F.substring(text, 4, 1).alias("lspa_covered"),
            text.alias("us_privacy"),
        ),
    )


def _verdict_stage(env: Env) -> Column:
    """``reason`` and ``detail`` of the first check that fails, in order; nulls for a valid (or null) string."""
    split, header, texts, tcf = env["split"], env["header"], env["texts"], env["tcfeuv2"]
    value, header_text, n_sections, usp = split["value"], split["header_text"], split["n_sections"], texts["uspv1"]
    problems = [
        (value == "", "empty", F.lit("the string is empty")),
        (~value.rlike(_CHARSET), "bad_base64url", F.lit("the string holds characters outside base64url, '~' and '.'")),
        (F.length(header_text) < _HEADER_FIXED_CHARS, "bad_header", F.lit("the header is shorter than 4 characters (24 bits)")),
        (F.instr(header_text, ".") > 0, "bad_header", F.lit("the header holds a '.'")),
        (split["type"] != _HEADER_TYPE, "bad_header", F.format_string(f"header type %d, expected {_HEADER_TYPE}", split["type"])),
        (split["version"] != _HEADER_VERSION, "bad_header", F.format_string(f"header version %d, expected {_HEADER_VERSION}", split["version"])),
        (~header["ok"], "bad_header", F.lit("the header's section ids are truncated or malformed")),
        (F.array_contains(F.slice(split["parts"], 2, F.greatest(n_sections, F.lit(0))), ""), "empty_section", F.lit("a section after '~' is empty")),
        (header["listed"] != n_sections, "section_count_mismatch", F.format_string("the header lists %d sections, the string holds %d", header["listed"], n_sections)),
        (header["ids"].isNull(), "bad_header", F.lit("the header's section ids cannot be decoded")),
        (tcf["valid"].isNotNull() & ~tcf["valid"], "bad_tcf_section", F.lit(f"{_TCF_WHERE}: not a TC string v2 (bad base64url, under 213 bits, wrong version or no LastUpdated)")),
        (usp.isNotNull() & _fails((F.length(usp) == 4) & us_privacy_valid(usp)), "bad_uspv1_section", F.format_string(f"{_USP_WHERE}: '%s' is not a US Privacy string (1 then three of Y, N, -)", usp)),
    ]
    reason, detail = _first_problem(problems)
    for section in US_SECTIONS.values():
        decoded = env[section.name]
        failed = decoded["reason"].isNotNull()
        reason, detail = reason.when(failed, decoded["reason"]), detail.when(failed, decoded["detail"])
    first = F.when(env["raw"].isNotNull(), F.struct(reason.alias("reason"), detail.alias("detail")))
    return F.struct(first["reason"].alias("reason"), first["detail"].alias("detail"))


def _result(env: Env) -> Column:
    split, texts, verdict, tcf = env["split"], env["texts"], env["verdict"], env["tcfeuv2"]
    valid = F.when(env["raw"].isNotNull(), verdict["reason"].isNull())

    def when_valid(column: Column) -> Column:
        return F.when(valid, column)

    return F.struct(
        valid.alias("valid"),
        verdict["reason"].alias("reason"),
        verdict["detail"].alias("detail"),
        when_valid(env["header"]["ids"]).alias("section_ids"),
        when_valid(F.struct(split["type"].alias("type"), split["version"].alias("version"))).alias("header"),
        when_valid(F.when(tcf["valid"].isNotNull(), tcf)).alias("tcfeuv2"),
        when_valid(_usp_value(texts["uspv1"])).alias("uspv1"),
        *(when_valid(env[section.name]["value"]).alias(section.name) for section in US_SECTIONS.values()),
    )


#: (name, stage) in order; a stage reads the raw string and earlier stages. Small stages keep
#: each projection's generated code under the JVM's 64 KB per method.
_STAGES: tuple[tuple[str, Callable[[Env], Column]], ...] = (
    ("split", _split_stage),
    ("entries", _entries_stage),
    ("header", _header_stage),
    ("texts", _texts_stage),
    ("tcfeuv2", _tcf_stage),
    *((section.name, _us_stage(section)) for section in US_SECTIONS.values()),
    ("verdict", _verdict_stage),
)


def _let(value: Column, body: Callable[[Column], Column]) -> Column:
    """``body`` applied to ``value`` computed once: a lambda variable stands for it."""
    return F.element_at(F.transform(F.array(value), body), 1)


def gpp_fields(gpp_string: Column | str) -> Column:
    """Decodes GPP strings into a struct (see the module docstring).

    One column expression, for a ``select`` or ``withColumn`` anywhere; on large
    data :func:`with_gpp_fields` gives the same struct faster.

    Args:
        gpp_string: A string column holding GPP strings.

    Returns:
        ``struct<valid, reason, detail, section_ids, header, tcfeuv2, uspv1,
        usnat, usca, usva, usco, usut, usct>``. ``valid`` is null for a null
        input; when it is false, ``reason`` (a key of :data:`GPP_REASONS`) and
        ``detail`` say why and every other field is null. ``section_ids`` lists
        the header's ids in order; ``header`` holds ``type`` and ``version``; a
        section's struct is null when the string does not hold it.
        ``tcfeuv2`` is the :func:`~ketch_spark.consent.tcf.tc_fields` struct of
        that section; ``uspv1`` holds ``version``, ``notice``, ``opt_out_sale``,
        ``lspa_covered`` (characters) and ``us_privacy`` (all four); a US
        section holds ``version``, its fields in snake_case (an Int(2) as int,
        an N-Bitfield as array<int>) and, where the section defines one,
        ``gpc`` (null without a GPC sub-section).
    """

    def bind(index: int, env: dict[str, Column]) -> Column:
        if index == len(_STAGES):
            return _result(env)
        name, stage = _STAGES[index]
        return _let(stage(env), lambda value: bind(index + 1, {**env, name: value}))

    return bind(0, {"raw": _col(gpp_string)})


def with_gpp_fields(df: DataFrame, gpp_col: str = "gpp_string", out_col: str = "gpp") -> DataFrame:
    """Adds ``out_col``, the :func:`gpp_fields` struct of ``gpp_col``, one stage per projection.

    Each stage is a column of its own (dropped at the end), so Spark computes
    every intermediate once, in generated code.
    """
    env: dict[str, Column] = {"raw": F.col(gpp_col)}
    staged = []
    for name, stage in _STAGES:
        column = f"__{out_col}_{name}"
        df = df.withColumn(column, stage(env))
        env[name] = F.col(column)
        staged.append(column)
    return df.withColumn(out_col, _result(env)).drop(*staged)


# --- choices ------------------------------------------------------------------


def _empty_choices() -> Column:
    return F.array().cast(CHOICE_TYPE)


def _signals(section: UsSection, struct: Column, field_name: str) -> tuple[Column, Column, bool] | None:
    """(denies, grants, is a consent) of one field of a section; None when the section lacks it."""
    if field_name == "gpc":
        return (struct["gpc"], F.lit(False), False) if section.gpc else None
    counts = dict(section.fields)
    if field_name not in counts:
        return None
    value = struct[field_name]
    if counts[field_name] == 0:
        denies, grants = value == 1, value == 2
    else:
        denies, grants = F.array_contains(value, 1), F.array_contains(value, 2)
    return denies, grants, field_name not in section.opt_out_fields


def _us_choices(fields: Column, event_ts: Column, policy: Policy) -> Column:
    """One choice per purpose the policy's ``gpp`` mapping feeds from the string's US sections."""
    denials: dict[str, list[Column]] = {}
    grants: dict[str, list[Column]] = {}
    for field_name, names in policy.gpp_purposes.items():
        for section in US_SECTIONS.values():
            signals = _signals(section, fields[section.name], field_name)
            if signals is None:
                continue
            denies, grants_it, is_consent = signals
            for name in names:
                purpose = policy.purpose(name)
                if purpose.retired:
                    continue
                denials.setdefault(name, []).append(F.coalesce(denies, F.lit(False)))
                if is_consent or purpose.default_allowed:
                    grants.setdefault(name, []).append(F.coalesce(grants_it, F.lit(False)))
    choices = []
    for name, denied in denials.items():
        granted = F.when(_any(denied), F.lit(False))
        if name in grants:
            granted = granted.when(_any(grants[name]), F.lit(True))
        choices.append(F.struct(F.lit(name).alias("purpose"), granted.alias("granted"), event_ts.alias("event_ts")))
    if not choices:
        return _empty_choices()
    return F.filter(F.array(*choices), lambda choice: choice["granted"].isNotNull())


def gpp_choices(fields: Column | str, event_ts: Column | str, policy: Policy) -> Column:
    """The consent choices a decoded GPP string carries (see the module docstring).

    Args:
        fields: A :func:`gpp_fields` struct column.
        event_ts: The record's time; choices from US sections and from uspv1 take it.
        policy: Policy whose ``gpp``, ``us_privacy`` and ``tcf`` mappings apply.

    Returns:
        An array of ``struct<purpose, granted, event_ts>``; empty when the string
        is null or invalid or carries no mapped choice.
    """
    fields, ts = _col(fields), _col(event_ts)
    combined = F.concat(
        _us_choices(fields, ts, policy),
        us_privacy_choices(fields["uspv1"]["us_privacy"], ts, policy),
        tc_choices(fields["tcfeuv2"], policy),
    )
    return F.when(F.coalesce(fields["valid"], F.lit(False)), combined).otherwise(_empty_choices())
