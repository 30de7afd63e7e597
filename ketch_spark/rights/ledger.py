"""The erased-subject ledger (dsr/ledger): an erasure stays done.

When an erasure request finishes, each of its identities is recorded as one
ledger row: the request's org, the identity type and the HMAC-SHA256 of the
normalised value (never the value), with the request id, mode and time. The
HMAC key is derived from the receipt secret (``dsr.receipt_secret_env``), which
erasures already need, so the ledger adds no secret to manage and cannot be
reversed by hashing guessed values without it.

Two things read it:

* every ``ketch-spark dsr run`` sweeps the catalogued assets (ketch-spark's own
  tables excepted, see below) for values whose HMAC is in the ledger: a newly
  catalogued copy, a restored backup or a re-ingested raw log that holds an
  erased subject again is erased again, in the request's mode, and reported as
  a resurrection (:func:`resurrected_identities`);
* consent ingest quarantines, as ``erased_subject``, the events of an erased
  user that predate the erasure; an event after it (a new consent) is accepted
  (:func:`quarantine_erased_subjects`). Ingest withholds the text of such a
  record from consent/quarantine (:data:`WITHHELD`), keeping only the reason.

ketch-spark's own consent tables are left to ingest's check rather than swept:
an erased user may come back and consent again, and those later events are theirs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ketch_spark.config import DsrSettings, KetchConfig
from ketch_spark.rights.obfuscate import hmac_sha256_hex
from ketch_spark.tables import append_rows, read_table, table_exists

__all__ = [
    "ERASED_SUBJECT",
    "WITHHELD",
    "ledger_key",
    "identity_hmac",
    "record_erasures",
    "read_ledger",
    "resurrected_identities",
    "quarantine_erased_subjects",
]

_TABLE = "dsr_ledger"
#: Quarantine reason of consent events from an erased subject that predate the erasure.
ERASED_SUBJECT = "erased_subject"
_KEY_LABEL = b"ketch-spark dsr ledger v1"
#: What consent/quarantine stores instead of the text of an erased subject's record.
WITHHELD = "<record of an erased subject, withheld>"


def ledger_key(settings: DsrSettings) -> bytes:
    """The ledger's HMAC key, derived from the receipt secret.

    Raises:
        ConfigError: The receipt secret is unset or too short.
    """
    from ketch_spark.rights.receipts import receipt_key

    return hmac.new(receipt_key(settings), _KEY_LABEL, hashlib.sha256).digest()


def identity_hmac(value: str, key: bytes) -> str:
    """Hex HMAC-SHA256 of a normalised identity value (what the ledger stores)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def record_erasures(
    spark: SparkSession,
    cfg: KetchConfig,
    erasures: Iterable[tuple[str, str, str, dict[str, str]]],
    run_id: str,
    erased_at: dt.datetime,
) -> int:
    """Appends one ledger row per identity of each finished erasure; returns how many.

    Args:
        erasures: (request_id, org_id, mode, identities: type -> normalised value).
        run_id: The run that finished them.
        erased_at: When (naive UTC).
    """
    key = ledger_key(cfg.dsr)
    rows = [
        (org_id, identity_type, identity_hmac(value, key), request_id, mode, erased_at, run_id)
        for request_id, org_id, mode, identities in erasures
        for identity_type, value in sorted(identities.items())
    ]
    if rows:
        append_rows(spark, cfg, _TABLE, rows)
    return len(rows)


def read_ledger(spark: SparkSession, cfg: KetchConfig) -> DataFrame | None:
    """The ledger, or ``None`` when no erasure has been recorded yet."""
    if not table_exists(spark, cfg, _TABLE):
        return None
    ledger = read_table(spark, cfg, _TABLE)
    return None if ledger.isEmpty() else ledger


def resurrected_identities(values_df: DataFrame, ledger_df: DataFrame, key: bytes) -> DataFrame:
    """The ledger entries whose identity an asset holds again, with the value found.

    Args:
        values_df: An asset's normalised identity values: identity_type, org_id
            (null where the asset has no org column: then any org's entry matches), value.
        ledger_df: :func:`read_ledger`.
        key: :func:`ledger_key`.

    Returns:
        request_id, org_id, identity_type, value, mode: one row per entry found.
    """
    hashed = values_df.select(
        "identity_type", F.col("org_id").alias("_found_org"), "value", hmac_sha256_hex(F.col("value"), key).alias("identity_hmac")
    )
    entries = ledger_df.select("org_id", "identity_type", "identity_hmac", "request_id", "mode").distinct()
    joined = hashed.join(F.broadcast(entries), ["identity_type", "identity_hmac"])
    same_org = F.col("_found_org").isNull() | (F.col("_found_org") == F.col("org_id"))
    return joined.where(same_org).select("request_id", "org_id", "identity_type", "value", "mode").distinct()


def quarantine_erased_subjects(rows_df: DataFrame, ledger_df: DataFrame, key: bytes) -> DataFrame:
    """Ingest's rows with the events of erased users from before their erasure quarantined.

    ``rows_df`` is consent ingest's classified rows (org_id, user_id, event_ts,
    reason, detail, raw, no_row, ...). A valid row whose (org_id, user_id) the
    ledger lists as a ``user_id`` erased at or after its event_ts gets reason
    ``erased_subject`` (the caller withholds its text from the quarantine).
    """
    erased = (
        ledger_df.where(F.col("identity_type") == "user_id")
        .groupBy("org_id", "identity_hmac")
        .agg(F.max("erased_at").alias("_erased_at"))
    )
    keyed = rows_df.withColumn("_user_hmac", hmac_sha256_hex(F.col("user_id"), key))
    joined = keyed.join(
        F.broadcast(erased.withColumnRenamed("identity_hmac", "_user_hmac")), ["org_id", "_user_hmac"], "left"
    )
    hit = F.col("reason").isNull() & ~F.col("no_row") & (F.col("event_ts") <= F.col("_erased_at"))
    detail = F.concat(
        F.lit("the user was erased on "), F.date_format("_erased_at", "yyyy-MM-dd"),
        F.lit("; events from before the erasure are not ingested again"),
    )
    return joined.select(
        *[
            F.when(hit, F.lit(ERASED_SUBJECT)).otherwise(F.col(c)).alias(c) if c == "reason"
            else F.when(hit, detail).otherwise(F.col(c)).alias(c) if c == "detail"
            else F.col(c)
            for c in rows_df.columns
        ]
    )
