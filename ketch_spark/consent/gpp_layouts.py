"""Layouts of the US sections of a GPP string (section ids 7 to 12).

A US section's core segment is Version Int(6) followed by Int(2) fields and
N-Bitfield(2, n) fields, in the order of its layout. usnat has two layouts:
version 1 of its specification (SensitiveDataProcessing of 12 entries,
KnownChildSensitiveDataConsents of 2; 60 bits) and version 2 (16 and 3; 70
bits); the length of the core segment chooses between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

__all__ = ["Layout", "UsSection", "US_SECTIONS", "VERSION_BITS", "layout_bits", "field_offsets"]

#: (field, n) pairs: n = 0 for an Int(2), n > 0 for an N-Bitfield(2, n).
Layout = tuple[tuple[str, int], ...]

#: Bits of a US section's Version field, the first of its core segment.
VERSION_BITS = 6


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


def layout_bits(layout: Layout) -> int:
    """Bits of a core segment holding ``layout`` (Version included)."""
    return VERSION_BITS + 2 * sum(max(1, n) for _, n in layout)


def field_offsets(layout: Layout) -> dict[str, list[int]]:
    """Bit offset of each 2-bit entry of each field of ``layout`` (one for an Int(2), n for a bitfield)."""
    offsets: dict[str, list[int]] = {}
    offset = VERSION_BITS
    for name, n in layout:
        offsets[name] = [offset + 2 * i for i in range(max(1, n))]
        offset += 2 * max(1, n)
    return offsets


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
