"""Compaction: latest choice wins in any order, ties deny, bit 127, exactly once, incremental == full == oracle."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest
import yaml
from chispa import assert_df_equality
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

import ketch_spark.consent.compact as compact_module
from ketch_spark.bitmap import bitmap_assign, has_bit, unpack_bits
from ketch_spark.consent.compact import (
    CompactError,
    applied_events_version,
    compact_consent,
    consent_rates,
    state_commit_kind,
    state_needs_clustering,
    state_needs_compacting,
)
from ketch_spark.consent.sources import append_events
from ketch_spark.tables import read_table, table_version

PURPOSES = {"alpha": (0, "consent"), "beta": (1, "legitimate_interest"), "omega": (127, "consent")}
BITS = {name: bit for name, (bit, _) in PURPOSES.items()}
T0 = dt.datetime(2026, 11, 1, 12)
EVENT_SCHEMA = (
    "org_id string, user_id string, purpose string, purpose_bit int, granted boolean, event_ts timestamp, "
    "source string, batch_id string, ingested_at timestamp, event_date date"
)


def write_wide_policy(path: Path) -> str:
    """Writes a policy of :data:`PURPOSES` (one purpose on bit 127: two-word bitmaps) to ``path``; its path."""
    path.write_text(
        yaml.safe_dump({"purposes": {n: {"bit": b, "legal_basis": basis} for n, (b, basis) in PURPOSES.items()}}),
        encoding="utf-8",
    )
    return str(path)


@pytest.fixture(scope="module")
def wide_cfg(spark, base_config, tmp_path_factory):
    """A config whose policy has a purpose on bit 127 (two-word bitmaps)."""
    root = tmp_path_factory.mktemp("compact")
    cfg = base_config.with_warehouse(root / "warehouse")
    from dataclasses import replace

    return replace(cfg, policy_path=write_wide_policy(root / "policy.yaml"))


def _events_df(spark, rows, batch_id):
    """rows: (org, user, purpose, granted, minutes after T0)."""
    data = [
        (org, user, purpose, BITS[purpose], granted, T0 + dt.timedelta(minutes=m), "test", batch_id, T0,
         (T0 + dt.timedelta(minutes=m)).date())
        for org, user, purpose, granted, m in rows
    ]
    return spark.createDataFrame(data, EVENT_SCHEMA)


def _append(spark, cfg, rows, batch_id):
    append_events(spark, cfg, _events_df(spark, rows, batch_id), batch_id)


def _state(spark, cfg, org=None):
    """The state as plain values: {(org, user): ({bits granted}, {bits known}, {bit: ts})}."""
    df = read_table(spark, cfg, "consent_state")
    if org is not None:
        df = df.where(F.col("org_id") == org)
    rows = df.select("org_id", "user_id", unpack_bits("granted").alias("g"), unpack_bits("known").alias("k"), "purpose_ts").collect()
    state = {(r["org_id"], r["user_id"]): (set(r["g"]), set(r["k"]), dict(r["purpose_ts"])) for r in rows}
    assert all(granted <= known for granted, known, _ in state.values())  # what the consent filter relies on
    return state


def _measured_sizes(spark, cfg):
    """Per purpose of the policy: (rows, bytes) of its key set, measured on the state."""
    from ketch_spark.consent.key_set_sizes import key_row_bytes, key_set_member, purpose_key

    state = read_table(spark, cfg, "consent_state")
    sizes = {}
    for purpose in cfg.policy().active:
        row = state.where(key_set_member(purpose, granted_implies_known=True)).agg(
            F.count(F.lit(1)).alias("rows"), F.coalesce(F.sum(key_row_bytes()), F.lit(0)).alias("bytes")).head()
        sizes[purpose_key(purpose)] = (int(row["rows"]), int(row["bytes"]))
    return sizes


def _recorded_sizes(spark, cfg):
    from ketch_spark.consent.key_set_sizes import recorded_sizes
    from ketch_spark.tables import table_path

    return recorded_sizes(spark, table_path(cfg, "consent_state"), table_version(spark, cfg, "consent_state"))


def _recorded_rows(spark, cfg):
    """(rows, exact) compaction recorded for the state's current version."""
    from ketch_spark.consent.key_set_sizes import recorded_state
    from ketch_spark.tables import table_path

    recorded = recorded_state(spark, table_path(cfg, "consent_state"), table_version(spark, cfg, "consent_state"))
    return recorded.rows, recorded.rows_exact


def oracle(rows):
    """Pure-Python state: latest event_ts per (org, user, bit) wins, a denial wins a tie."""
    best: dict[tuple, tuple[int, bool]] = {}
    for org, user, purpose, granted, minute in rows:
        key = (org, user, BITS[purpose])
        if key not in best or (minute, not granted) > (best[key][0], not best[key][1]):
            best[key] = (minute, granted)
    state: dict[tuple, tuple[set, set, dict]] = {}
    for (org, user, bit), (minute, granted) in best.items():
        g, k, ts = state.setdefault((org, user), (set(), set(), {}))
        k.add(bit)
        ts[bit] = T0 + dt.timedelta(minutes=minute)
        if granted:
            g.add(bit)
    return state


def test_semantics_exactly_once_and_failure_safety(spark, wide_cfg, monkeypatch):
    cfg = wide_cfg
    batch1 = [
        ("o1", "u1", "alpha", True, 20),
        ("o1", "u1", "alpha", False, 10),  # older, arrives after: loses
        ("o1", "u1", "omega", True, 5),  # bit 127
        ("o1", "u2", "beta", True, 30),
        ("o1", "u2", "beta", False, 30),  # tie: the denial wins
        ("o2", "u1", "alpha", False, 1),  # another org, same user id
    ]
    _append(spark, cfg, batch1, "b1")
    first = compact_consent(spark, cfg)
    assert first.committed and first.full and first.users_changed == 3 and first.events_read == 6
    assert 0 < first.commit_seconds < first.seconds and first.summary()["commit_seconds"] >= 0
    assert _state(spark, cfg) == oracle(batch1)
    assert _state(spark, cfg)[("o1", "u1")][0] == {0, 127}

    # the same events again (nothing new): no commit
    version = table_version(spark, cfg, "consent_state")
    again = compact_consent(spark, cfg)
    assert not again.committed and table_version(spark, cfg, "consent_state") == version

    batch2 = [
        ("o1", "u1", "alpha", False, 0),  # older than the state: no change
        ("o1", "u1", "omega", False, 5),  # tie with the stored grant: the denial wins
        ("o1", "u2", "beta", True, 29),  # older than the stored denial
        ("o1", "u3", "alpha", True, 40),  # a new user
    ]
    _append(spark, cfg, batch2, "b2")

    # a compaction that dies while writing leaves the state as it was
    real_source = compact_module._merge_source

    def failing_source(rows_df):
        stamp = F.when(F.spark_partition_id() >= 0, F.raise_error("injected")).otherwise(F.col("updated_at"))
        return real_source(rows_df).withColumn("updated_at", stamp)

    monkeypatch.setattr(compact_module, "_merge_source", failing_source)
    with pytest.raises(Exception, match="injected"):
        compact_consent(spark, cfg)
    monkeypatch.setattr(compact_module, "_merge_source", real_source)
    assert table_version(spark, cfg, "consent_state") == version
    assert _state(spark, cfg) == oracle(batch1)

    second = compact_consent(spark, cfg, batch_id="b2")
    assert second.committed and not second.full
    assert (second.events_read, second.users_touched, second.users_changed, second.inserted) == (4, 3, 2, 1)
    assert _state(spark, cfg) == oracle(batch1 + batch2)
    applied = applied_events_version(spark, cfg)
    assert applied == table_version(spark, cfg, "consent_events")

    # applying the same batch twice, by id or not, changes nothing
    version = table_version(spark, cfg, "consent_state")
    assert not compact_consent(spark, cfg, batch_id="b2").committed
    assert not compact_consent(spark, cfg, batch_id="b1").committed
    assert table_version(spark, cfg, "consent_state") == version
    with pytest.raises(CompactError):
        compact_consent(spark, cfg, batch_id="never-ingested")

    # a batch whose events change nothing still advances the applied version, without touching rows
    _append(spark, cfg, [("o1", "u1", "alpha", True, 20)], "b3")
    third = compact_consent(spark, cfg)
    assert third.committed and third.users_touched == 1 and third.users_changed == 0
    assert applied_events_version(spark, cfg) == table_version(spark, cfg, "consent_events")

    def comparable(df):
        return df.select("org_id", "user_id", "granted", "known", F.map_entries("purpose_ts").alias("purpose_ts"))

    incremental_df = comparable(read_table(spark, cfg, "consent_state")).localCheckpoint()
    rebuilt = compact_consent(spark, cfg, full=True)
    assert rebuilt.full and rebuilt.users_changed == 4
    assert_df_equality(comparable(read_table(spark, cfg, "consent_state")), incremental_df, ignore_row_order=True)

    rates = {r["purpose"]: r for r in consent_rates(spark, cfg).collect()}
    # alpha: o1/u1 granted, o1/u3 granted, o2/u1 denied; o1/u2 never chose (consent: not allowed)
    assert (rates["alpha"]["users_known"], rates["alpha"]["users_granted"], rates["alpha"]["users_allowed"]) == (3, 2, 2)
    # beta (legitimate interest): only o1/u2 objected; the 3 others never chose and are allowed
    assert (rates["beta"]["users_known"], rates["beta"]["users_granted"], rates["beta"]["users_allowed"]) == (1, 0, 3)
    assert rates["omega"]["users_granted"] == 0 and rates["beta"]["rate"] == pytest.approx(0.75)


_counter = itertools.count()
event = st.tuples(
    st.sampled_from(["u1", "u2", "u3"]),
    st.sampled_from(sorted(BITS)),
    st.booleans(),
    st.integers(min_value=0, max_value=6),  # few distinct times: many ties
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    history=st.lists(event, min_size=1, max_size=14),
    cuts=st.lists(st.integers(min_value=0, max_value=14), max_size=2),
    data=st.data(),
)
def test_incremental_equals_full_equals_oracle(spark, wide_cfg, history, cuts, data):
    from dataclasses import replace

    # 0.0: every incremental run rewrites the files it touches; 1.01: never by share (deletion vectors)
    share = data.draw(st.sampled_from([0.0, 1.01]))
    cfg = replace(wide_cfg, consent=replace(wide_cfg.consent, state_rewrite_share=share))
    org = f"p{next(_counter)}"
    rows = [(org, user, purpose, granted, minute) for user, purpose, granted, minute in history]
    # duplicates and arrival order: replay a random sample, then shuffle
    rows = data.draw(st.permutations(rows + data.draw(st.lists(st.sampled_from(rows), max_size=3))))
    bounds = sorted({0, len(rows), *[c for c in cuts if c < len(rows)]})
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        _append(spark, cfg, rows[start:end], f"{org}-{i}")
        compact_consent(spark, cfg)
    expected = oracle(rows)
    assert _state(spark, cfg, org) == expected
    assert _recorded_sizes(spark, cfg) == _measured_sizes(spark, cfg)  # kept exact run after run
    assert _recorded_rows(spark, cfg) == (read_table(spark, cfg, "consent_state").count(), True)
    compact_consent(spark, cfg, full=True)
    assert _state(spark, cfg, org) == expected
    assert _recorded_sizes(spark, cfg) == _measured_sizes(spark, cfg)
    assert _recorded_rows(spark, cfg) == (read_table(spark, cfg, "consent_state").count(), True)


def test_bitmap_helpers_with_null_rows(spark):
    df = spark.createDataFrame(
        [
            ([5, 0], 0, [(1, True), (0, False)]),
            ([5, 0], 2, [(127, True), (64, None)]),
            ([0, -(1 << 63)], 127, [(127, False), (3, True)]),
            ([1], 64, None),
            (None, 0, [(1, True)]),
            ([1, 0], None, [(None, True)]),
        ],
        "bitmap array<bigint>, bit int, assign array<struct<bit:int,value:boolean>>",
    )
    rows = df.select(has_bit("bitmap", "bit").alias("has"), unpack_bits(bitmap_assign("bitmap", "assign", 2)).alias("bits")).collect()
    assert [r["has"] for r in rows] == [True, True, True, False, None, None]
    assert [r["bits"] for r in rows] == [[1, 2], [0, 2, 127], [3], [0], None, [0]]


CALL_BATCHES = {
    "c1": [("o1", "u1", "alpha", True, 1), ("o1", "u2", "beta", True, 1), ("o1", "u1", "omega", True, 2)],
    "c2": [("o1", "u1", "alpha", False, 5), ("o1", "u3", "alpha", True, 5)],  # u1 withdraws alpha
    "c3": [("o1", "u1", "alpha", True, 3), ("o1", "u2", "beta", False, 6), ("o1", "u1", "omega", False, 2)],
}
_ALL_CALL_ROWS = [row for rows in CALL_BATCHES.values() for row in rows]


def _call_cfg(wide_cfg, tmp_path_factory):
    """A fresh warehouse (with wide_cfg's policy) holding the three batches of CALL_BATCHES, not compacted."""
    from dataclasses import replace

    return replace(wide_cfg.with_warehouse(tmp_path_factory.mktemp("calls") / "warehouse"), policy_path=wide_cfg.policy_path)


def test_full_rebuild_to_an_older_batch_then_plain_run_reaches_every_event(spark, wide_cfg, tmp_path_factory):
    cfg = _call_cfg(wide_cfg, tmp_path_factory)
    for batch_id, rows in CALL_BATCHES.items():
        _append(spark, cfg, rows, batch_id)
    compact_consent(spark, cfg)
    assert _state(spark, cfg) == oracle(_ALL_CALL_ROWS)

    older = compact_consent(spark, cfg, full=True, batch_id="c1")
    assert older.committed and _state(spark, cfg) == oracle(CALL_BATCHES["c1"])
    assert _state(spark, cfg)[("o1", "u1")][0] == {0, 127}  # the withdrawal of c2 is not applied yet
    assert applied_events_version(spark, cfg) == table_version(spark, cfg, "consent_events") - 2

    plain = compact_consent(spark, cfg)
    assert plain.committed and not plain.full
    assert _state(spark, cfg) == oracle(_ALL_CALL_ROWS)  # the withdrawal does not come back
    assert 0 not in _state(spark, cfg)[("o1", "u1")][0]


_call = st.tuples(st.sampled_from(["incremental", "full"]), st.sampled_from([None, "c1", "c2", "c3"]))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(_call, min_size=1, max_size=3))
def test_any_call_sequence_then_a_plain_run_equals_the_full_rebuild(spark, wide_cfg, tmp_path_factory, calls):
    cfg = _call_cfg(wide_cfg, tmp_path_factory)
    for batch_id, rows in CALL_BATCHES.items():
        _append(spark, cfg, rows, batch_id)
    for kind, batch_id in calls:
        compact_consent(spark, cfg, batch_id=batch_id, full=kind == "full")
    compact_consent(spark, cfg)
    assert _state(spark, cfg) == oracle(_ALL_CALL_ROWS)
    assert applied_events_version(spark, cfg) == table_version(spark, cfg, "consent_events")


def test_full_rebuild_clusters_the_state_by_org_so_one_org_reads_few_files(spark, wide_cfg, tmp_path, monkeypatch):
    from dataclasses import replace

    cfg = replace(wide_cfg, warehouse=str(tmp_path / "warehouse"))
    monkeypatch.setattr(compact_module, "_ROWS_PER_STATE_FILE", 3)
    rows = [(org, f"u-{i}", "alpha", i % 2 == 0, i) for i in range(6) for org in ("org-c", "org-a", "org-b")]
    _append(spark, cfg, rows, "b-1")
    result = compact_consent(spark, cfg)
    assert result.full and result.users_changed == 18
    files = (
        read_table(spark, cfg, "consent_state")
        .groupBy(F.col("_metadata.file_path").alias("file"))
        .agg(F.min("org_id").alias("first"), F.max("org_id").alias("last"), F.count(F.lit(1)).alias("rows"))
        .collect()
    )
    assert len(files) == 6 and all(f["first"] == f["last"] and f["rows"] == 3 for f in files)  # one org per file
    state = _state(spark, cfg)
    assert {key: granted for key, (granted, _, _) in state.items()} == {
        (org, f"u-{i}"): ({0} if i % 2 == 0 else set()) for i in range(6) for org in ("org-a", "org-b", "org-c")}
    org_b = read_table(spark, cfg, "consent_state").where(F.col("org_id") == "org-b")
    assert {r["file"] for r in org_b.select(F.col("_metadata.file_path").alias("file")).collect()} == {
        f["file"] for f in files if f["first"] == "org-b"}


def _files_by_org(spark, cfg) -> list:
    return (
        read_table(spark, cfg, "consent_state")
        .groupBy(F.col("_metadata.file_path").alias("file"))
        .agg(F.min("org_id").alias("first"), F.max("org_id").alias("last"))
        .collect()
    )


def test_a_merge_writing_a_large_share_of_the_state_is_followed_by_a_clustering_optimize(spark, wide_cfg, tmp_path,
                                                                                        monkeypatch):
    from dataclasses import replace

    cfg = replace(wide_cfg, warehouse=str(tmp_path / "warehouse"))
    monkeypatch.setattr(compact_module, "_ROWS_PER_STATE_FILE", 6)
    orgs = ("org-a", "org-b", "org-c", "org-d")
    first = [(org, f"u-{i}", "alpha", True, 1) for i in range(6) for org in orgs]
    _append(spark, cfg, first, "b-1")
    compact_consent(spark, cfg)
    small = [("org-a", "u-0", "alpha", False, 2)]  # 1 of 24 rows: the MERGE's file stays
    _append(spark, cfg, small, "b-2")
    assert (compact_consent(spark, cfg).optimized, state_needs_clustering(1, 24)) == (False, False)
    assert any(f["first"] != f["last"] or f["first"] == "org-a" for f in _files_by_org(spark, cfg))
    large = [(org, f"u-{i}", "alpha", False, 3) for i in range(1, 4) for org in orgs[:3]]  # 9 of 24 rows
    _append(spark, cfg, large, "b-3")
    merged = compact_consent(spark, cfg)
    assert (merged.commit_kind, merged.optimized) == ("merge", True)
    files = _files_by_org(spark, cfg)
    assert len(files) >= 3 and sum(f["first"] != f["last"] for f in files) <= 1  # org ranges, not every org per file
    one_org = read_table(spark, cfg, "consent_state").where(F.col("org_id") == "org-c").inputFiles()
    assert len(one_org) < len(files)
    assert _state(spark, cfg) == oracle(first + small + large)


def _last_merge_metrics(spark, cfg):
    from ketch_spark.tables import delta_table

    # the latest MERGE: an OPTIMIZE may follow it (a MERGE writing a large share of the state is re-clustered)
    row = (delta_table(spark, cfg, "consent_state").history(2).where(F.col("operation") == "MERGE")
           .select("operation", "operationMetrics").head())
    assert row is not None and row["operation"] == "MERGE"
    return {key: int(value) for key, value in row["operationMetrics"].items()}


def test_few_changes_merge_with_deletion_vectors_many_rewrite_the_touched_files(spark, wide_cfg, tmp_path):
    from dataclasses import replace

    cfg = replace(wide_cfg, warehouse=str(tmp_path / "warehouse"))
    first = [("o1", f"u{i}", "alpha", True, 1) for i in range(40)]
    _append(spark, cfg, first, "b-1")
    assert compact_consent(spark, cfg).commit_kind == "overwrite"

    one_withdrawal = [("o1", "u7", "alpha", False, 2)]  # 1 of 40 rows: below the 50 % default
    _append(spark, cfg, one_withdrawal, "b-2")
    few = compact_consent(spark, cfg)
    assert (few.commit_kind, few.users_changed) == ("merge", 1)
    assert _last_merge_metrics(spark, cfg)["numTargetDeletionVectorsAdded"] >= 1

    many = [("o1", f"u{i}", "alpha", False, 3) for i in range(0, 40, 2)] + [("o1", "new", "alpha", True, 3)]
    _append(spark, cfg, many, "b-3")
    rewrite = compact_consent(spark, cfg)
    assert (rewrite.commit_kind, rewrite.users_changed, rewrite.inserted) == ("rewrite", 21, 1)
    metrics = _last_merge_metrics(spark, cfg)
    assert metrics["numTargetDeletionVectorsAdded"] == 0 and metrics["numTargetFilesRemoved"] >= 1
    # the rewritten files hold only live rows: no deletion vector is left on the state
    assert read_table(spark, cfg, "consent_state").count() == 41
    assert _state(spark, cfg) == oracle(first + one_withdrawal + many)
    compact_consent(spark, cfg, full=True)
    assert _state(spark, cfg) == oracle(first + one_withdrawal + many)


def test_commit_kind_by_changed_share_and_compacting_by_files_beyond_a_rebuild():
    assert state_commit_kind(0, 1_000, 0.5) == "none"
    assert state_commit_kind(499, 1_000, 0.5) == "merge"
    assert state_commit_kind(500, 1_000, 0.5) == "rewrite"
    assert state_commit_kind(5, 0, 0.5) == "merge"  # an empty state: the MERGE only inserts
    # a 1M-row state a rebuild writes in 4 files: up to 16 more files of earlier MERGEs are tolerated
    assert not state_needs_compacting(1_000_000, 20)
    assert state_needs_compacting(1_000_000, 21)


def test_merges_that_multiply_the_state_files_are_followed_by_an_optimize(spark, wide_cfg, tmp_path, monkeypatch):
    from dataclasses import replace

    cfg = replace(wide_cfg, warehouse=str(tmp_path / "warehouse"))
    monkeypatch.setattr(compact_module, "_EXTRA_STATE_FILES", 0)
    first = [("o1", f"u{i}", "alpha", True, 1) for i in range(20)] + [("o2", "u1", "beta", False, 1)]
    _append(spark, cfg, first, "b-1")
    assert not compact_consent(spark, cfg).optimized  # a rebuild writes the state's files itself
    change = [("o1", "u3", "alpha", False, 2), ("o2", "u9", "omega", True, 2)]
    _append(spark, cfg, change, "b-2")
    # the check reads the files the run found before its MERGE: the rebuild's one file is not too many
    first_merge = compact_consent(spark, cfg)
    assert (first_merge.commit_kind, first_merge.optimized) == ("merge", False)
    again = [("o1", "u4", "alpha", False, 3)]
    _append(spark, cfg, again, "b-3")
    merged = compact_consent(spark, cfg)  # the first MERGE's file makes two
    assert (merged.commit_kind, merged.optimized) == ("merge", True)
    from ketch_spark.tables import delta_table

    operations = [r["operation"] for r in delta_table(spark, cfg, "consent_state").history(2).collect()]
    assert operations == ["OPTIMIZE", "MERGE"]
    assert _state(spark, cfg) == oracle(first + change + again)
    assert _recorded_sizes(spark, cfg) == _measured_sizes(spark, cfg)  # an OPTIMIZE keeps the recorded sizes
    assert _recorded_rows(spark, cfg) == (read_table(spark, cfg, "consent_state").count(), True)
    delta_table(spark, cfg, "consent_state").delete("user_id = 'u5'")  # an erasure: the row count becomes a bound
    assert _recorded_rows(spark, cfg) == (read_table(spark, cfg, "consent_state").count() + 1, False)
    _append(spark, cfg, [("o1", "u6", "alpha", False, 4)], "b-4")
    compact_consent(spark, cfg)  # counts the state again and records the exact figure
    assert _recorded_rows(spark, cfg) == (read_table(spark, cfg, "consent_state").count(), True)
    assert applied_events_version(spark, cfg) == table_version(spark, cfg, "consent_events")
