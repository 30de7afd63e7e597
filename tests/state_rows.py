"""consent_state rows built by hand for the filter's tests: one user's latest grants and denials."""

from __future__ import annotations

import datetime as dt

WHEN = dt.datetime(2026, 11, 1, 12, 0)


def bitmap(bits) -> list[int]:
    """A two-word bitmap with ``bits`` set."""
    words = [0, 0]
    for bit in bits:
        words[bit // 64] |= 1 << (bit % 64)
    return words


def state_row(org, user, granted=(), denied=()):
    """One consent_state row: latest grants and denials of a user."""
    known = set(granted) | set(denied)
    return (org, user, bitmap(granted), bitmap(known), {b: WHEN for b in sorted(known)}, WHEN)
