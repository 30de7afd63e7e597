"""The rights side of the DynamoDB connector: matching items, deleting and obfuscating them.

Matching is done in Python, with :mod:`ketch_spark.rights.match`'s normal forms
(DynamoDB cannot lower-case or trim in a filter); see
:class:`~ketch_spark.connectors.dynamodb.DynamoDbConnector` for the reads and the
conditional writes that keep a concurrent writer's changes.
"""

from __future__ import annotations

import base64
import decimal
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ketch_spark.errors import ConnectorError, ObfuscationError
from ketch_spark.rights.match import phone_country_prefix

if TYPE_CHECKING:
    from ketch_spark.connectors.base import Asset, EraseCounts
    from ketch_spark.connectors.dynamodb import DynamoDbConnector

__all__ = ["DynamoTable", "Found", "plain_value"]

logger = logging.getLogger(__name__)

def plain_value(value: Any) -> Any:
    """A boto3 value as plain JSON-able Python (Decimal numbers, sets, binary as base64)."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted((plain_value(v) for v in value), key=lambda v: (str(type(v)), v))
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "value") and isinstance(getattr(value, "value"), (bytes, bytearray)):
        return base64.b64encode(bytes(value.value)).decode("ascii")
    return value


_BATCH_WRITE_MAX = 25
_BATCH_GET_MAX = 100
_RETRY_ATTEMPTS = 8
_RETRY_BASE_SECONDS = 0.05
_CONDITION_RETRIES = 3
#: Identity types whose stored form is the normal form itself: lookups by key find them.
_EXACT_TYPES = ("user_id", "device_id", "email_sha256")


@dataclass
class Found:
    """A matched item: wire-format item, the requests it matches, the top-level attributes that matched."""

    item: dict[str, Any]
    request_ids: set[str]
    tops: set[str]


def _normal_forms(value: Any, identity_type: str, country_prefix: str | None) -> list[str]:
    """``value`` (plain, maybe a list) normalised like match.py's ``normalised_key``; unmatched forms dropped."""
    if value is None:
        return []
    if isinstance(value, list):
        return [n for v in value for n in _normal_forms(v, identity_type, country_prefix)]
    if isinstance(value, dict):
        return []
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    trimmed = text.strip(" ")
    if identity_type in ("email", "email_sha256"):
        return [trimmed.lower()]
    if identity_type != "phone":
        return [trimmed]
    compact = re.sub(r"[^0-9+]", "", trimmed)
    digits = re.sub(r"[^0-9]", "", compact)
    if compact.startswith("+"):
        return ["+" + digits]
    if compact.startswith("00"):
        return ["+" + digits[2:66]]
    return [] if country_prefix is None else [country_prefix + re.sub(r"^0", "", digits)]


def _values_at(value: Any, parts: list[str]) -> Any:
    """The plain values at ``parts`` below ``value``; lists of maps on the way are mapped (a list comes back)."""
    for index, part in enumerate(parts):
        if isinstance(value, list):
            return [_values_at(v, parts[index:]) for v in value]
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class DynamoTable:
    """One table during one rights call: its keys, the batch's keys, reads and conditional writes."""

    def __init__(self, connector: DynamoDbConnector, asset: Asset, identities: list[Any], *,
                 every_identity_column: bool = False) -> None:
        from boto3.dynamodb.types import TypeDeserializer

        settings = connector.cfg.dsr
        self.deserializer = TypeDeserializer()
        self.connector = connector
        self.client = connector.client(asset.properties.get("region"))
        self.name = asset.properties.get("table", asset.name)
        self.page_size = connector._settings().get("scan_page_size")
        self.hash_key = asset.properties.get("hash_key") or ""
        self.range_key = asset.properties.get("range_key") or ""
        self.keys = [k for k in (self.hash_key, self.range_key) if k]
        self.org_column = settings.org_column
        self.scoped = asset.schema is not None and settings.org_column in asset.schema.fieldNames()
        self.country_prefix = phone_country_prefix(settings.default_phone_region)
        self.asset = asset
        self.notes: list[str] = []
        self.batch: dict[tuple[str, str], set[str]] = {}
        for row in identities:
            self.batch.setdefault((row["identity_type"], f"{row['org_id']}\x1f{row['value']}"), set()).add(
                row["request_id"])
            self.batch.setdefault((row["identity_type"], row["value"]), set()).add(row["request_id"])
        types = {t for t, _ in self.batch}
        self.matchers = [(c.column.split("."), c.identity_type or "") for c in asset.identity_columns
                         if every_identity_column or c.identity_type in types]

    # -- matching --------------------------------------------------------------------------------

    def match(self, item: dict[str, Any]) -> Found | None:
        """The requests ``item`` (wire format) matches, or ``None``."""
        plain = {k: plain_value(self.deserializer.deserialize(v)) for k, v in item.items()}
        org = plain.get(self.org_column)
        scoped = self.scoped or (self.asset.schema is None and self.org_column in plain)
        if scoped and (org is None or isinstance(org, (dict, list))):
            return None
        found = Found(item, set(), set())
        for parts, identity_type in self.matchers:
            for normal in _normal_forms(_values_at(plain, parts), identity_type, self.country_prefix):
                key = f"{org}\x1f{normal}" if scoped else normal
                request_ids = self.batch.get((identity_type, key))
                if request_ids:
                    found.request_ids |= request_ids
                    found.tops.add(parts[0])
        return found if found.request_ids else None

    def identity_values(self) -> set[tuple[str, str | None, str]]:
        """(identity type, org or ``None`` when unscoped, normalised value) of every scanned item."""
        values = set()
        for item in self._scan(full=False):
            plain = {k: plain_value(self.deserializer.deserialize(v)) for k, v in item.items()}
            org = plain.get(self.org_column)
            scoped = self.scoped or (self.asset.schema is None and self.org_column in plain)
            if scoped and (org is None or isinstance(org, (dict, list))):
                continue  # as in matching: an item of no org matches no request
            org_text = str(org) if scoped else None
            for parts, identity_type in self.matchers:
                for normal in _normal_forms(_values_at(plain, parts), identity_type, self.country_prefix):
                    values.add((identity_type, org_text, normal))
        return values

    def _by_key(self) -> bool:
        return bool(self.matchers) and all(
            parts == [self.hash_key] and identity_type in _EXACT_TYPES for parts, identity_type in self.matchers)

    def matched_items(self, full: bool) -> Iterator[Found]:
        """Every matched item: fetched by key when the partition key is the only identity, else scanned."""
        if not self.matchers:
            return iter(())
        items = self._items_by_key() if self._by_key() else self._scan(full)
        return (found for found in map(self.match, items) if found is not None)

    def _scan(self, full: bool) -> Iterator[dict[str, Any]]:
        names: dict[str, str] = {}

        def path(parts: list[str]) -> str:
            for part in parts:
                names.setdefault(part, f"#n{len(names)}")
            return ".".join(names[p] for p in parts)

        tops = sorted({parts[0] for parts, _ in self.matchers})
        arguments: dict[str, Any] = {
            "TableName": self.name,
            "ConsistentRead": True,
            "FilterExpression": " OR ".join(f"attribute_exists({path([t])})" for t in tops),
        }
        if not full:
            kept = sorted({*tops, *self.keys, self.org_column})
            arguments["ProjectionExpression"] = ", ".join(path([a]) for a in kept)
        arguments["ExpressionAttributeNames"] = {v: k for k, v in names.items()}
        pagination = {"PageSize": int(self.page_size)} if self.page_size else {}
        for page in self.client.get_paginator("scan").paginate(**arguments, PaginationConfig=pagination):
            yield from page.get("Items", [])

    def _key_type(self) -> str:
        definitions = self.client.describe_table(TableName=self.name)["Table"]["AttributeDefinitions"]
        return next(d["AttributeType"] for d in definitions if d["AttributeName"] == self.hash_key)

    def _items_by_key(self) -> Iterator[dict[str, Any]]:
        key_type = self._key_type()
        key_types = {identity_type for _, identity_type in self.matchers}
        values = sorted({key for (t, key) in self.batch if t in key_types and "\x1f" not in key})
        if key_type != "S":
            values = [v for v in values if re.fullmatch(r"-?\d+(\.\d+)?", v)]
        if self.range_key:
            paginator = self.client.get_paginator("query")
            for value in values:
                for page in paginator.paginate(TableName=self.name, KeyConditionExpression="#k = :v",
                                               ExpressionAttributeNames={"#k": self.hash_key},
                                               ExpressionAttributeValues={":v": {key_type: value}}):
                    yield from page.get("Items", [])
            return
        for start in range(0, len(values), _BATCH_GET_MAX):
            keys = [{self.hash_key: {key_type: v}} for v in values[start:start + _BATCH_GET_MAX]]
            yield from self._batch_get(keys)

    def _batch_get(self, keys: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        request = {self.name: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(_RETRY_ATTEMPTS):
            answer = self.client.batch_get_item(RequestItems=request)
            yield from answer.get("Responses", {}).get(self.name, [])
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                return
            time.sleep(_RETRY_BASE_SECONDS * 2 ** attempt)
        raise ConnectorError(f"{self.name}: BatchGetItem left keys unprocessed after {_RETRY_ATTEMPTS} attempts")

    # -- writing ---------------------------------------------------------------------------------

    def key_of(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: item[k] for k in self.keys}

    def delete(self, matched: list[Found], counts: EraseCounts) -> None:
        """Deletes the matched items: BatchWriteItem by key, conditional DeleteItem when scanned."""
        if self._by_key():
            for start in range(0, len(matched), _BATCH_WRITE_MAX):
                chunk = matched[start:start + _BATCH_WRITE_MAX]
                self._batch_delete([self.key_of(f.item) for f in chunk])
                counts.rows_changed += len(chunk)
            return
        for found in matched:
            counts.rows_changed += self._conditional(found, counts, self._delete_one)

    def _batch_delete(self, keys: list[dict[str, Any]]) -> None:
        request = {self.name: [{"DeleteRequest": {"Key": key}} for key in keys]}
        for attempt in range(_RETRY_ATTEMPTS):
            request = self.client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
            if not request:
                return
            time.sleep(_RETRY_BASE_SECONDS * 2 ** attempt)
        raise ConnectorError(f"{self.name}: BatchWriteItem left items unprocessed after {_RETRY_ATTEMPTS} attempts")

    def _conditional(self, found: Found, counts: EraseCounts, write: Any) -> int:
        """Runs ``write(found)``; on a failed condition re-reads the item and retries while it matches."""
        for _ in range(_CONDITION_RETRIES):
            try:
                write(found)
                return 1
            except self.client.exceptions.ConditionalCheckFailedException:
                pass
            except self.client.exceptions.TransactionCanceledException as exc:
                if "ConditionalCheckFailed" not in str(exc):
                    raise
            current = self.client.get_item(TableName=self.name, Key=self.key_of(found.item),
                                           ConsistentRead=True).get("Item")
            found = self.match(current) if current else None
            if found is None:
                counts.notes.append("an item changed concurrently and no longer matches: left as it is")
                return 0
        raise ConnectorError(f"{self.name}: an item kept changing during the erasure; run again")

    @staticmethod
    def _condition(item: dict[str, Any], tops: set[str]) -> dict[str, Any]:
        """ConditionExpression (with names and values) that ``tops`` still hold their values in ``item``."""
        ordered = sorted(tops)
        return {
            "ConditionExpression": " AND ".join(f"#c{i} = :c{i}" for i in range(len(ordered))),
            "ExpressionAttributeNames": {f"#c{i}": top for i, top in enumerate(ordered)},
            "ExpressionAttributeValues": {f":c{i}": item[top] for i, top in enumerate(ordered)},
        }

    def _delete_one(self, found: Found) -> None:
        self.client.delete_item(TableName=self.name, Key=self.key_of(found.item),
                                **self._condition(found.item, found.tops))

    def obfuscate(self, matched: list[Found], counts: EraseCounts) -> None:
        """Rewrites the personal attributes of the matched items (every new value computed before any write)."""
        from ketch_spark.rights.obfuscate import hmac_key_from_env

        settings = self.connector.cfg.dsr
        rules = {}
        for personal in self.asset.personal_columns:
            rule = settings.rule_for(personal.column, personal.category, key=personal.column in self.keys)
            if rule is not None:
                rules.setdefault(personal.column, rule)
        for column, rule in settings.obfuscate_columns.items():
            rules.setdefault(column, rule)
        key = hmac_key_from_env(settings)

        def new_values(found: Found) -> dict[str, Any]:
            return _obfuscated_tops(found.item, rules, key, settings.hmac_secret_env)

        planned = [(found, new_values(found)) for found in matched]  # every rule checked before any write
        for found, new_tops in planned:
            if not new_tops:
                continue
            replace = bool(set(new_tops) & set(self.keys))

            def write(current: Found, first: Found = found, tops: dict = new_tops, replace: bool = replace) -> None:
                values = tops if current is first else new_values(current)  # re-read after a lost condition
                (self._replace_one if replace else self._update_one)(current, values)

            counts.rows_changed += self._conditional(found, counts, write)

    def _update_one(self, found: Found, new_tops: dict[str, Any]) -> None:
        condition = self._condition(found.item, found.tops | set(new_tops))
        names = condition["ExpressionAttributeNames"]
        values = condition["ExpressionAttributeValues"]
        sets = []
        for index, (top, value) in enumerate(sorted(new_tops.items())):
            names[f"#u{index}"], values[f":u{index}"] = top, value
            sets.append(f"#u{index} = :u{index}")
        self.client.update_item(TableName=self.name, Key=self.key_of(found.item),
                                UpdateExpression="SET " + ", ".join(sets), **condition)

    def _replace_one(self, found: Found, new_tops: dict[str, Any]) -> None:
        """A key attribute changes: one transaction deletes the item (still matching) and puts its new version."""
        new_item = {**found.item, **new_tops}
        if any(new_item[k] == {"NULL": True} for k in self.keys):
            raise ObfuscationError(f"{self.name}: key attribute(s) {', '.join(self.keys)} cannot become null; "
                                   "name a sha256, hmac, random or constant rule for them in dsr.obfuscate.columns")
        condition = self._condition(found.item, found.tops | (set(new_tops) - set(self.keys)))
        self.client.transact_write_items(TransactItems=[
            {"Delete": {"TableName": self.name, "Key": self.key_of(found.item), **condition}},
            {"Put": {"TableName": self.name, "Item": new_item, "ConditionExpression": "attribute_not_exists(#k)",
                     "ExpressionAttributeNames": {"#k": self.hash_key}}},
        ])


def _obfuscated_tops(item: dict[str, Any], rules: Mapping[str, Any], key: bytes | None,
                     secret_env: str) -> dict[str, Any]:
    """New wire value of each top-level attribute of ``item`` that a rule rewrites (paths absent are skipped)."""
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    deserializer, serializer = TypeDeserializer(), TypeSerializer()
    tops: dict[str, Any] = {}
    for path, rule in rules.items():
        parts = path.split(".")
        if parts[0] not in item:
            continue
        current = tops[parts[0]] if parts[0] in tops else deserializer.deserialize(item[parts[0]])
        tops[parts[0]] = _replace_at(current, parts[1:], lambda v, r=rule, p=path: _obfuscated(v, r, key, p,
                                                                                               secret_env))
    return {top: serializer.serialize(value) for top, value in tops.items()
            if serializer.serialize(value) != item[top]}


def _replace_at(value: Any, parts: list[str], leaf: Any) -> Any:
    """``value`` with the leaf at ``parts`` replaced (lists of maps mapped; missing fields left out)."""
    if not parts:
        if isinstance(value, (list, set)) and not any(isinstance(v, (dict, list)) for v in value):
            mapped = [leaf(v) for v in value]
            return set(mapped) if isinstance(value, set) and None not in mapped else mapped
        return leaf(value)
    if isinstance(value, list):
        return [_replace_at(v, parts, leaf) for v in value]
    if not isinstance(value, dict) or parts[0] not in value:
        return value
    return {**value, parts[0]: _replace_at(value[parts[0]], parts[1:], leaf)}


def _obfuscated(value: Any, rule: Any, key: bytes | None, path: str, secret_env: str) -> Any:
    """The replacement of one plain value, as :func:`ketch_spark.rights.obfuscate.obfuscated_value` computes it.

    Raises:
        ObfuscationError: A hash or random rule on a value that is not a string, ``hmac``
            without a key, an unknown method.
    """
    import hashlib
    import hmac
    import uuid

    if rule.method == "null":
        return None
    if rule.method == "constant":
        return decimal.Decimal(str(rule.value)) if isinstance(rule.value, (int, float)) and \
            not isinstance(rule.value, bool) else rule.value
    if rule.method not in ("sha256", "hmac", "random"):
        raise ObfuscationError(f"attribute {path}: unknown obfuscation method {rule.method!r}")
    if value is None:
        return None if rule.method in ("hmac",) or (rule.method == "sha256" and rule.value is None) else \
            (str(uuid.uuid4()) if rule.method == "random" else hashlib.sha256(str(rule.value).encode()).hexdigest())
    if not isinstance(value, str):
        raise ObfuscationError(f"attribute {path} holds a {type(value).__name__}: method {rule.method} applies to "
                               "strings only; use null or constant for it (dsr.obfuscate.columns)")
    if rule.method == "random":
        return str(uuid.uuid4())
    if rule.method == "sha256":
        source = value if rule.value is None else str(rule.value)
        return hashlib.sha256(source.encode("utf-8")).hexdigest()
    if key is None:
        raise ObfuscationError(f"attribute {path}: method hmac needs a secret key; set the environment variable "
                               f"{secret_env}")
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
