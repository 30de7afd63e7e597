"""The Delta-backed catalog of data assets and their classified columns."""

from __future__ import annotations

from ketch_spark.catalog.catalog import AssetCatalog, ScanResult, asset_from_row
from ketch_spark.catalog.classify import (
    CATEGORIES,
    IDENTITY_TYPES,
    ClassifierSettings,
    ColumnClass,
    classify_column,
    classify_sample,
)
from ketch_spark.catalog.review import Label

__all__ = [
    "AssetCatalog",
    "ScanResult",
    "asset_from_row",
    "CATEGORIES",
    "IDENTITY_TYPES",
    "ClassifierSettings",
    "ColumnClass",
    "classify_column",
    "classify_sample",
    "Label",
]
