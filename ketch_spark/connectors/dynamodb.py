"""DynamoDB tables through boto3: list, key schema, item count, sampled Scan.

Config (``connectors.dynamodb``)::

    connectors:
      dynamodb:
        region: eu-west-1
        endpoint_url: http://localhost:8000     # optional (DynamoDB Local, moto)
        access_key_id_env: AWS_ACCESS_KEY_ID    # or access_key_id / secret_access_key;
        secret_access_key_env: AWS_SECRET_ACCESS_KEY   # default: boto3's own chain
        connect_timeout: 5
        max_attempts: 2

URIs: ``dynamodb://`` (every table of the configured region),
``dynamodb://<region>`` or ``dynamodb://<region>/<table name prefix>``.
Items become rows through Spark's JSON reader, so tables whose items have
different attributes or types still give one DataFrame (conflicting types are
read as strings).
"""

from __future__ import annotations

import base64
import decimal
import json
import logging
import os
from typing import Any, Mapping

from pyspark.sql import DataFrame

from ketch_spark.connectors.base import Asset, Connector, describe_error, fingerprint_of
from ketch_spark.errors import ConfigError, ConnectorError

__all__ = ["DynamoDbConnector", "is_dynamodb_uri", "items_to_json_lines"]

logger = logging.getLogger(__name__)


def is_dynamodb_uri(uri: str) -> bool:
    """Whether ``uri`` is a ``dynamodb://`` URI."""
    return uri.startswith("dynamodb:")


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=lambda v: (str(type(v)), v))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "value") and isinstance(getattr(value, "value"), (bytes, bytearray)):
        return base64.b64encode(bytes(value.value)).decode("ascii")
    return value


def items_to_json_lines(items: list[Mapping[str, Any]]) -> list[str]:
    """DynamoDB wire-format items (``{"a": {"S": "x"}}``) as JSON lines of plain values."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return [
        json.dumps({name: _plain(deserializer.deserialize(value)) for name, value in item.items()}, sort_keys=True)
        for item in items
    ]


def _setting(section: Mapping[str, Any], key: str) -> str | None:
    if section.get(key) is not None:
        return str(section[key])
    env_name = section.get(f"{key}_env")
    if env_name:
        value = os.environ.get(str(env_name))
        if value is None:
            raise ConfigError(f"connectors.dynamodb: environment variable {env_name} is not set")
        return value
    return None


class DynamoDbConnector(Connector):
    """Tables of DynamoDB (or any endpoint speaking its API)."""

    system = "dynamodb"

    def _settings(self) -> Mapping[str, Any]:
        return self.cfg.section("connectors").get("dynamodb") or {}

    def region(self) -> str:
        """The configured region (``us-east-1`` when none is set)."""
        return str(self._settings().get("region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")

    def client(self, region: str | None = None) -> Any:
        """A boto3 DynamoDB client with short timeouts and few retries."""
        import boto3
        from botocore.config import Config

        settings = self._settings()
        config = Config(
            connect_timeout=float(settings.get("connect_timeout", 5)),
            read_timeout=float(settings.get("read_timeout", 30)),
            retries={"max_attempts": int(settings.get("max_attempts", 2)), "mode": "standard"},
        )
        return boto3.client(
            "dynamodb",
            region_name=region or self.region(),
            endpoint_url=settings.get("endpoint_url"),
            aws_access_key_id=_setting(settings, "access_key_id"),
            aws_secret_access_key=_setting(settings, "secret_access_key"),
            aws_session_token=_setting(settings, "session_token"),
            config=config,
        )

    def _parse(self, uri: str) -> tuple[str, str]:
        rest = uri.split(":", 1)[1].lstrip("/")
        region, _, prefix = rest.partition("/")
        return region or self.region(), prefix

    def location_prefix(self, uri: str) -> str:
        """``dynamodb://<region>/<table prefix>``."""
        region, prefix = self._parse(uri)
        return f"dynamodb://{region}/{prefix}"

    def covers(self, uri: str, location: str) -> bool:
        """Whether the table at ``location`` is in the region and has the prefix ``uri`` names."""
        return location.startswith(self.location_prefix(uri))

    def _table_names(self, client: Any, prefix: str) -> list[str]:
        names: list[str] = []
        for page in client.get_paginator("list_tables").paginate():
            names.extend(n for n in page.get("TableNames", []) if n.startswith(prefix))
        return sorted(names)

    def discover(self, uri: str) -> list[Asset]:
        """Tables of the region (optionally those whose name starts with a prefix).

        Raises:
            ConnectorError: The endpoint cannot be reached or refuses the keys, or has no table.
        """
        region, prefix = self._parse(uri)
        try:
            client = self.client(region)
            names = self._table_names(client, prefix)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - endpoint unreachable, access denied
            reason = describe_error(exc, self.secrets())
            raise ConnectorError(f"cannot list DynamoDB tables in {region}: {reason}") from None
        if not names:
            named = f" named {prefix}*" if prefix else ""
            raise ConnectorError(f"empty source: no DynamoDB table in {region}{named}")
        return [self._table_asset(client, region, name) for name in names]

    def _table_asset(self, client: Any, region: str, name: str) -> Asset:
        location = f"dynamodb://{region}/{name}"
        try:
            table = client.describe_table(TableName=name)["Table"]
        except Exception as exc:  # noqa: BLE001 - one table failing does not stop the others
            return Asset(self.system, location, name, "dynamodb", error=describe_error(exc, self.secrets()))
        key_schema = [(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])]
        return Asset(
            system=self.system,
            location=location,
            name=name,
            format="dynamodb",
            size_bytes=int(table.get("TableSizeBytes", 0)),
            row_estimate=int(table.get("ItemCount", 0)),
            fingerprint=fingerprint_of(key_schema, table.get("ItemCount"), table.get("TableSizeBytes"),
                                       str(table.get("CreationDateTime"))),
            properties={
                "region": region,
                "table": name,
                "hash_key": next((k for k, t in key_schema if t == "HASH"), ""),
                "range_key": next((k for k, t in key_schema if t == "RANGE"), ""),
            },
        )

    def sample(self, asset: Asset, n: int) -> DataFrame:
        """At most ``n`` items from one Scan page (``Limit=n``), as a DataFrame."""
        client = self.client(asset.properties.get("region"))
        items = client.scan(TableName=asset.properties.get("table", asset.name), Limit=int(n)).get("Items", [])
        lines = items_to_json_lines(items)
        if not lines:
            return self.spark.createDataFrame([], "`_empty` string")
        return self.spark.read.json(self.spark.sparkContext.parallelize(lines, 1))
