"""Timing helpers shared by the benchmarks: best-of-N wall time, ratios, a clock of named steps."""

from __future__ import annotations

import contextlib
import functools
import importlib
import time
from collections import defaultdict
from typing import Any, Callable, Iterator, Sequence


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


def _resolve(target: str) -> Any:
    module_name, _, class_name = target.partition(":")
    owner = importlib.import_module(module_name)
    return getattr(owner, class_name) if class_name else owner


class StepClock:
    """Seconds and calls per step while :meth:`installed` is active.

    Args:
        targets: (module or ``module:Class`` path, attribute, label) of each
            function to time; labels of nested steps start with two spaces; a
            ``{format}`` in a label is filled with the ``format`` of the call's
            asset argument.
        formats: The formats ``{format}`` labels are reported for.
    """

    def __init__(self, targets: Sequence[tuple[str, str, str]], formats: Sequence[str] = ()) -> None:
        self.targets = tuple(targets)
        self.formats = tuple(formats)
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.missing: list[str] = []

    def _wrap(self, function: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = label
            if "{format}" in label:
                asset = args[1] if len(args) > 1 else kwargs.get("asset")
                name = label.format(format=getattr(asset, "format", "?"))
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1

        return timed

    @contextlib.contextmanager
    def installed(self) -> Iterator["StepClock"]:
        patched = []
        for target, attribute, label in self.targets:
            owner = _resolve(target)
            original = owner.__dict__.get(attribute)
            if not callable(original):
                self.missing.append(f"{target}.{attribute}")
                continue
            setattr(owner, attribute, self._wrap(original, label))
            patched.append((owner, attribute, original))
        try:
            yield self
        finally:
            for owner, attribute, original in reversed(patched):
                setattr(owner, attribute, original)

    def top_level(self) -> float:
        return sum(s for name, s in self.seconds.items() if not name.startswith(" "))

    def describe(self, total: float, runs: int = 1) -> str:
        """``label s`` per step in the targets' order, per run when ``runs`` > 1, then the rest."""
        labels = []
        for _, _, label in self.targets:
            names = [label.format(format=f) for f in self.formats] if "{format}" in label else [label]
            labels += [n for n in names if n in self.seconds and n not in labels]
        nested = " (within the steps above)"
        parts = [f"{name.strip()} {self.seconds[name] / runs:.1f}{nested if name.startswith(' ') else ''}"
                 for name in labels]
        parts.append(f"other {(total - self.top_level()) / runs:.1f}")
        return "; ".join(parts)


class RunTiming:
    """Wall times of a phase's timed runs, the step clock installed while each runs, and untimed extras.

    Args:
        targets: The :class:`StepClock` targets.
        formats: The :class:`StepClock` formats.
    """

    def __init__(self, targets: Sequence[tuple[str, str, str]], formats: Sequence[str] = ()) -> None:
        self.run_seconds: list[float] = []
        self.submit_seconds = 0.0
        self.clock = StepClock(targets, formats)

    @property
    def total(self) -> float:
        return sum(self.run_seconds)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Calls ``fn`` with the step clock installed; its wall time is one more run. Returns what ``fn`` returns."""
        with self.clock.installed():
            started = time.perf_counter()
            result = fn()
            self.run_seconds.append(time.perf_counter() - started)
        return result
