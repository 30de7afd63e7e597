"""TC strings decoded by native Spark expressions agree with the iab-tcf reference decoder."""

from __future__ import annotations

import datetime as dt
import random

from iab_tcf import decode_v2
from pyspark.sql import functions as F

from ketch_spark.consent.tcf import (
    TC_CORE_BITS,
    TC_FIELDS,
    tc_choices,
    tc_core_binary,
    tc_field,
    tc_fields,
    us_privacy_choices,
    us_privacy_valid,
)
from tcf_encode import encode_tc

#: Examples from the IAB TCF v2 specification and its reference SDKs' documentation.
IAB_EXAMPLES = [
    "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA",
    "COw4XqLOw4XqLAAAAAENAXCAAP-gAAAfwIAAACngAI8AEFABgACAA4A",
]
INVALID = ["", "not*base64!", "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA", "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAA", "A"]


def _flags_to_int(flags: dict[int, bool]) -> int:
    return sum(1 << (24 - purpose) for purpose, on in flags.items() if on and purpose <= 24)


def _reference(tc: str) -> dict:
    consent = decode_v2(tc)
    return {
        "version": consent.version,
        "created": consent.created,
        "last_updated": consent.last_updated,
        "cmp_id": consent.cmp_id,
        "vendor_list_version": consent.vendor_list_version,
        "tcf_policy_version": consent.tcf_policy_version,
        "purposes_consent": _flags_to_int(consent.purposes_consent),
        "purposes_li_transparency": _flags_to_int(consent.purposes_legitimate_interests),
    }


def _generated(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    strings = []
    for _ in range(n):
        created = dt.datetime(2019, 1, 1) + dt.timedelta(seconds=rng.randrange(0, 8 * 365 * 86400), milliseconds=100 * rng.randrange(10))
        strings.append(
            encode_tc(
                created=created,
                last_updated=created + dt.timedelta(seconds=rng.randrange(0, 10**7)),
                purposes_consent={p for p in range(1, 25) if rng.random() < 0.5},
                purposes_li={p for p in range(1, 25) if rng.random() < 0.3},
                cmp_id=rng.randrange(4096),
                vendor_list_version=rng.randrange(4096),
                extra_segment=rng.random() < 0.3,
            )
        )
    return strings


def test_native_decoding_matches_reference_and_spec_examples(spark, policy):
    valid = IAB_EXAMPLES + _generated(60)
    df = spark.createDataFrame([(s,) for s in valid + INVALID] + [(None,)], "tc_string string")
    decoded = {
        r["tc_string"]: r["tc"].asDict()
        for r in df.select("tc_string", tc_fields("tc_string").alias("tc")).collect()
    }
    for tc in valid:
        got, expected = decoded[tc], _reference(tc)
        assert got["valid"] is True, tc
        for key in ("version", "cmp_id", "vendor_list_version", "tcf_policy_version", "purposes_consent", "purposes_li_transparency"):
            assert got[key] == expected[key], (tc, key)
        for key in ("created", "last_updated"):  # the reference truncates deciseconds to seconds
            assert got[key].replace(microsecond=0) == expected[key], (tc, key)
    for tc in INVALID:
        assert decoded[tc]["valid"] is False and decoded[tc]["purposes_consent"] is None, tc
    assert decoded[None]["valid"] is None

    # the specification's example carries equal Created and LastUpdated
    spec = decoded[IAB_EXAMPLES[0]]
    assert spec["version"] == 2 and spec["created"] == spec["last_updated"]
    assert spec["created"].replace(microsecond=0) == decode_v2(IAB_EXAMPLES[0]).created


def test_choices_from_tc_and_us_privacy(spark, policy):
    ts = dt.datetime(2026, 5, 4, 3, 2, 1)
    tc = encode_tc(created=ts, last_updated=ts, purposes_consent={1, 2, 3, 4, 5, 8}, purposes_li={7, 10})
    usp_ts = dt.datetime(2026, 5, 5)
    rows = [(tc, "1YYN"), (None, "1NNN"), (None, "1---"), ("not*valid", "1nyy"), (None, "2YNN"), (None, None),
            (tc + "\n", "1YNN\n"), (None, "1YNN\u2028")]
    df = spark.createDataFrame(rows, "tc_string string, us_privacy string").select(
        "tc_string", "us_privacy",
        tc_choices(tc_fields("tc_string"), policy).alias("tc_choices"),
        us_privacy_valid("us_privacy").alias("usp_valid"),
        us_privacy_choices("us_privacy", F.lit(usp_ts), policy).alias("usp_choices"),
    )
    got = [
        (
            {c["purpose"]: (c["granted"], c["event_ts"]) for c in r["tc_choices"]},
            r["usp_valid"],
            {c["purpose"]: c["granted"] for c in r["usp_choices"]},
        )
        for r in df.collect()
    ]
    assert got[0][0] == {
        "strictly_necessary": (True, ts),
        "advertising": (False, ts),  # TCF 7 feeds advertising without consent: all feeders must be set
        "personalization": (False, ts),  # TCF 6 not set
        "analytics": (False, ts),  # TCF 9 not set
        "product_improvement": (True, ts),  # legitimate interest: the LI transparency bit suffices
    }
    assert got[0][1:] == (True, {"data_sale": False, "advertising": False})
    assert got[1] == ({}, True, {"data_sale": True})  # not opting out grants only legitimate-interest purposes
    assert got[2] == ({}, True, {})  # "1---": not applicable
    assert got[3] == ({}, True, {"data_sale": False, "advertising": False})  # lower case accepted; bad TC: nothing
    assert got[4][1:] == (False, {})
    assert got[5][1] is None and got[5][2] == {}
    assert got[6] == ({}, False, {}) and got[7] == ({}, False, {})  # a trailing line terminator is not whitespace


def _whole_core_decode(tc_string: str) -> F.Column:
    """The core segment decoded whole (to binary, then each field from its own hex digits): the oracle for the
    first-40-characters read of :func:`tc_fields`."""
    raw = F.col(tc_string)
    binary = tc_core_binary(raw)
    core_hex = F.hex(binary)
    values = {name: tc_field(core_hex, offset, length) for name, (offset, length) in TC_FIELDS.items()}
    valid = (binary.isNotNull() & (F.octet_length(binary) * 8 >= TC_CORE_BITS)
             & (values["version"] == 2) & (values["last_updated"] > 0))
    valid = F.when(raw.isNull(), F.lit(None).cast("boolean")).otherwise(F.coalesce(valid, F.lit(False)))
    return F.struct(valid.alias("valid"), *(F.when(valid, values[name]).alias(name) for name in TC_FIELDS))


def _mutated(strings: list[str], n: int, seed: int = 5) -> list[str]:
    """Valid strings cut, padded, extended and spoilt one hostile character at a time."""
    rng = random.Random(seed)
    hostile = ["+", "/", "=", ".", " ", "\t", "\n", "é", "€", "😀", "\x00", "~", "*", "A", "_", "-", "'", "%"]
    out = []
    for _ in range(n):
        s = rng.choice(strings)
        kind = rng.randrange(6)
        if kind == 0:  # cut anywhere, including around 35, 36 and 37 characters
            s = s[: rng.choice([rng.randrange(len(s) + 1), 35, 36, 37, 39, 40, 41])]
        elif kind == 1:
            i = rng.randrange(len(s) + 1)
            s = s[:i] + rng.choice(hostile) + s[i:]
        elif kind == 2:
            i = rng.randrange(len(s))
            s = s[:i] + rng.choice(hostile) + s[i + 1:]
        elif kind == 3:  # a long vendor section in the core
            s = s.split(".")[0] + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
                                          for _ in range(rng.randrange(1, 400)))
        elif kind == 4:
            s = rng.choice([" ", "\t", "\n ", ""]) + s + rng.choice([" ", "\r\n", ".", "..", ""])
        out.append(s)
    return out


def test_reading_forty_characters_equals_decoding_the_whole_core(spark):
    strings = IAB_EXAMPLES + _generated(40, seed=3)
    corpus = sorted(set(_mutated(strings, 3000) + strings + INVALID))
    df = spark.createDataFrame([(s,) for s in corpus] + [(None,)], "tc_string string")
    got = df.select("tc_string", tc_fields("tc_string").alias("tc"), _whole_core_decode("tc_string").alias("whole"))
    same_ints = " AND ".join(f"tc.{name} <=> whole.{name}" for name in
                             ("valid", "version", "cmp_id", "vendor_list_version", "tcf_policy_version",
                              "purposes_consent", "purposes_li_transparency"))
    same_times = " AND ".join(f"tc.{name} <=> timestamp_millis(whole.{name} * 100)"
                              for name in ("created", "last_updated"))
    mismatches = got.where(f"NOT ({same_ints} AND {same_times})").collect()
    assert mismatches == [], mismatches[:5]
    verdicts = {r["valid"]: r["count"] for r in got.groupBy("tc.valid").count().collect()}
    assert verdicts[True] > 100 and verdicts[False] > 100 and verdicts[None] == 1, verdicts
