"""Named fault points, for tests that interrupt a job at a known step.

A test sets ``KETCH_SPARK_FAULTS`` to a comma-separated list of point names; the
code raises :class:`InjectedFault` when it reaches one of them. A test that kills
the process instead sets ``KETCH_SPARK_PAUSE_AT`` to one point name and
``KETCH_SPARK_PAUSE_FILE`` to a path: on reaching the point the process creates
the file and sleeps until it is killed, so the test kills it at that step, not at
a moment guessed from timing. Unset (always, in production), a fault point costs
one environment lookup per variable.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ketch_spark.errors import KetchError

__all__ = ["FAULTS_ENV", "PAUSE_AT_ENV", "PAUSE_FILE_ENV", "InjectedFault", "fault_point"]

#: Environment variable naming the fault points to trigger.
FAULTS_ENV = "KETCH_SPARK_FAULTS"
#: Environment variable naming the one point at which the process pauses until it is killed.
PAUSE_AT_ENV = "KETCH_SPARK_PAUSE_AT"
#: Environment variable naming the file the process creates when it pauses.
PAUSE_FILE_ENV = "KETCH_SPARK_PAUSE_FILE"


class InjectedFault(KetchError):
    """Raised at a fault point named in ``KETCH_SPARK_FAULTS`` (tests only)."""


def fault_point(name: str) -> None:
    """Raises :class:`InjectedFault` if ``name`` is in ``KETCH_SPARK_FAULTS``; pauses if it is ``KETCH_SPARK_PAUSE_AT``."""
    if name in {n.strip() for n in os.environ.get(FAULTS_ENV, "").split(",")}:
        raise InjectedFault(f"injected fault at {name}")
    if os.environ.get(PAUSE_AT_ENV) == name:
        _pause_until_killed(name)


def _pause_until_killed(name: str) -> None:
    """Creates the pause file (its text: ``name``) and sleeps for good: the test that set it kills the process."""
    signal_file = os.environ.get(PAUSE_FILE_ENV)
    if signal_file:
        Path(signal_file).write_text(name)
    while True:
        time.sleep(3600)
