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
        scan_page_size: 1000                    # optional: items per Scan page (rights scans)

URIs: ``dynamodb://`` (every table of the configured region),
``dynamodb://<region>`` or ``dynamodb://<region>/<table name prefix>``.
Items become rows through Spark's JSON reader, so tables whose items have
different attributes or types still give one DataFrame (conflicting types are
read as strings).

Rights (find, erase, verify) match items in Python with the normal forms of
:mod:`ketch_spark.rights.match` (DynamoDB cannot lower-case or trim in a filter):
by key when the partition key is the batch's only identity attribute, otherwise
through a paginated, filtered Scan; writes are conditional on the item still
holding what matched (see :class:`DynamoDbConnector`'s rights section).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from ketch_spark.connectors.base import Asset, Connector, EraseCounts, VerifyResult, describe_error, fingerprint_of
from ketch_spark.connectors.dynamodb_rights import DynamoTable, plain_value
from ketch_spark.errors import ConfigError, ConnectorError, ObfuscationError, PartialErasureError
from ketch_spark.rights.match import batch_rows

__all__ = ["DynamoDbConnector", "is_dynamodb_uri", "items_to_json_lines", "json_lines_frame"]

logger = logging.getLogger(__name__)


def is_dynamodb_uri(uri: str) -> bool:
    """Whether ``uri`` is a ``dynamodb://`` URI."""
    return uri.startswith("dynamodb:")



def items_to_json_lines(items: list[Mapping[str, Any]]) -> list[str]:
    """DynamoDB wire-format items (``{"a": {"S": "x"}}``) as JSON lines of plain values."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return [
        json.dumps({name: plain_value(deserializer.deserialize(value)) for name, value in item.items()}, sort_keys=True)
        for item in items
    ]


def json_lines_frame(spark: SparkSession, lines: list[str]) -> DataFrame:
    """JSON documents as rows, typed by Spark's JSON schema inference; works over Spark Connect too."""
    return spark.read.json(spark.createDataFrame([(line,) for line in lines], "value string"))


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
        return json_lines_frame(self.spark, lines)

    # -- rights: find, erase, verify ------------------------------------------------------------
    #
    # Matching is done in Python, with match.py's normal forms (DynamoDB cannot lower-case
    # or trim in a filter): a paginated Scan whose FilterExpression keeps the items holding
    # an identity attribute (attribute_exists, names bound through ExpressionAttributeNames)
    # and whose projection is limited to keys, identity attributes and the org attribute
    # when the items are only to be deleted or counted. When every identity attribute of
    # the batch is the partition key and holds an exactly-normalised type (user_id,
    # device_id, email_sha256), the items are fetched by key instead (BatchGetItem, or a
    # Query per value when the table has a sort key).
    #
    # Changes: by-key deletes go through BatchWriteItem (unprocessed items retried with
    # backoff); scanned items are deleted with DeleteItem, obfuscated with UpdateItem
    # (a key attribute: a transaction replacing the item), each conditional on the
    # top-level attributes that matched (and those rewritten) still holding the values
    # read, so a concurrent writer is never overwritten blindly: a failed condition
    # re-reads the item and retries while it still matches.

    def find(self, asset: Asset, identities_df: DataFrame) -> DataFrame:
        """Items matching the batch as a DataFrame, with ``_request_id`` (one row per request and item)."""
        from ketch_spark.rights.match import REQUEST_ID_COLUMN

        table = DynamoTable(self, asset, batch_rows(identities_df))
        lines = []
        for found in table.matched_items(full=True):
            doc = json.loads(items_to_json_lines([found.item])[0])
            for request_id in sorted(found.request_ids):
                lines.append(json.dumps({**doc, REQUEST_ID_COLUMN: request_id}, sort_keys=True))
        if not lines:
            fields = [f for f in (asset.schema.fields if asset.schema is not None else [])
                      if f.name != REQUEST_ID_COLUMN]
            return self.spark.createDataFrame([], T.StructType([*fields, T.StructField(REQUEST_ID_COLUMN,
                                                                                       T.StringType())]))
        return json_lines_frame(self.spark, lines)

    def identity_values(self, asset: Asset) -> DataFrame:
        """The table's normalised identity values (see :meth:`Connector.identity_values`): one paginated
        Scan projecting the identity and org attributes, normalised in Python as matching does."""
        table = DynamoTable(self, asset, [], every_identity_column=True)
        found = sorted(table.identity_values(), key=lambda row: tuple(v or "" for v in row))
        return self.spark.createDataFrame(found, "identity_type string, org_id string, value string")

    def erase(self, asset: Asset, identities_df: DataFrame, mode: str) -> EraseCounts:
        """Deletes or obfuscates the batch's items (see the comment above).

        Raises:
            ConnectorError: The table cannot be read (nothing was changed).
            PartialErasureError: Writing failed after some items were changed (counts attached).
            ObfuscationError: A rule does not fit an attribute (checked before any write).
        """
        import datetime as dt

        if mode not in ("delete", "obfuscate"):
            raise ConfigError(f"erasure mode must be delete or obfuscate, found {mode!r}")
        table = DynamoTable(self, asset, batch_rows(identities_df))
        try:
            matched = list(table.matched_items(full=mode == "obfuscate"))
        except (ConfigError, ConnectorError):
            raise
        except Exception as exc:  # noqa: BLE001 - endpoint, access denied, missing table
            raise ConnectorError(f"erase {table.name}: {describe_error(exc, self.secrets())}") from None
        counts = EraseCounts(rows_matched=len(matched), notes=list(table.notes))
        counts.rows_by_request = {}
        for found in matched:
            for request_id in found.request_ids:
                counts.rows_by_request[request_id] = counts.rows_by_request.get(request_id, 0) + 1
        try:
            if mode == "delete":
                table.delete(matched, counts)
            else:
                table.obfuscate(matched, counts)
        except (ConfigError, ObfuscationError):
            raise
        except Exception as exc:  # noqa: BLE001
            reason = f"erase {table.name}: {describe_error(exc, self.secrets())}"
            if counts.rows_changed:
                raise PartialErasureError(reason, counts) from None
            raise ConnectorError(reason) from None
        counts.physical_after = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        logger.info("erased %d item(s) of %s (%s)", counts.rows_changed, table.name, mode)
        return counts

    def verify(self, asset: Asset, identities_df: DataFrame, erased: EraseCounts | None = None) -> VerifyResult:
        """Items still matching the batch (re-read the way the erasure found them)."""
        import datetime as dt

        table = DynamoTable(self, asset, batch_rows(identities_df))
        remaining = sum(1 for _ in table.matched_items(full=False))
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return VerifyResult(remaining=remaining, physical_after=now)
