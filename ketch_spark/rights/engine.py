"""run_requests: every open data-subject request in one batch, one pass per asset.

For every catalogued asset with an identity column (catalog/columns), the open
requests form one batch: their identities are matched in a single pass over the
asset (:mod:`ketch_spark.rights.match`), never one pass per request.

* **Erasure**: delete requests, then obfuscate requests, one ``connector.erase``
  per asset and mode (assets sharing a connector transaction key, the tables of
  one database, go together through one ``connector.erase_all``: one
  transaction), then ``connector.verify`` re-queries each asset for the batch's
  identities. A request is ``done`` once every asset has been
  erased and verified for it (in this run or an earlier one); a failing asset
  leaves it ``failed`` and retryable, and the other assets' work stands. A rerun
  skips (request, asset) pairs already verified, so nothing is done or counted
  twice. A finished erasure gets a signed receipt (dsr/receipts/<id>.json).
* **Access**: ``connector.find`` per asset collects each subject's rows into its
  package (:mod:`ketch_spark.rights.export`); the manifest and zip are written when
  every asset has been searched.
* **Dry run**: per request and asset, the rows that would be touched; nothing is
  written.

* **Erased-subject ledger** (:mod:`ketch_spark.rights.ledger`): a finished
  erasure's identities are recorded (HMACs, never values) in dsr/ledger. Every
  run, with or without open requests, first sweeps the catalogued assets for
  ledger identities: one that holds an erased subject again (a restored backup,
  a re-ingested log, a new copy) is erased again in the request's mode, audited
  under ``<request_id>:resurrected``, and reported in ``resurrected``.

Audit rows (dsr/audit) are appended as each asset finishes. Logs, errors, audit
rows and receipts hold hashes of identities, never their values.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from ketch_spark.config import KetchConfig
from ketch_spark.connectors import Asset, Connector, connector_for, describe_error
from ketch_spark.connectors.base import EraseCounts, PersonalColumn, VerifyResult
from ketch_spark.connectors.delta_rights import APPEND_ONLY_ERASURE
from ketch_spark.errors import ConfigError, ConnectorError, ObfuscationError, PartialErasureError
from ketch_spark.progress import report_progress
from ketch_spark.rights.audit import FAILED, OK, AuditRow, append_audit, completed_work, iso_z, read_audit, utc_now
from ketch_spark.rights.match import IDENTITIES_SCHEMA, REQUEST_ID_COLUMN
from ketch_spark.tables import table_exists, table_path, table_spec

__all__ = ["RunResult", "run_requests", "rights_assets"]

logger = logging.getLogger(__name__)

_OWN_TABLES = ("consent/", "dsr/", "catalog/")
#: Asset property marking ketch-spark's own tables (see :func:`own_assets`).
OWN_TABLE = "ketch_spark_own_table"
_ERASE, _VERIFY, _EXPORT = "erase", "verify", "export"


@dataclass
class RunResult:
    """What one run did.

    Attributes:
        run_id: Id of the run (in audit rows and staging folders).
        dry_run: Whether nothing was changed.
        requests: Requests of the batch.
        done: Requests finished by this run.
        failed: Requests that are failed after this run (retryable).
        assets: Per (asset, action): location, action, mode, rows_matched,
            rows_changed, status, error.
        would_touch: Dry run: request -> {asset location: rows}.
        exports: Access request -> package folder.
        receipts: Erasure request -> receipt path.
        resurrected: Per asset where the ledger sweep found erased subjects again:
            location, requests (original ids), mode, rows_changed, status, error.
        ledger_unchecked: Assets the sweep could not read identity values from
            (their connector cannot list them yet).
        seconds: Wall time.
    """

    run_id: str
    dry_run: bool = False
    requests: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    assets: list[dict[str, Any]] = field(default_factory=list)
    would_touch: dict[str, dict[str, int]] = field(default_factory=dict)
    exports: dict[str, str] = field(default_factory=dict)
    receipts: dict[str, str] = field(default_factory=dict)
    resurrected: list[dict[str, Any]] = field(default_factory=list)
    ledger_unchecked: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "requests": len(self.requests),
            "done": sorted(self.done),
            "failed": sorted(self.failed),
            "assets": [dict(a) for a in self.assets],
            "would_touch": {k: dict(v) for k, v in self.would_touch.items()},
            "exports": dict(self.exports),
            "receipts": dict(self.receipts),
            "resurrected": [dict(r) for r in self.resurrected],
            "ledger_unchecked": list(self.ledger_unchecked),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class _Request:
    request_id: str
    org_id: str
    kind: str
    mode: str | None
    identities: dict[str, str]
    row: dict[str, Any]


def _scrub(text: str | None, values: Iterable[str]) -> str | None:
    """``text`` with every identity value replaced by its hash."""
    if text is None:
        return None
    from ketch_spark.rights.identities import identity_hash

    for value in sorted({v for v in values if v}, key=len, reverse=True):
        text = text.replace(value, f"<{identity_hash(value)}>")
    return text


def own_assets(spark: SparkSession, cfg: KetchConfig) -> list[Asset]:
    """ketch-spark's own tables that hold user ids: consent/events, consent/state and consent/quarantine.

    Events and state match ``user_id`` within the request's org; the quarantine's
    ``raw`` record text is matched token by token (:data:`~ketch_spark.rights.match.FREE_TEXT`).
    consent/events is append-only: its erasure lifts the property for the
    erasure's own commits and sets it again (see :class:`~ketch_spark.connectors.delta_rights.DeltaEraser`).
    Their rows are deleted for obfuscation requests too: a consent record
    without its user id is meaningless.
    """
    from ketch_spark.rights.match import FREE_TEXT

    columns = {
        "consent_events": (PersonalColumn("user_id", "user_id", "user_id"),),
        "consent_state": (PersonalColumn("user_id", "user_id", "user_id"),),
        "consent_quarantine": tuple(PersonalColumn("raw", FREE_TEXT, kind) for kind in ("user_id", "email", "device_id")),
    }
    system = "s3" if cfg.warehouse.startswith(("s3a://", "s3://")) else "file"
    assets = []
    for name, personal in columns.items():
        if not table_exists(spark, cfg, name):
            continue
        location = table_path(cfg, name)
        if system == "file" and "://" not in location:
            location = "file://" + location
        properties = {OWN_TABLE: "true", **({APPEND_ONLY_ERASURE: "lift"} if name == "consent_events" else {})}
        assets.append(Asset(system, location, table_spec(name).relpath, "delta", properties=properties,
                            personal_columns=personal))
    return assets


def rights_assets(spark: SparkSession, cfg: KetchConfig) -> list[Asset]:
    """Catalogued assets (status ok) holding an identity column, with their personal columns, then :func:`own_assets`.

    Catalogued copies of ketch-spark's own tables are left out (:func:`own_assets` stands for them).
    """
    from ketch_spark.catalog import AssetCatalog

    catalog = AssetCatalog(spark, cfg)
    columns: dict[str, list[PersonalColumn]] = {}
    rows = catalog.columns().where(F.col("category").isNotNull()).select(
        "asset_id", "column", "category", "identity_type").collect()
    for row in sorted(rows, key=lambda r: (r["asset_id"], r["column"])):
        columns.setdefault(row["asset_id"], []).append(
            PersonalColumn(row["column"], row["category"], row["identity_type"]))
    own = tuple(cfg.path(p) for p in _OWN_TABLES)
    assets = []
    for asset in catalog.load_assets():
        personal = tuple(columns.get(asset.asset_id, ()))
        if not any(c.identity_type for c in personal):
            continue
        if asset.location.removeprefix("file://").startswith(own) or asset.location.startswith(own):
            continue
        assets.append(dataclasses.replace(asset, personal_columns=personal))
    return sorted(assets, key=lambda a: a.location) + own_assets(spark, cfg)


def _requests(spark: SparkSession, cfg: KetchConfig, kind: str | None) -> list[_Request]:
    from ketch_spark.rights.requests import read_requests

    rows = read_requests(spark, cfg, statuses=("open", "failed"), kind=kind).collect()
    return [
        _Request(r["request_id"], r["org_id"], r["kind"], r["mode"], dict(r["identities"] or {}), r.asDict())
        for r in sorted(rows, key=lambda r: r["request_id"])
    ]


def _identities_df(spark: SparkSession, requests: Sequence[_Request]) -> DataFrame:
    rows = [(r.request_id, r.org_id, t, v) for r in requests for t, v in sorted(r.identities.items())]
    return spark.createDataFrame(rows, IDENTITIES_SCHEMA)


class _Run:
    """State of one run: the batch, the assets, what is done, what failed."""

    def __init__(self, spark: SparkSession, cfg: KetchConfig, requests: list[_Request], dry_run: bool) -> None:
        self.spark = spark
        self.cfg = cfg
        self.requests = requests
        self.run_id = f"{utc_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        self.result = RunResult(run_id=self.run_id, dry_run=dry_run, requests=[r.request_id for r in requests])
        self.values = [v for r in requests for v in r.identities.values()]
        self.done = set() if dry_run else completed_work(spark, cfg, self.result.requests)
        self.errors: dict[str, list[str]] = {}
        self.connectors: dict[str, Connector] = {}
        self.frames: dict[tuple, DataFrame] = {}

    def identities(self, batch: Sequence[_Request]) -> DataFrame:
        """The identities frame of ``batch``, one per distinct batch (its rows are then collected once)."""
        key = tuple((r.request_id, r.org_id, tuple(sorted(r.identities.items()))) for r in batch)
        if key not in self.frames:
            self.frames[key] = _identities_df(self.spark, batch)
        return self.frames[key]

    def connector(self, asset: Asset) -> Connector:
        if asset.system not in self.connectors:
            self.connectors[asset.system] = connector_for(asset.location, self.spark, self.cfg)
        return self.connectors[asset.system]

    def fail(self, requests: Sequence[_Request], asset: Asset, action: str, error: str) -> None:
        for request in requests:
            self.errors.setdefault(request.request_id, []).append(f"{action} {asset.location}: {error}")

    def error_text(self, exc: BaseException) -> str:
        return _scrub(describe_error(exc), self.values) or type(exc).__name__

    def record(self, *rows: AuditRow) -> None:
        """Appends ``rows`` to the audit in one commit and notes what they finished."""
        append_audit(self.spark, self.cfg, rows)
        for row in rows:
            self.done.update((rid, row.asset_id, row.action) for rid in row.request_ids if row.status == OK)
            self.result.assets.append({
                "location": row.location, "action": row.action, "mode": row.mode, "requests": len(row.request_ids),
                "rows_matched": row.rows_matched, "rows_changed": row.rows_changed, "status": row.status,
                "error": row.error,
            })


def _from_iso(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.timezone.utc).replace(tzinfo=None)


def _erase_asset(run: _Run, asset: Asset, batch: list[_Request], mode: str) -> EraseCounts | None:
    """Erases and verifies ``batch`` on ``asset`` (audited); the counts, ``None`` when the erasure failed."""
    return _erase_together(run, [(asset, batch, mode)])[0]


def _merged(work: list[tuple[Asset, list[_Request], str]]) -> list[tuple[Asset, list[_Request], str]]:
    """``work`` with one entry per (asset, mode): an own table deletes what other assets obfuscate."""
    merged: dict[tuple[str, str], tuple[Asset, list[_Request], str]] = {}
    for asset, batch, mode in work:
        mode = "delete" if asset.properties.get(OWN_TABLE) else mode  # a consent record without its id means nothing
        _, held, _ = merged.setdefault((asset.asset_id, mode), (asset, [], mode))
        held.extend(r for r in batch if r not in held)
    return list(merged.values())


def _erase_together(run: _Run, work: list[tuple[Asset, list[_Request], str]],
                    pending: Sequence[AuditRow] = ()) -> list[EraseCounts | None]:
    """Erases each (asset, batch, mode) of ``work`` with one ``erase_all`` call, then verifies each.

    The assets share a transaction key (see :func:`_transaction_groups`). The audit
    rows, after ``pending`` (the same assets' exports), are appended in one commit.
    Per entry of the merged work (see :func:`_merged`) the counts, or ``None``
    when its erasure failed.
    """
    entries = _merged(work)
    connector = run.connector(entries[0][0])
    frames = [run.identities(batch) for _, batch, _ in entries]
    started, clock = utc_now(), time.perf_counter()
    results = connector.erase_all([(asset, frame, mode) for (asset, _, mode), frame in zip(entries, frames)])
    seconds = time.perf_counter() - clock
    shared = _shared_verifications(run, connector, entries, frames, results)
    rows: list[AuditRow] = list(pending)
    outcome: list[EraseCounts | None] = []
    for (asset, batch, mode), frame, result in zip(entries, frames, results):
        ids = [r.request_id for r in batch]
        if isinstance(result, Exception):
            error = run.error_text(result)
            logger.warning("erasure of %s failed: %s", asset.asset_id, error)
            partial = result.counts if isinstance(result, PartialErasureError) else EraseCounts()
            holders = _requests_with_rows(run, connector, asset, batch, frame) if _changed_nothing(result) else batch
            if len(holders) < len(batch):
                rows += _nothing_to_erase(run, asset, [r for r in batch if r not in holders], mode, started)
            rows.append(_erase_row(run, asset, [r.request_id for r in holders], mode, partial,
                                   partial.rows_by_request, FAILED, started, seconds, error))
            run.fail(holders, asset, _ERASE, error)
            outcome.append(None)
            continue
        rows.append(_erase_row(run, asset, ids, mode, result, result.rows_by_request, OK, started, seconds))
        rows.append(_verify_row(run, connector, asset, batch, frame, mode, result, shared.get(asset.asset_id)))
        outcome.append(result)
    run.record(*rows)
    return outcome


def _shared_verifications(run: _Run, connector: Connector, entries: list[tuple[Asset, list[_Request], str]],
                          frames: list[DataFrame], results: list[EraseCounts | Exception]) -> dict[str, VerifyResult]:
    """Per asset erased in both modes, one re-query for both batches, kept when it passed.

    A failed shared check is not kept: each batch is then verified on its own, so
    the failure is recorded against the requests it belongs to.
    """
    erased: dict[str, list[tuple[Asset, DataFrame, EraseCounts]]] = {}
    for (asset, _, _), frame, result in zip(entries, frames, results):
        if not isinstance(result, Exception):
            erased.setdefault(asset.asset_id, []).append((asset, frame, result))
    shared = {}
    for asset_id, done in erased.items():
        if len(done) < 2:
            continue
        befores = [c.version_before for _, _, c in done]
        afters = [c.version_after for _, _, c in done]
        span = EraseCounts(version_before=None if None in befores else min(befores),
                           version_after=None if None in afters else max(afters))
        frame = functools.reduce(DataFrame.unionByName, [f for _, f, _ in done])
        try:
            verified = connector.verify(done[0][0], frame, span)
        except Exception:  # noqa: BLE001 - each batch is verified (and any failure recorded) on its own
            continue
        if verified.passed:
            shared[asset_id] = verified
    return shared


def _changed_nothing(error: Exception) -> bool:
    """Whether a connector's failure is one it raises before writing (a refusal, an unreadable store, a bad rule)."""
    return isinstance(error, (ConnectorError, ObfuscationError, ConfigError)) and not isinstance(error, PartialErasureError)


def _requests_with_rows(run: _Run, connector: Connector, asset: Asset, batch: list[_Request],
                        identities_df: DataFrame) -> list[_Request]:
    """The requests of ``batch`` whose subjects ``asset`` holds, after its erasure failed with nothing changed.

    A store that refused the erasure (a missing privilege) can usually still be
    read: a request with no row there is not held back by it. When the asset
    cannot be read either, every request of the batch is.
    """
    try:
        holding = connector.count_by_request(asset, identities_df)
    except Exception:  # noqa: BLE001 - unreadable: every request stays failed on this asset
        return batch
    return [r for r in batch if holding.get(r.request_id, 0) > 0]


def _nothing_to_erase(run: _Run, asset: Asset, batch: list[_Request], mode: str,
                      started: dt.datetime) -> list[AuditRow]:
    """Audit rows of ``asset`` erased and verified for requests it holds no row of (a read found none)."""
    ids = [r.request_id for r in batch]
    note = "no row of these requests' subjects; the erasure of the asset's other rows failed"
    return [
        AuditRow(run.run_id, ids, asset.asset_id, asset.location, _ERASE, OK, mode=mode, rows_matched=0,
                 rows_changed=0, rows_by_request={}, notes=note, started_at=started, duration_seconds=0.0),
        AuditRow(run.run_id, ids, asset.asset_id, asset.location, _VERIFY, OK, mode=mode, rows_matched=0,
                 notes=note, started_at=started, duration_seconds=0.0),
    ]


def _transaction_groups(run: _Run, assets: list[Asset]) -> list[list[Asset]]:
    """``assets`` grouped by connector transaction key (the tables of one database), in order of appearance."""
    groups: dict[tuple[str, str], list[Asset]] = {}
    for asset in assets:
        groups.setdefault((asset.system, run.connector(asset).transaction_key(asset)), []).append(asset)
    return list(groups.values())


def _sweep_ledger(run: _Run, assets: list[Asset], ledger_df: DataFrame, key: bytes) -> None:
    """Erases again, in their request's mode, the erased subjects an asset holds again (see the module docstring)."""
    from ketch_spark.rights.ledger import resurrected_identities

    for asset in assets:
        if asset.properties.get(OWN_TABLE):
            continue  # consent ingest keeps erased users' old events out; later consents are theirs
        try:
            values_df = run.connector(asset).identity_values(asset)
            found = [] if values_df is None else resurrected_identities(values_df, ledger_df, key).collect()
        except Exception as exc:  # noqa: BLE001 - one asset's failure is reported; the others go on
            run.result.resurrected.append({"location": asset.location, "status": FAILED, "error": run.error_text(exc)})
            continue
        if values_df is None:
            run.result.ledger_unchecked.append(asset.location)
            continue
        batches: dict[tuple[str, str, str], dict[str, str]] = {}
        for row in found:
            batches.setdefault((row["request_id"], row["org_id"], row["mode"]), {})[row["identity_type"]] = row["value"]
            run.values.append(row["value"])
        for mode in sorted({m for _, _, m in batches}):
            originals = sorted(rid for rid, _, m in batches if m == mode)
            batch = [_Request(f"{rid}:resurrected", org, "erasure", m, identities, {})
                     for (rid, org, m), identities in sorted(batches.items()) if m == mode]
            logger.warning("asset %s holds %d erased subject(s) again: erasing them (%s)", asset.asset_id,
                           len(batch), mode)
            entry = {"location": asset.location, "requests": originals, "mode": mode}
            if run.result.dry_run:
                run.result.resurrected.append({**entry, "status": "dry-run"})
                continue
            counts = _erase_asset(run, asset, batch, mode)
            failed = counts is None or any(r.request_id in run.errors for r in batch)
            run.result.resurrected.append({
                **entry, "rows_changed": counts.rows_changed if counts else 0, "status": FAILED if failed else OK,
                "error": "; ".join(e for r in batch for e in run.errors.get(r.request_id, [])) or None,
            })


def _erase_row(run: _Run, asset: Asset, ids: list[str], mode: str, counts: EraseCounts,
               by_request: dict[str, int] | None, status: str, started: dt.datetime, seconds: float,
               error: str | None = None) -> AuditRow:
    if by_request is None or len(ids) == 1:
        by_request = {ids[0]: counts.rows_changed} if len(ids) == 1 else {}
    return AuditRow(
        run.run_id, ids, asset.asset_id, asset.location, _ERASE, status, mode=mode, rows_matched=counts.rows_matched,
        rows_changed=counts.rows_changed, rows_by_request=by_request if counts.rows_changed else {},
        version_before=counts.version_before, version_after=counts.version_after,
        files_matched=counts.files_matched, files_rewritten=counts.files_rewritten, bytes_read=counts.bytes_read,
        bytes_rewritten=counts.bytes_rewritten, duration_seconds=seconds,
        physical_after=_from_iso(counts.physical_after), error=error,
        notes=_scrub("; ".join(counts.notes), run.values) or None, started_at=started,
    )


def _verify_row(run: _Run, connector: Connector, asset: Asset, batch: list[_Request], identities_df: DataFrame,
                mode: str, counts: EraseCounts, verified: VerifyResult | None = None) -> AuditRow:
    """The verify audit row of one batch: ``verified`` when a shared re-query passed, else a re-query of its own."""
    ids = [r.request_id for r in batch]
    started, clock = utc_now(), time.perf_counter()
    try:
        verified = verified or connector.verify(asset, identities_df, counts)
        error = None if verified.passed else f"{verified.remaining} row(s) still match after the erasure"
    except Exception as exc:  # noqa: BLE001
        verified, error = None, run.error_text(exc)
    if error is not None:
        run.fail(batch, asset, _VERIFY, error)
    physical = verified.physical_after if verified is not None else counts.physical_after
    return AuditRow(
        run.run_id, ids, asset.asset_id, asset.location, _VERIFY, OK if error is None else FAILED, mode=mode,
        rows_matched=verified.remaining if verified else None, version_after=counts.version_after,
        version_before=counts.version_before, physical_after=_from_iso(physical), error=error,
        notes=(f"{verified.retained_files_holding} removed file(s) stay readable by time travel until {physical}"
               if verified and verified.retained_files_holding else None),
        started_at=started, duration_seconds=time.perf_counter() - clock,
    )


def _export_asset(run: _Run, asset: Asset, batch: list[_Request]) -> AuditRow:
    """Writes the batch's rows of ``asset`` to their export files; the audit row (for the caller to append)."""
    from ketch_spark.rights.export import write_asset_export

    connector = run.connector(asset)
    ids = [r.request_id for r in batch]
    started, clock = utc_now(), time.perf_counter()
    try:
        found_df = connector.find(asset, run.identities(batch))
        columns = [c for c in found_df.columns if c != REQUEST_ID_COLUMN]
        rows = found_df.select(REQUEST_ID_COLUMN, F.to_json(F.struct(*[F.col(f"`{c}`") for c in columns]))
                               .alias("doc")).collect()
        lines: dict[str, list[str]] = {}
        for row in rows:
            lines.setdefault(row[REQUEST_ID_COLUMN], []).append(row["doc"])
        for request_id, docs in lines.items():
            write_asset_export(run.spark, run.cfg, request_id, asset, docs)
    except Exception as exc:  # noqa: BLE001
        error = run.error_text(exc)
        run.fail(batch, asset, _EXPORT, error)
        return AuditRow(run.run_id, ids, asset.asset_id, asset.location, _EXPORT, FAILED, error=error,
                        started_at=started, duration_seconds=time.perf_counter() - clock)
    by_request = {rid: len(docs) for rid, docs in lines.items()}
    return AuditRow(
        run.run_id, ids, asset.asset_id, asset.location, _EXPORT, OK, rows_matched=len(rows),
        rows_changed=0, rows_by_request=by_request, duration_seconds=time.perf_counter() - clock,
        notes=json.dumps({"format": asset.format, "columns": columns}), started_at=started,
    )


def _dry_run_asset(run: _Run, asset: Asset, batch: list[_Request]) -> None:
    connector = run.connector(asset)
    try:
        by_request = connector.count_by_request(asset, run.identities(batch))
    except Exception as exc:  # noqa: BLE001
        run.result.assets.append({"location": asset.location, "action": "dry-run", "status": FAILED,
                                  "error": run.error_text(exc)})
        return
    for request in batch:
        run.result.would_touch.setdefault(request.request_id, {})[asset.location] = by_request.get(
            request.request_id, 0)


def _finish(run: _Run, assets: list[Asset]) -> None:
    from ketch_spark.rights.requests import update_requests

    updates: dict[str, dict[str, Any]] = {}
    now = utc_now()
    complete = []
    for request in run.requests:
        action = _VERIFY if request.kind == "erasure" else _EXPORT
        if request.request_id not in run.errors and all((request.request_id, a.asset_id, action) in run.done
                                                        for a in assets):
            complete.append(request)
        else:
            errors = run.errors.get(request.request_id) or ["not every asset was processed"]
            updates[request.request_id] = {"status": "failed", "error": "; ".join(errors)[:2000]}
            run.result.failed.append(request.request_id)
    erasures = [(r.request_id, r.org_id, r.mode, r.identities) for r in complete if r.kind == "erasure"]
    if erasures:
        from ketch_spark.rights.ledger import record_erasures

        record_erasures(run.spark, run.cfg, erasures, run.run_id, now)
    history = _audit_history(run, [r.request_id for r in complete])
    for request in complete:
        rows = history.get(request.request_id, [])
        if request.kind == "erasure":
            run.result.receipts[request.request_id] = _write_receipt(run, request, rows, now)
        else:
            run.result.exports[request.request_id] = _write_package(run, request, rows, assets)
        updates[request.request_id] = {"status": "done", "error": None, "finished_at": now}
        run.result.done.append(request.request_id)
    update_requests(run.spark, run.cfg, updates, run.run_id)


def _audit_history(run: _Run, request_ids: Sequence[str]) -> dict[str, list[Row]]:
    """Per request, its audit rows that count: successes, and failed erasures that changed rows (one read)."""
    if not request_ids:
        return {}
    counts = (F.col("status") == OK) | ((F.col("action") == _ERASE) & (F.col("rows_changed") > 0))
    rows = (
        read_audit(run.spark, run.cfg)
        .where(counts & F.arrays_overlap("request_ids", F.array(*[F.lit(r) for r in request_ids])))
        .orderBy("finished_at")
        .collect()
    )
    history: dict[str, list[Row]] = {}
    wanted = set(request_ids)
    for row in rows:
        for request_id in set(row["request_ids"]) & wanted:
            history.setdefault(request_id, []).append(row)
    return history


def _write_receipt(run: _Run, request: _Request, history: list[Row], now: dt.datetime) -> str:
    from ketch_spark.rights.identities import identity_hash
    from ketch_spark.rights.receipts import receipt_key, sign_receipt, write_receipt

    per_asset: dict[str, dict[str, Any]] = {}
    for row in (r for r in history if r["action"] in (_ERASE, _VERIFY)):
        entry = per_asset.setdefault(row["asset_id"], {"asset_id": row["asset_id"], "location": row["location"]})
        if row["action"] == _ERASE:
            erased = int((row["rows_by_request"] or {}).get(request.request_id, 0)) + entry.get("rows_erased", 0)
            entry.update(action=row["mode"], run_id=row["run_id"], rows_erased=erased,
                         versions=row["versions"], files_rewritten=row["files_rewritten"],
                         erased_at=iso_z(row["finished_at"]))
        else:
            entry.update(verified=True, verified_at=iso_z(row["finished_at"]),
                         physically_removed_by=iso_z(row["physical_after"]))
    receipt = {
        "receipt_version": 1,
        "request_id": request.request_id,
        "org_id": request.org_id,
        "kind": request.kind,
        "mode": request.mode,
        "identities": {t: identity_hash(v) for t, v in sorted(request.identities.items())},
        "received_at": iso_z(request.row.get("received_at")),
        "due_at": iso_z(request.row.get("due_at")),
        "completed_at": iso_z(now),
        "assets": [per_asset[k] for k in sorted(per_asset)],
        "rows_erased": sum(int(a.get("rows_erased", 0)) for a in per_asset.values()),
        "physically_removed_by": max((a.get("physically_removed_by") or "" for a in per_asset.values()),
                                     default="") or iso_z(now),
    }
    signed = sign_receipt(receipt, receipt_key(run.cfg.dsr))
    path = run.cfg.path(f"dsr/receipts/{request.request_id}.json")
    write_receipt(run.spark, path, signed)
    return path


def _write_package(run: _Run, request: _Request, history: list[Row], assets: list[Asset]) -> str:
    from ketch_spark.rights.export import export_file_name, write_package

    searched = []
    by_asset = {a.asset_id: a for a in assets}
    for row in (r for r in history if r["action"] == _EXPORT):
        if row["asset_id"] not in by_asset:
            continue
        rows = int((row["rows_by_request"] or {}).get(request.request_id, 0))
        notes = json.loads(row["notes"] or "{}")
        searched.append({
            "asset_id": row["asset_id"], "location": row["location"], "format": notes.get("format"),
            "columns": notes.get("columns", []), "rows": rows,
            "file": export_file_name(row["asset_id"], row["location"]) if rows else None,
        })
    unique = {s["asset_id"]: s for s in searched}
    return write_package(run.spark, run.cfg, request.row, [unique[k] for k in sorted(unique)])


def _ledger_key_for(cfg: KetchConfig, dry_run: bool) -> bytes | None:
    """The ledger's key; a dry run without the receipt secret skips the sweep (one warning) instead of failing."""
    from ketch_spark.errors import ConfigError
    from ketch_spark.rights.ledger import ledger_key

    try:
        return ledger_key(cfg.dsr)
    except ConfigError as exc:
        if not dry_run:
            raise
        logger.warning("dry run: the erased-subject ledger is not swept (%s)", exc)
        return None


def run_requests(spark: SparkSession, cfg: KetchConfig, kind: str | None = None, dry_run: bool = False) -> RunResult:
    """Processes every open (or failed) request together, one pass per asset for the batch.

    Args:
        spark: Delta-enabled session reaching the catalogued stores.
        cfg: Configuration (warehouse, connectors, ``dsr`` settings).
        kind: ``erasure`` or ``access`` to process one kind only.
        dry_run: Report the rows each request would touch per asset; change nothing.

    Returns:
        What was done; failures are recorded in it, in dsr/audit and on the requests.

    Raises:
        ConfigError: ``kind`` is unknown, or erasures are due or the ledger has
            entries to sweep, and the receipt secret (``dsr.receipt_secret_env``)
            is not set (a dry run then skips the sweep and lists the assets in
            ``ledger_unchecked``).
    """
    from ketch_spark.errors import ConfigError

    if kind not in (None, "erasure", "access"):
        raise ConfigError(f"kind must be erasure or access, found {kind!r}")
    from ketch_spark.rights.ledger import read_ledger

    started = time.perf_counter()
    requests = _requests(spark, cfg, kind)
    if not dry_run and any(r.kind == "erasure" for r in requests):
        from ketch_spark.rights.receipts import receipt_key

        receipt_key(cfg.dsr)
    ledger_df = read_ledger(spark, cfg) if kind != "access" else None
    run = _Run(spark, cfg, requests, dry_run)
    if not requests and ledger_df is None:
        run.result.seconds = time.perf_counter() - started
        return run.result
    assets = rights_assets(spark, cfg)
    logger.info("dsr run %s: %d request(s), %d asset(s)", run.run_id, len(requests), len(assets))
    report_progress(f"{len(requests)} request(s) over {len(assets)} catalogued asset(s)")
    if ledger_df is not None:
        key = _ledger_key_for(cfg, dry_run)
        if key is not None:
            _sweep_ledger(run, assets, ledger_df, key)
            report_progress("sweep erased-subject ledger", len(assets), len(assets), unit="assets")
        else:
            run.result.ledger_unchecked.extend(a.location for a in assets if not a.properties.get(OWN_TABLE))
    if not requests:
        run.result.seconds = time.perf_counter() - started
        return run.result
    assets_done = 0
    for group in _transaction_groups(run, assets):
        assets_done += len(group)
        if dry_run:
            for asset in group:
                _dry_run_asset(run, asset, requests)
            report_progress("search assets (dry run)", assets_done, len(assets), unit="assets")
            continue
        exported = []
        for asset in group:  # exports before erasures: a subject asking for both gets their data first
            batch = [r for r in requests
                     if r.kind == "access" and (r.request_id, asset.asset_id, _EXPORT) not in run.done]
            if batch:
                exported.append(_export_asset(run, asset, batch))
        work = []
        for asset in group:
            for mode in ("delete", "obfuscate"):
                batch = [r for r in requests if r.kind == "erasure" and r.mode == mode
                         and (r.request_id, asset.asset_id, _VERIFY) not in run.done]
                if batch:
                    work.append((asset, batch, mode))
        if work:  # one erase_all per group: the tables of one database change in one transaction
            _erase_together(run, work, exported)
        elif exported:
            run.record(*exported)
        report_progress("process assets", assets_done, len(assets), unit="assets")
    if not dry_run:
        _finish(run, assets)
    run.result.seconds = time.perf_counter() - started
    logger.info("dsr run %s: done %d, failed %d", run.run_id, len(run.result.done), len(run.result.failed))
    return run.result
