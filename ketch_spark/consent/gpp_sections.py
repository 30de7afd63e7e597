"""The sections of a GPP string: their texts, and the stages decoding tcfeuv2 and the US sections.

Each stage reads earlier stages' outputs by name (see :mod:`ketch_spark.consent.gpp`)
and returns its own. A section's core segment is decoded from base64url once
(:func:`~ketch_spark.consent.gpp_bits.base64url_hex`), read as 60-bit integers,
and every field is a shift and a mask of one of them.
"""

from __future__ import annotations

from typing import Callable, Mapping

from pyspark.sql import Column
from pyspark.sql import functions as F

from ketch_spark.consent import gpp_bits as bits
from ketch_spark.consent.gpp_layouts import US_SECTIONS, VERSION_BITS, Layout, UsSection, field_offsets, layout_bits
from ketch_spark.consent.tcf import TC_CORE_CHARS, TC_FIELDS, TC_WORDS, tc_core_values

__all__ = [
    "Env",
    "Stage",
    "any_of",
    "first_problem",
    "texts_stage",
    "cores_stage",
    "words_stage",
    "tcf_stage",
    "tcf_value",
    "us_stage",
    "usp_value",
]

#: Stage outputs by name: a stage reads the raw string (``raw``) and earlier stages' outputs.
Env = Mapping[str, Column]
Stage = Callable[[Env], dict[str, Column]]

_TCF_ID, _USP_ID = 2, 6


def any_of(conditions: list[Column]) -> Column:
    """``conditions`` joined with OR."""
    result = conditions[0]
    for condition in conditions[1:]:
        result = result | condition
    return result


def _n_words(section: UsSection) -> int:
    """Integers (of :data:`~ketch_spark.consent.gpp_bits.WORD_BITS` bits) covering a section's longest layout."""
    return -(-layout_bits(section.fields) // bits.WORD_BITS)


def _chars(section: UsSection) -> int:
    """Characters of a section's core read: a multiple of 4 whose bits fill its integers."""
    return -(-_n_words(section) * bits.WORD_BITS // 24) * 4




def texts_stage(env: Env) -> dict[str, Column]:
    """Each supported section's text, found through the header's ids (null when absent)."""
    value, ids, chars_ok = env["value"], env["ids"], env["chars_ok"]

    def text(section_id: int) -> Column:
        position = F.array_position(ids, section_id).cast("int")
        through = F.call_function("substring_index", value, F.lit("~"), position + 1)
        return F.when(chars_ok & (position > 0), F.substring_index(through, "~", -1))

    return {
        "tcf_text": text(_TCF_ID),
        "usp_text": text(_USP_ID),
        **{f"{section.name}_text": text(sid) for sid, section in US_SECTIONS.items()},
    }


def cores_stage(env: Env) -> dict[str, Column]:
    """Per US section: its core segment, as hex digits too, and the sub-section after it (null when none)."""
    tcf_core = F.substring_index(env["tcf_text"], ".", 1)
    out = {"tcf_core": tcf_core, "tcf_hex": bits.base64url_hex(tcf_core, TC_CORE_CHARS)}
    for section in US_SECTIONS.values():
        text = env[f"{section.name}_text"]
        # substring_index, not split_part: Spark's split_part compiles a regex per call.
        core = F.substring_index(text, ".", 1)
        out[f"{section.name}_core"] = core
        out[f"{section.name}_hex"] = bits.base64url_hex(core, _chars(section))
        out[f"{section.name}_sub"] = F.when(F.instr(text, ".") > 0, F.substring_index(F.substring_index(text, ".", 2), ".", -1))
    return out


def words_stage(env: Env) -> dict[str, Column]:
    """Per US section: its core's bits as integers, and the first character of its sub-section."""
    out = {f"tcf_w{w}": bits.hex_word(env["tcf_hex"], w) for w in range(TC_WORDS)}
    for section in US_SECTIONS.values():
        for w in range(_n_words(section)):
            out[f"{section.name}_w{w}"] = bits.hex_word(env[f"{section.name}_hex"], w)
        if section.gpc:
            out[f"{section.name}_sub6"] = bits.first_sextet(env[f"{section.name}_sub"])
    return out


def tcf_stage(env: Env) -> dict[str, Column]:
    """The tcfeuv2 section's core segment read as a TC string: its fields and whether it is one (null when absent).

    As :func:`~ketch_spark.consent.tcf.tc_fields` reads it (:func:`~ketch_spark.consent.tcf.tc_core_values`).
    """
    core = env["tcf_core"]
    valid, values = tc_core_values(core, [env[f"tcf_w{w}"] for w in range(TC_WORDS)])
    out = {"tcf_valid": F.when(core.isNotNull(), F.coalesce(valid, F.lit(False)))}
    for name in TC_FIELDS:
        out[f"tcf_{name}"] = values[name]
    return out


def tcf_value(env: Env) -> Column:
    """The :func:`~ketch_spark.consent.tcf.tc_fields` struct of the tcfeuv2 section (null when absent)."""
    valid = env["tcf_valid"]

    def when_valid(value: Column) -> Column:
        return F.when(valid, value)

    def ts(name: str) -> Column:
        return when_valid(F.timestamp_millis(env[f"tcf_{name}"] * 100)).alias(name)

    ints = ("cmp_id", "vendor_list_version", "tcf_policy_version", "purposes_consent", "purposes_li_transparency")
    return F.when(
        valid.isNotNull(),
        F.struct(
            valid.alias("valid"),
            when_valid(env["tcf_version"]).alias("version"),
            ts("created"),
            ts("last_updated"),
            *(when_valid(env[f"tcf_{name}"].cast("int")).alias(name) for name in ints),
        ),
    )


def _holds_three(words: list[Column], layout: Layout) -> Column:
    """Whether a 2-bit field of the layout holds 3 (both its bits set)."""
    masks = [0] * len(words)
    for offsets in field_offsets(layout).values():
        for offset in offsets:
            index = offset // bits.WORD_BITS
            masks[index] |= 1 << (bits.WORD_BITS * (index + 1) - offset - 2)
    checks = [
        word.bitwiseAND(F.shiftright(word, 1)).bitwiseAND(F.lit(mask)) != 0 for word, mask in zip(words, masks) if mask
    ]
    return any_of(checks)


def _pick(options: list) -> Column:
    """The value of the last option whose condition holds, else the first's."""
    result = options[0][1]
    for condition, value in options[1:]:
        result = F.when(condition, value).otherwise(result)
    return result


def first_problem(problems: list[tuple[Column, str, Column]]) -> tuple[Column, Column]:
    """``reason`` and ``detail`` of the first problem whose condition holds (nulls when none does)."""
    (condition, name, text), rest = problems[0], problems[1:]
    reason, detail = F.when(condition, F.lit(name)), F.when(condition, text)
    for condition, name, text in rest:
        reason, detail = reason.when(condition, F.lit(name)), detail.when(condition, text)
    return reason, detail


def us_stage(section: UsSection) -> Stage:
    """The stage decoding one US section: its ``reason`` and ``detail`` when it cannot be, else its ``value``."""
    name, where = section.name, section.where

    def stage(env: Env) -> dict[str, Column]:
        text, core = env[f"{name}_text"], env[f"{name}_core"]
        words = [env[f"{name}_w{w}"] for w in range(_n_words(section))]
        n_bits, version = F.length(core) * 6, bits.field(words, 0, VERSION_BITS)
        holds = [(n_bits >= layout_bits(layout), layout) for layout in section.layouts]
        shortest = layout_bits(section.layouts[0])
        supported = ", ".join(map(str, section.versions))
        problems = [
            (n_bits < shortest, "too_short", F.format_string(f"{where}: core segment of %d bits, under the {shortest} of its layout", n_bits)),
            (~version.isin(*section.versions), "unsupported_version", F.format_string(f"{where}: version %d is not decoded (only {supported})", version)),
            (_pick([(held, _holds_three(words, layout)) for held, layout in holds]), "bad_field_value", F.lit(f"{where}: a 2-bit field holds 3 (only 0, 1 and 2 are defined)")),
        ]
        columns = [version.alias("version")]
        per_layout = [(held, field_offsets(layout)) for held, layout in holds]
        for field_name, n in section.fields:
            options = []
            for held, offsets in per_layout:
                entries = [bits.field(words, offset, 2) for offset in offsets[field_name]]
                options.append((held, entries[0] if n == 0 else F.array(*entries)))
            columns.append(_pick(options).alias(field_name))
        if section.gpc:
            subsection, sextet = env[f"{name}_sub"], env[f"{name}_sub6"]
            bad = subsection.isNotNull() & ((subsection == "") | (F.shiftright(sextet, 4) != 1))
            problems.append((bad, "bad_subsection", F.lit(f"{where}: the sub-section after '.' is not a GPC sub-section")))
            columns.append(F.when(subsection.isNotNull(), F.shiftright(sextet, 3).bitwiseAND(F.lit(1)) == 1).alias("gpc"))
        reason, detail = first_problem(problems)
        present = text.isNotNull()
        return {
            f"{name}_reason": F.when(present, reason),
            f"{name}_detail": F.when(present, detail),
            f"{name}_value": F.when(present & reason.isNull(), F.struct(*columns)),
        }

    return stage


def usp_value(text: Column) -> Column:
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


