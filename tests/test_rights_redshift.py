"""The warehouse connector's Redshift dialect, run against PostgreSQL made to answer like Redshift.

No Redshift runs here. Two databases on the test server get the same tables
and rows: one is reached as ``jdbc:postgresql://`` (the PostgreSQL path), the
other as ``jdbc:redshift://``; the second has a schema first in its search
path that gives PostgreSQL what the Redshift path calls and PostgreSQL lacks or
spells otherwise: ``sha2(text, int)``, a three-argument ``regexp_replace`` that
replaces every match (Redshift's), and a ``svv_table_info`` view. The
statements the Redshift path sends are recorded and must not use what Redshift
lacks (ctid, COPY, to_jsonb, TRUNCATE in a transaction, ON COMMIT, savepoints,
arrays as parameters, PostgreSQL's ``text`` cast); the outcomes (rows erased,
obfuscated, exported, counts) must equal the PostgreSQL path's on the same data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any

import psycopg
import pytest
from services import PG_SUPERUSER, PG_SUPERUSER_PASSWORD, PostgresServer, with_connectors

from ketch_spark.config import dsr_settings_from_mapping
from ketch_spark.connectors.base import EraseCounts, PersonalColumn
from ketch_spark.connectors.jdbc import JdbcConnector
from ketch_spark.errors import ConnectorError, ObfuscationError
from ketch_spark.rights.match import IDENTITIES_SCHEMA

pytestmark = pytest.mark.services

PG_DB, RS_DB, SCHEMA = "dialect_pg", "dialect_rs", "crm"
INJECTION, DROP = "x' OR '1'='1", "x'); DROP TABLE users; --"
# org, user_id, email as stored, phone as stored, name
PEOPLE = [
    ("org-a", "u-1", "Jane.Doe@Example.com", "(415) 555-0101", "Jane Doe"),
    ("org-a", "u-2", "bob.smith@example.org", "+44 20 7123 4567", "Bob Smith"),
    ("org-a", "u-3", "JOSÉ.Müller@Exämple.com", "+49 30 123456", "José Müller"),
    ("org-a", INJECTION, "eve@example.net", "+33 1 42 68 53 00", "Eve"),
    ("org-a", DROP, "mallory@example.net", "+1 212 555 0100", "Mallory"),
    ("org-b", "u-1", "jane.doe@example.com", "+14155550101", "Jane of org b"),
    ("org-a", "u-9", "jane.doe@example.com", "(415) 555-0101", "Jane's second account"),
] + [("org-a", f"u-{100 + i}", f"filler{i}@example.com", f"+1 415 555 {1000 + i}", f"Filler {i}") for i in range(12)]
# identities of the batch, normalised as the rights engine hands them over: (request, org, type, value)
BATCH = [
    ("r-jane", "org-a", "email", "jane.doe@example.com"),
    ("r-jane", "org-a", "phone", "+14155550101"),
    ("r-eve", "org-a", "user_id", INJECTION),
    ("r-mallory", "org-a", "user_id", DROP),
    ("r-jose", "org-a", "email", "josé.müller@exämple.com"),
    ("r-nobody", "org-a", "email", "nobody@example.com"),
]
#: What Redshift lacks; none of it may reach the server from the Redshift path.
NOT_REDSHIFT = {
    "ctid": re.compile(r"\bctid\b", re.I),
    "COPY": re.compile(r"^\s*COPY\b", re.I),
    "to_jsonb": re.compile(r"\bto_jsonb\b", re.I),
    "TRUNCATE": re.compile(r"^\s*TRUNCATE\b", re.I),
    "ON COMMIT": re.compile(r"\bON COMMIT\b", re.I),
    "SAVEPOINT": re.compile(r"\bSAVEPOINT\b", re.I),
    "array parameter": re.compile(r"ALL\(%\(", re.I),
    "::text": re.compile(r"::text\b", re.I),
    "regexp flags": re.compile(r"regexp_replace\([^;]*,\s*'g'\)", re.I),
    "pg_stat": re.compile(r"\bpg_stat_|\bpg_total_relation_size\b|\bpg_index\b", re.I),
    "gen_random_uuid": re.compile(r"\bgen_random_uuid\b", re.I),
    "convert_to": re.compile(r"\bconvert_to\b", re.I),
}
REDSHIFT_SHIMS = [
    "CREATE SCHEMA redshift_shim",
    "CREATE FUNCTION redshift_shim.sha2(value text, bits int) RETURNS text LANGUAGE sql IMMUTABLE AS "
    "$$ SELECT CASE WHEN bits = 256 THEN encode(sha256(convert_to(value, 'UTF8')), 'hex') END $$",
    "CREATE FUNCTION redshift_shim.regexp_replace(source text, pattern text, replacement text) RETURNS text "
    "LANGUAGE sql IMMUTABLE AS $$ SELECT pg_catalog.regexp_replace(source, pattern, replacement, 'g') $$",
    'CREATE VIEW redshift_shim.svv_table_info AS SELECT n.nspname::text AS "schema", c.relname::text AS "table", '
    "greatest(c.reltuples, 0)::bigint AS tbl_rows, 1::bigint AS size FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'",
    "GRANT USAGE ON SCHEMA redshift_shim TO PUBLIC",
    "GRANT SELECT ON redshift_shim.svv_table_info TO PUBLIC",
]


def _seed(server: PostgresServer, db: str, redshift: bool) -> None:
    server.execute(f"DROP DATABASE IF EXISTS {db}", f"CREATE DATABASE {db}", dbname="postgres")
    if redshift:
        server.execute(*REDSHIFT_SHIMS, f"ALTER DATABASE {db} SET search_path = redshift_shim, pg_catalog, public",
                       dbname=db)
    server.execute(
        f"CREATE SCHEMA {SCHEMA}",
        f"CREATE TABLE {SCHEMA}.users (id int PRIMARY KEY, org_id varchar(16), user_id varchar(64), "
        "email varchar(128) NOT NULL, phone varchar(32), full_name varchar(64), signed_up timestamp, "
        "balance numeric(10,2))",
        f"CREATE TABLE {SCHEMA}.events (user_id varchar(64), email varchar(128), kind varchar(16))",  # no key
        dbname=db,
    )
    with server.connect(dbname=db) as conn, conn.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {SCHEMA}.users VALUES (%s, %s, %s, %s, %s, %s, "
            "timestamp '2024-01-02 03:04:05' + %s * interval '1 day', %s)",
            [(i, org, uid, email, phone, name, i, f"{i}.25") for i, (org, uid, email, phone, name) in enumerate(PEOPLE)])
        cursor.executemany(  # duplicate rows: equal in every column, both the subject's
            f"INSERT INTO {SCHEMA}.events VALUES (%s, %s, %s)",
            [(uid, email, kind) for _, uid, email, _, _ in PEOPLE for kind in ("view", "view", "buy")])


class RecordingConnector(JdbcConnector):
    """The connector, with every statement it sends recorded."""

    statements: list[str] = []

    def _connect(self, source):  # noqa: ANN001, ANN202
        conn = super()._connect(source)
        return _Recording(conn, self.statements)


class _Recording:
    """A psycopg connection or cursor whose statements go to ``log`` before they are sent (its cursors too)."""

    def __init__(self, target: Any, log: list[str]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_log", log)

    def _sent(self, method: str, statement, *args, **kwargs):  # noqa: ANN001, ANN202
        self._log.append(str(statement))
        return getattr(self._target, method)(statement, *args, **kwargs)

    def execute(self, query, *args, **kwargs):  # noqa: ANN001, ANN201
        return self._sent("execute", query, *args, **kwargs)

    def executemany(self, query, *args, **kwargs):  # noqa: ANN001, ANN201
        return self._sent("executemany", query, *args, **kwargs)

    def copy(self, statement, *args, **kwargs):  # noqa: ANN001, ANN201
        return self._sent("copy", statement, *args, **kwargs)

    def cursor(self, *args, **kwargs):  # noqa: ANN201
        return _Recording(self._target.cursor(*args, **kwargs), self._log)

    def transaction(self, *args, **kwargs):  # noqa: ANN201
        # a nested block is a savepoint in psycopg: record it as the statement it sends
        if self._target.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._log.append("SAVEPOINT (nested transaction block)")
        return self._target.transaction(*args, **kwargs)

    def __enter__(self):  # noqa: ANN204
        return self

    def __exit__(self, *exc):  # noqa: ANN002, ANN204
        return self._target.__exit__(*exc)

    def __getattr__(self, name):  # noqa: ANN001, ANN204
        return getattr(self._target, name)

    def __setattr__(self, name, value):  # noqa: ANN001
        setattr(self._target, name, value)


def _url(server: PostgresServer, db: str, scheme: str) -> str:
    return f"jdbc:{scheme}://127.0.0.1:{server.port}/{db}"


def _cfg(base_config, tmp_path, server: PostgresServer, db: str, scheme: str, rules: dict[str, Any]):
    cfg = with_connectors(base_config.with_warehouse(tmp_path / f"wh-{scheme}"), {
        "jdbc": {"url": _url(server, db, scheme), "user": PG_SUPERUSER, "password": PG_SUPERUSER_PASSWORD}})
    return dataclasses.replace(cfg, dsr=dsr_settings_from_mapping({
        "default_phone_region": "US", "obfuscate": {"columns": rules}}))


IDENTITY_COLUMNS = {
    "users": (PersonalColumn("user_id", "user_id", "user_id"), PersonalColumn("email", "email", "email"),
              PersonalColumn("phone", "phone", "phone"), PersonalColumn("full_name", "person_name", None)),
    "events": (PersonalColumn("user_id", "user_id", "user_id"), PersonalColumn("email", "email", "email")),
}


def _assets(connector: JdbcConnector, url: str) -> dict[str, Any]:
    return {a.name.split(".")[1]: dataclasses.replace(a, personal_columns=IDENTITY_COLUMNS[a.name.split(".")[1]])
            for a in connector.discover(f"{url}/{SCHEMA}")}


def _rows(server: PostgresServer, db: str, table: str) -> list[tuple]:
    order = "id" if table == "users" else "user_id, email, kind"
    with server.connect(dbname=db) as conn:
        return conn.execute(f"SELECT * FROM {SCHEMA}.{table} ORDER BY {order}").fetchall()


@pytest.fixture(scope="module")
def dialects(spark, postgres_server, base_config, tmp_path_factory):
    """Both databases seeded; a connector for each; the Redshift path's statements recorded."""
    root = tmp_path_factory.mktemp("dialects")
    for db, redshift in ((PG_DB, False), (RS_DB, True)):
        _seed(postgres_server, db, redshift)
    rules = {"email": {"method": "sha256"}, "full_name": {"method": "constant", "value": "(erased)"},
             "phone": {"method": "null"}}
    RecordingConnector.statements = []
    connectors = {
        "postgresql": JdbcConnector(spark, _cfg(base_config, root, postgres_server, PG_DB, "postgresql", rules)),
        "redshift": RecordingConnector(spark, _cfg(base_config, root, postgres_server, RS_DB, "redshift", rules)),
    }
    assets = {name: _assets(c, _url(postgres_server, db, name))
              for (name, c), db in zip(connectors.items(), (PG_DB, RS_DB))}
    yield connectors, assets
    for db in (PG_DB, RS_DB):
        postgres_server.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", dbname="postgres")


def _identities(spark, rows=BATCH):
    return spark.createDataFrame(list(rows), IDENTITIES_SCHEMA)


def test_discovery_reads_keys_and_sizes_from_redshift_catalog_views(dialects):
    _, assets = dialects
    users, events = assets["redshift"]["users"], assets["redshift"]["events"]
    assert users.location.startswith("jdbc:redshift://") and users.properties["primary_key"] == "id"
    assert events.properties["primary_key"] == ""
    assert users.schema.fieldNames() == assets["postgresql"]["users"].schema.fieldNames()
    assert users.row_estimate is not None and users.size_bytes == 1048576  # svv_table_info: size in 1 MB blocks


def test_access_exports_the_same_rows_as_postgresql(spark, dialects):
    connectors, assets = dialects
    found = {}
    for name, connector in connectors.items():
        rows = connector.find(assets[name]["users"], _identities(spark)).collect()
        found[name] = sorted((r["_request_id"], r["id"], r["email"], r["signed_up"], r["balance"]) for r in rows)
    assert found["redshift"] == found["postgresql"]
    assert {(rid, uid) for rid, uid, *_ in found["redshift"]} == {
        ("r-jane", 0), ("r-jane", 6), ("r-eve", 3), ("r-mallory", 4), ("r-jose", 2)}


def test_erasure_changes_the_same_rows_with_the_same_counts(postgres_server, spark, dialects):
    connectors, assets = dialects
    results = {}
    for name, connector in connectors.items():
        work = [(assets[name]["users"], _identities(spark), "obfuscate"), (assets[name]["events"], _identities(spark),
                                                                           "delete")]
        results[name] = connector.erase_all(work)
        assert all(isinstance(r, EraseCounts) for r in results[name]), results[name]
    (pg_users, pg_events), (rs_users, rs_events) = results["postgresql"], results["redshift"]
    assert (rs_users.rows_matched, rs_users.rows_changed, rs_users.rows_by_request) == \
        (pg_users.rows_matched, pg_users.rows_changed, pg_users.rows_by_request)
    assert rs_users.rows_by_request == {"r-jane": 2, "r-eve": 1, "r-mallory": 1, "r-jose": 1}
    # duplicate rows (equal in every column) are each counted and each deleted; events has no org column, so
    # org b's Jane (same email) goes too: 6 people x 3 rows
    assert (rs_events.rows_matched, rs_events.rows_changed) == (pg_events.rows_matched, pg_events.rows_changed) == \
        (18, 18)
    assert rs_events.rows_by_request == pg_events.rows_by_request
    for table in ("users", "events"):
        assert _rows(postgres_server, RS_DB, table) == _rows(postgres_server, PG_DB, table)
    users = {row[0]: row for row in _rows(postgres_server, RS_DB, "users")}
    jane = users[0]
    assert jane[3] == hashlib.sha256(b"Jane.Doe@Example.com").hexdigest() and jane[4] is None
    assert jane[5] == "(erased)"
    assert users[1][3] == "bob.smith@example.org" and users[5][3] == "jane.doe@example.com"  # others, org b kept
    remaining = {name: [connector.verify(assets[name][table], _identities(spark)).remaining
                        for table in ("users", "events")] for name, connector in connectors.items()}
    assert remaining["redshift"] == remaining["postgresql"] == [0, 0]


def test_redshift_path_sends_nothing_redshift_lacks(dialects):
    statements = RecordingConnector.statements
    assert any("DELETE FROM" in s and "USING" in s for s in statements)
    assert any(s.lstrip().startswith("INSERT INTO _ketch_identities") for s in statements)
    used = {name: [s for s in statements if pattern.search(s)] for name, pattern in NOT_REDSHIFT.items()}
    assert not {name: found for name, found in used.items() if found}


def test_hmac_is_refused_on_redshift_with_what_to_use_instead(spark, postgres_server, base_config, tmp_path,
                                                               dialects):
    cfg = _cfg(base_config, tmp_path, postgres_server, RS_DB, "redshift", {"email": {"method": "hmac"}})
    connector = JdbcConnector(spark, cfg)
    users = dataclasses.replace(dialects[1]["redshift"]["users"], personal_columns=IDENTITY_COLUMNS["users"])
    os.environ["KETCH_DSR_HMAC_SECRET"] = "a-secret-for-the-dialect-test"
    try:
        [result] = connector.erase_all([(users, _identities(spark, BATCH[-1:]), "obfuscate")])
    finally:
        os.environ.pop("KETCH_DSR_HMAC_SECRET", None)
    assert isinstance(result, ObfuscationError)
    assert "hmac is not available on Redshift" in str(result) and "use sha256" in str(result)


def test_a_failed_statement_rolls_back_every_table_on_redshift(spark, postgres_server, dialects):
    """No savepoints on Redshift: one table's failed statement undoes the other's erasure, and both fail."""
    connectors, assets = dialects
    connector = connectors["redshift"]
    postgres_server.execute(f"CREATE TABLE {SCHEMA}.audit_copy (email varchar(128))",
                            f"INSERT INTO {SCHEMA}.audit_copy VALUES ('bob.smith@example.org')",
                            f"CREATE TABLE {SCHEMA}.guarded (email varchar(128) CHECK (email LIKE '%@%'))",
                            f"INSERT INTO {SCHEMA}.guarded VALUES ('bob.smith@example.org')", dbname=RS_DB)
    try:
        found = {a.name.split(".")[1]: a for a in connector.discover(f"{_url(postgres_server, RS_DB, 'redshift')}"
                                                                      f"/{SCHEMA}")}
        email = (PersonalColumn("email", "email", "email"),)
        copy_asset = dataclasses.replace(found["audit_copy"], personal_columns=email)
        guarded = dataclasses.replace(found["guarded"], personal_columns=email)
        cfg = dataclasses.replace(connector.cfg, dsr=dsr_settings_from_mapping({
            "obfuscate": {"columns": {"email": {"method": "constant", "value": "no-at-sign"}}}}))
        bob = _identities(spark, [("r-bob", "org-a", "email", "bob.smith@example.org")])
        results = JdbcConnector(spark, cfg).erase_all([(copy_asset, bob, "delete"), (guarded, bob, "obfuscate")])
        assert all(isinstance(r, ConnectorError) for r in results), results
        assert "rolled back" in str(results[0]) and "guarded" in str(results[0])
        with postgres_server.connect(dbname=RS_DB) as conn:
            assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.audit_copy").fetchone()[0] == 1  # undone
    finally:
        postgres_server.execute(f"DROP TABLE {SCHEMA}.audit_copy, {SCHEMA}.guarded", dbname=RS_DB)


def test_redshift_url_needs_its_own_connectors_entry(spark, base_config, tmp_path, postgres_server):
    cfg = _cfg(base_config, tmp_path, postgres_server, RS_DB, "postgresql", {})
    with pytest.raises(ConnectorError, match=r"no connectors.jdbc entry for jdbc:redshift://127.0.0.1:\d+/"):
        JdbcConnector(spark, cfg).discover(_url(postgres_server, RS_DB, "redshift"))
    assert JdbcConnector(spark, cfg).location_prefix("jdbc:redshift://cluster.example.com/dev") == \
        "jdbc:redshift://cluster.example.com:5439/dev"
