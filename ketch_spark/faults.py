"""Named fault points, for tests that interrupt a job at a known step.

A test sets ``KETCH_SPARK_FAULTS`` to a comma-separated list of point names; the
code raises :class:`InjectedFault` when it reaches one of them. Unset (always, in
production), a fault point costs one environment lookup.
"""

from __future__ import annotations

import os

from ketch_spark.errors import KetchError

__all__ = ["FAULTS_ENV", "InjectedFault", "fault_point"]

#: Environment variable naming the fault points to trigger.
FAULTS_ENV = "KETCH_SPARK_FAULTS"


class InjectedFault(KetchError):
    """Raised at a fault point named in ``KETCH_SPARK_FAULTS`` (tests only)."""


def fault_point(name: str) -> None:
    """Raises :class:`InjectedFault` if ``name`` is listed in ``KETCH_SPARK_FAULTS``."""
    if name in {n.strip() for n in os.environ.get(FAULTS_ENV, "").split(",")}:
        raise InjectedFault(f"injected fault at {name}")
