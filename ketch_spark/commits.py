"""Delta commits that conflict with another writer's, run again a bounded number of times.

Delta commits optimistically: a writer reads a table's version, computes its
change and commits; when another writer committed meanwhile something that
touches what this one read (``ConcurrentAppendException``,
``ConcurrentDeleteReadException``, ``ConcurrentTransactionException``, ...),
Delta refuses the commit. :func:`retry_on_conflict` runs the whole unit of work
again, so it reads the table's new state and computes its change afresh (a
compaction then finds the events the other run applied already applied), up to
``delta.commit_retries`` times with a doubling backoff, then raises
:class:`CommitConflictError` naming the table and what to do.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

from ketch_spark.config import DeltaSettings
from ketch_spark.diagnose import CONFLICT_MARKERS, failure_text
from ketch_spark.errors import KetchError

__all__ = ["CommitConflictError", "ConcurrentCommitError", "commit_conflict_name", "retry_on_conflict"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

class ConcurrentCommitError(KetchError):
    """Another writer committed to a table after a run read it and before the run committed (retried)."""


class CommitConflictError(KetchError):
    """A commit kept conflicting with other writers' commits to the same table after every retry.

    Attributes:
        table: The table, as a warehouse path (``consent/state``).
        attempts: Commits tried.
    """

    def __init__(self, message: str, table: str, attempts: int) -> None:
        super().__init__(message)
        self.table = table
        self.attempts = attempts


def commit_conflict_name(exc: BaseException) -> str | None:
    """The name of Delta's conflict in ``exc`` (or its causes), ``None`` when it is no commit conflict."""
    if isinstance(exc, ConcurrentCommitError):
        return type(exc).__name__
    text = failure_text(exc)
    return next((name for name in CONFLICT_MARKERS if name in text), None)


def retry_on_conflict(table: str, work: Callable[[], T], settings: DeltaSettings, *, what: str = "commit") -> T:
    """Runs ``work`` (which reads ``table``, then commits to it) again while its commit conflicts with another's.

    Only Delta's conflicts are retried; any other error is raised at once. Each
    retry logs one line (the table and the conflict's name, never row values).

    Args:
        table: The table ``work`` commits to, as a warehouse path, for messages.
        work: Reads the table's current state and commits; must be safe to run again
            after a refused commit (Delta applied none of it).
        settings: ``commit_retries`` and ``commit_backoff_seconds``.
        what: What ``work`` does (``compaction``), for messages.

    Raises:
        CommitConflictError: The commit conflicted ``commit_retries + 1`` times.
    """
    attempts = settings.commit_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except Exception as exc:
            conflict = commit_conflict_name(exc)
            if conflict is None:
                raise
            if attempt == attempts:
                raise CommitConflictError(
                    f"the {what} of {table} conflicted with other writers' commits {attempts} times ({conflict}) "
                    f"and gave up; nothing of it was committed. Run the commands that write {table} one at a time, "
                    "then run this one again, or raise delta.commit_retries in the config",
                    table, attempts,
                ) from exc
            delay = settings.commit_backoff_seconds * 2 ** (attempt - 1) * random.uniform(1.0, 1.5)
            logger.warning("%s of %s conflicted with another writer's commit (%s): retry %d of %d in %.1f s",
                           what, table, conflict, attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
