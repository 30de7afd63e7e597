"""Concurrent readers and writers on a local warehouse: one state version per read, each event applied once.

Compactions, ingests and consent filters run at once in threads of the one test
session; conflicting commits are retried from the table's new state
(:mod:`ketch_spark.commits`), and the state always ends equal to one clean run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

import ketch_spark.consent.compact as compact_module
from ketch_spark.commits import CommitConflictError, retry_on_conflict
from ketch_spark.config import DeltaSettings
from ketch_spark.consent.compact import applied_events_version, compact_consent
from ketch_spark.consent.filter import consent_filter
from ketch_spark.consent.sources import ingest_consent
from ketch_spark.tables import delta_table, read_table, table_version

from test_compact import write_wide_policy, T0, _append, _state, oracle

USERS = [f"u{j}" for j in range(6)]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("concurrency")


@pytest.fixture(scope="module")
def wide_policy(root: Path) -> str:
    return write_wide_policy(root / "policy.yaml")


def _cfg(base_config, root: Path, wide_policy: str, name: str, **delta):
    cfg = base_config.with_warehouse(root / name)
    settings = dataclasses.replace(DeltaSettings(commit_backoff_seconds=0.05), **delta)
    return dataclasses.replace(cfg, policy_path=wide_policy, delta=settings)


def _batch(i: int) -> list[tuple]:
    """Batch ``i``: every user chooses alpha at minute ``i``, granted for the first ``i + 1`` users."""
    return [("o1", user, "alpha", j <= i, i) for j, user in enumerate(USERS)]


def _ingest(spark, cfg, root: Path, i: int):
    """Ingests batch ``i`` through ``ingest_consent`` (JSON lines), batch id ``b<i>``."""
    path = root / "raw" / f"{Path(cfg.warehouse).name}-b{i}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"org_id": org, "user_id": user, "purpose": purpose, "granted": granted,
                    "ts": (T0 + dt.timedelta(minutes=minute)).isoformat() + "Z"})
        for org, user, purpose, granted, minute in _batch(i)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ingest_consent(spark, cfg, str(path), fmt="json", batch_id=f"b{i}", validate=False)


def _append_batch(spark, cfg, i: int) -> None:
    """Appends batch ``i`` as already-validated events (cheaper than an ingest), batch id ``b<i>``."""
    _append(spark, cfg, _batch(i), f"b{i}")


def _all_rows(batches) -> list[tuple]:
    return [row for i in batches for row in _batch(i)]


def _run_at_once(*works):
    """Runs ``works`` in threads released together; returns (results, errors) in the same order."""
    barrier = threading.Barrier(len(works))
    results, errors = [None] * len(works), [None] * len(works)

    def run(index, work):
        barrier.wait()
        try:
            results[index] = work()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors[index] = exc

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(works)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results, errors


def _merges_after(spark, cfg, version: int) -> int:
    history = delta_table(spark, cfg, "consent_state").history()
    return history.where((F.col("version") > version) & (F.col("operation") == "MERGE")).count()


def _assert_equals_clean_rebuild(spark, cfg, batches):
    state = _state(spark, cfg)
    assert state == oracle(_all_rows(batches))
    compact_consent(spark, cfg, full=True)
    assert _state(spark, cfg) == state


def _kept_users(spark, cfg, as_of=None) -> tuple[int, frozenset]:
    facts = spark.createDataFrame([("o1", user) for user in USERS], "org_id string, user_id string")
    keep = consent_filter("alpha", cfg, as_of=as_of)
    users = frozenset(row["user_id"] for row in facts.transform(keep).collect())
    return keep.info.consent_version, users


# filters read in a loop for as long as two compactions take to commit
def test_filters_read_one_state_version_while_compactions_commit(spark, base_config, root, wide_policy):
    cfg = _cfg(base_config, root, wide_policy, "readers")
    _append_batch(spark, cfg, 0)
    compact_consent(spark, cfg)
    first = table_version(spark, cfg, "consent_state")
    seen: list[tuple[int, frozenset]] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def read_in_a_loop():
        try:
            while not done.is_set() or len(seen) < 3:
                seen.append(_kept_users(spark, cfg))
                time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    reader = threading.Thread(target=read_in_a_loop)
    reader.start()
    try:
        for i in (1, 2):
            _append_batch(spark, cfg, i)
            compact_consent(spark, cfg)
    finally:
        done.set()
        reader.join(timeout=300)
    assert not failures
    last = table_version(spark, cfg, "consent_state")
    committed = {version: _kept_users(spark, cfg, as_of=version)[1] for version in range(first, last + 1)}
    assert len(set(committed.values())) == 3  # each compaction changed who is kept
    assert seen and all(users == committed[version] for version, users in seen), seen
    assert _state(spark, cfg) == oracle(_all_rows(range(3)))


def test_two_compactions_at_once_apply_each_event_once(spark, base_config, root, wide_policy):
    cfg = _cfg(base_config, root, wide_policy, "two-compactions")
    _append_batch(spark, cfg, 0)
    compact_consent(spark, cfg)
    _append_batch(spark, cfg, 1)
    before = table_version(spark, cfg, "consent_state")
    results, errors = _run_at_once(lambda: compact_consent(spark, cfg), lambda: compact_consent(spark, cfg))
    assert errors == [None, None]
    assert max(r.users_changed for r in results) == len(USERS)  # every user's alpha time moves
    assert _merges_after(spark, cfg, before) == 1  # committed by one run only
    # neither run left its idempotent-write settings on the shared session
    assert spark.conf.get("spark.databricks.delta.write.txnAppId", None) is None
    assert applied_events_version(spark, cfg) == table_version(spark, cfg, "consent_events")
    _assert_equals_clean_rebuild(spark, cfg, (0, 1))


def test_ingest_while_compaction_runs(spark, base_config, root, wide_policy):
    cfg = _cfg(base_config, root, wide_policy, "ingest-and-compact")
    _append_batch(spark, cfg, 0)
    compact_consent(spark, cfg)
    _append_batch(spark, cfg, 1)
    results, errors = _run_at_once(lambda: compact_consent(spark, cfg), lambda: _ingest(spark, cfg, root, 2))
    assert errors == [None, None]
    assert results[1].accepted == len(USERS)
    compact_consent(spark, cfg)
    events = read_table(spark, cfg, "consent_events")
    assert events.where(F.col("batch_id") == "b2").count() == len(USERS)
    _assert_equals_clean_rebuild(spark, cfg, (0, 1, 2))


def _touch_state_from_another_thread(spark, cfg) -> None:
    """Another writer's commit to consent/state that rewrites the file the running compaction read (no value changes)."""
    thread = threading.Thread(
        target=lambda: delta_table(spark, cfg, "consent_state").update(
            condition=F.col("user_id") == "u0", set={"updated_at": F.col("updated_at")}
        )
    )
    thread.start()
    thread.join()


def test_conflicting_commits_are_retried_from_the_new_state_then_fail_clearly(
    spark, base_config, root, wide_policy, monkeypatch, caplog
):
    cfg = _cfg(base_config, root, wide_policy, "conflicts", commit_retries=1, commit_backoff_seconds=0.0)
    _append_batch(spark, cfg, 0)
    compact_consent(spark, cfg)
    _append_batch(spark, cfg, 1)
    applied = applied_events_version(spark, cfg)
    commit_kind = compact_module._incremental_commit_kind
    attempts = []

    def interfered(*args, **kwargs):  # runs after the attempt read the state, before it commits
        attempts.append(table_version(spark, cfg, "consent_state"))
        if len(attempts) <= conflicting_attempts:
            _touch_state_from_another_thread(spark, cfg)
        return commit_kind(*args, **kwargs)

    monkeypatch.setattr(compact_module, "_incremental_commit_kind", interfered)
    conflicting_attempts = 2
    with caplog.at_level(logging.WARNING, logger="ketch_spark.commits"):
        with pytest.raises(CommitConflictError) as failed:
            compact_consent(spark, cfg)
    assert failed.value.table == "consent/state" and failed.value.attempts == 2
    message = str(failed.value)
    assert "compaction of consent/state" in message and "delta.commit_retries" in message
    retries = [r for r in caplog.records if r.name == "ketch_spark.commits"]
    assert len(retries) == 1 and "retry 1 of 1" in retries[0].getMessage()
    assert not any(user in retries[0].getMessage() for user in USERS)
    assert applied_events_version(spark, cfg) == applied  # nothing of it was committed

    # the next run conflicts once, then recomputes from the state's new version and commits
    caplog.clear()
    attempts.clear()
    conflicting_attempts = 1
    before = table_version(spark, cfg, "consent_state")
    with caplog.at_level(logging.WARNING, logger="ketch_spark.commits"):
        result = compact_consent(spark, cfg)
    assert result.users_changed == len(USERS) and len(attempts) == 2 and attempts[1] > attempts[0]
    assert len([r for r in caplog.records if r.name == "ketch_spark.commits"]) == 1
    assert _merges_after(spark, cfg, before) == 1
    assert _state(spark, cfg) == oracle(_all_rows((0, 1)))


def test_only_conflicts_are_retried(caplog):
    calls = []

    def fails():
        calls.append(1)
        raise ValueError("not a conflict")

    with pytest.raises(ValueError):
        retry_on_conflict("consent/state", fails, DeltaSettings(commit_retries=3, commit_backoff_seconds=0.0))
    assert calls == [1]
