"""A small TC string (TCF v2 core segment) encoder for tests and benchmarks."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Iterable

__all__ = ["encode_tc"]

_EPOCH = dt.datetime(1970, 1, 1)


def _letters(text: str) -> str:
    return "".join(format(ord(ch) - ord("A"), "06b") for ch in text)


def _flags(ids: Iterable[int], width: int) -> str:
    chosen = set(ids)
    return "".join("1" if i in chosen else "0" for i in range(1, width + 1))


def encode_tc(
    *,
    created: dt.datetime,
    last_updated: dt.datetime,
    purposes_consent: Iterable[int] = (),
    purposes_li: Iterable[int] = (),
    version: int = 2,
    cmp_id: int = 7,
    vendor_list_version: int = 150,
    consented_vendors: Iterable[int] = (1, 3),
    extra_segment: bool = False,
) -> str:
    """Encodes a TCF v2 core segment (base64url, no padding) with the given fields."""
    deci = lambda ts: int((ts - _EPOCH).total_seconds() * 10)  # noqa: E731
    bits = "".join(
        [
            format(version, "06b"),
            format(deci(created), "036b"),
            format(deci(last_updated), "036b"),
            format(cmp_id, "012b"),
            format(1, "012b"),  # cmp version
            format(1, "06b"),  # consent screen
            _letters("EN"),
            format(vendor_list_version, "012b"),
            format(2, "06b"),  # tcf policy version
            "0",  # is service specific
            "0",  # use non-standard texts
            "0" * 12,  # special feature opt-ins
            _flags(purposes_consent, 24),
            _flags(purposes_li, 24),
            "0",  # purpose one treatment
            _letters("AA"),
            format(4, "016b"), "0", _flags(consented_vendors, 4),  # vendor consents, bit field
            format(2, "016b"), "0", _flags((2,), 2),  # vendor legitimate interests
            format(0, "012b"),  # no publisher restrictions
        ]
    )
    bits += "0" * (-len(bits) % 8)
    raw = int(bits, 2).to_bytes(len(bits) // 8, "big")
    core = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return core + (".YAAAAAAAAAA" if extra_segment else "")
