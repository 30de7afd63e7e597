"""GPP strings decoded by native Spark expressions agree with IAB Tech Lab's Java library (iabgpp-encoder).

The library (test-only jar group ``gpp-oracle``, on the test session's driver
classpath) encodes random consent choices; the native decoder must give back
every field the library was given, and the choices must follow the policy.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from ketch_spark.consent.gpp import GPP_REASONS, US_SECTIONS, gpp_choices, gpp_fields, with_gpp_fields
from ketch_spark.errors import PolicyError
from ketch_spark.policy import GPP_FIELDS, Policy, policy_from_mapping

TS = dt.datetime(2026, 11, 26, 10, 0, 0)
STRINGS_PER_EXAMPLE = 150
_EPOCH = dt.datetime(1970, 1, 1)

#: snake_case field -> the library's field name.
IAB_NAMES = {
    "sharing_notice": "SharingNotice",
    "sale_opt_out_notice": "SaleOptOutNotice",
    "sharing_opt_out_notice": "SharingOptOutNotice",
    "targeted_advertising_opt_out_notice": "TargetedAdvertisingOptOutNotice",
    "sensitive_data_processing_opt_out_notice": "SensitiveDataProcessingOptOutNotice",
    "sensitive_data_limit_use_notice": "SensitiveDataLimitUseNotice",
    "sale_opt_out": "SaleOptOut",
    "sharing_opt_out": "SharingOptOut",
    "targeted_advertising_opt_out": "TargetedAdvertisingOptOut",
    "sensitive_data_processing": "SensitiveDataProcessing",
    "known_child_sensitive_data_consents": "KnownChildSensitiveDataConsents",
    "personal_data_consents": "PersonalDataConsents",
    "mspa_covered_transaction": "MspaCoveredTransaction",
    "mspa_opt_out_option_mode": "MspaOptOutOptionMode",
    "mspa_service_provider_mode": "MspaServiceProviderMode",
}


@pytest.fixture(scope="module")
def full_policy(policy: Policy) -> Policy:
    """The repository's purposes with every GPP field mapped, to consent and legitimate-interest purposes."""
    purposes = {
        p.name: {"bit": p.bit, "legal_basis": p.legal_basis, "retired": p.retired} for p in policy.purposes.values()
    }
    gpp = {
        "sale_opt_out": ["data_sale"],
        "sharing_opt_out": ["advertising", "data_sale"],
        "targeted_advertising_opt_out": ["advertising", "product_improvement"],
        "sensitive_data_processing": ["personalization", "product_improvement"],
        "known_child_sensitive_data_consents": ["analytics"],
        "personal_data_consents": ["email_marketing", "legacy_profiling"],
        "gpc": ["data_sale", "strictly_necessary"],
    }
    return policy_from_mapping(
        {
            "purposes": purposes,
            "tcf": {"purposes": {k: list(v) for k, v in policy.tcf_purposes.items()}},
            "us_privacy": {"opt_out": list(policy.us_privacy_opt_out)},
            "gpp": gpp,
        },
        source="full-gpp-test-policy",
    )


# --- random choices and the library's encoding ------------------------------------------


def _us_spec(section_id: int) -> st.SearchStrategy:
    fields = US_SECTIONS[section_id].fields

    def build(packed: int, gpc: bool | None) -> dict:
        spec: dict = {}
        for name, n in fields:
            drawn = []
            for _ in range(max(1, n)):
                packed, digit = divmod(packed, 3)
                drawn.append(max(digit, 1) if name == "mspa_covered_transaction" else digit)
            spec[name] = drawn if n else drawn[0]
        spec["gpc"] = gpc if US_SECTIONS[section_id].gpc else None
        return spec

    # One draw per section (its field values as base-3 digits), so 150 strings fit one example.
    size = sum(max(1, n) for _, n in fields)
    return st.builds(build, st.integers(0, 3**size - 1), st.none() | st.booleans())


_TCF = st.fixed_dictionaries(
    {
        "consent": st.integers(0, (1 << 24) - 1),
        "li": st.integers(0, (1 << 24) - 1),
        "cmp_id": st.integers(0, 4095),
        "vendor_list_version": st.integers(0, 4095),
        "created": st.integers(1_500_000_000, 1_800_000_000),  # a TC string needs a positive LastUpdated
        "updated_after": st.integers(0, 10**7),
    }
)
_USP = st.tuples(st.sampled_from("YN-"), st.sampled_from("YN-"), st.sampled_from("YN-")).map(lambda t: "1" + "".join(t))


@st.composite
def gpp_spec(draw) -> dict:
    ids = draw(st.sets(st.sampled_from([2, 6, *US_SECTIONS]), min_size=1))
    spec: dict = {}
    for sid in sorted(ids):
        if sid == 2:
            spec[2] = draw(_TCF)
        elif sid == 6:
            spec[6] = draw(_USP)
        else:
            spec[sid] = draw(_us_spec(sid))
    return spec


def _when(jvm, seconds: int):
    moment = _EPOCH + dt.timedelta(seconds=seconds)
    return jvm.java.time.ZonedDateTime.of(
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second, 0, jvm.java.time.ZoneId.of("UTC")
    )


def _encode(iab, jvm, spec: dict) -> str:
    """The GPP string IAB's library writes for ``spec``."""
    model = iab()
    for sid, values in spec.items():
        if sid == 2:
            bits = lambda number: [bool(number >> (24 - p) & 1) for p in range(1, 25)]  # noqa: E731
            model.setFieldValue("tcfeuv2", "PurposeConsents", bits(values["consent"]))
            model.setFieldValue("tcfeuv2", "PurposeLegitimateInterests", bits(values["li"]))
            model.setFieldValue("tcfeuv2", "CmpId", values["cmp_id"])
            model.setFieldValue("tcfeuv2", "VendorListVersion", values["vendor_list_version"])
            # Created and LastUpdated last: setting any other field stamps both with the current time.
            model.setFieldValue("tcfeuv2", "Created", _when(jvm, values["created"]))
            model.setFieldValue("tcfeuv2", "LastUpdated", _when(jvm, values["created"] + values["updated_after"]))
        elif sid == 6:
            model.decodeSection("uspv1", values)
        else:
            name = US_SECTIONS[sid].name
            for field, value in values.items():
                if field != "gpc":
                    model.setFieldValue(name, IAB_NAMES[field], value)
            if US_SECTIONS[sid].gpc:
                model.setFieldValue(name, "GpcSegmentIncluded", values["gpc"] is not None)
                if values["gpc"] is not None:
                    model.setFieldValue(name, "Gpc", values["gpc"])
    return model.encode()


# --- the expected choices, in plain Python ------------------------------------------------


def _us_expected(spec: dict, policy: Policy) -> dict[str, bool]:
    denied: set[str] = set()
    granted: set[str] = set()
    for field, names in policy.gpp_purposes.items():
        for sid, section in US_SECTIONS.items():
            if sid not in spec:
                continue
            values = spec[sid]
            if field == "gpc":
                if section.gpc and values["gpc"]:
                    denied.update(names)
                continue
            if field not in values:
                continue
            found = values[field] if isinstance(values[field], list) else [values[field]]
            consent = field not in section.opt_out_fields
            for name in names:
                if 1 in found:
                    denied.add(name)
                elif 2 in found and (consent or policy.purpose(name).default_allowed):
                    granted.add(name)
    return {
        name: name not in denied
        for name in denied | granted
        if not policy.purpose(name).retired
    }


def _expected_choices(spec: dict, policy: Policy) -> list[tuple]:
    choices = [(name, value, TS) for name, value in _us_expected(spec, policy).items()]
    if 6 in spec:
        opt_out = spec[6][2]
        for name in policy.us_privacy_opt_out:
            purpose = policy.purpose(name)
            if purpose.retired:
                continue
            if opt_out == "Y":
                choices.append((name, False, TS))
            elif opt_out == "N" and purpose.default_allowed:
                choices.append((name, True, TS))
    if 2 in spec:
        tcf = spec[2]
        updated = _EPOCH + dt.timedelta(seconds=tcf["created"] + tcf["updated_after"])
        feeders: dict[str, list[int]] = {}
        for tcf_id, names in sorted(policy.tcf_purposes.items()):
            for name in names:
                if not policy.purpose(name).retired:
                    feeders.setdefault(name, []).append(tcf_id)
        for name, tcf_ids in feeders.items():
            bit = lambda number, i: bool(number >> (24 - i) & 1)  # noqa: E731
            if policy.purpose(name).default_allowed:
                value = all(bit(tcf["consent"], i) or bit(tcf["li"], i) for i in tcf_ids)
            else:
                value = all(bit(tcf["consent"], i) for i in tcf_ids)
            choices.append((name, value, updated))
    return sorted(choices)


def _check_decoded(spec: dict, got: dict) -> None:
    assert got["valid"] is True, (spec, got["reason"], got["detail"])
    assert got["section_ids"] == sorted(spec)
    assert got["header"].asDict() == {"type": 3, "version": 1}
    for sid, section in US_SECTIONS.items():
        decoded = got[section.name]
        if sid not in spec:
            assert decoded is None
            continue
        decoded = decoded.asDict()
        expected = {"version": 1, **spec[sid]}
        if not section.gpc:
            expected.pop("gpc")
        assert decoded == expected, (section.name, decoded, expected)
    if 6 in spec:
        usp = spec[6]
        assert got["uspv1"].asDict() == {
            "version": 1, "notice": usp[1], "opt_out_sale": usp[2], "lspa_covered": usp[3], "us_privacy": usp,
        }
    if 2 in spec:
        tcf, decoded = spec[2], got["tcfeuv2"]
        assert decoded["valid"] is True and decoded["version"] == 2
        assert (decoded["purposes_consent"], decoded["purposes_li_transparency"]) == (tcf["consent"], tcf["li"])
        assert (decoded["cmp_id"], decoded["vendor_list_version"]) == (tcf["cmp_id"], tcf["vendor_list_version"])
        assert decoded["created"] == _EPOCH + dt.timedelta(seconds=tcf["created"])
        assert decoded["last_updated"] == _EPOCH + dt.timedelta(seconds=tcf["created"] + tcf["updated_after"])
    else:
        assert got["tcfeuv2"] is None


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(specs=st.lists(gpp_spec(), min_size=STRINGS_PER_EXAMPLE, max_size=STRINGS_PER_EXAMPLE))
def test_decodes_what_iab_library_encodes_and_maps_choices_by_policy(spark, iab, full_policy, specs):
    jvm = spark.sparkContext._jvm
    # One fixed string on top: usnat with every field 1 and Gpc set denies every GPP-mapped purpose.
    refuse_all = {name: [1] * n if n else 1 for name, n in US_SECTIONS[7].fields}
    specs = [*specs, {7: {**refuse_all, "gpc": True}}]
    strings = [_encode(iab, jvm, spec) for spec in specs]
    df = spark.createDataFrame([(i, s, TS) for i, s in enumerate(strings)], "i int, gpp_string string, ts timestamp")
    rows = with_gpp_fields(df).select("i", "gpp", gpp_choices("gpp", "ts", full_policy).alias("choices")).orderBy("i").collect()
    assert len(rows) == len(specs)
    for row in rows:
        spec = specs[row["i"]]
        _check_decoded(spec, row["gpp"].asDict())
        got = sorted((c["purpose"], c["granted"], c["event_ts"]) for c in row["choices"])
        assert got == _expected_choices(spec, full_policy), (strings[row["i"]], spec)
    mapped = {n for names in full_policy.gpp_purposes.values() for n in names if not full_policy.purpose(n).retired}
    assert {(c["purpose"], c["granted"]) for c in rows[-1]["choices"]} == {(n, False) for n in mapped}


def _usnat_v1(values: dict) -> str:
    """A usnat core segment in version 1 of its layout (12 and 2 entries, 60 bits), as IAB's JS library writes it."""
    layout = US_SECTIONS[7].layouts[0]
    bits = format(1, "06b")
    for name, n in layout:
        entries = values[name] if n else [values[name]]
        bits += "".join(format(v, "02b") for v in entries)
    bits += "0" * (-len(bits) % 8)
    bits += "0" * (-len(bits) % 6)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


HOSTILE = {
    "": "empty",
    "   ": "empty",
    "garbage!": "bad_base64url",
    "DBABLA~BAAQ YAAAAgBA": "bad_base64url",
    "DBABLA~BAAQYAAAAgBA=": "bad_base64url",
    "DBABLA~BAAQYAAAAgBA\u2028": "bad_base64url",  # a line terminator the trim keeps, at the very end
    "DBABLA~BAAQYAAAAgBA\u0085": "bad_base64url",
    "DB": "bad_header",
    "DBA.BLA~BAAQYAAAAgBA": "bad_header",
    "CBABLA~BAAQYAAAAgBA": "bad_header",
    "DCABLA~BAAQYAAAAgBA": "bad_header",
    "DBAE": "bad_header",
    "DBABMA": "section_count_mismatch",
    "DBABzw~1YN-": "section_count_mismatch",
    "DBABLA~BAAQYAAAAgBA~1YNN": "section_count_mismatch",
    "DBABLA~~": "empty_section",
    "DBACNY~~1YNN": "empty_section",
    "DBABzw~1YN-~": "empty_section",
    "DBABLA~BAAQ": "too_short",
    "DBABLA~.QA": "too_short",
    "DBABLA~DAAQYAAAAgBA": "unsupported_version",
    "DBABLA~BAAQYAAAAg_A": "bad_field_value",
    "DBABLA~BAAQYAAAAgBA.AA": "bad_subsection",
    "DBABLA~BAAQYAAAAgBA.": "bad_subsection",
    "DBABMA~CPXxRfA": "bad_tcf_section",
    "DBABTA~1YN": "bad_uspv1_section",
    "DBABTA~2YNN": "bad_uspv1_section",
}
VALID = {
    "DBABLA~BAAQYAAAAgBA.QA": [7],
    "  DBABzw~1YN-~BAAQYAAAAgBA.YA\n": [6, 7],
    "DBAA": [],
    "DBADDNM~BQueoWwQueoWwAFAAAENAACAAAAAAAAAAAAAAAAAAA.YAAAAAAAAAA~BAAQAAAAAABA.QA~BAQAAABA": [5, 7, 13],
    "DBABLA~BAAQYAAAAgBA.QA.xyz": [7],
}


def test_hostile_strings_are_invalid_with_a_reason_and_the_column_form_agrees(spark, iab, policy):
    v1_values = {name: ([1, 2] * 8)[:n] if n else 2 for name, n in US_SECTIONS[7].layouts[0]}
    v1_values["mspa_covered_transaction"] = 1
    v1 = "DBABLA~" + _usnat_v1(v1_values)
    rows = [(s,) for s in [*HOSTILE, *VALID, v1]] + [(None,)]
    df = spark.createDataFrame(rows, "gpp_string string").withColumn("ts", F.lit(TS))
    out = with_gpp_fields(df).select(
        "gpp_string", "gpp", gpp_fields("gpp_string").alias("column"), gpp_choices("gpp", "ts", policy).alias("choices")
    )
    decoded = {r["gpp_string"]: r for r in out.collect()}
    for text, reason in HOSTILE.items():
        got = decoded[text]["gpp"]
        assert (got["valid"], got["reason"]) == (False, reason), (text, got["reason"], got["detail"])
        assert got["detail"] and got["section_ids"] is None and got["usnat"] is None
        assert decoded[text]["choices"] == []
    for text, ids in VALID.items():
        got = decoded[text]["gpp"]
        assert got["valid"] is True and got["section_ids"] == ids, (text, got["reason"], got["detail"])
    assert decoded[None]["gpp"]["valid"] is None and decoded[None]["gpp"]["reason"] is None
    assert decoded[None]["choices"] == []
    assert all(r["gpp"] == r["column"] for r in decoded.values())
    assert set(HOSTILE.values()) == set(GPP_REASONS)

    # usnat version 1 (12 and 2 entries): decoded as IAB's library decodes it
    got = decoded[v1]["gpp"]["usnat"].asDict()
    reference = iab(v1)
    for name, n in US_SECTIONS[7].layouts[0]:
        expected = reference.getFieldValue("usnat", IAB_NAMES[name])
        expected = list(expected)[:n] if n else expected
        assert got[name] == expected == v1_values[name], name
    assert len(got["sensitive_data_processing"]) == 12 and len(got["known_child_sensitive_data_consents"]) == 2

    # the repository's policy: usnat SaleOptOut 1 denies data_sale and advertising
    choices = {(c["purpose"], c["granted"]) for c in decoded["DBABLA~BAAQYAAAAgBA.QA"]["choices"]}
    assert choices == {("data_sale", False), ("advertising", False)}


@pytest.mark.parametrize(
    "gpp, message",
    [
        ({"sale_opt_out": ["nope"]}, "gpp.sale_opt_out: unknown purpose 'nope'"),
        ({"sell_opt_out": ["data_sale"]}, "gpp.sell_opt_out: unknown GPP field 'sell_opt_out'"),
        ({"gpc": "data_sale", "sale_opt_out": {"a": 1}}, "gpp.sale_opt_out: expected a list of purposes"),
        (["sale_opt_out"], "gpp: expected a mapping"),
    ],
)
def test_policy_gpp_section_is_validated(gpp, message):
    with pytest.raises(PolicyError, match=message.replace("(", r"\(")):
        policy_from_mapping({"purposes": {"data_sale": {"bit": 1, "legal_basis": "consent"}}, "gpp": gpp}, source="t.yaml")


def test_repository_policy_maps_known_gpp_fields(policy):
    assert policy.gpp_purposes and set(policy.gpp_purposes) <= set(GPP_FIELDS)
    assert policy_from_mapping({"purposes": {"a": {"bit": 0, "legal_basis": "consent"}}}).gpp_purposes == {}


def _fibonacci_code(n: int) -> str:
    """Fibonacci codeword of n >= 1: Zeckendorf bits, least significant first, closed by an extra 1."""
    weights = [1, 2]
    while weights[-1] <= n:
        weights.append(weights[-1] + weights[-2])
    digits = ["0"] * len(weights)
    for i in reversed(range(len(weights))):
        if weights[i] <= n:
            digits[i], n = "1", n - weights[i]
    return "".join(digits).rstrip("0") + "1"


def _header(ids: list[int]) -> str:
    """A GPP header listing ``ids`` one entry per id (no ranges)."""
    bits = format(3, "06b") + format(1, "06b") + format(len(ids), "012b")
    previous = 0
    for sid in ids:
        bits += "0" + _fibonacci_code(sid - previous)
        previous = sid
    bits += "0" * (-len(bits) % 6)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def test_long_headers_take_the_general_path_and_agree(spark, iab):
    """Headers of many entries or of long codewords list the same ids as short ones, sections found by them."""
    usnat = _encode(iab, spark.sparkContext._jvm, {7: {**{name: [2] * n if n else 2 for name, n in US_SECTIONS[7].fields}, "gpc": None}})
    core = usnat.split("~")[1]
    cases = {
        "many entries": [1, 3, 4, 5, 7, 13, 15],  # 7 entries, one per id
        "long codewords": [7, 30000, 60000, 90000],  # over 64 bits of entries
        "short": [5, 7, 13],
    }
    strings = {label: "~".join([_header(ids)] + [core if sid == 7 else "QA" for sid in ids]) for label, ids in cases.items()}
    df = spark.createDataFrame([(label, text) for label, text in strings.items()], "label string, gpp_string string")
    rows = with_gpp_fields(df).select("label", "gpp", gpp_fields("gpp_string").alias("column")).collect()
    reference = with_gpp_fields(spark.createDataFrame([(usnat,)], "gpp_string string")).first()["gpp"]["usnat"]
    assert len(rows) == len(cases)
    for row in rows:
        got = row["gpp"]
        assert got["valid"] is True, (row["label"], got["reason"], got["detail"])
        assert got["section_ids"] == cases[row["label"]]
        assert got["usnat"] == reference
        assert row["column"] == got
