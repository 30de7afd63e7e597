"""IAB TC strings (TCF v2.x) and US Privacy strings, decoded with native Spark expressions.

A TC string's core segment (the part before the first ``.``) is base64url
without padding. It is decoded here with column expressions only, no Python
UDF: its first :data:`TC_CORE_CHARS` characters (every field read ends before
them) -> bytes (``unbase64``) -> hex -> :data:`TC_WORDS` 60-bit integers
(``conv``), and each field at its fixed bit offset (see :data:`TC_FIELDS`) is a
shift and a mask of them (:func:`tc_core_values`). :func:`tc_core_binary` and
:func:`tc_field` read the whole core and one field from its hex digits instead.

How a decoded string becomes consent choices (one per of our purposes that the
policy's ``tcf.purposes`` mapping feeds; retired purposes are skipped):

* a purpose with ``legal_basis: consent`` is granted iff the PurposesConsent bit
  of every TCF purpose that feeds it is set (several TCF purposes feeding one of
  ours: granted only if all are set);
* a purpose with ``legal_basis: legitimate_interest`` is granted iff, for every
  feeding TCF purpose, its consent bit or its PurposesLITransparency bit is set
  (a cleared LI bit is the user's objection);
* the choice time is the string's LastUpdated (deciseconds since the epoch): the
  time the CMP recorded the choice. Strings of the same day may carry the same
  LastUpdated (TCF 2.2 rounds it to the day); on such a tie a denial wins.

A US Privacy string ``1YNN`` (version, notice, opt-out of sale, LSPA; ``-`` means
not applicable) feeds the policy's ``us_privacy.opt_out`` purposes: an opt-out
(``Y``) denies each of them; ``N`` grants only those with legal basis
``legitimate_interest`` (not opting out is no consent); ``-`` gives no choice.
The string carries no time, so its choices take the record's ``ts``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ketch_spark.consent import gpp_bits as bits
from ketch_spark.policy import Policy

__all__ = [
    "TC_FIELDS",
    "TC_CORE_BITS",
    "TC_WORDS",
    "TC_CORE_CHARS",
    "CHOICE_TYPE",
    "tc_core_binary",
    "tc_field",
    "tc_core_values",
    "tc_fields",
    "with_tc_fields",
    "tc_choices",
    "us_privacy_valid",
    "us_privacy_choices",
]

#: (bit offset, bit length) of the core-segment fields read here.
TC_FIELDS: Mapping[str, tuple[int, int]] = {
    "version": (0, 6),
    "created": (6, 36),
    "last_updated": (42, 36),
    "cmp_id": (78, 12),
    "vendor_list_version": (120, 12),
    "tcf_policy_version": (132, 6),
    "purposes_consent": (152, 24),
    "purposes_li_transparency": (176, 24),
}
#: The core segment holds at least this many bits (through PublisherCC).
TC_CORE_BITS = 213
#: 60-bit integers of the core segment that hold the fields read (they end at bit 200).
TC_WORDS = 4
#: Characters of the core segment those integers are read from (the rest is not decoded).
TC_CORE_CHARS = TC_WORDS * bits.WORD_BITS // 6
_TCF_PURPOSES = 24
_SUPPORTED_VERSION = 2
#: Element type of the choice arrays built here.
CHOICE_TYPE = "array<struct<purpose:string,granted:boolean,event_ts:timestamp>>"
_US_PRIVACY_PATTERN = r"^1[YN-][YN-][YN-]\z"
#: Java regular expressions: ``\z`` is the end of the text (``$`` would also match before a final line terminator).
_BASE64URL = r"^[A-Za-z0-9_-]+\z"


def _col(col: Column | str) -> Column:
    return F.col(col) if isinstance(col, str) else col


def _core_segment(tc_string: Column) -> Column:
    """The text before the first ``.`` of a (space-trimmed) TC string."""
    return F.substring_index(F.trim(tc_string), ".", 1)  # not split_part: it compiles a regex per call


def tc_core_binary(tc_string: Column | str) -> Column:
    """The core segment of a TC string as binary; null when it is not valid base64url.

    Args:
        tc_string: A string column holding TC strings.
    """
    core = _core_segment(_col(tc_string))
    well_formed = core.rlike(_BASE64URL) & (F.length(core) % 4 != 1)
    standard = F.translate(core, "-_", "+/")
    padded = F.concat(standard, F.repeat(F.lit("="), (F.lit(4) - F.length(standard) % 4) % 4))
    return F.when(well_formed, F.try_to_binary(padded, F.lit("base64")))


def tc_field(core_hex: Column, offset: int, length: int) -> Column:
    """Unsigned integer at ``offset`` (``length`` <= 56 bits) of a hex-encoded bit string."""
    first_nibble = offset // 4
    last_nibble = -(-(offset + length) // 4)
    digits = F.substring(core_hex, first_nibble + 1, last_nibble - first_nibble)
    value = F.conv(digits, 16, 10).cast("bigint")
    shift = last_nibble * 4 - (offset + length)
    return F.shiftright(value, shift).bitwiseAND(F.lit((1 << length) - 1).cast("bigint"))


def _deciseconds_to_ts(value: Column) -> Column:
    return F.timestamp_millis(value * 100)


def tc_core_values(core: Column, words: Sequence[Column]) -> tuple[Column, dict[str, Column]]:
    """Whether a TC string's core segment is one, and its :data:`TC_FIELDS` values.

    Args:
        core: The core segment's text (before the first ``.``).
        words: The :data:`TC_WORDS` 60-bit integers of its first
            :data:`TC_CORE_CHARS` characters (:func:`ketch_spark.consent.gpp_bits.hex_word`
            of :func:`ketch_spark.consent.gpp_bits.base64url_hex`).

    Returns:
        ``valid`` (base64url of a length other than 4k + 1, at least
        :data:`TC_CORE_BITS` bits of whole bytes, i.e. 36 characters, version 2
        and a positive LastUpdated; null for a null core) and each field as an
        integer (null where ``valid`` is null).
    """
    values = {name: bits.field(list(words), offset, length) for name, (offset, length) in TC_FIELDS.items()}
    length = F.length(core)
    valid = (
        core.rlike(_BASE64URL)
        & (length % 4 != 1)
        & (F.floor(length * 6 / 8) * 8 >= TC_CORE_BITS)
        & (values["version"] == _SUPPORTED_VERSION)
        & (values["last_updated"] > 0)
    )
    return valid, values


def tc_fields(tc_string: Column | str) -> Column:
    """Decodes TC strings into a struct of core-segment fields.

    The struct holds ``valid`` (base64url, at least :data:`TC_CORE_BITS` bits,
    version 2, a positive LastUpdated), ``version``, ``created`` and
    ``last_updated`` (timestamps), ``cmp_id``, ``vendor_list_version``,
    ``tcf_policy_version``, ``purposes_consent`` and ``purposes_li_transparency``
    (24-bit integers; TCF purpose ``i`` is bit ``24 - i``). A null input gives
    ``valid`` null; an invalid one gives ``valid`` false and null fields.

    Only the first :data:`TC_CORE_CHARS` characters of the core segment are
    decoded (to bytes once, read as :data:`TC_WORDS` 60-bit integers; each field
    is a shift and a mask of them): the vendor sections after them are not read.
    """
    raw = _col(tc_string)
    core = _core_segment(raw)
    hex_text = bits.base64url_hex(core, TC_CORE_CHARS)
    valid, values = tc_core_values(core, [bits.hex_word(hex_text, w) for w in range(TC_WORDS)])
    valid = F.when(raw.isNull(), F.lit(None).cast("boolean")).otherwise(F.coalesce(valid, F.lit(False)))

    def when_valid(value: Column) -> Column:
        return F.when(valid, value)

    return F.struct(
        valid.alias("valid"),
        when_valid(values["version"].cast("int")).alias("version"),
        when_valid(_deciseconds_to_ts(values["created"])).alias("created"),
        when_valid(_deciseconds_to_ts(values["last_updated"])).alias("last_updated"),
        when_valid(values["cmp_id"].cast("int")).alias("cmp_id"),
        when_valid(values["vendor_list_version"].cast("int")).alias("vendor_list_version"),
        when_valid(values["tcf_policy_version"].cast("int")).alias("tcf_policy_version"),
        when_valid(values["purposes_consent"].cast("int")).alias("purposes_consent"),
        when_valid(values["purposes_li_transparency"].cast("int")).alias("purposes_li_transparency"),
    )


def with_tc_fields(df: DataFrame, tc_col: str = "tc_string", out_col: str = "tc") -> DataFrame:
    """Adds ``out_col``: the :func:`tc_fields` struct of column ``tc_col``."""
    return df.withColumn(out_col, tc_fields(tc_col))


def _tcf_bit(bits24: Column, tcf_purpose: int) -> Column:
    return F.shiftright(bits24, _TCF_PURPOSES - tcf_purpose).bitwiseAND(1) == 1


def _feeders(policy: Policy) -> dict[str, list[int]]:
    """Our active purposes -> the TCF purposes that feed them."""
    feeders: dict[str, list[int]] = {}
    for tcf_id, names in sorted(policy.tcf_purposes.items()):
        for name in names:
            if not policy.purpose(name).retired:
                feeders.setdefault(name, []).append(tcf_id)
    return feeders


def _all(conditions: list[Column]) -> Column:
    result = conditions[0]
    for condition in conditions[1:]:
        result = result & condition
    return result


def _empty_choices() -> Column:
    return F.array().cast(CHOICE_TYPE)


def tc_choices(fields: Column | str, policy: Policy) -> Column:
    """The consent choices a decoded TC string carries (see the module docstring).

    Args:
        fields: A :func:`tc_fields` struct column.
        policy: Policy whose ``tcf.purposes`` mapping applies.

    Returns:
        An array of ``struct<purpose, granted, event_ts>``; empty when the string
        is null or invalid or the policy maps no TCF purpose.
    """
    fields = _col(fields)
    consent, li = fields["purposes_consent"], fields["purposes_li_transparency"]
    choices = []
    for name, tcf_ids in _feeders(policy).items():
        if policy.purpose(name).default_allowed:
            granted = _all([_tcf_bit(consent, i) | _tcf_bit(li, i) for i in tcf_ids])
        else:
            granted = _all([_tcf_bit(consent, i) for i in tcf_ids])
        choices.append(F.struct(F.lit(name).alias("purpose"), granted.alias("granted"), fields["last_updated"].alias("event_ts")))
    if not choices:
        return _empty_choices()
    return F.when(F.coalesce(fields["valid"], F.lit(False)), F.array(*choices)).otherwise(_empty_choices())


def us_privacy_valid(us_privacy: Column | str) -> Column:
    """Whether a US Privacy string is well formed (``1`` then three of ``Y``, ``N``, ``-``); null for null."""
    return F.upper(F.trim(_col(us_privacy))).rlike(_US_PRIVACY_PATTERN)


def us_privacy_choices(us_privacy: Column | str, event_ts: Column | str, policy: Policy) -> Column:
    """The choices a US Privacy string carries, stamped with ``event_ts`` (see the module docstring).

    Returns:
        An array of ``struct<purpose, granted, event_ts>``; empty for a null,
        invalid or not-applicable string.
    """
    value = F.upper(F.trim(_col(us_privacy)))
    opt_out = F.substring(value, 3, 1)
    ts = _col(event_ts)
    choices = []
    for name in policy.us_privacy_opt_out:
        purpose = policy.purpose(name)
        if purpose.retired:
            continue
        granted = F.when(opt_out == "Y", F.lit(False))
        if purpose.default_allowed:
            granted = granted.when(opt_out == "N", F.lit(True))
        choices.append(F.struct(F.lit(name).alias("purpose"), granted.alias("granted"), ts.alias("event_ts")))
    if not choices:
        return _empty_choices()
    usable = F.coalesce(us_privacy_valid(value), F.lit(False))
    return F.when(usable, F.filter(F.array(*choices), lambda c: c["granted"].isNotNull())).otherwise(_empty_choices())
