"""Rights over the warehouse and the key-value store: batched erasure (delete, obfuscate) and access
through run_requests against a real PostgreSQL server and moto's DynamoDB; a table the configured role
may not write (recorded failure, then a rerun after GRANT); a conditional DynamoDB write losing to a
concurrent writer; BatchWriteItem's unprocessed items retried."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from services import (AWS_REGION, PG_SUPERUSER, PG_SUPERUSER_PASSWORD, MotoServer, PostgresServer, free_port,
                      with_connectors)

from ketch_spark.catalog import AssetCatalog
from ketch_spark.config import dsr_settings_from_mapping
from ketch_spark.connectors.base import Asset, EraseCounts, PersonalColumn
from ketch_spark.connectors.dynamodb import DynamoDbConnector
from ketch_spark.connectors.dynamodb_rights import DynamoTable
from ketch_spark.connectors.jdbc import JdbcConnector
from ketch_spark.errors import ConnectorError
from ketch_spark.rights.audit import read_audit
from ketch_spark.rights.engine import rights_assets, run_requests
from ketch_spark.rights.receipts import read_receipt_file, verify_receipt
from ketch_spark.rights.requests import read_requests, submit_requests

pytestmark = pytest.mark.services

RECEIPT_SECRET = "receipt-secret-for-store-tests-42"
HMAC_SECRET = "hmac-secret-for-store-tests-17"
ROLE, ROLE_PASSWORD = "ketch_eraser", "eraser-Secret-6c1f"
SCHEMA = "rights"
PROFILES, VISITS = "rights_profiles", "rights_visits"
PAGE_SIZE = 7

INJECTION = "x' OR '1'='1"
DROP = "x'); DROP TABLE users; --"
# key, org, user_id, email as stored, phone as stored, name
PEOPLE = [
    ("jane", "org-a", "u-1", "Jane.Doe@Example.com", "(415) 555-0101", "Jane Doe"),
    ("bob", "org-a", "u-2", "bob.smith@example.org", "+44 20 7123 4567", "Bob Smith"),
    ("jose", "org-a", "u-3", "JOSÉ.Müller@Exämple.com", "+49 30 123456", "José Müller"),
    ("eve", "org-a", INJECTION, "eve@example.net", "+33 1 42 68 53 00", "Eve Attacker"),
    ("mallory", "org-a", DROP, "mallory@example.net", "+1 212 555 0100", "Mallory"),
    ("li", "org-a", "u-6", "li.wei@example.cn", "+86 10 1234 5678", "Li Wei"),
    ("jane-b", "org-b", "u-1", "jane.doe@example.com", "+14155550101", "Jane of org b"),  # same ids, other org
    ("bob-b", "org-b", "u-2", "bob.other@example.org", "+14155550199", "Not Bob"),
] + [(f"f{i}", "org-a", f"u-{100 + i}", f"filler{i}@example.com", f"+1 415 555 {1000 + i}", f"Filler {i}")
     for i in range(20)]
ERASED = {"jane", "eve", "mallory"}  # deleted
OBFUSCATED = {"jose"}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _hmac(text: str) -> str:
    return hmac.new(HMAC_SECRET.encode(), text.encode("utf-8"), hashlib.sha256).hexdigest()


def _requests() -> list[dict[str, Any]]:
    return [
        {"request_id": "r-jane", "org_id": "org-a", "kind": "erasure", "mode": "delete",
         "identities": {"email": " JANE.doe@example.COM ", "user_id": " u-1 ", "phone": "+1 415 555 0101"}},
        {"request_id": "r-eve", "org_id": "org-a", "kind": "erasure", "mode": "delete",
         "identities": {"user_id": INJECTION}},
        {"request_id": "r-mallory", "org_id": "org-a", "kind": "erasure", "mode": "delete",
         "identities": {"user_id": DROP}},
        {"request_id": "r-nobody", "org_id": "org-a", "kind": "erasure", "mode": "delete",
         "identities": {"email": "nobody@nowhere.example"}},
        {"request_id": "r-jose", "org_id": "org-a", "kind": "erasure", "mode": "obfuscate",
         "identities": {"email": "josé.müller@exämple.com", "user_id": "u-3"}},
        {"request_id": "r-bob", "org_id": "org-a", "kind": "access",
         "identities": {"email": "Bob.Smith@Example.ORG", "user_id": "u-2"}},
    ]


# -- stores --------------------------------------------------------------------------------------------


def _seed_postgres(server: PostgresServer) -> None:
    server.execute(
        f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
        f"CREATE SCHEMA {SCHEMA}",
        f"CREATE TABLE {SCHEMA}.users (id serial PRIMARY KEY, org_id text, user_id text, email text NOT NULL, "
        "phone text, full_name text, plan text)",
        f"CREATE TABLE {SCHEMA}.locked (user_id text, customer_email_sha256 text, amount numeric(10,2), note text)",
    )
    with server.connect() as conn:
        with conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {SCHEMA}.users (org_id, user_id, email, phone, full_name, plan) VALUES (%s,%s,%s,%s,%s,%s)",
                [(org, uid, email, phone, name, "pro" if i % 2 else "free")
                 for i, (_, org, uid, email, phone, name) in enumerate(PEOPLE)])
            cursor.executemany(  # hashed emails (Jane's in upper-case hex); no org column
                f"INSERT INTO {SCHEMA}.locked VALUES (%s, %s, %s, %s)",
                [(uid, _sha(email.lower()).upper() if key == "jane" else _sha(email.lower()), Decimal("10.50") + i,
                  f"note {i}") for i, (key, _, uid, email, _, _) in enumerate(PEOPLE[:10])])
    server.execute(
        f"DROP OWNED BY {ROLE}" if _role_exists(server) else "SELECT 1",
        f"DROP ROLE IF EXISTS {ROLE}",
        f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'",
        f"GRANT USAGE ON SCHEMA {SCHEMA} TO {ROLE}",
        f"GRANT SELECT, UPDATE, DELETE ON {SCHEMA}.users TO {ROLE}",
        f"GRANT SELECT, UPDATE ON {SCHEMA}.locked TO {ROLE}",  # no DELETE: deletes there fail
    )


def _role_exists(server: PostgresServer) -> bool:
    with server.connect() as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() is not None


def _pg_rows(server: PostgresServer, table: str) -> list[tuple]:
    order = {"users": "id", "locked": "note"}[table]
    with server.connect() as conn:
        return conn.execute(f"SELECT * FROM {SCHEMA}.{table} ORDER BY {order}").fetchall()


def _profile_item(index: int, person: tuple) -> dict[str, Any]:
    key, org, uid, email, phone, name = person
    return {"pk": {"S": f"p-{index:03d}"}, "org_id": {"S": org}, "user_id": {"S": uid},
            "contact": {"M": {"email": {"S": email}, "phone": {"S": phone}}},
            "full_name": {"S": name}, "plan": {"S": "pro"}, "visits": {"N": str(index)}}


def _seed_dynamodb(moto: MotoServer) -> None:
    client = moto.client("dynamodb")
    for table, key in ((PROFILES, "pk"), (VISITS, "user_id")):
        if table in client.list_tables()["TableNames"]:
            client.delete_table(TableName=table)
        client.create_table(TableName=table, KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
    people = PEOPLE + [(f"g{i}", "org-a", f"u-{200 + i}", f"more{i}@example.com", f"+1 646 555 {2000 + i}",
                        f"More {i}") for i in range(32)]  # 60 items: several Scan pages of 7
    for index, person in enumerate(people):
        client.put_item(TableName=PROFILES, Item=_profile_item(index, person))
    for key, org, uid, *_ in PEOPLE:
        if org == "org-a":
            client.put_item(TableName=VISITS, Item={"user_id": {"S": uid}, "page": {"S": f"/home/{key}"},
                                                    "n": {"N": "3"}})


def _dynamo_items(moto: MotoServer, table: str) -> list[dict[str, Any]]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    items = []
    for page in moto.client("dynamodb").get_paginator("scan").paginate(TableName=table):
        items += [{k: deserializer.deserialize(v) for k, v in item.items()} for item in page["Items"]]
    return sorted(items, key=lambda i: str(i.get("pk", i.get("user_id"))))


def _snapshot(server: PostgresServer, moto: MotoServer) -> dict[str, list]:
    return {
        "users": _pg_rows(server, "users"),
        "locked": _pg_rows(server, "locked"),
        PROFILES: _dynamo_items(moto, PROFILES),
        VISITS: _dynamo_items(moto, VISITS),
    }


def _stores_cfg(base_config, services_connectors, root: Path, server: PostgresServer):
    connectors = {
        "jdbc": {"url": server.jdbc_url, "user": ROLE, "password": ROLE_PASSWORD},
        "dynamodb": {**services_connectors["dynamodb"], "scan_page_size": PAGE_SIZE},
    }
    cfg = with_connectors(base_config.with_warehouse(root / "wh"), connectors, catalog={"sample_rows": 100, "overrides": [
        {"asset": "*", "column": "full_name", "category": "person_name"}]})
    dsr = dsr_settings_from_mapping({
        "default_phone_region": "US",
        "obfuscate": {"columns": {"email": {"method": "hmac"}, "user_id": {"method": "hmac"}}},
    })
    return dataclasses.replace(cfg, dsr=dsr)


def _run(spark, cfg):
    os.environ["KETCH_RECEIPT_SECRET"] = RECEIPT_SECRET
    os.environ["KETCH_DSR_HMAC_SECRET"] = HMAC_SECRET
    try:
        return run_requests(spark, cfg)
    finally:
        os.environ.pop("KETCH_RECEIPT_SECRET", None)
        os.environ.pop("KETCH_DSR_HMAC_SECRET", None)


@pytest.fixture(scope="module")
def scenario(spark, postgres_server, moto_server, services_connectors, base_config, tmp_path_factory):
    """Stores seeded and catalogued; the batch run once (locked table denied), then again after GRANT."""
    _seed_postgres(postgres_server)
    _seed_dynamodb(moto_server)
    root = tmp_path_factory.mktemp("rights-stores")
    cfg = _stores_cfg(base_config, services_connectors, root, postgres_server)
    scan = AssetCatalog(spark, cfg).scan(f"{postgres_server.jdbc_url}/{SCHEMA}", f"dynamodb://{AWS_REGION}/rights_")
    assert scan.errors == 0, scan.error_assets
    before = _snapshot(postgres_server, moto_server)
    submit_requests(spark, cfg, _requests())
    first = _run(spark, cfg)
    after_first = _snapshot(postgres_server, moto_server)
    first_status = {r["request_id"]: (r["status"], r["error"]) for r in read_requests(spark, cfg).collect()}
    postgres_server.execute(f"GRANT DELETE ON {SCHEMA}.locked TO {ROLE}")
    second = _run(spark, cfg)
    after = _snapshot(postgres_server, moto_server)
    try:
        yield dict(cfg=cfg, before=before, first=first, after_first=after_first, first_status=first_status,
                   second=second, after=after)
    finally:
        postgres_server.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE", f"DROP OWNED BY {ROLE}",
                                f"DROP ROLE IF EXISTS {ROLE}")
        client = moto_server.client("dynamodb")
        for table in (PROFILES, VISITS):
            client.delete_table(TableName=table)


# -- expectations ----------------------------------------------------------------------------------------


def _person_of_user_row(row: tuple) -> str:
    return next(p[0] for p in PEOPLE if (p[1], p[2], p[3]) == (row[1], row[2], row[3]))


def test_catalog_gives_every_identity_column(spark, scenario):
    assets = {a.name: a for a in rights_assets(spark, scenario["cfg"])}
    columns = {name: {(c.column, c.identity_type) for c in a.identity_columns} for name, a in assets.items()}
    assert {("email", "email"), ("user_id", "user_id"), ("phone", "phone")} <= columns[f"{SCHEMA}.users"]
    assert {("customer_email_sha256", "email_sha256"), ("user_id", "user_id")} <= columns[f"{SCHEMA}.locked"]
    assert {("contact.email", "email"), ("contact.phone", "phone"), ("user_id", "user_id")} <= columns[PROFILES]
    assert columns[VISITS] == {("user_id", "user_id")}


def test_denied_table_is_a_recorded_failure_and_the_rest_is_done(spark, scenario):
    first, before, after_first = scenario["first"], scenario["before"], scenario["after_first"]
    assert sorted(first.failed) == ["r-eve", "r-jane", "r-mallory"]
    assert sorted(first.done) == ["r-bob", "r-jose", "r-nobody"]  # the denied table holds no row of r-nobody
    failed = [a for a in first.assets if a["status"] != "ok"]
    assert [(a["location"].rsplit("/", 1)[-1], a["action"], a["mode"]) for a in failed] == [
        (f"{SCHEMA}.locked", "erase", "delete")]
    assert "DELETE privilege" in failed[0]["error"] and f"{SCHEMA}.locked" in failed[0]["error"]
    assert [r for r in after_first["locked"] if r[3] != "note 2"] == [r for r in before["locked"] if r[3] != "note 2"]
    jose = next(r for r in after_first["locked"] if r[3] == "note 2")  # obfuscated: done despite no DELETE
    assert jose[:2] == (_hmac("u-3"), None)  # user_id: hmac; hashed email: its category's rule (default null)
    assert jose[2] == next(r[2] for r in before["locked"] if r[3] == "note 2")
    assert len(after_first["users"]) == len(before["users"]) - len(ERASED)  # the other tables are done
    statuses = scenario["first_status"]
    assert statuses["r-jane"][0] == "failed" and "locked" in statuses["r-jane"][1]
    assert "jane" not in statuses["r-jane"][1].lower()


def test_rerun_after_grant_finishes_only_what_was_left(spark, scenario):
    second = scenario["second"]
    assert sorted(second.done) == ["r-eve", "r-jane", "r-mallory"] and not second.failed
    touched = {(a["location"].rsplit("/", 1)[-1], a["action"]) for a in second.assets}
    assert touched == {(f"{SCHEMA}.locked", "erase"), (f"{SCHEMA}.locked", "verify")}
    assert [r[0] for r in scenario["after"]["locked"]] == [r[0] for r in scenario["after_first"]["locked"]
                                                          if r[0] not in ("u-1", INJECTION, DROP)]
    statuses = {r["request_id"]: r["status"] for r in read_requests(spark, scenario["cfg"]).collect()}
    assert set(statuses.values()) == {"done"}


def test_postgres_erased_subjects_are_gone_and_other_rows_unchanged(scenario):
    before, after = scenario["before"], scenario["after"]
    kept = [r for r in before["users"] if _person_of_user_row(r) not in ERASED | OBFUSCATED]
    assert [r for r in after["users"] if r[2] != _hmac("u-3")] == kept
    assert {_person_of_user_row(r) for r in before["users"]} - {_person_of_user_row(r) for r in kept} == \
        ERASED | OBFUSCATED
    assert any(r[1] == "org-b" and r[2] == "u-1" for r in after["users"])  # Jane's ids in another org: kept
    gone = {"note 0", "note 3", "note 4", "note 6"}  # u-1 twice (no org column: both orgs' rows), Eve, Mallory
    assert [r for r in after["locked"] if r[3] != "note 2"] == [r for r in before["locked"]
                                                                if r[3] not in gone | {"note 2"}]
    jane_sha = _sha("jane.doe@example.com")
    assert not any(r[1] and r[1].lower() == jane_sha for r in after["locked"])


def test_postgres_obfuscation_follows_the_rules(scenario):
    before, after = scenario["before"], scenario["after"]
    jose_before = next(r for r in before["users"] if r[2] == "u-3")
    jose = next(r for r in after["users"] if r[0] == jose_before[0])
    assert jose[2] == _hmac("u-3") and jose[3] == _hmac("JOSÉ.Müller@Exämple.com")  # hmac of the stored value
    assert jose[4] is None and jose[5] is None  # phone, full name: the default rule (null)
    assert jose[1] == "org-a" and jose[6] == jose_before[6]  # not personal: kept


def test_dynamodb_erased_subjects_are_gone_and_other_items_unchanged(scenario):
    before, after = scenario["before"], scenario["after"]
    subjects = {p[2] for p in PEOPLE if p[0] in ERASED | OBFUSCATED}

    def subject(item: dict) -> bool:
        return item["org_id"] == "org-a" and item["user_id"] in subjects

    assert len(before[PROFILES]) == 60
    assert [i for i in after[PROFILES] if i["pk"] != "p-002"] == [i for i in before[PROFILES] if not subject(i)]
    assert sorted(i["user_id"] for i in after[VISITS]) == sorted(
        [i["user_id"] for i in before[VISITS] if i["user_id"] not in subjects] + [_hmac("u-3")])
    jose = next(i for i in after[PROFILES] if i["pk"] == "p-002")
    assert jose["contact"] == {"email": _hmac("JOSÉ.Müller@Exämple.com"), "phone": None}
    assert jose["user_id"] == _hmac("u-3") and jose["full_name"] is None
    assert jose["plan"] == "pro" and jose["visits"] == 2
    visit = next(i for i in after[VISITS] if i["user_id"] == _hmac("u-3"))
    assert visit["page"] == "/home/jose"  # the key changed: the item was replaced, its other attributes kept


def test_audit_counts_come_from_the_stores(spark, scenario):
    rows = read_audit(spark, scenario["cfg"]).where("action = 'erase' AND status = 'ok'").collect()
    by_name = {(r["location"].rsplit("/", 1)[-1], r["mode"]): r for r in rows if r["rows_changed"]}
    # the denied table, for the request it holds no row of: done in the first run, nothing to erase
    nothing = [r for r in rows if r["location"].endswith(f"{SCHEMA}.locked") and not r["rows_changed"]]
    assert [(r["request_ids"], r["rows_matched"]) for r in nothing] == [(["r-nobody"], 0)]
    users = by_name[(f"{SCHEMA}.users", "delete")]
    assert users["rows_changed"] == users["rows_matched"] == 3
    assert users["rows_by_request"] == {"r-jane": 1, "r-eve": 1, "r-mallory": 1}
    locked = by_name[(f"{SCHEMA}.locked", "delete")]
    assert locked["rows_changed"] == 4 and locked["rows_by_request"] == {"r-jane": 2, "r-eve": 1, "r-mallory": 1}
    profiles = by_name[(PROFILES, "delete")]
    assert profiles["rows_changed"] == 3 and profiles["rows_by_request"] == {"r-jane": 1, "r-eve": 1,
                                                                             "r-mallory": 1}
    visits = by_name[(VISITS, "delete")]
    assert visits["rows_changed"] == 3
    assert by_name[(PROFILES, "obfuscate")]["rows_changed"] == 1 and by_name[(VISITS, "obfuscate")]["rows_changed"] == 1
    receipt = read_receipt_file(scenario["second"].receipts["r-jane"])
    assert verify_receipt(receipt, RECEIPT_SECRET.encode())
    assert {a["location"].rsplit("/", 1)[-1] for a in receipt["assets"]} == {
        f"{SCHEMA}.users", f"{SCHEMA}.locked", PROFILES, VISITS}
    assert all(a["verified"] for a in receipt["assets"])
    assert receipt["rows_erased"] == 1 + 2 + 1 + 1  # users, locked (both orgs' u-1), profiles, visits


def test_exports_hold_exactly_the_subjects_rows(scenario):
    folder = Path(scenario["first"].exports["r-bob"])
    manifest = json.loads((folder / "manifest.json").read_text())
    by_name = {a["location"].rsplit("/", 1)[-1]: a for a in manifest["assets"]}
    assert {name: a["rows"] for name, a in by_name.items() if a["rows"]} == {
        f"{SCHEMA}.users": 1, f"{SCHEMA}.locked": 2, PROFILES: 1, VISITS: 1}  # locked has no org column
    users = [json.loads(line) for line in (folder / by_name[f"{SCHEMA}.users"]["file"]).read_text().splitlines()]
    assert users == [{"id": users[0]["id"], "org_id": "org-a", "user_id": "u-2", "email": "bob.smith@example.org",
                      "phone": "+44 20 7123 4567", "full_name": "Bob Smith", "plan": "pro"}]
    locked = [json.loads(line) for line in (folder / by_name[f"{SCHEMA}.locked"]["file"]).read_text().splitlines()]
    assert sorted((r["note"], r["amount"]) for r in locked) == [("note 1", 11.5), ("note 7", 17.5)]  # both u-2
    profiles = [json.loads(line) for line in (folder / by_name[PROFILES]["file"]).read_text().splitlines()]
    assert profiles == [{"pk": "p-001", "org_id": "org-a", "user_id": "u-2", "full_name": "Bob Smith",
                         "contact": {"email": "bob.smith@example.org", "phone": "+44 20 7123 4567"},
                         "plan": "pro", "visits": 1}]
    visits = [json.loads(line) for line in (folder / by_name[VISITS]["file"]).read_text().splitlines()]
    assert visits == [{"user_id": "u-2", "page": "/home/bob", "n": 3}]


def test_injection_strings_match_only_themselves(scenario):
    before, after = scenario["before"], scenario["after"]
    assert len(after["users"]) == len(before["users"]) - len(ERASED)  # rights.users still there, not emptied
    assert not any(INJECTION in str(r) or DROP in str(r) for table in ("users", "locked", PROFILES)
                   for r in after[table])


# -- DynamoDB writes, unit level ------------------------------------------------------------------------


def _identities(spark, *rows: tuple[str, str, str, str]):
    from ketch_spark.rights.match import IDENTITIES_SCHEMA

    return spark.createDataFrame(list(rows), IDENTITIES_SCHEMA)


def test_dynamodb_conditional_delete_loses_to_a_concurrent_writer(spark, moto_server, services_connectors,
                                                                   base_config, tmp_path):
    client = moto_server.client("dynamodb")
    table = "rights_concurrent"
    client.create_table(TableName=table, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    try:
        for pk, email in (("a", "Ann@Example.com"), ("b", "ann@example.com "), ("c", "carl@example.com")):
            client.put_item(TableName=table, Item={"pk": {"S": pk}, "contact": {"M": {"email": {"S": email}}}})
        cfg = with_connectors(base_config.with_warehouse(tmp_path / "wh"), services_connectors)
        connector = DynamoDbConnector(spark, cfg)
        asset = dataclasses.replace(connector.discover(f"dynamodb://{AWS_REGION}/{table}")[0],
                                    personal_columns=(PersonalColumn("contact.email", "email", "email"),))
        identities = _identities(spark, ("r-1", "org-a", "email", "ann@example.com")).collect()
        matched = list(DynamoTable(connector, asset, identities).matched_items(full=False))
        assert sorted(f.item["pk"]["S"] for f in matched) == ["a", "b"]
        client.put_item(TableName=table, Item={"pk": {"S": "a"}, "contact": {"M": {"email": {"S": "new@x.org"}}}})
        counts = EraseCounts()
        DynamoTable(connector, asset, identities).delete(matched, counts)
        assert counts.rows_changed == 1 and "no longer matches" in counts.notes[0]
        left = {i["pk"]["S"] for i in client.scan(TableName=table)["Items"]}
        assert left == {"a", "c"}  # the concurrent write to a won; b is gone
    finally:
        client.delete_table(TableName=table)


class _FlakyClient:
    """A DynamoDB client stand-in whose BatchWriteItem leaves items unprocessed twice."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        requests = next(iter(RequestItems.values()))
        self.calls.append(len(requests))
        if len(self.calls) <= 2:
            return {"UnprocessedItems": {"t": requests[1:]}}
        return {"UnprocessedItems": {}}


def test_batch_write_retries_unprocessed_items_with_backoff():
    table = DynamoTable.__new__(DynamoTable)
    table.client, table.name = _FlakyClient(), "t"
    table._batch_delete([{"pk": {"S": str(i)}} for i in range(5)])
    assert table.client.calls == [5, 4, 3]


NORMALISATION_CASES = {
    "email": [" Jane.Doe@Example.COM ", "JOSÉ.Müller@EXÄMPLE.com", "\tTab@Example.org", "ÅSA@Œuvre.fr"],
    "email_sha256": [" 5A359F2CCCED725A7A859BA6CD7ABA7FA298B957509BE4C90D95B4E12A8EC716 "],
    "phone": ["(415) 555-0101", "+44 20 7123 4567", "0044 20 7123 4567", "0415 555 0101", " +1-212-555-0100 ",
              "", "call me"],
    "user_id": [" u-1 ", INJECTION, DROP, "\u00a0u-2"],
}


@pytest.mark.parametrize("identity_type", sorted(NORMALISATION_CASES))
def test_store_normalisation_equals_match_py(spark, postgres_server, identity_type):
    from pyspark.sql import functions as F

    from ketch_spark.connectors.dynamodb_rights import _normal_forms
    from ketch_spark.connectors.jdbc_rights import key_sql as _key_sql, unicode_collation as _unicode_collation
    from ketch_spark.rights.match import normalised_key

    values = NORMALISATION_CASES[identity_type]
    rows = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, v string") \
        .select("i", normalised_key(F.col("v"), identity_type, "1").alias("k")).orderBy("i").collect()
    expected = [r["k"] for r in rows]
    with postgres_server.connect() as conn:
        sql = f"SELECT {_key_sql('v', identity_type, _unicode_collation(conn))} " \
              "FROM unnest(%(values)s::text[]) WITH ORDINALITY AS u(v, i) ORDER BY i"
        in_postgres = [r[0] for r in conn.execute(sql, {"values": values, "cc": "+1"}).fetchall()]
    in_dynamodb = [(_normal_forms(v, identity_type, "+1") or [None])[0] for v in values]
    assert in_postgres == expected and in_dynamodb == expected


def test_unreachable_warehouse_is_a_connector_error_naming_the_table(spark, base_config, tmp_path):
    url = f"jdbc:postgresql://127.0.0.1:{free_port()}/warehouse"
    cfg = with_connectors(base_config.with_warehouse(tmp_path / "wh"),
                          {"jdbc": {"url": url, "user": ROLE, "password": ROLE_PASSWORD, "connect_timeout": 2}})
    asset = Asset("postgres", f"{url}/{SCHEMA}.users", f"{SCHEMA}.users", "jdbc",
                  properties={"url": url, "table": f"{SCHEMA}.users"},
                  personal_columns=(PersonalColumn("email", "email", "email"),))
    identities = _identities(spark, ("r-1", "org-a", "email", "ann@example.com"))
    with pytest.raises(ConnectorError, match=rf"erase {SCHEMA}\.users: cannot connect") as raised:
        JdbcConnector(spark, cfg).erase(asset, identities, "delete")
    assert ROLE_PASSWORD not in str(raised.value)


def test_a_failed_commit_fails_every_table_of_the_database(spark, postgres_server, base_config, tmp_path):
    """A deferred foreign key fails at COMMIT: the other table's erasure, in the same transaction, is undone too."""
    schema = "rights_commit"
    postgres_server.execute(
        f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"CREATE SCHEMA {schema}",
        f"CREATE TABLE {schema}.customers (id int PRIMARY KEY, email text)",
        f"CREATE TABLE {schema}.orders (id int PRIMARY KEY, customer_id int REFERENCES {schema}.customers (id) "
        "DEFERRABLE INITIALLY DEFERRED, buyer_email text)",
        f"CREATE TABLE {schema}.newsletter (email text)",
        f"INSERT INTO {schema}.customers VALUES (1, 'ann@example.com'), (2, 'bob@example.com')",
        f"INSERT INTO {schema}.orders VALUES (10, 1, 'someone.else@example.com')",
        f"INSERT INTO {schema}.newsletter VALUES ('ann@example.com'), ('bob@example.com')",
    )
    try:
        url = postgres_server.jdbc_url
        cfg = with_connectors(base_config.with_warehouse(tmp_path / "wh"),
                              {"jdbc": {"url": url, "user": PG_SUPERUSER, "password": PG_SUPERUSER_PASSWORD}})
        connector = JdbcConnector(spark, cfg)
        assets = {a.name.split(".")[1]: dataclasses.replace(a, personal_columns=(PersonalColumn("email", "email",
                                                                                                "email"),))
                  for a in connector.discover(f"{url}/{schema}")}
        identities = _identities(spark, ("r-1", "org-a", "email", "ann@example.com"))
        results = connector.erase_all([(assets["newsletter"], identities, "delete"),
                                       (assets["customers"], identities, "delete")])
        assert all(isinstance(r, ConnectorError) and "did not commit" in str(r) for r in results), results
        assert "ann@example.com" not in str(results[0]).lower()
        with postgres_server.connect() as conn:
            assert conn.execute(f"SELECT count(*) FROM {schema}.newsletter").fetchone()[0] == 2  # undone
            assert conn.execute(f"SELECT count(*) FROM {schema}.customers").fetchone()[0] == 2
        results = connector.erase_all([(assets["newsletter"], identities, "delete"),
                                       (assets["orders"], identities, "delete")])
        assert [r.rows_changed for r in results] == [1, 0]
    finally:
        postgres_server.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_dynamodb_partition_key_with_sort_key_is_erased_by_query(spark, moto_server, services_connectors,
                                                                   base_config, tmp_path):
    client = moto_server.client("dynamodb")
    table = "rights_sorted"
    client.create_table(TableName=table, KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"},
                                                    {"AttributeName": "ts", "KeyType": "RANGE"}],
                        AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"},
                                              {"AttributeName": "ts", "AttributeType": "N"}],
                        BillingMode="PAY_PER_REQUEST")
    try:
        for user_id, ts in (("u-1", 1), ("u-1", 2), ("u-2", 1), (INJECTION, 1)):
            client.put_item(TableName=table, Item={"user_id": {"S": user_id}, "ts": {"N": str(ts)}})
        cfg = with_connectors(base_config.with_warehouse(tmp_path / "wh"), services_connectors)
        connector = DynamoDbConnector(spark, cfg)
        asset = dataclasses.replace(connector.discover(f"dynamodb://{AWS_REGION}/{table}")[0],
                                    personal_columns=(PersonalColumn("user_id", "user_id", "user_id"),))
        identities = _identities(spark, ("r-1", "org-a", "user_id", "u-1"), ("r-2", "org-a", "user_id", INJECTION))
        counts = connector.erase(asset, identities, "delete")
        assert (counts.rows_matched, counts.rows_changed, counts.rows_by_request) == (3, 3, {"r-1": 2, "r-2": 1})
        assert connector.verify(asset, identities).remaining == 0
        assert [i["user_id"]["S"] for i in client.scan(TableName=table)["Items"]] == ["u-2"]
    finally:
        client.delete_table(TableName=table)


def test_resurrected_subjects_in_postgres_and_dynamodb_are_erased_again(spark, scenario, postgres_server, moto_server):
    """After the batch: Jane's row and item come back (a restore); the next run erases them and says so."""
    cfg = scenario["cfg"]
    _, org, uid, email, phone, name = PEOPLE[0]
    postgres_server.execute(
        f"INSERT INTO {SCHEMA}.users (org_id, user_id, email, phone, full_name, plan) "
        f"VALUES ('{org}', '{uid}', '{email}', '{phone}', '{name}', 'free')")
    moto_server.client("dynamodb").put_item(TableName=PROFILES, Item=_profile_item(999, PEOPLE[0]))
    before = {t: len(rows) for t, rows in _snapshot(postgres_server, moto_server).items()}
    swept = _run(spark, cfg)
    found = {r["location"].rsplit("/", 1)[-1]: r for r in swept.resurrected}
    assert {name: (r["status"], r["requests"], r["rows_changed"]) for name, r in found.items()} == {
        f"{SCHEMA}.users": ("ok", ["r-jane"], 1), PROFILES: ("ok", ["r-jane"], 1)}
    after = _snapshot(postgres_server, moto_server)
    assert {t: len(rows) for t, rows in after.items()} == {**before, "users": before["users"] - 1,
                                                           PROFILES: before[PROFILES] - 1}
    assert not [r for r in after["users"] if r[2] == uid and r[1] == org]
    assert swept.ledger_unchecked == []
    assert _run(spark, cfg).resurrected == []
