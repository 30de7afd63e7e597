"""What a warehouse's catalog says of its tables: one query each for tables, columns, primary keys and sizes.

PostgreSQL answers from ``information_schema`` and ``pg_catalog``; Redshift,
which has no arrays as parameters, no ``pg_index`` of primary keys and no
``pg_stat_user_tables``, gives the same four answers from
``information_schema`` and ``svv_table_info`` (rows, and size in 1 MB blocks).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from pyspark.sql import types as T

__all__ = ["read_metadata", "spark_schema"]

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

_REDSHIFT_SYSTEM_SCHEMAS = (*_SYSTEM_SCHEMAS, "pg_internal", "pg_automv")
_NOT_SYSTEM = "NOT IN (" + ", ".join(f"%(s{i})s" for i in range(len(_REDSHIFT_SYSTEM_SCHEMAS))) + ")"
_REDSHIFT_METADATA_SQL = (
    _TABLES_SQL.replace("<> ALL(%(system)s)", _NOT_SYSTEM),
    _COLUMNS_SQL.replace("<> ALL(%(system)s)", _NOT_SYSTEM),
    f"""
SELECT k.table_schema, k.table_name, k.column_name
FROM information_schema.table_constraints c
JOIN information_schema.key_column_usage k
  ON k.constraint_schema = c.constraint_schema AND k.constraint_name = c.constraint_name
 AND k.table_name = c.table_name
WHERE c.constraint_type = 'PRIMARY KEY' AND k.table_schema {_NOT_SYSTEM}
ORDER BY k.table_schema, k.table_name, k.ordinal_position
""",
    f"""
SELECT "schema", "table", tbl_rows::bigint, size::bigint * 1048576, NULL, NULL, NULL, NULL
FROM svv_table_info WHERE "schema" {_NOT_SYSTEM}
""",
)



def read_metadata(conn: Any, dialect: str) -> tuple[list, list, list, list]:
    """(tables, columns, primary keys, stats) rows of every user schema, over an open psycopg connection.

    Rows: tables ``(schema, table)``; columns ``(schema, table, column,
    data_type, is_nullable)``; primary keys ``(schema, table, column)`` in key
    order; stats ``(schema, table, rows estimate, bytes, live rows, inserted,
    updated, deleted)``, the last four ``NULL`` on Redshift.
    """
    params: Mapping[str, Any] = {"system": list(_SYSTEM_SCHEMAS)}
    statements: Sequence[str] = (_TABLES_SQL, _COLUMNS_SQL, _PRIMARY_KEYS_SQL, _STATS_SQL)
    if dialect == "redshift":
        params = {f"s{i}": name for i, name in enumerate(_REDSHIFT_SYSTEM_SCHEMAS)}
        statements = _REDSHIFT_METADATA_SQL
    return tuple(conn.execute(sql, params).fetchall() for sql in statements)  # type: ignore[return-value]


def spark_schema(columns: Sequence[tuple[str, str, str]]) -> T.StructType:
    """The Spark schema of a table's ``(column, data_type, is_nullable)`` rows (unknown types read as strings)."""
    return T.StructType(
        [T.StructField(name, _PG_TYPES.get(data_type, T.StringType()), nullable == "YES")
         for name, data_type, nullable in columns]
    )
