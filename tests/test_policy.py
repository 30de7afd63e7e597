"""Policy validation: stable bits, legal bases, mappings; errors name the entry."""

from __future__ import annotations

import pytest

from ketch_spark.errors import PolicyError, UnknownPurposeError
from ketch_spark.policy import MAX_BIT, load_policy, policy_from_mapping


def _policy(purposes, **extra):
    return policy_from_mapping({"purposes": purposes, **extra}, source="test.yaml")


def test_repository_policy(policy):
    assert policy.purpose("strictly_necessary").legal_basis == "legitimate_interest"
    assert policy.purpose("analytics").legal_basis == "consent"
    assert policy.purpose("data_sale").default_allowed
    assert policy.purpose("legacy_profiling").retired
    assert "legacy_profiling" not in {p.name for p in policy.active}
    assert policy.n_words == 2
    assert policy.tcf_purposes[8] == ("analytics",)
    assert "data_sale" in policy.us_privacy_opt_out
    bits = [p.bit for p in policy.purposes.values()]
    assert len(bits) == len(set(bits))


def test_bit_127_and_beyond_are_representable():
    policy = _policy({"a": {"bit": 0, "legal_basis": "consent"}, "z": {"bit": 127, "legal_basis": "consent"}})
    assert policy.n_words == 2
    assert _policy({"far": {"bit": 200, "legal_basis": "consent"}}).n_words == 4
    assert policy.by_bit(127).name == "z"


@pytest.mark.parametrize(
    ("purposes", "extra", "expected"),
    [
        ({"a": {"bit": 1, "legal_basis": "consent"}, "b": {"bit": 1, "legal_basis": "consent"}}, {}, "purposes.b.bit: bit 1 is already taken by 'a'"),
        ({"a": {"bit": MAX_BIT + 1, "legal_basis": "consent"}}, {}, f"purposes.a.bit: {MAX_BIT + 1} is out of range"),
        ({"a": {"bit": -1, "legal_basis": "consent"}}, {}, "purposes.a.bit: -1 is out of range"),
        ({"a": {"bit": "one", "legal_basis": "consent"}}, {}, "purposes.a.bit: expected an integer"),
        ({"a": {"bit": 1, "legal_basis": "contract"}}, {}, "purposes.a.legal_basis: unknown legal basis 'contract'"),
        ({"a": {"bit": 1, "legal_basis": "consent", "colour": "red"}}, {}, "purposes.a: unknown key(s) colour"),
        ({"Bad-Name": {"bit": 1, "legal_basis": "consent"}}, {}, "purposes.Bad-Name: a purpose key must be"),
        ({"a": {"bit": 1, "legal_basis": "consent"}}, {"tcf": {"purposes": {12: ["a"]}}}, "tcf.purposes.12"),
        ({"a": {"bit": 1, "legal_basis": "consent"}}, {"tcf": {"purposes": {1: ["b"]}}}, "tcf.purposes.1: unknown purpose 'b'"),
        ({"a": {"bit": 1, "legal_basis": "consent"}}, {"us_privacy": {"opt_out": ["b"]}}, "us_privacy.opt_out: unknown purpose 'b'"),
        ({}, {}, "purposes: expected a non-empty mapping"),
    ],
)
def test_invalid_policy_names_the_entry(purposes, extra, expected):
    with pytest.raises(PolicyError) as info:
        _policy(purposes, **extra)
    assert expected in str(info.value)
    assert "test.yaml" in str(info.value)


def test_duplicate_purpose_key_in_yaml(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("purposes:\n  a: {bit: 1, legal_basis: consent}\n  a: {bit: 2, legal_basis: consent}\n")
    with pytest.raises(PolicyError, match="duplicate key 'a'"):
        load_policy(path)


def test_unknown_purpose_lists_the_known_ones(policy):
    with pytest.raises(UnknownPurposeError) as info:
        policy.purpose("analytix")
    assert "analytics" in str(info.value) and "advertising" in str(info.value)
