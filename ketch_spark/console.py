"""What the command line shows a person: small plain-text tables.

Library code never prints; the command line formats what the library returns.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["format_table", "format_cell"]


def format_cell(value: Any) -> str:
    """A value as a table cell: ``-`` for None, thousands separators for ints, two decimals for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned plain-text table with a header line and a rule under it.

    Args:
        headers: Column titles.
        rows: One sequence of values per row (formatted with :func:`format_cell`).

    Returns:
        The table's lines joined by newlines; numbers are right-aligned.
    """
    cells = [[format_cell(value) for value in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) or row[i] is None
                   for row in rows) and any(row[i] is not None for row in rows) for i in range(len(headers))]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(row) for row in cells)])
