"""KetchConfig: where the warehouse lives, which policy applies, how Spark runs.

A config is read from YAML (conf/ketch.yaml is the embedded default) and
validated when built; every error names the file and the key at fault.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ketch_spark._yaml import load_yaml_file, unknown_keys
from ketch_spark.errors import ConfigError

__all__ = [
    "KetchConfig",
    "ConsentSettings",
    "FilterSettings",
    "DeltaSettings",
    "LogStoreSettings",
    "DsrSettings",
    "dsr_settings_from_mapping",
    "delta_settings_from_mapping",
    "ObfuscationRule",
    "OBFUSCATION_METHODS",
    "load_config",
    "default_config_path",
    "DEFAULT_CONFIG_PATH",
]

DEFAULT_CONFIG_PATH = "conf/ketch.yaml"
_DEFAULT_WAREHOUSE = "./ketch-data"
_DEFAULT_POLICY = "policy.yaml"
_FREE_SECTIONS = ("catalog", "connectors")
_KNOWN_KEYS = ("warehouse", "policy", "jars_dir", "spark", "consent", "filter", "dsr", "delta", *_FREE_SECTIONS)
#: How an obfuscated column's value is replaced.
OBFUSCATION_METHODS = ("null", "constant", "sha256", "hmac", "random")
#: Delta's default retention (``delta.deletedFileRetentionDuration``): 7 days.
_DELTA_DEFAULT_RETENTION_HOURS = 168


@dataclass(frozen=True)
class ConsentSettings:
    """Settings of consent ingestion.

    Attributes:
        max_future_skew_seconds: An event whose timestamp lies further than this in
            the future (against ingestion time, UTC) is quarantined.
        earliest_event_date: An event dated before this day (UTC) is quarantined
            as ``ancient_timestamp``: consent platforms did not exist before it,
            so such a time is a bug upstream (an epoch zero, a two-digit year).
        max_id_length: Longest accepted ``user_id`` / ``org_id`` in characters
            (after trimming); a longer one is quarantined as ``id_too_long``.
        max_quarantined_share: The batch's expectations fail for a source
            (api, js_tag, ...) whose share of quarantined rows is above it.
        state_rewrite_share: Compaction rewrites the consent/state files a run
            touches (instead of marking changed rows deleted and appending them)
            when at least this share of the state's rows changes.
    """

    max_future_skew_seconds: int = 300
    earliest_event_date: dt.date = dt.date(2000, 1, 1)
    max_id_length: int = 256
    max_quarantined_share: float = 0.05
    state_rewrite_share: float = 0.5


@dataclass(frozen=True)
class FilterSettings:
    """Settings of the consent filter.

    Attributes:
        broadcast_max_bytes: Largest estimated size of a purpose's key set that is
            broadcast; above it the filter uses a shuffle join.
        key_set_cache_entries: How many broadcast-sized key sets (one per state
            version and purpose, kept from their second use) an application keeps
            persisted for its later filters, and how many broadcast relations of
            them (one per key set and build-side filter) the session extension
            keeps; 0 turns the reuse off.
        session_extension: Load ketch-spark's session extension (opt-in: it
            plans with Spark internals, see :mod:`ketch_spark.extensions`) in
            the embedded session, so a kept key set's broadcast relation is
            built once per application rather than once per query.
    """

    broadcast_max_bytes: int = 256 * 1024 * 1024
    key_set_cache_entries: int = 4
    session_extension: bool = False


@dataclass(frozen=True)
class LogStoreSettings:
    """The DynamoDB-backed Delta log store of an ``s3a://`` warehouse (``delta.log_store:`` in ketch.yaml).

    S3 lets two drivers write the same commit file of a table at once, the later
    one silently replacing the earlier; the log store claims each commit in a
    DynamoDB table first, so one driver wins and the other retries (see
    :mod:`ketch_spark.log_store`).

    Attributes:
        enabled: Use it when the warehouse is on s3a (ignored for other warehouses).
            Turn it off only where a single driver ever writes the warehouse.
        table_name: DynamoDB table holding one item per commit.
        region: Its AWS region; ``None`` takes ``connectors.s3.region``, else us-east-1.
        endpoint: DynamoDB endpoint URL; ``None`` is AWS's own (set it for a local
            DynamoDB-compatible server).
        create_table: Create the table (on-demand billing) when it is missing.
    """

    enabled: bool = True
    table_name: str = "ketch_delta_log"
    region: str | None = None
    endpoint: str | None = None
    create_table: bool = True


@dataclass(frozen=True)
class DeltaSettings:
    """How ketch-spark commits to its Delta tables (``delta:`` in ketch.yaml).

    Attributes:
        commit_retries: Times a commit that conflicts with another writer's
            (Delta's ``Concurrent...Exception``) is run again, each from the
            table's new state, before the command fails.
        commit_backoff_seconds: Wait before the first retry; doubled for each later one.
        log_store: The log store of an ``s3a://`` warehouse.
    """

    commit_retries: int = 3
    commit_backoff_seconds: float = 0.5
    log_store: LogStoreSettings = field(default_factory=LogStoreSettings)


@dataclass(frozen=True)
class ObfuscationRule:
    """How one column (or every column of a category) is obfuscated.

    Attributes:
        method: One of :data:`OBFUSCATION_METHODS`: ``null``; ``constant`` (``value``,
            cast to the column's type); ``sha256`` (hex sha256 of the value, or of
            ``value`` when one is given: the story's "hash of a constant");
            ``hmac`` (hex HMAC-SHA256 of the value with the secret in the
            environment variable ``DsrSettings.hmac_secret_env``); ``random``
            (a random UUID).
        value: The constant of ``constant`` (and of ``sha256`` when set).
    """

    method: str = "null"
    value: Any = None


@dataclass(frozen=True)
class DsrSettings:
    """Settings of data-subject requests (``dsr:`` in ketch.yaml).

    Attributes:
        due_days: A request is due this many days after it was received.
        org_column: Top-level column naming the customer in multi-customer assets;
            where an asset has it, a request only matches rows of its own org_id.
        default_phone_region: ISO country (``US``, ``GB``) for phone identities
            written without a ``+`` country code; ``None`` rejects them.
        vacuum_retention_hours: Retention of the VACUUM that follows an erasure on a
            Delta table; files removed by the erasure become unreadable this long
            after its commit.
        allow_short_retention: Lets ``vacuum_retention_hours`` go below Delta's
            default of 168 hours (Delta's retention check stays on otherwise).
        receipt_secret_env: Environment variable holding the key that signs receipts.
        hmac_secret_env: Environment variable holding the key of ``hmac`` obfuscation.
        obfuscate_default: Rule for a personal column that no other rule names.
        obfuscate_categories: Rule per catalog category (``email``, ``gender``...).
        obfuscate_columns: Rule per column name or dot path; wins over categories
            and may name columns that are not personal (``is_deleted``).
    """

    due_days: int = 30
    org_column: str = "org_id"
    default_phone_region: str | None = None
    vacuum_retention_hours: int = _DELTA_DEFAULT_RETENTION_HOURS
    allow_short_retention: bool = False
    receipt_secret_env: str = "KETCH_RECEIPT_SECRET"
    hmac_secret_env: str = "KETCH_DSR_HMAC_SECRET"
    obfuscate_default: ObfuscationRule = field(default_factory=ObfuscationRule)
    obfuscate_categories: Mapping[str, ObfuscationRule] = field(default_factory=dict)
    obfuscate_columns: Mapping[str, ObfuscationRule] = field(default_factory=dict)

    def rule_for(self, column: str, category: str | None, key: bool = False) -> ObfuscationRule | None:
        """The rule of ``column``: by its path, then its leaf name, then its category.

        Returns ``None`` for a column that is neither named by a rule nor personal,
        and for a ``key`` column (a table's primary key, a DynamoDB key attribute)
        that no rule names: obfuscation keeps a record addressable unless told otherwise.
        """
        for name in (column, column.rsplit(".", 1)[-1]):
            if name in self.obfuscate_columns:
                return self.obfuscate_columns[name]
        if category is None or key:
            return None
        return self.obfuscate_categories.get(category, self.obfuscate_default)


@dataclass(frozen=True)
class KetchConfig:
    """Validated ketch-spark configuration.

    Attributes:
        warehouse: Root of every Delta table: a local path (made absolute) or a URI
            such as ``s3a://bucket/prefix``.
        policy_path: Path of the purpose policy YAML.
        spark: Extra Spark settings applied by :func:`ketch_spark.spark_session`.
        jars_dir: Folder holding the resolved JVM jars; ``None`` means the project's
            ``.ketch/jars`` (or ``$KETCH_SPARK_JARS``).
        consent: Consent ingestion settings.
        filter: Consent filter settings.
        dsr: Data-subject request settings.
        delta: Delta commit settings (conflict retries, the s3a log store).
        sections: Free-form sections (catalog, connectors) read by their modules.
        source: File the config was read from, if any (used in error messages).
        warehouse_as_written: ``warehouse`` as the config wrote it, before it was made
            absolute (a relative one is refused on a cluster, see
            :func:`ketch_spark.preflight.check_warehouse_for_master`); defaults to ``warehouse``.
    """

    warehouse: str = _DEFAULT_WAREHOUSE
    policy_path: str = _DEFAULT_POLICY
    spark: Mapping[str, str] = field(default_factory=dict)
    jars_dir: str | None = None
    consent: ConsentSettings = field(default_factory=ConsentSettings)
    filter: FilterSettings = field(default_factory=FilterSettings)
    dsr: DsrSettings = field(default_factory=DsrSettings)
    delta: DeltaSettings = field(default_factory=DeltaSettings)
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None
    warehouse_as_written: str | None = None

    def __post_init__(self) -> None:
        if self.warehouse_as_written is None:
            object.__setattr__(self, "warehouse_as_written", str(self.warehouse))
        object.__setattr__(self, "warehouse", _normalise_location(self.warehouse))
        object.__setattr__(self, "spark", dict(self.spark))
        object.__setattr__(self, "sections", {k: dict(v) for k, v in self.sections.items()})

    def path(self, relative: str) -> str:
        """Joins ``relative`` onto the warehouse root."""
        return f"{self.warehouse.rstrip('/')}/{relative.strip('/')}"

    def section(self, name: str) -> dict[str, Any]:
        """Returns a free-form section (``catalog``, ``connectors``), empty if absent."""
        if name not in _FREE_SECTIONS:
            raise ConfigError(f"unknown config section {name!r}; expected one of {', '.join(_FREE_SECTIONS)}")
        return dict(self.sections.get(name, {}))

    def with_warehouse(self, warehouse: str | Path) -> KetchConfig:
        """Returns a copy rooted at another warehouse (tests, benchmarks)."""
        return replace(self, warehouse=str(warehouse), warehouse_as_written=None)

    def policy(self):  # noqa: ANN201 - avoids an import cycle in the annotation
        """Loads the purpose policy this config points at (cached per path)."""
        from ketch_spark.policy import load_policy

        return load_policy(self.policy_path)


def _normalise_location(location: str) -> str:
    if "://" in location:
        return location.rstrip("/")
    return str(Path(location).expanduser().resolve())


def _check_path(value: str, source: str | None, key: str) -> None:
    """Raises when ``value`` cannot be a path: a NUL character, or ``~name`` of a user this machine does not know."""
    try:
        _normalise_location(value)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"{_where(source, key)}: cannot be used as a path ({exc}), found {value!r}") from None


def _where(source: str | None, key: str) -> str:
    return f"{source or '<config>'}: {key}"


def _expect(value: Any, kind: type | tuple[type, ...], source: str | None, key: str, expected: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ConfigError(f"{_where(source, key)}: expected {expected}, found {value!r}")
    return value


def _share_setting(raw: Mapping[str, Any], key: str, default: float, source: str | None, section: str) -> float:
    """A share between 0 and 1."""
    value = _expect(raw.get(key, default), (int, float), source, f"{section}.{key}", "a share between 0 and 1")
    if not 0 <= value <= 1:
        raise ConfigError(f"{_where(source, f'{section}.{key}')}: expected a share between 0 and 1, found {value}")
    return float(value)


def _date_setting(raw: Mapping[str, Any], key: str, default: dt.date, source: str | None, section: str) -> dt.date:
    """A calendar day given as ``YYYY-MM-DD`` (YAML reads an unquoted one as a date already)."""
    value = raw.get(key, default)
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(f"{_where(source, f'{section}.{key}')}: expected a day as YYYY-MM-DD, found {value!r}") from None
    return _expect(value, dt.date, source, f"{section}.{key}", "a day as YYYY-MM-DD")


def _int_setting(
    raw: Mapping[str, Any], key: str, default: int, source: str | None, section: str, minimum: int = 1
) -> int:
    value = raw.get(key, default)
    expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    _expect(value, int, source, f"{section}.{key}", expected)
    if value < minimum:
        raise ConfigError(f"{_where(source, f'{section}.{key}')}: expected {expected}, found {value}")
    return value


def _section(data: Mapping[str, Any], name: str, source: str | None, allowed: tuple[str, ...] | None,
             label: str | None = None) -> dict:
    """The mapping ``data[name]`` (empty when absent); ``label`` names it in errors (default ``name``)."""
    raw = data.get(name) or {}
    label = label or name
    _expect(raw, dict, source, label, "a mapping")
    if allowed is not None:
        unknown = unknown_keys(raw, allowed)
        if unknown:
            raise ConfigError(
                f"{_where(source, label)}: unknown key(s) {', '.join(unknown)}; expected {', '.join(allowed)}"
            )
    return raw


_DSR_KEYS = ("due_days", "org_column", "default_phone_region", "vacuum_retention_hours", "allow_short_retention",
             "receipt_secret_env", "hmac_secret_env", "obfuscate")
_OBFUSCATE_KEYS = ("default", "categories", "columns")


def _obfuscation_rule(raw: Any, source: str | None, key: str) -> ObfuscationRule:
    if isinstance(raw, str):
        raw = {"method": raw}
    _expect(raw, dict, source, key, "a method name or a mapping {method, value}")
    unknown = unknown_keys(raw, ("method", "value"))
    if unknown:
        raise ConfigError(f"{_where(source, key)}: unknown key(s) {', '.join(unknown)}; expected method, value")
    method = raw.get("method")
    if method not in OBFUSCATION_METHODS:
        raise ConfigError(
            f"{_where(source, key)}.method: expected one of {', '.join(OBFUSCATION_METHODS)}, found {method!r}"
        )
    value = raw.get("value")
    if method == "constant" and "value" not in raw:
        raise ConfigError(f"{_where(source, key)}: method constant needs a value")
    if value is not None:
        _expect(value, (str, int, float, bool), source, f"{key}.value", "a scalar")
    return ObfuscationRule(method=method, value=value)


def _rules(raw: Mapping[str, Any], name: str, source: str | None) -> dict[str, ObfuscationRule]:
    section = raw.get(name) or {}
    _expect(section, dict, source, f"dsr.obfuscate.{name}", "a mapping of name -> rule")
    return {str(k): _obfuscation_rule(v, source, f"dsr.obfuscate.{name}.{k}") for k, v in section.items()}


def _env_name(raw: Mapping[str, Any], key: str, default: str, source: str | None) -> str:
    value = _expect(raw.get(key, default), str, source, f"dsr.{key}", "an environment variable name")
    if not value.strip() or not value.replace("_", "").isalnum():
        raise ConfigError(f"{_where(source, f'dsr.{key}')}: expected an environment variable name, found {value!r}")
    return value


def dsr_settings_from_mapping(raw: Mapping[str, Any], source: str | None = None) -> DsrSettings:
    """Builds validated :class:`DsrSettings` from the ``dsr:`` mapping of ketch.yaml.

    Raises:
        ConfigError: A key is unknown or a value has the wrong type or range.
    """
    unknown = unknown_keys(raw, _DSR_KEYS)
    if unknown:
        raise ConfigError(f"{_where(source, 'dsr')}: unknown key(s) {', '.join(unknown)}; expected {', '.join(_DSR_KEYS)}")
    region = raw.get("default_phone_region")
    if region is not None:
        _expect(region, str, source, "dsr.default_phone_region", "a two-letter country code such as US")
        if len(region) != 2 or not region.isalpha():
            raise ConfigError(f"{_where(source, 'dsr.default_phone_region')}: expected a two-letter country code "
                              f"such as US, found {region!r}")
        region = region.upper()
    allow_short = _expect(raw.get("allow_short_retention", False), bool, source, "dsr.allow_short_retention",
                          "true or false")
    retention = _int_setting(raw, "vacuum_retention_hours", _DELTA_DEFAULT_RETENTION_HOURS, source, "dsr", minimum=0)
    if retention < _DELTA_DEFAULT_RETENTION_HOURS and not allow_short:
        raise ConfigError(
            f"{_where(source, 'dsr.vacuum_retention_hours')}: {retention} is below Delta's safe default of "
            f"{_DELTA_DEFAULT_RETENTION_HOURS} hours; set dsr.allow_short_retention: true to accept the risk "
            "(readers of older versions fail) or raise the retention"
        )
    obfuscate = raw.get("obfuscate") or {}
    _expect(obfuscate, dict, source, "dsr.obfuscate", "a mapping with default, categories, columns")
    unknown = unknown_keys(obfuscate, _OBFUSCATE_KEYS)
    if unknown:
        raise ConfigError(f"{_where(source, 'dsr.obfuscate')}: unknown key(s) {', '.join(unknown)}; "
                          f"expected {', '.join(_OBFUSCATE_KEYS)}")
    return DsrSettings(
        due_days=_int_setting(raw, "due_days", 30, source, "dsr"),
        org_column=_expect(raw.get("org_column", "org_id"), str, source, "dsr.org_column", "a column name"),
        default_phone_region=region,
        vacuum_retention_hours=retention,
        allow_short_retention=allow_short,
        receipt_secret_env=_env_name(raw, "receipt_secret_env", "KETCH_RECEIPT_SECRET", source),
        hmac_secret_env=_env_name(raw, "hmac_secret_env", "KETCH_DSR_HMAC_SECRET", source),
        obfuscate_default=_obfuscation_rule(obfuscate.get("default", "null"), source, "dsr.obfuscate.default"),
        obfuscate_categories=_rules(obfuscate, "categories", source),
        obfuscate_columns=_rules(obfuscate, "columns", source),
    )


_LOG_STORE_KEYS = ("enabled", "table_name", "region", "endpoint", "create_table")


def _optional_text(raw: Mapping[str, Any], key: str, source: str | None, section: str, expected: str) -> str | None:
    value = raw.get(key)
    return None if value is None else _expect(value, str, source, f"{section}.{key}", expected)


def delta_settings_from_mapping(raw: Mapping[str, Any], source: str | None = None) -> DeltaSettings:
    """Builds validated :class:`DeltaSettings` from the ``delta:`` mapping of ketch.yaml.

    Raises:
        ConfigError: A key is unknown or a value has the wrong type or range.
    """
    unknown = sorted(set(raw) - {"commit_retries", "commit_backoff_seconds", "log_store"})
    if unknown:
        raise ConfigError(f"{_where(source, 'delta')}: unknown key(s) {', '.join(unknown)}; "
                          "expected commit_retries, commit_backoff_seconds, log_store")
    backoff = _expect(raw.get("commit_backoff_seconds", 0.5), (int, float), source, "delta.commit_backoff_seconds",
                      "a number of seconds >= 0")
    if backoff < 0:
        raise ConfigError(f"{_where(source, 'delta.commit_backoff_seconds')}: expected a number of seconds >= 0, "
                          f"found {backoff}")
    name = "delta.log_store"
    log_store = _expect(raw.get("log_store") or {}, dict, source, name, "a mapping")
    unknown = sorted(set(log_store) - set(_LOG_STORE_KEYS))
    if unknown:
        raise ConfigError(f"{_where(source, name)}: unknown key(s) {', '.join(unknown)}; "
                          f"expected {', '.join(_LOG_STORE_KEYS)}")
    table_name = _expect(log_store.get("table_name", "ketch_delta_log"), str, source, f"{name}.table_name",
                         "a DynamoDB table name")
    if not table_name.strip():
        raise ConfigError(f"{_where(source, f'{name}.table_name')}: must not be empty")
    return DeltaSettings(
        commit_retries=_int_setting(raw, "commit_retries", 3, source, "delta", minimum=0),
        commit_backoff_seconds=float(backoff),
        log_store=LogStoreSettings(
            enabled=_expect(log_store.get("enabled", True), bool, source, f"{name}.enabled", "true or false"),
            table_name=table_name.strip(),
            region=_optional_text(log_store, "region", source, name, "an AWS region such as eu-west-1"),
            endpoint=_optional_text(log_store, "endpoint", source, name, "an endpoint URL"),
            create_table=_expect(log_store.get("create_table", True), bool, source, f"{name}.create_table",
                                 "true or false"),
        ),
    )


def config_from_mapping(data: Mapping[str, Any], source: str | None = None, base_dir: Path | None = None) -> KetchConfig:
    """Builds a validated :class:`KetchConfig` from a parsed mapping.

    Args:
        data: The parsed YAML mapping.
        source: Where it came from, for error messages.
        base_dir: Folder that a relative ``policy`` path is resolved against.

    Raises:
        ConfigError: A key is unknown or a value has the wrong type or range.
    """
    unknown = unknown_keys(data, _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{source or '<config>'}: unknown key(s) {', '.join(unknown)}; expected {', '.join(_KNOWN_KEYS)}")
    warehouse = _expect(data.get("warehouse", _DEFAULT_WAREHOUSE), str, source, "warehouse", "a path or URI string")
    if not warehouse.strip():
        raise ConfigError(f"{_where(source, 'warehouse')}: must not be empty")
    _check_path(warehouse, source, "warehouse")
    policy = _expect(data.get("policy", _DEFAULT_POLICY), str, source, "policy", "a path to policy.yaml")
    _check_path(policy, source, "policy")
    if base_dir is not None and not Path(policy).is_absolute():
        policy = str(_policy_next_to(base_dir, policy))
    jars_dir = data.get("jars_dir")
    if jars_dir is not None:
        _expect(jars_dir, str, source, "jars_dir", "a folder path")
        _check_path(jars_dir, source, "jars_dir")
    spark_raw = _section(data, "spark", source, None)
    spark = {}
    for key, value in spark_raw.items():
        _expect(value, (str, int, float, bool), source, f"spark.{key}", "a scalar Spark setting")
        spark[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    consent_raw = _section(data, "consent", source, ("max_future_skew_seconds", "earliest_event_date", "max_id_length",
                                                          "max_quarantined_share", "state_rewrite_share"))
    filter_raw = _section(data, "filter", source, ("broadcast_max_bytes", "key_set_cache_entries", "session_extension"))
    return KetchConfig(
        warehouse=warehouse,
        policy_path=policy,
        spark=spark,
        jars_dir=jars_dir,
        consent=ConsentSettings(
            max_future_skew_seconds=_int_setting(consent_raw, "max_future_skew_seconds", 300, source, "consent"),
            earliest_event_date=_date_setting(consent_raw, "earliest_event_date", dt.date(2000, 1, 1), source, "consent"),
            max_id_length=_int_setting(consent_raw, "max_id_length", 256, source, "consent"),
            max_quarantined_share=_share_setting(consent_raw, "max_quarantined_share", 0.05, source, "consent"),
            state_rewrite_share=_share_setting(consent_raw, "state_rewrite_share", 0.5, source, "consent"),
        ),
        filter=FilterSettings(
            broadcast_max_bytes=_int_setting(filter_raw, "broadcast_max_bytes", 256 * 1024 * 1024, source, "filter"),
            key_set_cache_entries=_int_setting(filter_raw, "key_set_cache_entries", 4, source, "filter", minimum=0),
            session_extension=_expect(
                filter_raw.get("session_extension", False), bool, source, "filter.session_extension", "true or false"
            ),
        ),
        dsr=dsr_settings_from_mapping(_section(data, "dsr", source, None), source),
        delta=delta_settings_from_mapping(_section(data, "delta", source, None), source),
        sections=_free_sections(data, source),
        source=source,
    )


def _free_sections(data: Mapping[str, Any], source: str | None) -> dict[str, dict]:
    sections = {name: _section(data, name, source, None) for name in _FREE_SECTIONS if name in data}
    _check_connector_settings(sections.get("connectors", {}), source)
    return sections


_S3_TEXT_KEYS = ("endpoint", "region", "access_key_id", "secret_access_key")
_S3_FLAG_KEYS = ("path_style_access", "ssl_enabled")
_AWS_CREDENTIAL_KEYS = ("access_key_id", "secret_access_key", "session_token")
_DYNAMODB_TEXT_KEYS = ("region", "endpoint_url", *_AWS_CREDENTIAL_KEYS, *(f"{key}_env" for key in _AWS_CREDENTIAL_KEYS))
_DYNAMODB_NUMBER_KEYS = ("connect_timeout", "read_timeout")
_DYNAMODB_COUNT_KEYS = ("max_attempts", "scan_page_size")


def _check_connector_settings(connectors: Mapping[str, Any], source: str | None) -> None:
    """Checks the ``connectors.s3`` and ``connectors.dynamodb`` mappings (``connectors.jdbc`` checks itself).

    Raises:
        ConfigError: A section is not a mapping, has an unknown key or a value of the wrong type.
    """
    shapes = {
        "s3": ({key: "text" for key in _S3_TEXT_KEYS} | {key: "flag" for key in _S3_FLAG_KEYS}),
        "dynamodb": ({key: "text" for key in _DYNAMODB_TEXT_KEYS} | {key: "seconds" for key in _DYNAMODB_NUMBER_KEYS}
                     | {key: "count" for key in _DYNAMODB_COUNT_KEYS}),
    }
    for name, shape in shapes.items():
        section = f"connectors.{name}"
        raw = _section(connectors, name, source, tuple(shape), label=section)
        for key, value in raw.items():
            if value is None:
                continue
            where = f"{section}.{key}"
            if key in _AWS_CREDENTIAL_KEYS and not isinstance(value, str):  # never echo a credential
                kind = type(value).__name__
                raise ConfigError(f"{_where(source, where)}: expected a string, found a {kind} (not shown)")
            if shape[key] == "text":
                _expect(value, str, source, where, "a string")
            elif shape[key] == "flag":
                _expect(value, bool, source, where, "true or false")
            elif shape[key] == "seconds":
                seconds = _expect(value, (int, float), source, where, "a number of seconds")
                if not (math.isfinite(seconds) and seconds > 0):
                    raise ConfigError(f"{_where(source, where)}: expected a number of seconds above 0, found {value}")
            else:
                _int_setting(raw, key, 1, source, section)


def _policy_next_to(base_dir: Path, policy: str) -> Path:
    """The policy file relative to the config's folder, else where spark-submit shipped it (``--files``)."""
    path = (base_dir / policy).resolve()
    if path.is_file():
        return path
    from ketch_spark.spark_submit import shipped_file

    shipped = shipped_file(policy)
    return shipped.resolve() if shipped is not None else path


def _config_file(path: Path) -> Path:
    """``path``, or where spark-submit shipped a bare name (``--files conf/ketch.yaml`` with ``--conf ketch.yaml``).

    Raises:
        ConfigError: A bare name found neither here nor among spark-submit's ``--files``.
    """
    if path.is_file():
        return path
    from ketch_spark.spark_submit import inside_spark_submit, is_bare_name, shipped_file

    shipped = shipped_file(path)
    if shipped is not None:
        return shipped
    if is_bare_name(path) and inside_spark_submit():
        raise ConfigError(f"{path}: file not found in {Path.cwd()} nor among spark-submit's --files; pass "
                          f"--files conf/{path} to spark-submit, or --conf with the config's absolute path on the "
                          "driver's machine")
    return path


def load_config(path: str | Path | None = None) -> KetchConfig:
    """Reads and validates a ketch-spark config file.

    Args:
        path: YAML file; ``None`` reads ``$KETCH_SPARK_CONF`` or ``conf/ketch.yaml``
            when it exists, else returns the embedded defaults (warehouse
            ``./ketch-data``, policy ``conf/policy.yaml`` of the current folder, or
            of the ketch-spark checkout when the current folder has none).

    Returns:
        The validated configuration. A relative ``warehouse`` is resolved against
        the current directory; a relative ``policy`` against the config's folder.
        Under spark-submit, a bare file name (``ketch.yaml``, and the policy's
        ``policy.yaml``) not found there is read where ``--files`` put it
        (:func:`ketch_spark.spark_submit.shipped_file`), in client and cluster mode.

    Raises:
        ConfigError: The file is missing or invalid; the message names file and key.
    """
    if path is None:
        path = default_config_path()
        if path is None:
            return KetchConfig(policy_path=str(_default_policy_path()))
    path = _config_file(Path(path))
    data = load_yaml_file(path)
    return config_from_mapping(data, source=str(path), base_dir=path.resolve().parent)


def default_config_path() -> str | None:
    """The file :func:`load_config` reads without a path: ``$KETCH_SPARK_CONF``, or conf/ketch.yaml
    when it exists here; ``None`` when it falls back to the embedded defaults."""
    path = os.environ.get("KETCH_SPARK_CONF") or DEFAULT_CONFIG_PATH
    return path if Path(path).is_file() or os.environ.get("KETCH_SPARK_CONF") else None


def _default_policy_path() -> Path:
    """conf/policy.yaml of the current folder, else of the checkout this package runs from (if any)."""
    here = Path("conf/policy.yaml").resolve()
    checkout = Path(__file__).resolve().parent.parent / "conf" / "policy.yaml"
    return checkout if not here.is_file() and checkout.is_file() else here
