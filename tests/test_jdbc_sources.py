"""Warehouse URIs and sources: parsed once, each dialect with its default port, credentials never taken from a URI."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch_spark.connectors.jdbc_sources import JdbcUri, is_jdbc_uri, jdbc_sources, parse_jdbc_uri
from ketch_spark.errors import ConfigError


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("jdbc:postgresql://db.internal/warehouse", JdbcUri("postgresql", "db.internal", 5432, "warehouse", None)),
        ("postgresql://db.internal:6543/warehouse", JdbcUri("postgresql", "db.internal", 6543, "warehouse", None)),
        ("postgres://db.internal/warehouse/public", JdbcUri("postgresql", "db.internal", 5432, "warehouse", "public")),
        ("jdbc:postgresql://db/warehouse/public.users?sslmode=require",
         JdbcUri("postgresql", "db", 5432, "warehouse", "public.users")),
        ("jdbc:redshift://cluster.example.com/dev", JdbcUri("redshift", "cluster.example.com", 5439, "dev", None)),
        ("jdbc:redshift://cluster:5440/dev/sales.orders/", JdbcUri("redshift", "cluster", 5440, "dev", "sales.orders")),
        ("jdbc:postgresql://reader:s3cret@db/warehouse", JdbcUri("postgresql", "db", 5432, "warehouse", None)),
    ],
)
def test_uri_parsed_with_dialect_default_port_and_narrowing(uri: str, expected: JdbcUri) -> None:
    parsed = parse_jdbc_uri(uri)
    assert parsed == expected
    assert is_jdbc_uri(uri)
    assert parsed.base_url == f"jdbc:{expected.dialect}://{expected.host}:{expected.port}/{expected.database}"
    assert parsed.location_prefix == parsed.base_url + (f"/{expected.narrowing}" if expected.narrowing else "")
    assert "s3cret" not in parsed.location_prefix


@pytest.mark.parametrize("uri", ["", "s3://bucket/key", "jdbc:mysql://db/warehouse", "jdbc:postgresql://db",
                                 "jdbc:postgresql://db:port/warehouse", "jdbc:redshift:///dev"])
def test_not_a_warehouse_uri_is_a_config_error_naming_both_forms(uri: str) -> None:
    assert not is_jdbc_uri(uri)
    with pytest.raises(ConfigError, match="jdbc:postgresql://host:port/database or jdbc:redshift://host:port/database"):
        parse_jdbc_uri(uri)


def test_a_source_is_named_only_by_its_own_dialect_server_and_database() -> None:
    pg, rs = jdbc_sources({"jdbc": [{"url": "jdbc:postgresql://db:5439/dev", "user": "r"},
                                    {"url": "jdbc:redshift://db/dev", "user": "r"}]})
    assert (pg.dialect, pg.port, rs.dialect, rs.port) == ("postgresql", 5439, "redshift", 5439)
    redshift_uri = parse_jdbc_uri("jdbc:redshift://db/dev/public.users")
    assert rs.named_by(redshift_uri) and not pg.named_by(redshift_uri)
    assert pg.named_by(parse_jdbc_uri("postgresql://db:5439/dev"))
    assert not pg.named_by(parse_jdbc_uri("jdbc:postgresql://db/dev"))  # port 5432
    assert rs.spark_url == "jdbc:postgresql://db:5439/dev" and rs.url == "jdbc:redshift://db:5439/dev"


_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)


@given(dialect=st.sampled_from(["postgresql", "redshift"]), host=_NAME, port=st.integers(1, 65535), database=_NAME,
       narrowing=st.none() | _NAME | st.tuples(_NAME, _NAME).map(".".join))
def test_location_prefix_parses_back_to_the_same_uri(dialect, host, port, database, narrowing) -> None:  # noqa: ANN001
    uri = JdbcUri(dialect, host, port, database, narrowing)
    assert parse_jdbc_uri(uri.location_prefix) == uri
