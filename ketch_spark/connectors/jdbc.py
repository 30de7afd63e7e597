"""A PostgreSQL or Redshift warehouse.

Discovery reads ``information_schema`` and ``pg_catalog`` through psycopg
(Redshift: ``information_schema`` and ``svv_table_info``); samples are read by
Spark's JDBC source with a ``LIMIT`` pushed into the query (a Redshift source is
read through the PostgreSQL driver: Redshift speaks its protocol).

Config (``connectors.jdbc``, one mapping or a list of them)::

    connectors:
      jdbc:
        url: jdbc:postgresql://host:5432/warehouse   # or jdbc:redshift://cluster:5439/dev; no credentials
        user: reader
        password_env: WAREHOUSE_PASSWORD             # or password: ...
        schemas: [public, sales]                     # default: every user schema
        connect_timeout: 10                          # seconds

A scanned URI names one configured source by its URL, optionally narrowed to a
schema or a table: ``jdbc:postgresql://host:5432/warehouse/public.users``.

Rights (find, erase, verify) run through psycopg; an erasure changes every table
of one database in one transaction (:meth:`JdbcConnector.erase_all`). The batch's
identities are copied (COPY) into a temporary table, matched with one hash join
per identity column (columns normalised in SQL the way
:mod:`ketch_spark.rights.match` normalises them; org-scoped where the table has
``dsr.org_column``), and the matched rows change with one ``DELETE ... USING`` or
``UPDATE ... FROM``. Obfuscation applies the ``dsr`` rules in SQL (``hmac`` is
HMAC-SHA256 built from ``sha256()``, no pgcrypto needed). On PostgreSQL rows are
addressed by ``ctid``; what Redshift does instead is in
:mod:`ketch_spark.connectors.jdbc_rights` (:class:`Dialect`).

The configured sources and their URIs are in
:mod:`ketch_spark.connectors.jdbc_sources`, the catalog queries of discovery in
:mod:`ketch_spark.connectors.jdbc_discovery`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import logging
from dataclasses import dataclass
from typing import Any, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ketch_spark.connectors.base import Asset, Connector, EraseCounts, VerifyResult, describe_error, fingerprint_of
from ketch_spark.connectors.jdbc_discovery import read_metadata, spark_schema
from ketch_spark.connectors.jdbc_rights import (
    DIALECTS,
    IDS_TABLE,
    MATCHES_TABLE,
    Dialect,
    PgTable,
    identity_matchers,
    key_sql,
    quote_identifier,
    replacement_sql,
    unicode_collation,
)
from ketch_spark.connectors.jdbc_sources import JdbcSource, is_jdbc_uri, jdbc_sources, parse_jdbc_uri
from ketch_spark.errors import ConfigError, ConnectorError
from ketch_spark.rights.match import batch_rows, phone_country_prefix

__all__ = ["JdbcConnector", "JdbcSource", "jdbc_sources", "is_jdbc_uri"]

logger = logging.getLogger(__name__)

def _insert_identities(conn: Any, dialect: Dialect, identities: list[Any]) -> None:
    """The batch's identities into the temporary table, as bound values (COPY on PostgreSQL)."""
    rows = [(r["identity_type"], r["org_id"], r["value"], r["request_id"]) for r in identities]
    if dialect.postgres:
        with conn.cursor().copy(f"COPY {IDS_TABLE} (identity_type, org_id, value, request_id) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    with conn.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {IDS_TABLE} (identity_type, org_id, value, request_id) "
                           "VALUES (%s, %s, %s, %s)", rows)


def _json_value(value: Any) -> Any:
    """A column value psycopg returns, as JSON that Spark's from_json reads back with the catalogued type."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        import base64

        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return float(value)
    return str(value)


class _WholeTransactionFailed(Exception):
    """A statement failed where the database cannot undo one table alone (Redshift)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class _Staged:
    """What :meth:`JdbcConnector._stage_matches` staged for one table.

    Attributes:
        notes: Identity columns of the asset that are not columns of the table.
        dialect: The database's dialect.
        row_id: SQL of a row ``t``'s address, as the match table holds it (:meth:`Dialect.row_id`).
    """

    notes: list[str]
    dialect: Dialect
    row_id: str

    def matched(self) -> tuple[str, str]:
        """(FROM item of the matched rows' distinct ids as ``m``, the condition tying ``t`` to it)."""
        return f"(SELECT DISTINCT row_id FROM {MATCHES_TABLE}) m", f"{self.row_id} = m.row_id"


class JdbcConnector(Connector):
    """Tables of a PostgreSQL (or Redshift) warehouse."""

    system = "postgres"

    def source_for(self, uri: str) -> tuple[JdbcSource, str | None]:
        """The configured source that ``uri`` names, and the schema/table narrowing in it.

        Raises:
            ConnectorError: No ``connectors.jdbc`` entry has this server and database.
        """
        parsed = parse_jdbc_uri(uri)
        for source in jdbc_sources(self.cfg.section("connectors")):
            if source.named_by(parsed):
                return source, parsed.narrowing
        raise ConnectorError(f"no connectors.jdbc entry for {parsed.base_url}; add its url and credentials")

    def location_prefix(self, uri: str) -> str:
        """``jdbc:postgresql://host:port/db`` (plus ``/schema[.table]`` when the URI narrows it)."""
        return parse_jdbc_uri(uri).location_prefix

    def covers(self, uri: str, location: str) -> bool:
        """Whether the table at ``location`` lies in the server, schema or table ``uri`` names."""
        parsed = parse_jdbc_uri(uri)
        rest, base = parsed.narrowing, parsed.base_url
        if location == parsed.location_prefix:
            return True
        if not location.startswith(base + "/"):
            return False
        table = location[len(base) + 1:]
        return rest is None or table == rest or table.startswith(rest + ".")

    def _connect(self, source: JdbcSource) -> Any:
        import psycopg

        return psycopg.connect(
            host=source.host,
            port=source.port,
            dbname=source.database,
            user=source.user,
            password=source.password,
            connect_timeout=source.connect_timeout,
            autocommit=True,
        )

    def _metadata(self, source: JdbcSource) -> tuple[list, list, list, list]:
        with self._connect(source) as conn:
            return read_metadata(conn, source.dialect)

    def discover(self, uri: str) -> list[Asset]:
        """Tables of the source named by ``uri`` (metadata only: information_schema and pg_catalog).

        Raises:
            ConnectorError: The server cannot be reached or refuses the login, or has no table.
        """
        source, narrowing = self.source_for(uri)
        try:
            tables, columns, primary_keys, stats = self._metadata(source)
        except Exception as exc:  # noqa: BLE001 - connection refused, auth failure, timeouts
            reason = describe_error(exc, self.secrets())
            raise ConnectorError(f"cannot read the catalog of {source.url}: {reason}") from None
        columns_of: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        for schema, table, column, data_type, nullable in columns:
            columns_of.setdefault((schema, table), []).append((column, data_type, nullable))
        keys_of: dict[tuple[str, str], list[str]] = {}
        for schema, table, column in primary_keys:
            keys_of.setdefault((schema, table), []).append(column)
        stats_of = {(row[0], row[1]): row[2:] for row in stats}
        assets = [
            self._table_asset(source, schema, table, columns_of.get((schema, table), []),
                              keys_of.get((schema, table), []), stats_of.get((schema, table)))
            for schema, table in tables
            if self._selected(source, narrowing, schema, table)
        ]
        if not assets:
            where = source.url + (f"/{narrowing}" if narrowing else "")
            raise ConnectorError(f"empty source: no readable table in {where}")
        logger.info("discovered %d table(s) in %s", len(assets), source.url)
        return assets

    @staticmethod
    def _selected(source: JdbcSource, narrowing: str | None, schema: str, table: str) -> bool:
        if source.schemas and schema not in source.schemas:
            return False
        if narrowing is None:
            return True
        return narrowing in (schema, f"{schema}.{table}")

    def _table_asset(self, source: JdbcSource, schema: str, table: str, columns: list[tuple[str, str, str]],
                     primary_key: list[str], stats: tuple | None) -> Asset:
        reltuples, size, live, inserted, updated, deleted = stats or (None, None, None, None, None, None)
        row_estimate = reltuples if reltuples is not None and reltuples >= 0 else live
        properties = {"url": source.url, "table": f"{schema}.{table}", "primary_key": ",".join(primary_key)}
        if not primary_key:
            properties["note"] = "no primary key: rows are matched by the identity columns"
        return Asset(
            system=self.system,
            location=f"{source.url}/{schema}.{table}",
            name=f"{schema}.{table}",
            format="jdbc",
            schema=spark_schema(columns),
            size_bytes=None if size is None else int(size),
            row_estimate=None if row_estimate is None else int(row_estimate),
            fingerprint=fingerprint_of([c[:2] for c in columns], primary_key, inserted, updated, deleted),
            properties=properties,
        )

    def read_query(self, asset: Asset, query: str) -> DataFrame:
        """Runs ``query`` on the asset's server through Spark's JDBC source."""
        source, _ = self.source_for(asset.properties["url"])
        reader = (
            self.spark.read.format("jdbc")
            .option("url", source.spark_url)
            .option("driver", "org.postgresql.Driver")
            .option("query", query)
            .option("user", source.user)
            .option("connectTimeout", str(source.connect_timeout))
        )
        if source.password is not None:
            reader = reader.option("password", source.password)
        return reader.load()

    def identity_values(self, asset: Asset) -> DataFrame:
        """The table's normalised identity values (see :meth:`Connector.identity_values`): one SELECT of
        its identity columns (and org column) through Spark's JDBC source, normalised in Spark."""
        from ketch_spark.rights.match import identity_values

        settings = self.cfg.dsr
        schema, table = asset.properties["table"].split(".", 1)
        known = set(asset.schema.fieldNames()) if asset.schema is not None else set()
        columns = sorted({c.column for c in asset.identity_columns if c.column in known}
                         | ({settings.org_column} & known))
        if not any(c.column in known for c in asset.identity_columns):
            return identity_values(self.spark.createDataFrame([], "x string"), asset)
        selected = ", ".join(quote_identifier(c) for c in columns)
        df = self.read_query(asset, f"SELECT {selected} FROM {quote_identifier(schema)}.{quote_identifier(table)}")
        return identity_values(df, asset, settings.org_column, settings.default_phone_region)

    def sample(self, asset: Asset, n: int) -> DataFrame:
        """At most ``n`` rows, with the LIMIT run by the server."""
        schema, table = asset.properties["table"].split(".", 1)
        return self.read_query(asset, f"SELECT * FROM {quote_identifier(schema)}.{quote_identifier(table)} LIMIT {int(n)}")

    # -- rights: find, erase, verify ------------------------------------------------------------
    #
    # One psycopg connection and one transaction per call (erase_all: every table of the
    # database the engine hands over, each under a savepoint). The batch's identities are
    # copied into a temporary table (COPY, never values in the SQL text), the matching rows' ids (ctid) and request ids are staged in a second
    # temporary table by one hash join per identity column, the per-request counts come
    # from a grouped SELECT on it, then one DELETE ... USING or UPDATE ... FROM changes the
    # rows. The transaction runs at REPEATABLE READ: counts, ctids and the change see one
    # snapshot, and a row changed concurrently aborts the erasure (recorded, retryable)
    # instead of being overwritten.

    def _open(self, source: JdbcSource, action: str, name: str) -> Any:
        """A REPEATABLE READ connection to ``source``; ConnectorError naming ``name`` when it cannot be opened."""
        import psycopg

        try:
            conn = self._connect(source)
        except Exception as exc:  # noqa: BLE001 - refused, auth failure, timeout
            raise ConnectorError(f"{action} {name}: cannot connect to {source.url}: "
                                 f"{describe_error(exc, self.secrets())}") from None
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        return conn

    def _table_error(self, action: str, table: PgTable, source: JdbcSource, exc: Exception) -> ConnectorError:
        import psycopg

        reason = describe_error(exc, self.secrets())
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return ConnectorError(f"{action} {table.name}: permission denied for role {source.user}: {reason}")
        return ConnectorError(f"{action} {table.name}: {reason}")

    def _rights_transaction(self, asset: Asset, action: str, work: Any) -> Any:
        """Runs ``work(conn, table)`` in one REPEATABLE READ transaction; errors name the table."""
        import psycopg

        source, _ = self.source_for(asset.properties["url"])
        table = PgTable.of(asset)
        conn = self._open(source, action, table.name)
        try:
            with conn.transaction():
                return work(conn, table)
        except psycopg.Error as exc:
            raise self._table_error(action, table, source, exc) from None
        finally:
            conn.close()

    @staticmethod
    def _dialect(asset: Asset) -> Dialect:
        """The SQL dialect of the asset's database, from its URL's scheme."""
        return DIALECTS[parse_jdbc_uri(asset.properties["url"]).dialect]

    def _stage_matches(self, conn: Any, table: PgTable, asset: Asset, batch: list[Any]) -> _Staged:
        """Fills the temporary match table (row id, request id) from ``batch`` (collected identities)."""
        dialect = self._dialect(asset)
        columns = table.column_types(conn, dialect)
        settings = self.cfg.dsr
        org = settings.org_column if settings.org_column in columns else None
        matchers, notes = identity_matchers(asset, columns)
        identities = [r for r in batch if r["identity_type"] in {m[1] for m in matchers}]
        text, (row_id, row_id_type) = dialect.text_type, dialect.row_id("t", list(columns))
        conn.execute(dialect.temp_table(IDS_TABLE, f"identity_type {text}, org_id {text}, value {text}, "
                                                   f"request_id {text}"))
        conn.execute(dialect.temp_table(MATCHES_TABLE, f"row_id {row_id_type}, request_id {text}"))
        for statement in dialect.clear(IDS_TABLE, MATCHES_TABLE):  # one transaction may stage several tables
            conn.execute(statement)
        staged = _Staged(notes, dialect, row_id)
        if not identities or not matchers:
            return staged
        _insert_identities(conn, dialect, identities)
        conn.execute(f"ANALYZE {IDS_TABLE}")
        branches, params = [], {"cc": phone_country_prefix(settings.default_phone_region)}
        collation = unicode_collation(conn, dialect)
        for index, (column, identity_type) in enumerate(matchers):
            params[f"t{index}"] = identity_type
            scope = f" AND i.org_id = t.{quote_identifier(org)}::{text}" if org else ""
            key = key_sql("t." + quote_identifier(column), identity_type, collation, dialect)
            branches.append(
                f"SELECT {row_id}, i.request_id FROM {table.sql} t JOIN {IDS_TABLE} i "
                f"ON i.identity_type = %(t{index})s AND i.value = {key}{scope}"
            )
        conn.execute(f"INSERT INTO {MATCHES_TABLE} (row_id, request_id) " + "\nUNION\n".join(branches), params)
        return staged

    @staticmethod
    def _match_counts(conn: Any, table: PgTable, staged: _Staged) -> tuple[dict[str, int], int]:
        """(matched rows per request, matched rows) of the staged matches, counted by the database.

        A ctid is one row; a Redshift row digest stands for every row equal to it
        in all columns, so there the rows are counted through a join with the table.
        """
        if staged.dialect.postgres:
            by_request = conn.execute(f"SELECT request_id, count(*) FROM {MATCHES_TABLE} GROUP BY request_id")
            matched = conn.execute(f"SELECT count(DISTINCT row_id) FROM {MATCHES_TABLE}")
        else:
            distinct_ids, condition = staged.matched()
            by_request = conn.execute(f"SELECT m.request_id, count(*) FROM {table.sql} t JOIN {MATCHES_TABLE} m "
                                      f"ON {condition} GROUP BY m.request_id")
            matched = conn.execute(f"SELECT count(*) FROM {table.sql} t JOIN {distinct_ids} ON {condition}")
        return {rid: int(n) for rid, n in by_request.fetchall()}, int(matched.fetchone()[0])

    def find(self, asset: Asset, identities_df: DataFrame) -> DataFrame:
        """The table's rows matching the batch, plus ``_request_id``: one join, read through psycopg.

        Rows travel as ``to_jsonb`` text and are parsed with the catalogued schema,
        so every column keeps its type (jsonb columns come back as JSON text).
        """
        from pyspark.sql import functions as F

        from ketch_spark.rights.match import REQUEST_ID_COLUMN

        batch = batch_rows(identities_df)  # before the connection opens: no transaction waits on Spark

        def work(conn: Any, table: PgTable) -> list[str]:
            staged = self._stage_matches(conn, table, asset, batch)
            matched = f"FROM {table.sql} t JOIN {MATCHES_TABLE} m ON {staged.row_id} = m.row_id"
            if staged.dialect.postgres:
                rows = conn.execute(f"SELECT (to_jsonb(t) || jsonb_build_object(%(rid)s::text, m.request_id))::text "
                                    f"{matched}", {"rid": REQUEST_ID_COLUMN}).fetchall()
                return [r[0] for r in rows]
            cursor = conn.execute(f"SELECT t.*, m.request_id AS {quote_identifier(REQUEST_ID_COLUMN)} {matched}")
            names = [d.name for d in cursor.description]
            return [json.dumps(dict(zip(names, row)), default=_json_value) for row in cursor.fetchall()]

        lines = self._rights_transaction(asset, "find", work)
        schema = asset.schema if asset.schema is not None else T.StructType([])
        schema = T.StructType([*[f for f in schema.fields if f.name != REQUEST_ID_COLUMN],
                               T.StructField(REQUEST_ID_COLUMN, T.StringType())])
        docs_df = self.spark.createDataFrame([(line,) for line in lines], "doc string")
        return docs_df.select(F.from_json("doc", schema).alias("r")).select("r.*")

    def transaction_key(self, asset: Asset) -> str:
        """The asset's database: its tables are erased in one transaction (:meth:`erase_all`)."""
        return asset.properties["url"]

    def erase(self, asset: Asset, identities_df: DataFrame, mode: str) -> EraseCounts:
        """Deletes or obfuscates the batch's rows of one table in one transaction (see :meth:`erase_all`).

        Raises:
            ConnectorError: The table cannot be reached, or the role lacks a privilege
                (the message names the table and the privilege).
            ObfuscationError: A rule does not fit its column.
        """
        result = self.erase_all([(asset, identities_df, mode)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def erase_all(self, work: Sequence[tuple[Asset, DataFrame, str]]) -> list[EraseCounts | Exception]:
        """Erases every (table, identities, mode) of one database in one REPEATABLE READ transaction.

        Each table's erasure runs under its own savepoint: a table the role may not
        change (checked before anything is written) or whose statement fails is
        rolled back alone and reported as its entry's ConnectorError; the others
        commit together. When the commit itself fails, every entry fails. Redshift
        has no savepoints: a table refused before anything is written (a missing
        privilege, a rule that does not fit) is still reported alone, but a failed
        statement rolls every table of the database back and every entry fails.
        """
        import psycopg

        for _, _, mode in work:
            if mode not in ("delete", "obfuscate"):
                raise ConfigError(f"erasure mode must be delete or obfuscate, found {mode!r}")
        entries = [(asset, batch_rows(identities_df), mode) for asset, identities_df, mode in work]  # before connecting
        source, _ = self.source_for(entries[0][0].properties["url"])
        tables = [PgTable.of(asset) for asset, _, _ in entries]
        try:
            conn = self._open(source, "erase", ", ".join(t.name for t in tables))
        except ConnectorError as exc:
            return [exc] * len(entries)
        results: list[EraseCounts | Exception] = []
        has_savepoints = DIALECTS[source.dialect].savepoints
        savepoint = conn.transaction if has_savepoints else contextlib.nullcontext
        try:
            with conn.transaction():
                for table, (asset, batch, mode) in zip(tables, entries):
                    try:
                        with savepoint():  # this table's failure is undone alone (PostgreSQL)
                            results.append(self._erase_table(conn, table, asset, batch, mode))
                    except psycopg.Error as exc:
                        if not has_savepoints:
                            raise _WholeTransactionFailed(self._table_error("erase", table, source, exc))
                        results.append(self._table_error("erase", table, source, exc))
                    except Exception as exc:  # noqa: BLE001 - ConnectorError, ObfuscationError: this table's
                        results.append(exc)
        except _WholeTransactionFailed as failed:
            error = ConnectorError(f"erase: {failed.error}; Redshift has no savepoints, so the transaction over "
                                   f"{len(tables)} table(s) of {source.url} was rolled back, nothing changed")
            return [error] * len(entries)
        except psycopg.Error as exc:
            error = ConnectorError(f"erase: the transaction over {len(tables)} table(s) of {source.url} did not "
                                   f"commit, nothing changed: {describe_error(exc, self.secrets())}")
            return [error] * len(entries)
        finally:
            conn.close()
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for (asset, _, mode), counts in zip(entries, results):
            if isinstance(counts, EraseCounts):
                counts.physical_after = now
                if counts.rows_changed:
                    counts.notes.append("dead row versions stay on disk until the table's next (auto)vacuum")
                logger.info("erased %d row(s) of %s (%s)", counts.rows_changed, asset.name, mode)
        return results

    def _erase_table(self, conn: Any, table: PgTable, asset: Asset, batch: list[Any], mode: str) -> EraseCounts:
        """One table's DELETE ... USING or UPDATE ... FROM of the batch's matched rows, in ``conn``'s transaction."""
        privilege = "DELETE" if mode == "delete" else "UPDATE"
        table.require(conn, "SELECT", self._user(asset))
        assignments, params = ({}, {}) if mode == "delete" else self._assignments(conn, table, asset)
        table.require(conn, privilege, self._user(asset), list(assignments))
        staged = self._stage_matches(conn, table, asset, batch)
        counts = EraseCounts(notes=staged.notes)
        counts.rows_by_request, counts.rows_matched = self._match_counts(conn, table, staged)
        if counts.rows_matched == 0:
            return counts
        matched, condition = staged.matched()
        if mode == "delete":
            statement = f"DELETE FROM {table.sql} t USING {matched} WHERE {condition}"
        elif assignments:
            sets = ", ".join(f"{quote_identifier(c)} = {expr}" for c, expr in assignments.items())
            statement = f"UPDATE {table.sql} t SET {sets} FROM {matched} WHERE {condition}"
        else:
            counts.notes.append("no column to obfuscate")
            return counts
        counts.rows_changed = int(conn.execute(statement, params).rowcount)
        return counts

    def verify(self, asset: Asset, identities_df: DataFrame, erased: EraseCounts | None = None) -> VerifyResult:
        """Rows still matching the batch, counted by the database."""
        batch = batch_rows(identities_df)

        def work(conn: Any, table: PgTable) -> int:
            return self._match_counts(conn, table, self._stage_matches(conn, table, asset, batch))[1]

        remaining = self._rights_transaction(asset, "verify", work)
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return VerifyResult(remaining=remaining, physical_after=now)

    def _user(self, asset: Asset) -> str:
        return self.source_for(asset.properties["url"])[0].user

    def _assignments(self, conn: Any, table: PgTable, asset: Asset) -> tuple[dict[str, str], dict[str, Any]]:
        """SQL of each obfuscated column's new value (rules of ``dsr``), and its bound parameters."""
        from ketch_spark.rights.obfuscate import hmac_key_from_env

        settings = self.cfg.dsr
        dialect = self._dialect(asset)
        columns = table.column_types(conn, dialect)
        rules = {}
        primary_key = set(filter(None, asset.properties.get("primary_key", "").split(",")))
        for personal in asset.personal_columns:
            rule = settings.rule_for(personal.column, personal.category, key=personal.column in primary_key)
            if rule is not None and personal.column in columns:
                rules.setdefault(personal.column, rule)
        for column, rule in settings.obfuscate_columns.items():
            if column in columns:
                rules.setdefault(column, rule)
        key = hmac_key_from_env(settings)
        params: dict[str, Any] = {}
        assignments = {
            column: replacement_sql(column, columns[column], rule, key, params, f"p{index}",
                                     settings.hmac_secret_env, dialect)
            for index, (column, rule) in enumerate(rules.items())
        }
        return assignments, params
