"""ketch-spark: make a Spark + Delta Lake data lake obey privacy law, cheaply.

The public API is re-exported here and loaded on first use, so
``import ketch_spark`` starts nothing and imports no heavy dependency.

Example:
    >>> import ketch_spark as ks
    >>> cfg = ks.load_config("conf/ketch.yaml")
    >>> spark = ks.spark_session(cfg)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "KetchConfig": "ketch_spark.config",
    "load_config": "ketch_spark.config",
    "spark_session": "ketch_spark.session",
    "notebook_session": "ketch_spark.session",
    "Policy": "ketch_spark.policy",
    "Purpose": "ketch_spark.policy",
    "load_policy": "ketch_spark.policy",
    "has_purpose": "ketch_spark.bitmap",
    "pack_bits": "ketch_spark.bitmap",
    "unpack_bits": "ketch_spark.bitmap",
    "ensure_tables": "ketch_spark.tables",
    "read_table": "ketch_spark.tables",
    "table_path": "ketch_spark.tables",
    "consent_filter": "ketch_spark.consent.filter",
    "purpose": "ketch_spark.consent.purposes",
    "register_consent_views": "ketch_spark.consent.filter",
    "last_filter_info": "ketch_spark.consent.filter",
    "FilterInfo": "ketch_spark.consent.filter",
    "ConsentFilter": "ketch_spark.consent.filter",
    "PurposeContext": "ketch_spark.consent.purposes",
    "ConsentViews": "ketch_spark.consent.filter",
    "release_key_sets": "ketch_spark.consent.filter",
    "KetchError": "ketch_spark.errors",
    "ConfigError": "ketch_spark.errors",
    "PolicyError": "ketch_spark.errors",
    "SchemaError": "ketch_spark.errors",
    "TableNotFoundError": "ketch_spark.errors",
    "UnknownPurposeError": "ketch_spark.errors",
    "ConnectorError": "ketch_spark.errors",
    "AssetCatalog": "ketch_spark.catalog",
    "JarsNotInstalledError": "ketch_spark.errors",
    "ObfuscationError": "ketch_spark.errors",
    "InvalidRequestError": "ketch_spark.errors",
    "ingest_consent": "ketch_spark.consent.sources",
    "IngestResult": "ketch_spark.consent.sources",
    "compact_consent": "ketch_spark.consent.compact",
    "CompactResult": "ketch_spark.consent.compact",
    "consent_rates": "ketch_spark.consent.compact",
    "submit_requests": "ketch_spark.rights.requests",
    "SubmitResult": "ketch_spark.rights.requests",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ketch_spark' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
