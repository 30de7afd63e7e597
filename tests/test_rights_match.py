"""Attribution of matched rows to requests (``with_request_ids``) against a plain-Python oracle."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ketch_spark.connectors import Asset
from ketch_spark.connectors.base import PersonalColumn
from ketch_spark.rights.match import IDENTITIES_SCHEMA, REQUEST_ID_COLUMN, count_matches, match_plan, with_request_ids

_ORGS = ("org-a", "org-b")
_IDS = ("u-1", "u-2", "u-3", "u 4", "x'); DROP TABLE users; --")
_EMAILS = ("a@example.com", "b@example.com", "ü@example.org")
_ASSET = Asset("file", "file:///unused", "unused", "delta", personal_columns=(
    PersonalColumn("user_id", "user_id", "user_id"), PersonalColumn("emails", "email", "email")))

_rows = st.lists(st.tuples(st.sampled_from(_ORGS), st.one_of(st.none(), st.sampled_from(_IDS)),
                           st.lists(st.sampled_from(_EMAILS), max_size=3)), max_size=12)
_identities = st.lists(st.tuples(st.sampled_from(("r-1", "r-2", "r-3")), st.sampled_from(_ORGS),
                                 st.one_of(st.tuples(st.just("user_id"), st.sampled_from(_IDS)),
                                           st.tuples(st.just("email"), st.sampled_from(_EMAILS)))), max_size=6)


def _oracle(rows, identities, scoped: bool) -> set[tuple[int, str]]:
    found = set()
    for index, (org, user_id, emails) in enumerate(rows):
        for request_id, id_org, (kind, value) in identities:
            held = user_id == value if kind == "user_id" else value in emails
            if held and (not scoped or org == id_org):
                found.add((index, request_id))
    return found


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows, identities=_identities, scoped=st.booleans())
def test_matched_rows_are_attributed_and_counted_per_request_whose_identity_they_hold(spark, rows, identities, scoped):
    schema = "row int, org_id string, user_id string, emails array<string>"
    df = spark.createDataFrame([(i, *row) for i, row in enumerate(rows)], schema)
    if not scoped:
        df = df.withColumnRenamed("org_id", "tenant")
    identities_df = spark.createDataFrame([(r, o, t, v) for r, o, (t, v) in identities], IDENTITIES_SCHEMA)
    plan = match_plan(df.schema, _ASSET, identities_df.collect())
    attributed = with_request_ids(df.where(plan.condition), plan, identities_df)
    got = [(r["row"], r[REQUEST_ID_COLUMN]) for r in attributed.collect()]
    assert len(got) == len(set(got))  # one row per (row, request)
    expected = _oracle(rows, identities, scoped)
    assert set(got) == expected

    counted = count_matches(df.where(plan.condition), plan, identities_df, by="user_id")
    matched_rows = {index for index, _ in expected}
    assert counted.rows == len(matched_rows)
    assert counted.by_request == {r: sum(1 for _, q in expected if q == r) for _, r in expected}
    holders = [rows[i][1] for i in matched_rows]
    assert counted.by_value == {u: holders.count(u) for u in set(holders)}
