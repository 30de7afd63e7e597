"""KetchConfig: where the warehouse lives, which policy applies, how Spark runs.

A config is read from YAML (conf/ketch.yaml is the embedded default) and
validated when built; every error names the file and the key at fault.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ketch_spark._yaml import load_yaml_file
from ketch_spark.errors import ConfigError

__all__ = ["KetchConfig", "ConsentSettings", "FilterSettings", "load_config", "DEFAULT_CONFIG_PATH"]

DEFAULT_CONFIG_PATH = "conf/ketch.yaml"
_DEFAULT_WAREHOUSE = "./ketch-data"
_DEFAULT_POLICY = "policy.yaml"
_FREE_SECTIONS = ("catalog", "connectors", "dsr")
_KNOWN_KEYS = ("warehouse", "policy", "jars_dir", "spark", "consent", "filter", *_FREE_SECTIONS)


@dataclass(frozen=True)
class ConsentSettings:
    """Settings of consent ingestion.

    Attributes:
        max_future_skew_seconds: An event whose timestamp lies further than this in
            the future (against ingestion time) is quarantined.
    """

    max_future_skew_seconds: int = 300


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
    """

    broadcast_max_bytes: int = 256 * 1024 * 1024
    key_set_cache_entries: int = 4


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
        sections: Free-form sections (catalog, connectors, dsr) read by their modules.
        source: File the config was read from, if any (used in error messages).
    """

    warehouse: str = _DEFAULT_WAREHOUSE
    policy_path: str = _DEFAULT_POLICY
    spark: Mapping[str, str] = field(default_factory=dict)
    jars_dir: str | None = None
    consent: ConsentSettings = field(default_factory=ConsentSettings)
    filter: FilterSettings = field(default_factory=FilterSettings)
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "warehouse", _normalise_location(self.warehouse))
        object.__setattr__(self, "spark", dict(self.spark))
        object.__setattr__(self, "sections", {k: dict(v) for k, v in self.sections.items()})

    def path(self, relative: str) -> str:
        """Joins ``relative`` onto the warehouse root."""
        return f"{self.warehouse.rstrip('/')}/{relative.strip('/')}"

    def section(self, name: str) -> dict[str, Any]:
        """Returns a free-form section (``catalog``, ``connectors``, ``dsr``), empty if absent."""
        if name not in _FREE_SECTIONS:
            raise ConfigError(f"unknown config section {name!r}; expected one of {', '.join(_FREE_SECTIONS)}")
        return dict(self.sections.get(name, {}))

    def with_warehouse(self, warehouse: str | Path) -> KetchConfig:
        """Returns a copy rooted at another warehouse (tests, benchmarks)."""
        return replace(self, warehouse=str(warehouse))

    def policy(self):  # noqa: ANN201 - avoids an import cycle in the annotation
        """Loads the purpose policy this config points at (cached per path)."""
        from ketch_spark.policy import load_policy

        return load_policy(self.policy_path)


def _normalise_location(location: str) -> str:
    if "://" in location:
        return location.rstrip("/")
    return str(Path(location).expanduser().resolve())


def _where(source: str | None, key: str) -> str:
    return f"{source or '<config>'}: {key}"


def _expect(value: Any, kind: type | tuple[type, ...], source: str | None, key: str, expected: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ConfigError(f"{_where(source, key)}: expected {expected}, found {value!r}")
    return value


def _int_setting(
    raw: Mapping[str, Any], key: str, default: int, source: str | None, section: str, minimum: int = 1
) -> int:
    value = raw.get(key, default)
    expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    _expect(value, int, source, f"{section}.{key}", expected)
    if value < minimum:
        raise ConfigError(f"{_where(source, f'{section}.{key}')}: expected {expected}, found {value}")
    return value


def _section(data: Mapping[str, Any], name: str, source: str | None, allowed: tuple[str, ...] | None) -> dict:
    raw = data.get(name) or {}
    _expect(raw, dict, source, name, "a mapping")
    if allowed is not None:
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise ConfigError(
                f"{_where(source, name)}: unknown key(s) {', '.join(unknown)}; expected {', '.join(allowed)}"
            )
    return raw


def config_from_mapping(data: Mapping[str, Any], source: str | None = None, base_dir: Path | None = None) -> KetchConfig:
    """Builds a validated :class:`KetchConfig` from a parsed mapping.

    Args:
        data: The parsed YAML mapping.
        source: Where it came from, for error messages.
        base_dir: Folder that a relative ``policy`` path is resolved against.

    Raises:
        ConfigError: A key is unknown or a value has the wrong type or range.
    """
    unknown = sorted(set(data) - set(_KNOWN_KEYS))
    if unknown:
        raise ConfigError(f"{source or '<config>'}: unknown key(s) {', '.join(unknown)}; expected {', '.join(_KNOWN_KEYS)}")
    warehouse = _expect(data.get("warehouse", _DEFAULT_WAREHOUSE), str, source, "warehouse", "a path or URI string")
    if not warehouse.strip():
        raise ConfigError(f"{_where(source, 'warehouse')}: must not be empty")
    policy = _expect(data.get("policy", _DEFAULT_POLICY), str, source, "policy", "a path to policy.yaml")
    if base_dir is not None and not Path(policy).is_absolute():
        policy = str((base_dir / policy).resolve())
    jars_dir = data.get("jars_dir")
    if jars_dir is not None:
        _expect(jars_dir, str, source, "jars_dir", "a folder path")
    spark_raw = _section(data, "spark", source, None)
    spark = {}
    for key, value in spark_raw.items():
        _expect(value, (str, int, float, bool), source, f"spark.{key}", "a scalar Spark setting")
        spark[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    consent_raw = _section(data, "consent", source, ("max_future_skew_seconds",))
    filter_raw = _section(data, "filter", source, ("broadcast_max_bytes", "key_set_cache_entries"))
    return KetchConfig(
        warehouse=warehouse,
        policy_path=policy,
        spark=spark,
        jars_dir=jars_dir,
        consent=ConsentSettings(
            max_future_skew_seconds=_int_setting(consent_raw, "max_future_skew_seconds", 300, source, "consent")
        ),
        filter=FilterSettings(
            broadcast_max_bytes=_int_setting(filter_raw, "broadcast_max_bytes", 256 * 1024 * 1024, source, "filter"),
            key_set_cache_entries=_int_setting(filter_raw, "key_set_cache_entries", 4, source, "filter", minimum=0),
        ),
        sections={name: _section(data, name, source, None) for name in _FREE_SECTIONS if name in data},
        source=source,
    )


def load_config(path: str | Path | None = None) -> KetchConfig:
    """Reads and validates a ketch-spark config file.

    Args:
        path: YAML file; ``None`` reads ``$KETCH_SPARK_CONF`` or ``conf/ketch.yaml``
            when it exists, else returns the embedded defaults (warehouse
            ``./ketch-data``, policy ``conf/policy.yaml``).

    Returns:
        The validated configuration. A relative ``warehouse`` is resolved against
        the current directory; a relative ``policy`` against the config's folder.

    Raises:
        ConfigError: The file is missing or invalid; the message names file and key.
    """
    if path is None:
        path = os.environ.get("KETCH_SPARK_CONF") or DEFAULT_CONFIG_PATH
        if not Path(path).is_file():
            return KetchConfig(policy_path=str(Path("conf/policy.yaml").resolve()))
    path = Path(path)
    data = load_yaml_file(path)
    return config_from_mapping(data, source=str(path), base_dir=path.resolve().parent)
