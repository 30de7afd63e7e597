"""The one connector interface: discover, sample, find, erase; plus secret redaction.

Every store (files on file:// or s3a://, a PostgreSQL/Redshift warehouse over
JDBC, DynamoDB) implements :class:`Connector`. The catalog and the rights engine
only talk to this interface.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from ketch_spark.config import KetchConfig

__all__ = [
    "SYSTEMS",
    "FORMATS",
    "Asset",
    "PersonalColumn",
    "EraseCounts",
    "VerifyResult",
    "SampledAsset",
    "Connector",
    "asset_id_of",
    "fingerprint_of",
    "secret_values",
    "redact",
    "describe_error",
]

#: Systems an asset can live in.
SYSTEMS = ("file", "s3", "postgres", "dynamodb")
#: Formats an asset can have.
FORMATS = ("delta", "parquet", "json", "csv", "jdbc", "dynamodb")

_SECRET_KEY = re.compile(r"(password|secret|token|session_key|credential)", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.\-]*://)[^/@\s]+@")
_MAX_ERROR_CHARS = 600
_VOLATILE_ALIAS = re.compile(r"SPARK_GEN_SUBQ_\d+")
_JVM_CAUSE = re.compile(r"[\w.$]+(Exception|Error)\b")


def asset_id_of(system: str, location: str) -> str:
    """Stable id of an asset: sha1 of ``system`` and ``location``."""
    return hashlib.sha1(f"{system}\x1f{location}".encode("utf-8")).hexdigest()


def fingerprint_of(*parts: Any) -> str:
    """sha1 of a JSON rendering of ``parts`` (file listings, versions, table stats)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PersonalColumn:
    """A classified personal column of an asset, as the rights engine needs it.

    Attributes:
        column: Dot path (``user.contact.email``).
        category: Catalog category (``email``, ``gender``...).
        identity_type: DSR identity type the column holds (``email``, ``email_sha256``,
            ``phone``, ``user_id``, ``device_id``), or ``None`` for a personal column
            that identifies no one on its own (obfuscated, never matched).
    """

    column: str
    category: str | None
    identity_type: str | None = None


@dataclass
class EraseCounts:
    """What one erasure did to one asset (the audit row is built from it).

    Attributes:
        rows_matched: Rows that matched an identity of the batch.
        rows_changed: Rows deleted or obfuscated.
        version_before: Delta version before the erasure (``None`` for file sets).
        version_after: Delta version after the erasure and its purge.
        files_matched: Data files that held a matched row.
        files_rewritten: Data files written anew (or purged) because of it.
        bytes_read: Bytes of the files read to find and rewrite matches.
        bytes_rewritten: Bytes of the files written.
        physical_after: When no readable file holds an erased row any more (UTC,
            ISO 8601): now for rewritten file sets and vacuumed Delta tables, the
            erasure commit plus the retention otherwise.
        notes: Facts worth keeping in the audit (recovered staging, skipped columns).
        rows_by_request: Matched rows per request id, counted in the erasure's own
            pass over the data (``None`` when the connector does not count them).
    """

    rows_matched: int = 0
    rows_changed: int = 0
    version_before: int | None = None
    version_after: int | None = None
    files_matched: int = 0
    files_rewritten: int = 0
    bytes_read: int = 0
    bytes_rewritten: int = 0
    physical_after: str | None = None
    notes: list[str] = field(default_factory=list)
    rows_by_request: dict[str, int] | None = None


@dataclass
class VerifyResult:
    """What a re-query of one asset found after an erasure.

    Attributes:
        remaining: Rows of the current data still matching an identity of the batch.
        retained_files_holding: Files no longer in the current version but still
            stored (readable by time travel, change data feed) that hold a matched
            row; 0 once removal is physical.
        physical_after: When removal is (or becomes) physical, UTC ISO 8601.
    """

    remaining: int = 0
    retained_files_holding: int = 0
    physical_after: str | None = None

    @property
    def passed(self) -> bool:
        """No current row matches (retained old files only delay physical removal)."""
        return self.remaining == 0


@dataclass(frozen=True)
class Asset:
    """One data asset: a table, a dataset, a set of log files or a key-value table.

    Attributes:
        system: One of :data:`SYSTEMS`.
        location: Where it lives, without credentials (a URI; for JDBC and DynamoDB
            ``<url>/<schema.table>`` and ``dynamodb://<region>/<table>``).
        name: Short human name (folder, ``schema.table``, table name).
        format: One of :data:`FORMATS`.
        schema: Spark schema, when known.
        partition_columns: Hive-style partition columns (``col=value`` folders).
        size_bytes: Total size of its files or table, when known.
        row_estimate: Estimated number of rows or items.
        fingerprint: Changes whenever the data may have changed (Delta version,
            hash of the file listing, table statistics).
        properties: Store-specific facts the readers need (JDBC url and table,
            primary key, DynamoDB key schema, the file list of a file set).
        error: Why the asset could not be read, if it could not.
        personal_columns: Its classified personal columns (filled from the catalog
            for the rights engine; empty when discovered).
    """

    system: str
    location: str
    name: str
    format: str | None
    schema: T.StructType | None = None
    partition_columns: tuple[str, ...] = ()
    size_bytes: int | None = None
    row_estimate: int | None = None
    fingerprint: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    personal_columns: tuple[PersonalColumn, ...] = ()

    @property
    def identity_columns(self) -> tuple[PersonalColumn, ...]:
        """The personal columns that hold an identity type (matched by the rights engine)."""
        return tuple(c for c in self.personal_columns if c.identity_type)

    @property
    def asset_id(self) -> str:
        """Stable id: sha1 of system and location."""
        return asset_id_of(self.system, self.location)

    @property
    def schema_json(self) -> str | None:
        """The schema as Spark's JSON, or ``None``."""
        return self.schema.json() if self.schema is not None else None


@dataclass(frozen=True)
class SampledAsset:
    """One asset as :meth:`Connector.sample_many` read it: described and sampled, or failed.

    Attributes:
        asset: The asset completed by :meth:`Connector.describe` (the discovered one when it failed).
        rows: At most ``n`` collected rows (``None`` when it failed).
        schema: The schema of the rows (``None`` when it failed).
        error: What failed, if anything.
    """

    asset: Asset
    rows: list[Any] | None = None
    schema: T.StructType | None = None
    error: BaseException | None = None


class Connector(ABC):
    """One data store.

    Args:
        spark: The SparkSession used to read the store.
        cfg: Configuration; connectors read ``cfg.section("connectors")``.
    """

    #: The :data:`SYSTEMS` value of the assets this connector returns.
    system: str = ""

    def __init__(self, spark: SparkSession, cfg: KetchConfig) -> None:
        self.spark = spark
        self.cfg = cfg

    @abstractmethod
    def discover(self, uri: str) -> list[Asset]:
        """Lists the assets under ``uri``.

        An asset that was found but cannot be read comes back with ``error`` set.

        Raises:
            ConnectorError: The store cannot be reached or listed, or holds nothing.
        """

    def location_prefix(self, uri: str) -> str:
        """The location that ``uri`` stands for (assets under it start with it)."""
        return uri.rstrip("/")

    def covers(self, uri: str, location: str) -> bool:
        """Whether an asset at ``location`` lies under ``uri`` (used to mark vanished assets gone)."""
        prefix = self.location_prefix(uri)
        return location == prefix or location.startswith(prefix.rstrip("/") + "/")

    def describe(self, asset: Asset) -> Asset:
        """``asset`` completed with what costs a read (schema, size, row estimate).

        :meth:`discover` stays cheap (listings, versions, statistics) so that an
        unchanged asset is never read again; the catalog calls this only for
        assets it is about to sample. The default returns ``asset`` unchanged.
        """
        return asset

    @abstractmethod
    def sample(self, asset: Asset, n: int) -> DataFrame:
        """At most ``n`` rows of ``asset``; the cost does not grow with the asset's size."""

    def sample_many(self, assets: Sequence[Asset], n: int) -> list[SampledAsset]:
        """Describes and samples each of ``assets`` (at most ``n`` collected rows each); one result per asset, in order.

        A failure is returned on its asset's result and never stops the others.
        The default reads the assets one by one (:meth:`describe`, :meth:`sample`);
        a connector that can read many assets in fewer Spark jobs overrides it.
        """
        return [self.sample_one(asset, n) for asset in assets]

    def sample_one(self, asset: Asset, n: int) -> SampledAsset:
        """:meth:`describe` and :meth:`sample` of one asset, collected; a failure is returned, not raised."""
        try:
            described = self.describe(asset)
            sample_df = self.sample(described, n)
            rows = sample_df.limit(n).collect()
        except Exception as exc:  # noqa: BLE001 - corrupt files, access denied, mixed shapes...
            return SampledAsset(asset, error=exc)
        return SampledAsset(described, rows, sample_df.schema)

    def find(self, asset: Asset, identities_df: DataFrame) -> DataFrame:
        """Rows of ``asset`` that match an identity in ``identities_df``, one pass for the batch.

        ``identities_df`` has the columns of :data:`ketch_spark.rights.match.IDENTITIES_SCHEMA`
        (request_id, org_id, identity_type, value; values normalised at intake) and
        ``asset.identity_columns`` says which columns hold which identity type. The
        result holds the asset's columns plus ``_request_id``: one row per (request,
        matched row), so a row matching two requests of the batch appears twice.

        Raises:
            NotImplementedError: This connector does not support it yet.
        """
        raise NotImplementedError(f"{type(self).__name__}.find is not implemented yet")

    def count_by_request(self, asset: Asset, identities_df: DataFrame) -> dict[str, int]:
        """Rows of ``asset`` matching the batch, per request id (a dry run's figures); default: :meth:`find`'s rows."""
        from ketch_spark.rights.match import REQUEST_ID_COLUMN

        counted = self.find(asset, identities_df).groupBy(REQUEST_ID_COLUMN).count().collect()
        return {r[REQUEST_ID_COLUMN]: int(r["count"]) for r in counted}

    def erase(self, asset: Asset, identities_df: DataFrame, mode: str) -> EraseCounts:
        """Deletes (``mode="delete"``) or obfuscates (``"obfuscate"``) the matching rows, whole batch at once.

        Rows without a match are left as they are; a rerun after a failure finishes
        or undoes what an interrupted run left and never erases twice. The counts
        carry ``rows_by_request`` (matched rows per request id of ``identities_df``),
        counted in the same pass that finds the rows, so the engine never reads
        an asset a second time to attribute rows to requests.

        Raises:
            NotImplementedError: This connector does not support it yet.
        """
        raise NotImplementedError(f"{type(self).__name__}.erase is not implemented yet")

    def transaction_key(self, asset: Asset) -> str:
        """Assets with the same key are erased together by one :meth:`erase_all` call (default: each alone)."""
        return asset.location

    def erase_all(self, work: Sequence[tuple[Asset, DataFrame, str]]) -> list[EraseCounts | Exception]:
        """Erases each (asset, identities, mode) of ``work``; per entry its counts or the exception it raised.

        Every asset of ``work`` has the same :meth:`transaction_key`. The default
        erases them one by one; a connector that can change them in one
        transaction (JDBC: the tables of one database) overrides it.
        """
        results: list[EraseCounts | Exception] = []
        for asset, identities_df, mode in work:
            try:
                results.append(self.erase(asset, identities_df, mode))
            except Exception as exc:  # noqa: BLE001 - one asset's failure is the caller's to record
                results.append(exc)
        return results

    def identity_values(self, asset: Asset) -> DataFrame | None:
        """Distinct normalised values of ``asset``'s identity columns (identity_type, org_id, value), one pass.

        The erased-subject ledger's sweep hashes them to find erased subjects
        that came back (:mod:`ketch_spark.rights.ledger`). ``None`` when this
        connector cannot list them (the sweep then reports the asset as unchecked).
        """
        return None

    def verify(self, asset: Asset, identities_df: DataFrame, erased: EraseCounts | None = None) -> VerifyResult:
        """Re-queries ``asset`` after an erasure: the current data must hold no match.

        The default counts :meth:`find`'s rows; stores with versions also check
        that old versions no longer hold them (``erased`` says which versions the
        erasure wrote).
        """
        return VerifyResult(remaining=int(self.find(asset, identities_df).count()))

    def secrets(self) -> list[str]:
        """Secret values this connector knows (redacted from every message)."""
        return secret_values(self.cfg)

    def redact(self, text: str) -> str:
        """``text`` without this connector's secrets or URL credentials."""
        return redact(text, self.secrets())


def _walk_secrets(value: Any, key: str = "") -> Iterable[str]:
    import os

    if isinstance(value, Mapping):
        for child_key, child in value.items():
            yield from _walk_secrets(child, str(child_key))
    elif isinstance(value, (list, tuple)):
        for child in value:
            yield from _walk_secrets(child, key)
    elif isinstance(value, str) and value:
        if key.endswith("_env") and _SECRET_KEY.search(key):
            env_value = os.environ.get(value)
            if env_value:
                yield env_value
        elif _SECRET_KEY.search(key) or key in ("access_key_id", "access_key"):
            yield value


def secret_values(cfg: KetchConfig) -> list[str]:
    """Every secret in the connectors section: passwords, secret keys, key ids, and the env values named."""
    found = {s for s in _walk_secrets(cfg.section("connectors")) if len(s) >= 4}
    return sorted(found, key=len, reverse=True)


def redact(text: str | None, secrets: Iterable[str] = ()) -> str:
    """Removes secrets and URL user-info from ``text`` and bounds its length."""
    cleaned = _URL_USERINFO.sub(r"\g<scheme>***@", str(text or ""))
    for secret in secrets:
        if secret:
            cleaned = cleaned.replace(secret, "***")
    cleaned = re.sub(r"(password|secret[\w.]*|pwd)\s*[=:]\s*[^\s,;&)]+", r"\1=***", cleaned, flags=re.IGNORECASE)
    if len(cleaned) > _MAX_ERROR_CHARS:
        cleaned = cleaned[: _MAX_ERROR_CHARS - 3] + "..."
    return cleaned


def describe_error(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """One short, redacted line for an exception.

    Spark and JVM errors carry stack traces and wrappers ("An error occurred while
    calling o42.load"); the first line naming the underlying exception is kept.
    """
    lines = [line.strip().lstrip(": ") for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if line and not line.startswith(("at ", "JVM stacktrace", "Caused by: py4j"))]
    cause = next((line for line in lines[1:] if _JVM_CAUSE.search(line)), None)
    if lines and lines[0].startswith("An error occurred while calling") and cause:
        text = cause
    elif lines:
        text = f"{type(exc).__name__}: {lines[0]}"
    else:
        text = type(exc).__name__
    text = _VOLATILE_ALIAS.sub("SPARK_GEN_SUBQ", text)  # same failure, same message: rescans stay idempotent
    return redact(text, secrets)
