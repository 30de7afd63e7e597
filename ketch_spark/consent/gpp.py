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

The decoding runs in stages (split, the header's fixed fields and entries,
section texts and cores, tcfeuv2, one per US section, verdict, result), each
reading earlier ones' outputs by name. Every base64url part is decoded to bytes
once (:mod:`ketch_spark.consent.gpp_bits`), read as 60-bit integers, and each
field is a shift and a mask of one of them; the header's Fibonacci-coded ids
are read from one 64-bit integer, two small projections per entry (headers too
long for it take a general path through a lambda). :func:`with_gpp_fields`
makes each stage a projection of its own, so Spark computes every
intermediate once in generated code: use it on large data. :func:`gpp_fields`
is the same stages in one column expression, each bound to a lambda variable
(Spark evaluates lambda bodies without code generation, so it is slower, and
its plan takes longer to build). Layouts are in
:mod:`ketch_spark.consent.gpp_layouts`, the section stages in
:mod:`ketch_spark.consent.gpp_sections`.

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

from typing import Callable, Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ketch_spark.consent import gpp_bits as bits
from ketch_spark.consent.gpp_layouts import US_SECTIONS, UsSection
from ketch_spark.consent.gpp_sections import (
    Env,
    Stage,
    any_of,
    cores_stage,
    first_problem,
    tcf_stage,
    tcf_value,
    texts_stage,
    us_stage,
    usp_value,
    words_stage,
)
from ketch_spark.consent.tcf import CHOICE_TYPE, tc_choices, us_privacy_choices, us_privacy_valid
from ketch_spark.policy import Policy

__all__ = [
    "GPP_REASONS",
    "US_SECTIONS",
    "UsSection",
    "gpp_fields",
    "with_gpp_fields",
    "DECODE_SETTINGS",
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

_TCF_ID, _USP_ID = 2, 6
_TCF_WHERE, _USP_WHERE = "section 2 (tcfeuv2)", "section 6 (uspv1)"
_CHARSET = r"^[A-Za-z0-9_~.-]+\z"  # \z: "$" would also match before a final line terminator
_WHITESPACE = " \t\r\n"
_HEADER_TYPE, _HEADER_VERSION = 3, 1
_HEADER_FIXED_CHARS = 4  # Type (6 bits), Version (6) and the entry count (12)

def _col(col: Column | str) -> Column:
    return F.col(col) if isinstance(col, str) else col


def _all(conditions: list[Column]) -> Column:
    result = conditions[0]
    for condition in conditions[1:]:
        result = result & condition
    return result


def _fails(ok: Column) -> Column:
    """True unless ``ok`` is true (null counts as a failure)."""
    return ~F.coalesce(ok, F.lit(False))


# --- stages: the header -----------------------------------------------------------


def _split_stage(env: Env) -> dict[str, Column]:
    """The trimmed string, its header (as hex too), how many sections follow; long headers' ids (general path).

    The general path reads bits through a lambda, which Spark does not generate
    code for: in this first projection it only keeps the input's columns from
    being generated with the stages after it, not those stages' columns.
    """
    value = F.trim(env["raw"], F.lit(_WHITESPACE))
    chars_ok = value.rlike(_CHARSET)
    header_text = F.substring_index(value, "~", 1)
    n_sections = F.length(value) - F.length(F.replace(value, F.lit("~"), F.lit("")))
    # a header of other characters is rejected (bad_base64url) before its bits matter
    header_hex = bits.base64url_hex(F.when(chars_ok, header_text), 16)
    fixed = F.coalesce(F.conv(F.substring(header_hex, 1, 6), 16, 10).cast("int"), F.lit(0))
    count = fixed.bitwiseAND(F.lit(4095))
    fast = (F.length(header_text) <= bits.FAST_HEADER_CHARS) & (count <= bits.FAST_ENTRIES)
    return {
        "value": value,
        "chars_ok": chars_ok,
        "header_text": header_text,
        "n_sections": n_sections,
        "header_hex": header_hex,
        "fixed": fixed,
        "fast": fast,
        "general": F.when(~fast, bits.general_header(header_text, count, n_sections)),
    }


def _fixed_stage(env: Env) -> dict[str, Column]:
    """The header's Type, Version and entry count, and the lookup tables of the stages after."""
    fixed = env["fixed"]
    return {
        "type": F.shiftright(fixed, 18).bitwiseAND(F.lit(63)),
        "version": F.shiftright(fixed, 12).bitwiseAND(F.lit(63)),
        "count": fixed.bitwiseAND(F.lit(4095)),
        "fib": bits.fibonacci_table(),
        "rev": bits.reverse_table(),
    }


def _bits_stage(env: Env) -> dict[str, Column]:
    """The header's entries' bits, reversed."""
    return {"rem0": bits.reversed_entry_bits(env["header_hex"], env["rev"])}


def _entry_stages(j: int) -> tuple[tuple[str, Stage], tuple[str, Stage]]:
    """The two stages reading entry ``j`` (1-based) of a header: its flag and first codeword, then its second."""

    def first(env: Env) -> dict[str, Column]:
        remaining = env[f"rem{j - 1}"]
        end, value_bits, rest = bits.codeword(F.shiftrightunsigned(remaining, 1))
        return {f"flag{j}": remaining.bitwiseAND(F.lit(1)), f"end{j}a": end, f"val{j}a": value_bits, f"after{j}": rest}

    def second(env: Env) -> dict[str, Column]:
        after = env[f"after{j}"]
        end, value_bits, rest = bits.codeword(after)
        return {f"end{j}b": end, f"val{j}b": value_bits, f"rem{j}": F.when(env[f"flag{j}"] == 1, rest).otherwise(after)}

    return (f"entry{j}a", first), (f"entry{j}b", second)


def _values_stage(env: Env) -> dict[str, Column]:
    """Per entry its gap, run and whether its codewords are well formed."""
    limit = bits.MAX_CODEWORD_BITS - 2
    out = {}
    for j in range(1, bits.FAST_ENTRIES + 1):
        flagged = env[f"flag{j}"] == 1
        out[f"gap{j}"] = bits.fibonacci_value(env["fib"], env[f"val{j}a"])
        out[f"run{j}"] = F.when(flagged, bits.fibonacci_value(env["fib"], env[f"val{j}b"])).otherwise(F.lit(0).cast("bigint"))
        out[f"good{j}"] = (env[f"end{j}a"] <= limit) & (~flagged | (env[f"end{j}b"] <= limit))
    return out


def _header_stage(env: Env) -> dict[str, Column]:
    """The header's section ids (null when malformed or more than the sections present) and how many it lists."""
    count, n_sections, general = env["count"], env["n_sections"], env["general"]
    end, listed, ok, ranges = F.lit(0).cast("bigint"), F.lit(0).cast("bigint"), F.lit(True), []
    for j in range(1, bits.FAST_ENTRIES + 1):
        used = F.lit(j) <= count
        first, last = end + env[f"gap{j}"], end + env[f"gap{j}"] + env[f"run{j}"]
        listed = listed + F.when(used, env[f"run{j}"] + 1).otherwise(0)
        ok = ok & (~used | env[f"good{j}"])
        ranges.append(F.when(used, F.sequence(first.cast("int"), last.cast("int"))).otherwise(F.array().cast("array<int>")))
        end = last
    fast = env["fast"]
    ok = F.when(fast, ok).otherwise(F.coalesce(general["ok"], F.lit(False)))
    listed = F.when(fast, listed).otherwise(general["listed"])
    ids = F.when(fast, F.concat(*ranges)).otherwise(general["ids"])
    return {"ids": F.when(ok & (listed <= n_sections), ids), "listed": listed, "ok": ok}


def _verdict_stage(env: Env) -> dict[str, Column]:
    """``reason`` and ``detail`` of the first check that fails, in order; nulls for a valid (or null) string."""
    value, header_text, n_sections, usp = env["value"], env["header_text"], env["n_sections"], env["usp_text"]
    listed, header_type, header_version = env["listed"], env["type"], env["version"]
    empty_section = (F.instr(value, "~~") > 0) | ((n_sections > 0) & value.endswith("~"))
    problems = [
        (value == "", "empty", F.lit("the string is empty")),
        (~env["chars_ok"], "bad_base64url", F.lit("the string holds characters outside base64url, '~' and '.'")),
        (F.length(header_text) < _HEADER_FIXED_CHARS, "bad_header", F.lit("the header is shorter than 4 characters (24 bits)")),
        (F.instr(header_text, ".") > 0, "bad_header", F.lit("the header holds a '.'")),
        (header_type != _HEADER_TYPE, "bad_header", F.format_string(f"header type %d, expected {_HEADER_TYPE}", header_type)),
        (header_version != _HEADER_VERSION, "bad_header", F.format_string(f"header version %d, expected {_HEADER_VERSION}", header_version)),
        (~env["ok"], "bad_header", F.lit("the header's section ids are truncated or malformed")),
        (empty_section, "empty_section", F.lit("a section after '~' is empty")),
        (listed != n_sections, "section_count_mismatch", F.format_string("the header lists %d sections, the string holds %d", listed, n_sections)),
        (env["ids"].isNull(), "bad_header", F.lit("the header's section ids cannot be decoded")),
        (~F.coalesce(env["tcf_valid"], F.lit(True)), "bad_tcf_section", F.lit(f"{_TCF_WHERE}: not a TC string v2 (bad base64url, under 213 bits, wrong version or no LastUpdated)")),
        (usp.isNotNull() & _fails((F.length(usp) == 4) & us_privacy_valid(usp)), "bad_uspv1_section", F.format_string(f"{_USP_WHERE}: '%s' is not a US Privacy string (1 then three of Y, N, -)", usp)),
    ]
    reason, detail = first_problem(problems)
    for section in US_SECTIONS.values():
        failed = env[f"{section.name}_reason"].isNotNull()
        reason, detail = reason.when(failed, env[f"{section.name}_reason"]), detail.when(failed, env[f"{section.name}_detail"])
    present = env["raw"].isNotNull()
    return {"reason": F.when(present, reason), "detail": F.when(present, detail)}


def _result(env: Env) -> Column:
    reason = env["reason"]
    valid = F.when(env["raw"].isNotNull(), reason.isNull())

    def when_valid(column: Column) -> Column:
        return F.when(valid, column)

    return F.struct(
        valid.alias("valid"),
        reason.alias("reason"),
        env["detail"].alias("detail"),
        when_valid(env["ids"]).alias("section_ids"),
        when_valid(F.struct(env["type"].alias("type"), env["version"].alias("version"))).alias("header"),
        when_valid(tcf_value(env)).alias("tcfeuv2"),
        when_valid(usp_value(env["usp_text"])).alias("uspv1"),
        *(when_valid(env[f"{section.name}_value"]).alias(section.name) for section in US_SECTIONS.values()),
    )


#: (name, stage) in order. Each stage is one projection: what a later stage reads more than once is
#: computed once, and every projection's generated code stays small.
_STAGES: tuple[tuple[str, Stage], ...] = (
    ("split", _split_stage),
    ("fixed", _fixed_stage),
    ("bits", _bits_stage),
    *(stage for j in range(1, bits.FAST_ENTRIES + 1) for stage in _entry_stages(j)),
    ("values", _values_stage),
    ("header", _header_stage),
    ("texts", texts_stage),
    ("cores", cores_stage),
    ("words", words_stage),
    ("tcfeuv2", tcf_stage),
    *((section.name, us_stage(section)) for section in US_SECTIONS.values()),
    ("verdict", _verdict_stage),
)


#: Stages after which gpp_fields binds the outputs so far to a lambda variable; the stages in between
#: read their predecessors' expressions inline (few lambdas keep the plan quick to analyse).
_BOUND = frozenset({"split", "bits", *(f"entry{j}b" for j in range(1, bits.FAST_ENTRIES + 1)), "header", "texts", "words"})


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
        outputs: dict[str, Column] = {}
        while index < len(_STAGES):
            name, stage = _STAGES[index]
            built = stage({**env, **outputs})
            outputs.update(built)
            index += 1
            if name in _BOUND:
                packed = F.struct(*(column.alias(key) for key, column in outputs.items()))
                return _let(packed, lambda value: bind(index, {**env, **{key: value[key] for key in outputs}}))
        return _result({**env, **outputs})

    return bind(0, {"raw": _col(gpp_string)})


class _Reads(dict):
    """Stage outputs by name that remember, per name, the last stage that read it."""

    def __init__(self, initial: Mapping[str, Column]) -> None:
        super().__init__(initial)
        self.stage = 0
        self.last_read: dict[str, int] = {}

    def __getitem__(self, key: str) -> Column:
        self.last_read[key] = self.stage
        return super().__getitem__(key)


def _staged(df: DataFrame, gpp_col: str, out_col: str) -> list[tuple[str, DataFrame]]:
    """``df`` after each stage (name, frame), then after the result (``out_col``, the frame with_gpp_fields returns).

    A stage's outputs are columns ``__<out_col>_<name>``; each projection keeps
    ``df``'s columns and only the staged ones a later stage reads, so every
    projection stays narrow enough for Spark to generate it as a method of its own.
    """
    env = _Reads({"raw": F.col(gpp_col)})
    built = []
    for index, (_, stage) in enumerate(_STAGES):
        env.stage = index
        outputs = stage(env)
        built.append(outputs)
        env.update({key: F.col(f"__{out_col}_{key}") for key in outputs})
    env.stage = len(_STAGES)
    result = _result(env)
    frames, live = [], []
    for index, ((name, _), outputs) in enumerate(zip(_STAGES, built)):
        live = [key for key in live if env.last_read.get(key, -1) > index]
        new = [key for key in outputs if env.last_read.get(key, -1) > index]
        df = df.select(*_kept(df, out_col, live), *(outputs[key].alias(f"__{out_col}_{key}") for key in new))
        live += new
        frames.append((name, df))
    columns = [c for c in df.columns if not c.startswith(f"__{out_col}_")]
    frames.append((out_col, df.select(*columns, result.alias(out_col))))
    return frames


def _kept(df: DataFrame, out_col: str, live: list[str]) -> list[str]:
    """``df``'s own columns and the staged columns still read."""
    keep = {f"__{out_col}_{key}" for key in live}
    return [c for c in df.columns if not c.startswith(f"__{out_col}_") or c in keep]


#: Session settings for an action that decodes many GPP strings (see :func:`with_gpp_fields`).
DECODE_SETTINGS = {"spark.sql.codegen.wholeStage": "false"}


def with_gpp_fields(df: DataFrame, gpp_col: str = "gpp_string", out_col: str = "gpp") -> DataFrame:
    """Adds ``out_col``, the :func:`gpp_fields` struct of ``gpp_col``, one projection per stage.

    Each stage's outputs are columns of their own (dropped at the end), so Spark
    computes every intermediate once, in generated code. On large data, run the
    action with :data:`DECODE_SETTINGS` (as ``ketch-spark consent ingest`` does):
    whole-stage code generation fuses the stages into one method too large for
    the JVM's JIT compiler, so it runs interpreted; without it each stage's
    projection is a method of its own, compiled (the ``gpp`` benchmark measures
    both).
    """
    return _staged(df, gpp_col, out_col)[-1][1]


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
        granted = F.when(any_of(denied), F.lit(False))
        if name in grants:
            granted = granted.when(any_of(grants[name]), F.lit(True))
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
