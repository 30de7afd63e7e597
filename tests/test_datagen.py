"""Synthetic data: deterministic, shaped like the story, defects of every kind."""

from __future__ import annotations

import json

from pyspark.sql import functions as F

from ketch_spark import datagen


def test_raw_consent_is_deterministic_and_has_every_defect(spark, policy):
    lines = datagen.generate_raw_consent(spark, policy, n_users=3000, defect_rate=0.05, seed=11)
    again = datagen.generate_raw_consent(spark, policy, n_users=3000, defect_rate=0.05, seed=11)
    values = sorted(r.value for r in lines.collect())
    assert values == sorted(r.value for r in again.collect())
    parsed, malformed = [], 0
    for value in values:
        try:
            parsed.append(json.loads(value))
        except json.JSONDecodeError:
            malformed += 1
    assert malformed > 0
    assert any("org_id" not in p for p in parsed) and any("user_id" not in p for p in parsed)
    assert any("telepathy" in p.get("purposes", {}) for p in parsed)
    assert any(p.get("purposes", {}).get("analytics") == "maybe" for p in parsed)
    assert any(p.get("ts") == "last tuesday" for p in parsed) and any(p.get("ts", "").startswith("2099") for p in parsed)
    good = [p for p in parsed if set(p) == {"org_id", "user_id", "ts", "purposes", "source"}]
    signatures = [p for p in good if len(p["purposes"]) == len(policy.active)]
    assert signatures and len(signatures) < len(good)
    per_user: dict[str, int] = {}
    for p in good:
        per_user[p["user_id"]] = per_user.get(p["user_id"], 0) + 1
    counts = sorted(per_user.values())
    assert counts[len(counts) // 2] <= 2 and counts[-1] > 2
    assert {p["org_id"] for p in good} == set(datagen.org_ids(5))


def test_csv_has_header_and_one_purpose_per_row(spark, policy, tmp_path):
    path = datagen.write_raw_consent(spark, policy, tmp_path / "csv", fmt="csv", n_users=200, defect_rate=0.0)
    text = "".join(p.read_text() for p in sorted((tmp_path / "csv").glob("part-*")))
    rows = text.splitlines()
    assert rows[0] == "org_id,user_id,ts,purpose,granted,source"
    assert all(len(r.split(",")) == 6 for r in rows[1:]) and len(rows) > 200
    assert path == str(tmp_path / "csv")


def test_user_events_profiles_and_logs(spark):
    events = datagen.generate_user_events(spark, n_rows=20_000, n_users=2_000, n_orgs=5)
    stats = events.agg(
        F.countDistinct("org_id").alias("orgs"),
        F.countDistinct("user_id").alias("users"),
        F.avg((F.col("event_type") == "PAGE_VIEW").cast("int")).alias("page_views"),
        F.max("event_day").alias("last_day"),
    ).head()
    assert stats.orgs == 5 and stats.users > 1500 and 0.3 < stats.page_views < 0.5
    sizes = sorted(r["count"] for r in events.groupBy("org_id").count().collect())
    assert sizes[-1] > 2 * sizes[0]

    profiles = datagen.generate_profiles(spark, n_users=50)
    row = profiles.where("user_id = 'u-7'").head()
    assert "@" in row.email
    check = spark.range(1).select(F.sha2(F.lower(F.trim(F.lit(row.email))), 256).alias("h")).head().h
    assert row.email_sha256 == check
    org_of_user_7 = events.where("user_id = 'u-7'").select("org_id").distinct().collect()
    assert [r.org_id for r in org_of_user_7] in ([], [row.org_id])

    logs = datagen.generate_raw_logs(spark, n_rows=200, n_users=20)
    log = json.loads(logs.select(F.to_json(F.struct("*"))).first()[0])
    assert {"ts", "org_id", "user_id", "context"} <= set(log) and "ip" in log["context"]
    assert logs.where("event = 'login'").count() == logs.where("email IS NOT NULL").count()
