"""Warehouse sources: the ``connectors.jdbc`` entries and the URIs that name them.

A URI is ``jdbc:postgresql://host[:5432]/database`` or
``jdbc:redshift://host[:5439]/database`` (``postgresql://`` also works),
optionally narrowed to a schema or a table: ``.../warehouse/public.users``.
Credentials never come from a URI: they are the entry's ``user`` and
``password`` (or ``password_env``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ketch_spark.connectors.jdbc_rights import DIALECTS
from ketch_spark.errors import ConfigError

__all__ = ["JdbcSource", "JdbcUri", "is_jdbc_uri", "jdbc_sources", "parse_jdbc_uri"]

_URL = re.compile(
    r"^(?:jdbc:)?(?P<scheme>postgres(?:ql)?|redshift)://(?:[^@/]*@)?(?P<host>[^/:?]+)(?::(?P<port>\d+))?/(?P<db>[^/?]+)"
    r"(?:/(?P<rest>[^?]*))?(?:\?.*)?$"
)


def is_jdbc_uri(uri: str) -> bool:
    """Whether ``uri`` names a warehouse source (``jdbc:postgresql://``, ``postgresql://``, ``jdbc:redshift://``)."""
    return bool(_URL.match(uri))


@dataclass(frozen=True)
class JdbcUri:
    """A parsed warehouse URI.

    Attributes:
        dialect: ``postgresql`` or ``redshift``, from the scheme.
        host: Server host.
        port: Server port (the dialect's default when the URI has none).
        database: Database name.
        narrowing: ``schema`` or ``schema.table`` after the database, if any.
    """

    dialect: str
    host: str
    port: int
    database: str
    narrowing: str | None

    @property
    def base_url(self) -> str:
        """``jdbc:<dialect>://host:port/database``."""
        return f"jdbc:{self.dialect}://{self.host}:{self.port}/{self.database}"

    @property
    def location_prefix(self) -> str:
        """:attr:`base_url`, plus ``/schema[.table]`` when the URI narrows it."""
        return f"{self.base_url}/{self.narrowing}" if self.narrowing else self.base_url


def parse_jdbc_uri(uri: str) -> JdbcUri:
    """Parses a warehouse URI.

    Raises:
        ConfigError: ``uri`` is not a PostgreSQL or Redshift URL.
    """
    match = _URL.match(uri)
    if not match:
        raise ConfigError("not a PostgreSQL URL or Redshift URL: expected jdbc:postgresql://host:port/database or "
                          f"jdbc:redshift://host:port/database, found {uri!r}")
    dialect = "redshift" if match["scheme"] == "redshift" else "postgresql"
    port = int(match["port"] or DIALECTS[dialect].default_port)
    return JdbcUri(dialect, match["host"], port, match["db"], (match["rest"] or "").strip("/") or None)


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
        dialect: ``postgresql`` or ``redshift``, from the URL's scheme.
    """

    host: str
    port: int
    database: str
    user: str
    password: str | None
    schemas: tuple[str, ...] = ()
    connect_timeout: int = 10
    dialect: str = "postgresql"

    @property
    def url(self) -> str:
        """JDBC URL without credentials."""
        return f"jdbc:{self.dialect}://{self.host}:{self.port}/{self.database}"

    @property
    def spark_url(self) -> str:
        """The URL Spark's JDBC source reads with the PostgreSQL driver (Redshift speaks its protocol)."""
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}"

    def named_by(self, uri: JdbcUri) -> bool:
        """Whether ``uri`` names this source's server and database, in its dialect."""
        return (self.dialect, self.host, self.port, self.database) == (uri.dialect, uri.host, uri.port, uri.database)


def _source_from(entry: Mapping[str, Any]) -> JdbcSource:
    if not isinstance(entry, Mapping) or "url" not in entry:
        raise ConfigError("connectors.jdbc: each entry needs a 'url' (jdbc:postgresql://host:port/database or "
                          "jdbc:redshift://host:port/database)")
    uri = parse_jdbc_uri(str(entry["url"]))
    password = entry.get("password")
    if password is None and entry.get("password_env"):
        password = os.environ.get(str(entry["password_env"]))
        if password is None:
            raise ConfigError(f"connectors.jdbc: environment variable {entry['password_env']} is not set")
    schemas = entry.get("schemas") or ()
    if isinstance(schemas, str):
        schemas = (schemas,)
    if not isinstance(schemas, (list, tuple)):
        raise ConfigError(f"connectors.jdbc.schemas: expected a schema name or a list of them, found {schemas!r}")
    timeout = entry.get("connect_timeout", 10)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
        raise ConfigError(f"connectors.jdbc.connect_timeout: expected a positive number of seconds, found {timeout!r}")
    return JdbcSource(
        host=uri.host,
        port=uri.port,
        database=uri.database,
        user=str(entry.get("user") or ""),
        password=None if password is None else str(password),
        schemas=tuple(str(s) for s in schemas),
        connect_timeout=timeout,
        dialect=uri.dialect,
    )


def jdbc_sources(connectors: Mapping[str, Any]) -> list[JdbcSource]:
    """The configured warehouses of a ``connectors`` section.

    Raises:
        ConfigError: An entry lacks a URL or has a value of the wrong type, or names an unset password variable.
    """
    raw = connectors.get("jdbc") or []
    if not isinstance(raw, (Mapping, list)):
        raise ConfigError(f"connectors.jdbc: expected one mapping or a list of them, found {raw!r}")
    entries = [raw] if isinstance(raw, Mapping) else raw
    return [_source_from(entry) for entry in entries]
