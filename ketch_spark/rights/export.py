"""Access (portability) packages under dsr/exports/<request_id>/.

Each asset holding the subject's rows gets one JSON-lines file with only those
rows; ``manifest.json`` lists the assets searched and found, their columns and row
counts, when it was generated and the request (identity types, never values);
``<request_id>.zip`` holds the same files. On a local warehouse the folder is 0700
and every file 0600. A subject found nowhere gets a package whose manifest says so.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any, Mapping, Sequence

from pyspark.sql import SparkSession

from ketch_spark.config import KetchConfig
from ketch_spark.connectors.base import Asset
from ketch_spark.rights.audit import iso_z, utc_now
from ketch_spark.rights.storage import read_private, write_private

__all__ = ["export_dir", "export_file_name", "write_asset_export", "write_package"]


def export_dir(cfg: KetchConfig, request_id: str) -> str:
    """The package folder of ``request_id``."""
    return cfg.path(f"dsr/exports/{request_id}")


def export_file_name(asset_id: str, location: str) -> str:
    """``<asset name>-<asset id prefix>.jsonl``: readable and unique per asset."""
    base = location.rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "asset"
    return f"{slug[:60]}-{asset_id[:10]}.jsonl"


def write_asset_export(spark: SparkSession, cfg: KetchConfig, request_id: str, asset: Asset,
                       lines: Sequence[str]) -> str | None:
    """Writes one asset's rows of one subject (JSON documents, one per line); ``None`` when there are none."""
    if not lines:
        return None
    name = export_file_name(asset.asset_id, asset.location)
    write_private(spark, f"{export_dir(cfg, request_id)}/{name}", ("\n".join(lines) + "\n").encode("utf-8"))
    return name


def write_package(spark: SparkSession, cfg: KetchConfig, request: Mapping[str, Any],
                  assets: Sequence[Mapping[str, Any]]) -> str:
    """Writes ``manifest.json`` and the zip of the package; returns the folder.

    Args:
        spark: Session (for object-store warehouses).
        cfg: Configuration.
        request: The dsr/requests row (identity values are left out of the manifest).
        assets: Per searched asset: asset_id, location, format, columns, rows, file (None when not found).
    """
    request_id = request["request_id"]
    folder = export_dir(cfg, request_id)
    found = [a for a in assets if a.get("rows")]
    manifest = {
        "request": {
            "request_id": request_id,
            "org_id": request["org_id"],
            "kind": request["kind"],
            "received_at": iso_z(request.get("received_at")),
            "due_at": iso_z(request.get("due_at")),
            "identity_types": sorted((request.get("identities") or {}).keys()),
        },
        "generated_at": iso_z(utc_now()),
        "assets_searched": len(assets),
        "assets": [dict(a) for a in found],
        "total_rows": sum(int(a["rows"]) for a in found),
        "found": bool(found),
    }
    if not found:
        manifest["note"] = "no data about this subject was found in any catalogued asset"
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode("utf-8")
    write_private(spark, f"{folder}/manifest.json", manifest_bytes)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{request_id}/manifest.json", manifest_bytes)
        for asset in found:
            archive.writestr(f"{request_id}/{asset['file']}", read_private(spark, f"{folder}/{asset['file']}"))
    write_private(spark, f"{folder}/{request_id}.zip", buffer.getvalue())
    return folder
