"""A PostgreSQL warehouse (the stand-in for Redshift, which speaks its protocol).

Discovery reads ``information_schema`` and ``pg_catalog`` through psycopg;
samples are read by Spark's JDBC source with a ``LIMIT`` pushed into the query.

Config (``connectors.jdbc``, one mapping or a list of them)::

    connectors:
      jdbc:
        url: jdbc:postgresql://host:5432/warehouse   # no credentials in the URL
        user: reader
        password_env: WAREHOUSE_PASSWORD             # or password: ...
        schemas: [public, sales]                     # default: every user schema
        connect_timeout: 10                          # seconds

A scanned URI names one configured source by its URL, optionally narrowed to a
schema or a table: ``jdbc:postgresql://host:5432/warehouse/public.users``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ketch_spark.connectors.base import Asset, Connector, describe_error, fingerprint_of
from ketch_spark.errors import ConfigError, ConnectorError

__all__ = ["JdbcConnector", "JdbcSource", "jdbc_sources", "is_jdbc_uri"]

logger = logging.getLogger(__name__)

_URL = re.compile(
    r"^(?:jdbc:)?postgres(?:ql)?://(?:[^@/]*@)?(?P<host>[^/:?]+)(?::(?P<port>\d+))?/(?P<db>[^/?]+)"
    r"(?:/(?P<rest>[^?]*))?(?:\?.*)?$"
)
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
_PG_TYPES: Mapping[str, T.DataType] = {
    "smallint": T.ShortType(),
    "integer": T.IntegerType(),
    "bigint": T.LongType(),
    "real": T.FloatType(),
    "double precision": T.DoubleType(),
    "numeric": T.DecimalType(38, 10),
    "boolean": T.BooleanType(),
    "date": T.DateType(),
    "timestamp without time zone": T.TimestampNTZType(),
    "timestamp with time zone": T.TimestampType(),
    "bytea": T.BinaryType(),
}


def is_jdbc_uri(uri: str) -> bool:
    """Whether ``uri`` names a PostgreSQL source (``jdbc:postgresql://`` or ``postgresql://``)."""
    return bool(_URL.match(uri))


@dataclass(frozen=True)
class JdbcSource:
    """One configured warehouse.

    Attributes:
        host: Server host.
        port: Server port.
        database: Database name.
        user: Login role.
        password: Password (never logged, never stored in the catalog).
        schemas: Schemas to scan; empty means every user schema.
        connect_timeout: Connection timeout in seconds.
    """

    host: str
    port: int
    database: str
    user: str
    password: str | None
    schemas: tuple[str, ...] = ()
    connect_timeout: int = 10

    @property
    def url(self) -> str:
        """JDBC URL without credentials."""
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}"

    def same_server(self, host: str, port: int, database: str) -> bool:
        """Whether this source is ``host:port/database``."""
        return (self.host, self.port, self.database) == (host, port, database)


def _parse(uri: str) -> tuple[str, int, str, str | None]:
    match = _URL.match(uri)
    if not match:
        raise ConfigError(f"not a PostgreSQL URL: expected jdbc:postgresql://host:port/database, found {uri!r}")
    return match["host"], int(match["port"] or 5432), match["db"], (match["rest"] or "").strip("/") or None


def _source_from(entry: Mapping[str, Any]) -> JdbcSource:
    if not isinstance(entry, Mapping) or "url" not in entry:
        raise ConfigError("connectors.jdbc: each entry needs a 'url' (jdbc:postgresql://host:port/database)")
    host, port, database, _ = _parse(str(entry["url"]))
    password = entry.get("password")
    if password is None and entry.get("password_env"):
        password = os.environ.get(str(entry["password_env"]))
        if password is None:
            raise ConfigError(f"connectors.jdbc: environment variable {entry['password_env']} is not set")
    schemas = entry.get("schemas") or ()
    if isinstance(schemas, str):
        schemas = (schemas,)
    return JdbcSource(
        host=host,
        port=port,
        database=database,
        user=str(entry.get("user") or ""),
        password=None if password is None else str(password),
        schemas=tuple(str(s) for s in schemas),
        connect_timeout=int(entry.get("connect_timeout", 10)),
    )


def jdbc_sources(connectors: Mapping[str, Any]) -> list[JdbcSource]:
    """The configured warehouses of a ``connectors`` section.

    Raises:
        ConfigError: An entry lacks a URL, or names an unset password variable.
    """
    raw = connectors.get("jdbc") or []
    entries = [raw] if isinstance(raw, Mapping) else list(raw)
    return [_source_from(entry) for entry in entries]


_TABLES_SQL = """
SELECT table_schema, table_name FROM information_schema.tables
WHERE table_type = 'BASE TABLE' AND table_schema <> ALL(%(system)s)
ORDER BY table_schema, table_name
"""
_COLUMNS_SQL = """
SELECT table_schema, table_name, column_name, data_type, is_nullable FROM information_schema.columns
WHERE table_schema <> ALL(%(system)s)
ORDER BY table_schema, table_name, ordinal_position
"""
_PRIMARY_KEYS_SQL = """
SELECT n.nspname, c.relname, a.attname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
WHERE i.indisprimary AND n.nspname <> ALL(%(system)s)
ORDER BY n.nspname, c.relname, array_position(i.indkey::int2[], a.attnum)
"""
_STATS_SQL = """
SELECT n.nspname, c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid),
       s.n_live_tup, s.n_tup_ins, s.n_tup_upd, s.n_tup_del
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL(%(system)s)
"""


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class JdbcConnector(Connector):
    """Tables of a PostgreSQL (or Redshift) warehouse."""

    system = "postgres"

    def source_for(self, uri: str) -> tuple[JdbcSource, str | None]:
        """The configured source that ``uri`` names, and the schema/table narrowing in it.

        Raises:
            ConnectorError: No ``connectors.jdbc`` entry has this server and database.
        """
        host, port, database, rest = _parse(uri)
        for source in jdbc_sources(self.cfg.section("connectors")):
            if source.same_server(host, port, database):
                return source, rest
        raise ConnectorError(
            f"no connectors.jdbc entry for jdbc:postgresql://{host}:{port}/{database}; add its url and credentials"
        )

    def location_prefix(self, uri: str) -> str:
        """``jdbc:postgresql://host:port/db`` (plus ``/schema[.table]`` when the URI narrows it)."""
        host, port, database, rest = _parse(uri)
        base = f"jdbc:postgresql://{host}:{port}/{database}"
        return f"{base}/{rest}" if rest else base

    def covers(self, uri: str, location: str) -> bool:
        """Whether the table at ``location`` lies in the server, schema or table ``uri`` names."""
        host, port, database, rest = _parse(uri)
        base = f"jdbc:postgresql://{host}:{port}/{database}"
        if location == self.location_prefix(uri):
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
        params = {"system": list(_SYSTEM_SCHEMAS)}
        with self._connect(source) as conn:
            return tuple(conn.execute(sql, params).fetchall() for sql in (_TABLES_SQL, _COLUMNS_SQL,
                                                                          _PRIMARY_KEYS_SQL, _STATS_SQL))

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
        spark_schema = T.StructType(
            [T.StructField(name, _PG_TYPES.get(data_type, T.StringType()), nullable == "YES")
             for name, data_type, nullable in columns]
        )
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
            schema=spark_schema,
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
            .option("url", source.url)
            .option("driver", "org.postgresql.Driver")
            .option("query", query)
            .option("user", source.user)
            .option("connectTimeout", str(source.connect_timeout))
        )
        if source.password is not None:
            reader = reader.option("password", source.password)
        return reader.load()

    def sample(self, asset: Asset, n: int) -> DataFrame:
        """At most ``n`` rows, with the LIMIT run by the server."""
        schema, table = asset.properties["table"].split(".", 1)
        return self.read_query(asset, f"SELECT * FROM {_quote(schema)}.{_quote(table)} LIMIT {int(n)}")
