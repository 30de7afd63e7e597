"""Policy and Purpose: the fixed bit of every purpose, its legal basis and defaults.

Bits are stable forever: a retired purpose keeps its bit and no other purpose may
take it. The policy also maps IAB TCF purposes, the US Privacy (CCPA) opt-out and
the fields of GPP's US sections onto our purposes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ketch_spark._yaml import load_yaml_file, unknown_keys
from ketch_spark.errors import PolicyError, UnknownPurposeError

__all__ = [
    "Purpose",
    "Policy",
    "load_policy",
    "policy_from_mapping",
    "LEGAL_BASES",
    "GPP_FIELDS",
    "MAX_BIT",
    "WORD_BITS",
]

LEGAL_BASES = ("consent", "legitimate_interest")
WORD_BITS = 64
#: Highest bit a purpose may take; bitmaps hold MAX_BIT + 1 purposes.
MAX_BIT = 255
_TCF_PURPOSE_IDS = range(1, 12)
_PURPOSE_KEYS = ("bit", "legal_basis", "description", "retired")
#: Fields of GPP's US sections (usnat, usca, usva, usco, usut, usct) a policy may
#: map to purposes under ``gpp:``; ``gpc`` is the GPC sub-section's flag.
GPP_FIELDS = (
    "sale_opt_out",
    "sharing_opt_out",
    "targeted_advertising_opt_out",
    "sensitive_data_processing",
    "known_child_sensitive_data_consents",
    "personal_data_consents",
    "gpc",
)


@dataclass(frozen=True)
class Purpose:
    """One processing purpose.

    Attributes:
        name: Stable key used in events and in ``consent_filter``.
        bit: Fixed position in the consent bitmaps, never reused.
        legal_basis: ``consent`` (allowed only after a grant) or
            ``legitimate_interest`` (allowed until the user objects).
        description: Human-readable text.
        retired: A retired purpose keeps its bit; new events for it are rejected.
    """

    name: str
    bit: int
    legal_basis: str
    description: str = ""
    retired: bool = False

    @property
    def default_allowed(self) -> bool:
        """Whether a user who never chose is allowed (legitimate interest)."""
        return self.legal_basis == "legitimate_interest"


@dataclass(frozen=True)
class Policy:
    """The validated set of purposes and the external-signal mappings.

    Attributes:
        purposes: Purposes by name, in file order.
        tcf_purposes: IAB TCF purpose id (1-11) to the names of our purposes it feeds.
        us_privacy_opt_out: Our purposes that a US Privacy opt-out of sale denies.
        gpp_purposes: A field of GPP's US sections (one of :data:`GPP_FIELDS`)
            to the names of our purposes it feeds.
        source: File the policy came from, for messages.
    """

    purposes: Mapping[str, Purpose]
    tcf_purposes: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    us_privacy_opt_out: tuple[str, ...] = ()
    gpp_purposes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: str | None = None

    @property
    def n_words(self) -> int:
        """Number of 64-bit words in a bitmap: enough for every bit, at least two (128 purposes)."""
        highest = max((p.bit for p in self.purposes.values()), default=0)
        return max(2, highest // WORD_BITS + 1)

    @property
    def active(self) -> tuple[Purpose, ...]:
        """Purposes that are not retired."""
        return tuple(p for p in self.purposes.values() if not p.retired)

    def purpose(self, name: str) -> Purpose:
        """Returns a purpose by name.

        Raises:
            UnknownPurposeError: The name is not in the policy; the message lists the known ones.
        """
        try:
            return self.purposes[name]
        except KeyError:
            known = ", ".join(sorted(self.purposes))
            raise UnknownPurposeError(
                f"unknown purpose {name!r}; the policy ({self.source or 'policy'}) declares: {known}"
            ) from None

    def by_bit(self, bit: int) -> Purpose:
        """Returns the purpose that owns ``bit``."""
        for purpose in self.purposes.values():
            if purpose.bit == bit:
                return purpose
        raise UnknownPurposeError(f"no purpose owns bit {bit} in {self.source or 'policy'}")


def _fail(source: str | None, where: str, message: str) -> PolicyError:
    return PolicyError(f"{source or '<policy>'}: {where}: {message}")


def _parse_purpose(name: Any, raw: Any, source: str | None) -> Purpose:
    where = f"purposes.{name}"
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise _fail(source, where, "a purpose key must be a lower-case identifier such as 'email_marketing'")
    if not isinstance(raw, dict):
        raise _fail(source, where, f"expected a mapping with bit and legal_basis, found {raw!r}")
    unknown = unknown_keys(raw, _PURPOSE_KEYS)
    if unknown:
        raise _fail(source, where, f"unknown key(s) {', '.join(unknown)}; expected {', '.join(_PURPOSE_KEYS)}")
    bit = raw.get("bit")
    if not isinstance(bit, int) or isinstance(bit, bool):
        raise _fail(source, f"{where}.bit", f"expected an integer, found {bit!r}")
    if not 0 <= bit <= MAX_BIT:
        raise _fail(source, f"{where}.bit", f"{bit} is out of range; bits go from 0 to {MAX_BIT}")
    basis = raw.get("legal_basis")
    if basis not in LEGAL_BASES:
        raise _fail(source, f"{where}.legal_basis", f"unknown legal basis {basis!r}; expected one of {', '.join(LEGAL_BASES)}")
    retired = raw.get("retired", False)
    if not isinstance(retired, bool):
        raise _fail(source, f"{where}.retired", f"expected true or false, found {retired!r}")
    return Purpose(name=name, bit=bit, legal_basis=basis, description=str(raw.get("description", "")), retired=retired)


def _check_known(names: Iterable[Any], purposes: Mapping[str, Purpose], source: str | None, where: str) -> tuple[str, ...]:
    result = []
    for name in names:
        if not isinstance(name, str) or name not in purposes:
            raise _fail(source, where, f"unknown purpose {name!r}; declared purposes: {', '.join(sorted(purposes))}")
        result.append(name)
    return tuple(result)


def _parse_gpp(raw: Any, purposes: Mapping[str, Purpose], source: str | None) -> dict[str, tuple[str, ...]]:
    """The ``gpp:`` section: each GPP field to a list of our purposes."""
    if not isinstance(raw, dict):
        raise _fail(source, "gpp", f"expected a mapping of GPP field to [our purposes], found {raw!r}")
    mapping: dict[str, tuple[str, ...]] = {}
    for key, names in raw.items():
        if key not in GPP_FIELDS:
            raise _fail(source, f"gpp.{key}", f"unknown GPP field {key!r}; expected one of {', '.join(GPP_FIELDS)}")
        names = [names] if isinstance(names, str) else ([] if names is None else names)
        if not isinstance(names, list):
            raise _fail(source, f"gpp.{key}", f"expected a list of purposes, found {names!r}")
        mapping[key] = _check_known(names, purposes, source, f"gpp.{key}")
    return mapping


def policy_from_mapping(data: Mapping[str, Any], source: str | None = None) -> Policy:
    """Builds a validated :class:`Policy` from a parsed mapping.

    Raises:
        PolicyError: Naming the entry at fault: duplicate bits, bits out of range,
            unknown legal basis, unknown keys, or mappings to undeclared purposes.
    """
    unknown = unknown_keys(data, ("version", "purposes", "tcf", "us_privacy", "gpp"))
    if unknown:
        raise _fail(source, "top level", f"unknown key(s) {', '.join(unknown)}; expected version, purposes, tcf, us_privacy, gpp")
    raw_purposes = data.get("purposes")
    if not isinstance(raw_purposes, dict) or not raw_purposes:
        raise _fail(source, "purposes", "expected a non-empty mapping of purpose name to {bit, legal_basis}")
    purposes: dict[str, Purpose] = {}
    owner_of_bit: dict[int, str] = {}
    for name, raw in raw_purposes.items():
        purpose = _parse_purpose(name, raw, source)
        if purpose.bit in owner_of_bit:
            raise _fail(
                source, f"purposes.{name}.bit", f"bit {purpose.bit} is already taken by {owner_of_bit[purpose.bit]!r}; bits are never shared or reused"
            )
        owner_of_bit[purpose.bit] = name
        purposes[name] = purpose

    tcf_raw = data.get("tcf") or {}
    if not isinstance(tcf_raw, dict) or set(tcf_raw) - {"purposes"}:
        raise _fail(source, "tcf", "expected a mapping with one key, purposes: {tcf_id: [our purposes]}")
    tcf_purposes: dict[int, tuple[str, ...]] = {}
    tcf_mapping = tcf_raw.get("purposes") or {}
    if not isinstance(tcf_mapping, dict):
        raise _fail(source, "tcf.purposes", f"expected a mapping of TCF purpose id (1-11) to [our purposes], found {tcf_mapping!r}")
    for tcf_id, names in tcf_mapping.items():
        if not isinstance(tcf_id, int) or tcf_id not in _TCF_PURPOSE_IDS:
            raise _fail(source, f"tcf.purposes.{tcf_id}", "TCF purpose ids go from 1 to 11")
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list):
            raise _fail(source, f"tcf.purposes.{tcf_id}", f"expected a list of purposes, found {names!r}")
        tcf_purposes[tcf_id] = _check_known(names, purposes, source, f"tcf.purposes.{tcf_id}")

    usp_raw = data.get("us_privacy") or {}
    if not isinstance(usp_raw, dict) or set(usp_raw) - {"opt_out"}:
        raise _fail(source, "us_privacy", "expected a mapping with one key, opt_out: [our purposes]")
    opt_out = usp_raw.get("opt_out") or []
    if not isinstance(opt_out, list):
        raise _fail(source, "us_privacy.opt_out", f"expected a list of purposes, found {opt_out!r}")
    return Policy(
        purposes=purposes,
        tcf_purposes=tcf_purposes,
        us_privacy_opt_out=_check_known(opt_out, purposes, source, "us_privacy.opt_out"),
        gpp_purposes=_parse_gpp(data.get("gpp") or {}, purposes, source),
        source=source,
    )


@functools.lru_cache(maxsize=16)
def _load_policy_cached(path: str, mtime_ns: int) -> Policy:
    return policy_from_mapping(load_yaml_file(path, PolicyError), source=path)


def load_policy(path: str | Path) -> Policy:
    """Reads and validates a policy YAML file (cached until the file changes).

    Raises:
        PolicyError: The file is missing or invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"{path}: policy file not found; set 'policy:' in the config to an existing policy.yaml")
    return _load_policy_cached(str(path), path.stat().st_mtime_ns)
