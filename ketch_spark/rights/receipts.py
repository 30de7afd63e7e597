"""Signed erasure receipts: what was erased, when, proven by an HMAC-SHA256 signature.

A receipt is a JSON object. :func:`sign_receipt` adds
``"signature": {"algorithm": "HMAC-SHA256", "value": <hex>}``, an HMAC over the
canonical JSON of the receipt without its signature (keys sorted, no spaces,
UTF-8). Any change to any field (a count, a timestamp, an added key) breaks
:func:`verify_receipt`. The key comes from the environment variable named by
``dsr.receipt_secret_env`` (:func:`receipt_key`), never from a file.

Receipts are written next to the warehouse: local paths with Python (folders
0700, files 0600, atomic replace), other URIs (``s3a://``) through the Hadoop
FileSystem of the session.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import os
from typing import Any, Mapping

from pyspark.sql import SparkSession

from ketch_spark.config import DsrSettings
from ketch_spark.errors import ConfigError
from ketch_spark.rights.storage import local_path, read_private, write_private

__all__ = [
    "SIGNATURE_ALGORITHM",
    "MIN_KEY_BYTES",
    "canonical_json",
    "sign_receipt",
    "verify_receipt",
    "receipt_key",
    "write_receipt",
    "read_receipt",
    "read_receipt_file",
]

logger = logging.getLogger(__name__)

#: The ``algorithm`` of a receipt's signature.
SIGNATURE_ALGORITHM = "HMAC-SHA256"
#: Shortest accepted receipt key.
MIN_KEY_BYTES = 16
_SIGNATURE = "signature"


def canonical_json(receipt: Mapping[str, Any]) -> bytes:
    """The bytes a receipt's signature covers: its canonical JSON without ``signature``.

    Raises:
        TypeError: The receipt holds a value JSON cannot represent.
    """
    body = {k: v for k, v in receipt.items() if k != _SIGNATURE}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _signature_hex(receipt: Mapping[str, Any], key: bytes) -> str:
    return hmac.new(key, canonical_json(receipt), hashlib.sha256).hexdigest()


def sign_receipt(receipt: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """A copy of ``receipt`` with its ``signature`` (any previous signature replaced).

    Args:
        receipt: JSON-representable mapping with string keys.
        key: The signing key (:func:`receipt_key`).

    Raises:
        TypeError: The receipt holds a value JSON cannot represent.
    """
    signed = {k: copy.deepcopy(v) for k, v in receipt.items() if k != _SIGNATURE}
    signed[_SIGNATURE] = {"algorithm": SIGNATURE_ALGORITHM, "value": _signature_hex(signed, key)}
    return signed


def verify_receipt(receipt: Mapping[str, Any], key: bytes) -> bool:
    """Whether ``receipt`` carries a valid signature made with ``key``.

    False when the signature is missing, malformed, of another algorithm, or does
    not match the content (constant-time comparison).
    """
    signature = receipt.get(_SIGNATURE)
    if not isinstance(signature, Mapping) or signature.get("algorithm") != SIGNATURE_ALGORITHM:
        return False
    value = signature.get("value")
    if not isinstance(value, str):
        return False
    try:
        expected = _signature_hex(receipt, key)
    except (TypeError, ValueError):
        return False
    return hmac.compare_digest(expected.encode("ascii"), value.encode("utf-8", "replace"))


def receipt_key(settings: DsrSettings) -> bytes:
    """The receipt signing key: UTF-8 bytes of the variable ``settings.receipt_secret_env``.

    Raises:
        ConfigError: The variable is unset or holds fewer than :data:`MIN_KEY_BYTES` bytes.
    """
    name = settings.receipt_secret_env
    secret = os.environ.get(name)
    if not secret:
        raise ConfigError(
            f"receipts are signed with a secret key: set the environment variable {name} "
            f"(at least {MIN_KEY_BYTES} bytes)"
        )
    key = secret.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"the environment variable {name} holds {len(key)} bytes; "
            f"set it to a secret of at least {MIN_KEY_BYTES} bytes"
        )
    return key


def _receipt_text(receipt: Mapping[str, Any]) -> bytes:
    return (json.dumps(receipt, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _parse(data: bytes, where: str) -> dict[str, Any]:
    try:
        receipt = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: not a JSON receipt ({exc})") from exc
    if not isinstance(receipt, dict):
        raise ValueError(f"{where}: not a JSON receipt (expected an object, found {type(receipt).__name__})")
    return receipt


def write_receipt(spark: SparkSession, path: str, receipt: Mapping[str, Any]) -> None:
    """Writes ``receipt`` as JSON to ``path``, replacing any previous file.

    Args:
        spark: The session (used for non-local URIs only).
        path: A local path, a ``file:`` URI, or a Hadoop URI (``s3a://bucket/...``).
        receipt: The (signed) receipt.

    Raises:
        TypeError: The receipt holds a value JSON cannot represent.
        ConnectorError: A remote URI with a Spark Connect session.
    """
    write_private(spark, path, _receipt_text(receipt))
    logger.info("receipt written to %s", path)


def read_receipt_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a receipt from a local file (or ``file:`` URI), without Spark.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a JSON object.
    """
    text = str(path)
    local = local_path(text)
    if local is None:
        raise ValueError(f"{text}: not a local path; use read_receipt with a SparkSession")
    return _parse(local.read_bytes(), text)


def read_receipt(spark: SparkSession, path: str) -> dict[str, Any]:
    """Reads the receipt at ``path`` (local path, ``file:`` URI or Hadoop URI).

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a JSON object.
        ConnectorError: A remote URI with a Spark Connect session.
    """
    return _parse(read_private(spark, path), path)
