"""The rights side of the PostgreSQL connector: the table handle, identity matching and obfuscation in SQL.

See :mod:`ketch_spark.connectors.jdbc` for how an erasure runs (identities
COPYed into a temporary table, one hash join per identity column, one
``DELETE ... USING`` or ``UPDATE ... FROM`` per table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ketch_spark.connectors.base import Asset
from ketch_spark.errors import ConnectorError

__all__ = [
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

    def column_types(self, conn: Any) -> dict[str, tuple[str, bool]]:
        """Column name -> (SQL type, NOT NULL), from pg_attribute."""
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


def unicode_collation(conn: Any) -> str:
    """``COLLATE "und-x-icu"`` when the server has ICU (lower() then folds every script, as Python
    and Spark do, whatever the database's locale); empty otherwise (the database's own locale)."""
    found = conn.execute("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'").fetchone()
    return ' COLLATE "und-x-icu"' if found else ""


def key_sql(column: str, identity_type: str, collation: str = "") -> str:
    """SQL normalising ``column`` like :func:`ketch_spark.rights.match.normalised_key` (``%(cc)s``: country prefix)."""
    text = f"btrim({column}::text, ' ')"
    if identity_type in ("email", "email_sha256"):
        return f"lower({text}{collation})"
    if identity_type != "phone":
        return text
    compact = f"regexp_replace({text}, '[^0-9+]', '', 'g')"
    digits = f"regexp_replace({compact}, '[^0-9]', '', 'g')"
    return (f"CASE WHEN left({compact}, 1) = '+' THEN '+' || {digits} "
            f"WHEN left({compact}, 2) = '00' THEN '+' || substr({digits}, 3, 64) "
            f"ELSE %(cc)s::text || regexp_replace({digits}, '^0', '') END")


def replacement_sql(column: str, column_type: tuple[str, bool], rule: Any, key: bytes | None,
                     params: dict[str, Any], name: str, secret_env: str) -> str:
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
        return f"CAST(%({name})s::text AS {sql_type})"
    if rule.method not in ("sha256", "hmac", "random"):
        raise ObfuscationError(f"{where}: unknown obfuscation method {rule.method!r}")
    if sql_type.split("(")[0].strip() not in TEXT_TYPES:
        raise ObfuscationError(f"{where}: method {rule.method} applies to text columns only; use null or "
                               "constant for it (dsr.obfuscate.columns)")
    utf8 = f"convert_to(t.{quote_identifier(column)}, 'UTF8')"
    if rule.method == "random":
        return "gen_random_uuid()::text"
    if rule.method == "sha256":
        if rule.value is not None:
            params[name] = hashlib.sha256(str(rule.value).encode("utf-8")).hexdigest()
            return f"%({name})s::text"
        return f"encode(sha256({utf8}), 'hex')"
    if key is None:
        raise ObfuscationError(f"column {column}: method hmac needs a secret key; set the environment variable "
                               f"{secret_env}")
    params[f"{name}_inner"], params[f"{name}_outer"] = hmac_pads(key)
    return (f"encode(sha256(%({name}_outer)s::bytea || sha256(%({name}_inner)s::bytea || {utf8})), 'hex')")
