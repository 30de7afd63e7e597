"""Timing helpers shared by the benchmarks: best-of-N wall time, ratios."""

from __future__ import annotations

import time
from typing import Callable


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Smallest wall time of ``repeats`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, rounded to 3 decimals."""
    return round(numerator / denominator, 3)
