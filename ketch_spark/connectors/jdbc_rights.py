"""The rights side of the warehouse connector: the table handle, identity matching and obfuscation in SQL.

See :mod:`ketch_spark.connectors.jdbc` for how an erasure runs (identities
staged in a temporary table, one hash join per identity column, one
``DELETE ... USING`` or ``UPDATE ... FROM`` per table).

Two dialects (:class:`Dialect`): PostgreSQL, and Redshift, which speaks
PostgreSQL's protocol but lacks what the PostgreSQL path leans on. On Redshift
identities are inserted with bound parameters (no ``COPY FROM STDIN``), a
matched row is addressed by a digest of all its columns (no ``ctid``), a
statement error rolls the whole database's transaction back (no savepoints),
rows are exported as plain columns (no ``to_jsonb``), text is cast to
``varchar(65535)`` (Redshift's ``text`` is ``varchar(256)``), ``regexp_replace``
replaces every match without a flag, ``sha256`` is ``SHA2(x, 256)``, and
``hmac`` obfuscation is refused (Redshift has no hash over raw bytes to build it
from).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ketch_spark.connectors.base import Asset
from ketch_spark.errors import ConnectorError

__all__ = [
    "DIALECTS",
    "Dialect",
    "IDS_TABLE",
    "MATCHES_TABLE",
    "TEXT_TYPES",
    "PgTable",
    "identity_matchers",
    "key_sql",
    "quote_identifier",
    "replacement_sql",
    "unicode_collation",
]


def quote_identifier(identifier: str) -> str:
    """A PostgreSQL identifier in double quotes (embedded quotes doubled)."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class Dialect:
    """What differs between PostgreSQL and Redshift on the rights path.

    Attributes:
        name: ``postgresql`` or ``redshift`` (the JDBC URL's scheme).
        default_port: The server's usual port.
        text_type: The type identifiers are cast to before they are normalised.
        savepoints: Whether one table's failed statement can be undone alone.
    """

    name: str
    default_port: int
    text_type: str
    savepoints: bool

    @property
    def postgres(self) -> bool:
        return self.name == "postgresql"

    def regexp_replace(self, text: str, pattern: str) -> str:
        """SQL removing every match of ``pattern`` (a literal) from ``text``."""
        return f"regexp_replace({text}, '{pattern}', '', 'g')" if self.postgres else f"regexp_replace({text}, '{pattern}', '')"

    def row_id(self, alias: str, columns: Sequence[str]) -> tuple[str, str]:
        """(SQL of a matched row's address, its type): PostgreSQL's ctid; on Redshift a digest of every column
        (rows equal in every column share it, and are the same subject's rows)."""
        if self.postgres:
            return f"{alias}.ctid", "tid"
        digests = [f"coalesce(md5({alias}.{quote_identifier(c)}::{self.text_type}), 'null')" for c in columns]
        return "md5(" + (" || ".join(digests) or "''") + ")", self.text_type

    def temp_table(self, name: str, columns: str) -> str:
        """DDL of a temporary table that lives for the transaction (PostgreSQL) or the connection (Redshift)."""
        return f"CREATE TEMP TABLE IF NOT EXISTS {name} ({columns})" + (" ON COMMIT DROP" if self.postgres else "")

    def clear(self, *tables: str) -> list[str]:
        """Statements emptying ``tables`` inside a transaction (Redshift's TRUNCATE would commit it)."""
        return [f"TRUNCATE {', '.join(tables)}"] if self.postgres else [f"DELETE FROM {t}" for t in tables]


#: The dialects by JDBC URL scheme.
DIALECTS = {
    "postgresql": Dialect("postgresql", 5432, "text", savepoints=True),
    "redshift": Dialect("redshift", 5439, "varchar(65535)", savepoints=False),
}
POSTGRESQL = DIALECTS["postgresql"]

IDS_TABLE = "_ketch_identities"
MATCHES_TABLE = "_ketch_matches"
TEXT_TYPES = ("text", "character varying", "character", "varchar", "char", "citext", "name")


@dataclass(frozen=True)
class PgTable:
    """One table of an asset: its name, quoted SQL and, read once, its columns."""

    schema: str
    table: str

    @classmethod
    def of(cls, asset: Asset) -> "PgTable":
        schema, table = asset.properties["table"].split(".", 1)
        return cls(schema, table)

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def sql(self) -> str:
        return f"{quote_identifier(self.schema)}.{quote_identifier(self.table)}"

    def column_types(self, conn: Any, dialect: Dialect = POSTGRESQL) -> dict[str, tuple[str, bool]]:
        """Column name -> (SQL type, NOT NULL), from pg_attribute (Redshift: information_schema)."""
        if not dialect.postgres:
            rows = conn.execute(
                "SELECT column_name, data_type, is_nullable = 'NO' FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position", (self.schema, self.table)
            ).fetchall()
            return {name: (sql_type, bool(not_null)) for name, sql_type, not_null in rows}
        rows = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (self.sql,)
        ).fetchall()
        return {name: (sql_type, bool(not_null)) for name, sql_type, not_null in rows}

    def require(self, conn: Any, privilege: str, user: str, columns: list[str] | None = None) -> None:
        """Raises ConnectorError unless the current role holds ``privilege`` (on the table or every column)."""
        if conn.execute("SELECT has_table_privilege(%s, %s)", (self.sql, privilege)).fetchone()[0]:
            return
        if columns and all(conn.execute("SELECT has_column_privilege(%s, %s, %s)", (self.sql, c, privilege))
                           .fetchone()[0] for c in columns):
            return
        raise ConnectorError(f"permission denied: role {user} lacks the {privilege} privilege on table {self.name}"
                             f" (GRANT {privilege} ON {self.sql} TO {quote_identifier(user)})")


def identity_matchers(asset: Asset, columns: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """(column, identity type) of the asset's identity columns that are columns of the table, and notes."""
    matchers, notes = [], []
    for personal in asset.identity_columns:
        if personal.column in columns:
            matchers.append((personal.column, personal.identity_type or ""))
        else:
            notes.append(f"{personal.column}: not a column of the table, not matched")
    return matchers, notes


def unicode_collation(conn: Any, dialect: Dialect = POSTGRESQL) -> str:
    """``COLLATE "und-x-icu"`` when the server has ICU (lower() then folds every script, as Python
    and Spark do, whatever the database's locale); empty otherwise (the database's own locale, and Redshift)."""
    if not dialect.postgres:
        return ""
    found = conn.execute("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'").fetchone()
    return ' COLLATE "und-x-icu"' if found else ""


def key_sql(column: str, identity_type: str, collation: str = "", dialect: Dialect = POSTGRESQL) -> str:
    """SQL normalising ``column`` like :func:`ketch_spark.rights.match.normalised_key` (``%(cc)s``: country prefix)."""
    text = f"btrim({column}::{dialect.text_type}, ' ')"
    if identity_type in ("email", "email_sha256"):
        return f"lower({text}{collation})"
    if identity_type != "phone":
        return text
    compact = dialect.regexp_replace(text, "[^0-9+]")
    digits = dialect.regexp_replace(compact, "[^0-9]")
    return (f"CASE WHEN left({compact}, 1) = '+' THEN '+' || {digits} "
            f"WHEN left({compact}, 2) = '00' THEN '+' || substr({digits}, 3, 64) "
            f"ELSE %(cc)s::{dialect.text_type} || regexp_replace({digits}, '^0', '') END")


def replacement_sql(column: str, column_type: tuple[str, bool], rule: Any, key: bytes | None,
                     params: dict[str, Any], name: str, secret_env: str, dialect: Dialect = POSTGRESQL) -> str:
    """SQL of the obfuscated value of ``column`` under ``rule`` (as :func:`obfuscated_value` computes it).

    Raises:
        ObfuscationError: The rule does not fit the column (a hash of a non-text column,
            ``null`` for a NOT NULL column, ``hmac`` without a key, an unknown method).
    """
    import hashlib

    from ketch_spark.errors import ObfuscationError
    from ketch_spark.rights.obfuscate import hmac_pads  # the one implementation of HMAC's padded keys

    sql_type, not_null = column_type
    where = f"column {column} ({sql_type})"
    if rule.method == "null":
        if not_null:
            raise ObfuscationError(f"{where} is NOT NULL: rule null cannot apply; name another rule for it "
                                   "in dsr.obfuscate.columns")
        return "NULL"
    if rule.method == "constant":
        params[name] = None if rule.value is None else str(rule.value)
        return f"CAST(%({name})s::{dialect.text_type} AS {sql_type})"
    if rule.method not in ("sha256", "hmac", "random"):
        raise ObfuscationError(f"{where}: unknown obfuscation method {rule.method!r}")
    if sql_type.split("(")[0].strip() not in TEXT_TYPES:
        raise ObfuscationError(f"{where}: method {rule.method} applies to text columns only; use null or "
                               "constant for it (dsr.obfuscate.columns)")
    utf8 = f"convert_to(t.{quote_identifier(column)}, 'UTF8')"
    if rule.method == "random":
        return "gen_random_uuid()::text" if dialect.postgres else "md5(random()::varchar)"
    if rule.method == "sha256":
        if rule.value is not None:
            params[name] = hashlib.sha256(str(rule.value).encode("utf-8")).hexdigest()
            return f"%({name})s::{dialect.text_type}"
        return f"encode(sha256({utf8}), 'hex')" if dialect.postgres else f"sha2(t.{quote_identifier(column)}, 256)"
    if not dialect.postgres:
        raise ObfuscationError(f"{where}: method hmac is not available on Redshift (it has no SHA-256 over raw bytes"
                               " to build HMAC from); use sha256, random, null or constant for it (dsr.obfuscate.columns)")
    if key is None:
        raise ObfuscationError(f"column {column}: method hmac needs a secret key; set the environment variable "
                               f"{secret_env}")
    params[f"{name}_inner"], params[f"{name}_outer"] = hmac_pads(key)
    return (f"encode(sha256(%({name}_outer)s::bytea || sha256(%({name}_inner)s::bytea || {utf8})), 'hex')")
