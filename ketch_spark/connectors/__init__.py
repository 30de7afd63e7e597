"""Connectors: one interface (discover, sample, find, erase), one module per store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ketch_spark.connectors.base import (
    Asset,
    Connector,
    SampledAsset,
    asset_id_of,
    describe_error,
    redact,
    secret_values,
)
from ketch_spark.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from ketch_spark.config import KetchConfig

__all__ = [
    "Asset",
    "Connector",
    "SampledAsset",
    "asset_id_of",
    "connector_for",
    "describe_error",
    "redact",
    "secret_values",
    "system_of_uri",
]


def system_of_uri(uri: str) -> str:
    """The system a URI belongs to: ``file``, ``s3``, ``postgres`` or ``dynamodb``.

    Raises:
        ConfigError: No connector serves this kind of URI.
    """
    from ketch_spark.connectors.dynamodb import is_dynamodb_uri
    from ketch_spark.connectors.files import FileConnector, is_file_uri, normalise_file_uri
    from ketch_spark.connectors.jdbc import is_jdbc_uri

    if is_dynamodb_uri(uri):
        return "dynamodb"
    if is_jdbc_uri(uri):
        return "postgres"
    if is_file_uri(uri):
        return FileConnector.system_of(normalise_file_uri(uri))
    raise ConfigError(
        f"no connector for {uri!r}: expected file://, s3a://, a local path, jdbc:postgresql:// or dynamodb://"
    )


def connector_for(uri: str, spark: SparkSession, cfg: KetchConfig) -> Connector:
    """The connector serving ``uri``.

    Raises:
        ConfigError: No connector serves this kind of URI.
    """
    from ketch_spark.connectors.dynamodb import DynamoDbConnector
    from ketch_spark.connectors.files import FileConnector
    from ketch_spark.connectors.jdbc import JdbcConnector

    system = system_of_uri(uri)
    if system == "dynamodb":
        return DynamoDbConnector(spark, cfg)
    if system == "postgres":
        return JdbcConnector(spark, cfg)
    return FileConnector(spark, cfg)
