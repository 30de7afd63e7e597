"""A self-contained HTML compliance report of one warehouse.

:func:`gather_report` reads the figures through the library's API, aggregated in
Spark to a few small rows: consent coverage per purpose
(:func:`~ketch_spark.consent.compact.consent_rates`), data-subject request deadlines
met and missed (:func:`~ketch_spark.rights.requests.request_status`), personal data
by store (:class:`~ketch_spark.catalog.AssetCatalog`) and each asset's last
verification after an erasure (:func:`~ketch_spark.rights.audit.read_audit`).
:func:`render_report` writes them as one HTML document: inline CSS, bar charts
drawn as inline SVG, no script and no external resource, every value escaped. A
section whose tables do not exist yet, or hold nothing, says so in a sentence.
:func:`write_report` does both and writes the file.

The report never holds an identity value: requests are named by their id, assets
by their location.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from ketch_spark.config import KetchConfig
from ketch_spark.progress import report_progress
from ketch_spark.tables import current_version, table_exists

__all__ = [
    "PurposeCoverage",
    "DeadlineCounts",
    "LateRequest",
    "StoreSummary",
    "store_name",
    "AssetSummary",
    "Verification",
    "ComplianceReport",
    "gather_report",
    "render_report",
    "write_report",
    "DEADLINE_OUTCOMES",
]

#: How a request stands against its due date: done in time, done late, open past its
#: due date, open and not yet due.
DEADLINE_OUTCOMES = ("met", "missed", "overdue", "open")
_OUTCOME_LABELS = {"met": "met (done in time)", "missed": "missed (done late)",
                   "overdue": "missed (open, overdue)", "open": "open, not yet due"}
_OUTCOME_COLORS = {"met": "#2e7d4f", "missed": "#c0392b", "overdue": "#e67e22", "open": "#7f8c8d"}
_GONE_ASSET = "gone"  # catalog/assets status of an asset no longer found by a scan
_VERIFY_ACTION = "verify"  # dsr/audit action of the re-query after an erasure
_LATE_LISTED = 50


@dataclass(frozen=True)
class PurposeCoverage:
    """One purpose's consent coverage in consent/state.

    Attributes:
        purpose: The purpose's name.
        legal_basis: ``consent`` or ``legitimate_interest``.
        users: Users in consent/state.
        users_known: Users who made a choice for the purpose.
        users_granted: Users who granted it.
        users_allowed: Users the consent filter keeps for it (granted, or no
            objection for a legitimate-interest purpose).
        rate: ``users_allowed / users``; ``None`` without users.
    """

    purpose: str
    legal_basis: str
    users: int
    users_known: int
    users_granted: int
    users_allowed: int
    rate: float | None


@dataclass(frozen=True)
class DeadlineCounts:
    """Requests of one kind by how they stand against their due date (see :data:`DEADLINE_OUTCOMES`)."""

    kind: str
    met: int = 0
    missed: int = 0
    overdue: int = 0
    open: int = 0

    @property
    def total(self) -> int:
        """Every request of the kind."""
        return self.met + self.missed + self.overdue + self.open


@dataclass(frozen=True)
class LateRequest:
    """A request that missed its due date: done late (``missed``) or still open past it (``overdue``)."""

    request_id: str
    kind: str
    status: str
    outcome: str
    due_at: dt.datetime | None
    finished_at: dt.datetime | None


def store_name(system: str, fmt: str | None) -> str:
    """A store's name: ``s3 · json`` (raw logs on S3), ``file · delta``; the system alone without a format.

    A format that only repeats the connector (``postgres · jdbc``) is kept: it names how the store is read.
    """
    return system if fmt in (None, system) else f"{system} · {fmt}"


@dataclass(frozen=True)
class StoreSummary:
    """Personal data in one store: a catalog ``system`` (file, s3, postgres, dynamodb) and an asset format.

    Attributes:
        system: The catalog's system of the assets.
        format: Their format (delta, parquet, json, csv, jdbc, dynamodb); ``None`` when unknown.
        assets: Catalogued assets of the store (not gone).
        assets_with_personal_data: Those holding at least one personal column.
        personal_columns: Personal columns in all of them.
        categories: The categories of those columns.
    """

    system: str
    format: str | None
    assets: int
    assets_with_personal_data: int
    personal_columns: int
    categories: tuple[str, ...]

    @property
    def name(self) -> str:
        """The store's name (:func:`store_name`)."""
        return store_name(self.system, self.format)


@dataclass(frozen=True)
class AssetSummary:
    """The personal columns of one catalogued asset."""

    system: str
    location: str
    format: str | None
    personal_columns: int
    categories: tuple[str, ...]


@dataclass(frozen=True)
class Verification:
    """An asset's last verification after an erasure (a ``verify`` row of dsr/audit)."""

    location: str
    status: str
    rows_remaining: int | None
    request_ids: tuple[str, ...]
    run_id: str
    finished_at: dt.datetime | None
    error: str | None


@dataclass
class ComplianceReport:
    """The figures of one report. A section is ``None`` when its tables do not exist yet.

    Attributes:
        warehouse: The warehouse the figures come from.
        generated_at: When they were read (UTC, naive).
        consent_version: Version of consent/state the coverage was read at.
        purposes: Coverage per active purpose.
        deadlines: Requests per kind against their due dates.
        late_requests: The requests that missed their due date, earliest due first (at most 50).
        stores: Personal data per store.
        assets: Personal columns per asset (assets with at least one).
        verifications: Each asset's last verification, by location.
    """

    warehouse: str
    generated_at: dt.datetime
    consent_version: int | None = None
    purposes: list[PurposeCoverage] | None = None
    deadlines: list[DeadlineCounts] | None = None
    late_requests: list[LateRequest] = field(default_factory=list)
    stores: list[StoreSummary] | None = None
    assets: list[AssetSummary] = field(default_factory=list)
    verifications: list[Verification] | None = None

    def deadline_total(self, outcome: str) -> int:
        """Requests of every kind with this outcome (one of :data:`DEADLINE_OUTCOMES`)."""
        return sum(getattr(counts, outcome) for counts in self.deadlines or [])

    def summary(self) -> dict[str, Any]:
        """The JSON-able counts of the report (the command's summary line)."""
        verifications = self.verifications or []
        return {
            "warehouse": self.warehouse,
            "consent_version": self.consent_version,
            "purposes": len(self.purposes or []),
            "users": self.purposes[0].users if self.purposes else 0,
            "requests": sum(counts.total for counts in self.deadlines or []),
            **{f"deadlines_{outcome}": self.deadline_total(outcome) for outcome in DEADLINE_OUTCOMES},
            "stores": len(self.stores or []),
            "assets_with_personal_data": len(self.assets),
            "personal_columns": sum(store.personal_columns for store in self.stores or []),
            "verifications": len(verifications),
            "verifications_failed": sum(1 for v in verifications if v.status != "ok"),
        }


# --------------------------------------------------------------------------- gathering


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _consent_coverage(spark: SparkSession, cfg: KetchConfig) -> tuple[list[PurposeCoverage] | None, int | None]:
    from ketch_spark.consent.compact import consent_rates

    if not table_exists(spark, cfg, "consent_state"):
        return None, None
    version = current_version(spark, cfg, "consent_state").version
    rows = consent_rates(spark, cfg).orderBy("bit").collect()
    return [PurposeCoverage(r.purpose, r.legal_basis, r.users, r.users_known, r.users_granted, r.users_allowed,
                            r.rate) for r in rows], version


def _deadline_outcome() -> Any:
    """The :data:`DEADLINE_OUTCOMES` value of a ``request_status`` row, as a column."""
    from ketch_spark.rights.requests import STATUS_DONE

    done = F.col("status") == STATUS_DONE
    return (F.when(done & (F.col("finished_at") <= F.col("due_at")), "met")
            .when(done, "missed")
            .when(F.col("overdue"), "overdue")
            .otherwise("open"))


def _deadlines(spark: SparkSession, cfg: KetchConfig,
               now: dt.datetime) -> tuple[list[DeadlineCounts] | None, list[LateRequest]]:
    from ketch_spark.rights.requests import request_status

    if not table_exists(spark, cfg, "dsr_requests"):
        return None, []
    status_df = request_status(spark, cfg, now=now).withColumn("outcome", _deadline_outcome())
    counts = status_df.groupBy("kind").pivot("outcome", list(DEADLINE_OUTCOMES)).count().orderBy("kind").collect()
    late = (status_df.where(F.col("outcome").isin("missed", "overdue"))
            .orderBy("due_at", "request_id").limit(_LATE_LISTED)
            .select("request_id", "kind", "status", "outcome", "due_at", "finished_at").collect())
    return ([DeadlineCounts(r.kind, **{o: int(r[o] or 0) for o in DEADLINE_OUTCOMES}) for r in counts],
            [LateRequest(*r) for r in late])


def _personal_data(spark: SparkSession, cfg: KetchConfig) -> tuple[list[StoreSummary] | None, list[AssetSummary]]:
    from ketch_spark.catalog import AssetCatalog

    if not table_exists(spark, cfg, "catalog_assets"):
        return None, []
    catalog = AssetCatalog(spark, cfg)
    stores = (catalog.assets().where(F.col("status") != _GONE_ASSET).groupBy("system", "format").count()
              .orderBy("system", "format").collect())
    per_asset = (catalog.personal_columns()
                 .groupBy("system", "location", "format")
                 .agg(F.count(F.lit(1)).alias("columns"), F.array_sort(F.collect_set("category")).alias("categories"))
                 .orderBy("system", "location").collect())
    asset_rows = [AssetSummary(r.system, r.location, r.format, int(r.columns), tuple(r.categories)) for r in per_asset]
    return [_store_summary(r.system, r.format, int(r["count"]), asset_rows) for r in stores], asset_rows


def _store_summary(system: str, fmt: str | None, assets: int, asset_rows: Sequence[AssetSummary]) -> StoreSummary:
    mine = [a for a in asset_rows if (a.system, a.format) == (system, fmt)]
    categories = sorted({category for a in mine for category in a.categories})
    return StoreSummary(system, fmt, assets, len(mine), sum(a.personal_columns for a in mine), tuple(categories))


def _last_verifications(spark: SparkSession, cfg: KetchConfig) -> list[Verification] | None:
    from ketch_spark.rights.audit import read_audit

    if not table_exists(spark, cfg, "dsr_audit"):
        return None
    latest = Window.partitionBy("asset_id").orderBy(F.col("finished_at").desc(), F.col("run_id").desc())
    rows = (read_audit(spark, cfg).where(F.col("action") == _VERIFY_ACTION)
            .withColumn("recency", F.row_number().over(latest)).where(F.col("recency") == 1)
            .select("location", "status", "rows_matched", "request_ids", "run_id", "finished_at", "error")
            .orderBy("location").collect())
    return [Verification(r.location or "-", r.status, r.rows_matched, tuple(sorted(r.request_ids or [])), r.run_id,
                         r.finished_at, r.error) for r in rows]


def gather_report(spark: SparkSession, cfg: KetchConfig, now: dt.datetime | None = None) -> ComplianceReport:
    """Reads the report's figures from the warehouse of ``cfg``; creates and changes no table.

    Args:
        spark: Delta-enabled session.
        cfg: The config (its warehouse and policy).
        now: Time due dates are judged against (naive = UTC); default the current time.
    """
    now = _utc_now() if now is None else now
    report = ComplianceReport(warehouse=cfg.warehouse, generated_at=now)
    report_progress("consent coverage")
    report.purposes, report.consent_version = _consent_coverage(spark, cfg)
    report_progress("request deadlines")
    report.deadlines, report.late_requests = _deadlines(spark, cfg, now)
    report_progress("personal data by store")
    report.stores, report.assets = _personal_data(spark, cfg)
    report_progress("last verifications")
    report.verifications = _last_verifications(spark, cfg)
    return report


# --------------------------------------------------------------------------- rendering

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d2730;
       background: #f4f6f8; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 0 0 12px; }
.meta, .note { color: #5b6875; }
section { background: #fff; border: 1px solid #dde3e9; border-radius: 8px; padding: 18px 22px; margin: 18px 0; }
.tiles { display: flex; gap: 14px; flex-wrap: wrap; background: none; border: none; padding: 0; }
.tile { flex: 1 1 200px; background: #fff; border: 1px solid #dde3e9; border-radius: 8px; padding: 12px 16px; }
.tile .figure { font-size: 24px; font-weight: 600; display: block; }
.tile .caption { color: #5b6875; font-size: 13px; }
table { border-collapse: collapse; width: 100%; margin-top: 10px; font-size: 14px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e6eaee; vertical-align: top; }
th { color: #5b6875; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 13px; background: #eef1f4; padding: 1px 4px; border-radius: 3px; word-break: break-all; }
svg text { font: 13px system-ui, "DejaVu Sans", sans-serif; fill: #1d2730; }
.ok { color: #2e7d4f; font-weight: 600; }
.failed { color: #c0392b; font-weight: 600; }
"""
_BAR_COLOR = "#2f6fb0"


@dataclass(frozen=True)
class _Bar:
    label: str
    value: float
    text: str
    color: str = _BAR_COLOR


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _columns(count: int) -> str:
    return f"{count:,} column" + ("" if count == 1 else "s")


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


def _when(value: dt.datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _bar_chart(title: str, bars: Sequence[_Bar], max_value: float | None = None) -> str:
    """A horizontal bar chart as inline SVG: a label, a bar and its value text per row."""
    label_width, bar_width, text_width, row_height, margin = 230, 560, 140, 30, 6
    width, height = label_width + bar_width + text_width, 2 * margin + row_height * len(bars)
    scale = max_value or max((bar.value for bar in bars), default=0) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}"><title>{_esc(title)}</title>']
    for index, bar in enumerate(bars):
        top = margin + index * row_height
        length = max(bar.value, 0) / scale * bar_width
        baseline = top + row_height / 2 + 5
        parts.append(f'<text x="{label_width - 10}" y="{baseline:.0f}" text-anchor="end">{_esc(bar.label)}</text>')
        parts.append(f'<rect x="{label_width}" y="{top + 6}" width="{length:.1f}" height="{row_height - 12}" '
                     f'rx="3" fill="{_esc(bar.color)}"/>')
        parts.append(f'<text x="{label_width + length + 8:.1f}" y="{baseline:.0f}">{_esc(bar.text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table of already formatted cells; columns in ``numeric`` are right-aligned."""
    def cell(tag: str, index: int, value: Any) -> str:
        css = ' class="num"' if index in numeric else ""
        return f"<{tag}{css}>{_esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sentence(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_esc(title)}</h2>{body}</section>'


def _consent_section(report: ComplianceReport) -> str:
    title = "Consent coverage per purpose"
    if report.purposes is None:
        return _section("consent", title, _sentence(
            "No consent state yet: run `ketch-spark consent ingest` and `ketch-spark consent compact`."))
    if not report.purposes or not report.purposes[0].users:
        return _section("consent", title, _sentence("consent/state holds no user yet."))
    users = report.purposes[0].users
    chart = _bar_chart("Share of users each purpose may use",
                       [_Bar(p.purpose, p.rate or 0, _percent(p.rate)) for p in report.purposes], max_value=1)
    rows = [(p.purpose, p.legal_basis, _count(p.users_allowed), _count(p.users_granted), _count(p.users_known),
             _percent(p.rate)) for p in report.purposes]
    intro = _sentence(f"{users:,} users in consent/state (version {report.consent_version}). A consent purpose "
                      "counts a user once granted; a legitimate-interest purpose until the user objects.")
    table = _table(("purpose", "legal basis", "users allowed", "users granted", "users who chose", "coverage"), rows,
                   numeric=(2, 3, 4, 5))
    return _section("consent", title, intro + chart + table)


def _deadline_section(report: ComplianceReport) -> str:
    title = "Data-subject request deadlines"
    if not report.deadlines:
        return _section("deadlines", title, _sentence(
            "No data-subject requests yet: `ketch-spark dsr submit --input requests.jsonl` stores them."))
    chart = _bar_chart("Requests against their due date",
                       [_Bar(_OUTCOME_LABELS[o], report.deadline_total(o), _count(report.deadline_total(o)),
                             _OUTCOME_COLORS[o]) for o in DEADLINE_OUTCOMES])
    rows = [(c.kind, *(_count(getattr(c, o)) for o in DEADLINE_OUTCOMES), _count(c.total)) for c in report.deadlines]
    table = _table(("kind", *(_OUTCOME_LABELS[o] for o in DEADLINE_OUTCOMES), "requests"), rows,
                   numeric=(1, 2, 3, 4, 5))
    body = chart + table
    if report.late_requests:
        late_rows = [(r.request_id, r.kind, r.status, _OUTCOME_LABELS[r.outcome], _when(r.due_at), _when(r.finished_at))
                     for r in report.late_requests]
        body += "<h3>Missed deadlines</h3>" + _table(("request", "kind", "status", "outcome", "due", "finished"),
                                                    late_rows)
    else:
        body += _sentence("No request has missed its due date.")
    return _section("deadlines", title, body)


def _personal_data_section(report: ComplianceReport) -> str:
    title = "Personal data by store"
    if report.stores is None:
        return _section("personal-data", title, _sentence(
            "No catalog yet: `ketch-spark catalog scan --source URI` finds and classifies personal data."))
    if not report.stores:
        return _section("personal-data", title, _sentence("The catalog holds no asset."))
    chart = _bar_chart("Personal columns per store",
                       [_Bar(s.name, s.personal_columns, _columns(s.personal_columns)) for s in report.stores])
    store_rows = [(s.name, _count(s.assets), _count(s.assets_with_personal_data), _count(s.personal_columns),
                   ", ".join(s.categories) or "–") for s in report.stores]
    body = chart + _table(("store", "assets", "assets with personal data", "personal columns", "categories"),
                          store_rows, numeric=(1, 2, 3))
    if report.assets:
        asset_rows = [(a.location, store_name(a.system, a.format), _count(a.personal_columns),
                       ", ".join(a.categories)) for a in report.assets]
        body += "<h3>Assets holding personal data</h3>" + _table(
            ("asset", "store", "personal columns", "categories"), asset_rows, numeric=(2,))
    else:
        body += _sentence("No catalogued asset holds personal data.")
    return _section("personal-data", title, body)


def _verification_section(report: ComplianceReport) -> str:
    title = "Last verification results"
    if not report.verifications:
        return _section("verification", title, _sentence(
            "No erasure has been verified yet: `ketch-spark dsr run` re-queries every asset it erased from."))
    passed = sum(1 for v in report.verifications if v.status == "ok")
    total = len(report.verifications)
    chart = _bar_chart("Assets by last verification",
                       [_Bar("passed", passed, f"{passed:,} of {total:,}", _OUTCOME_COLORS["met"]),
                        _Bar("failed", total - passed, f"{total - passed:,} of {total:,}", _OUTCOME_COLORS["missed"])],
                       max_value=total)
    rows = [(v.location, v.status, _count(v.rows_remaining), ", ".join(v.request_ids), _when(v.finished_at),
             v.error or "–") for v in report.verifications]
    table = _table(("asset", "result", "rows still matching", "requests", "verified", "error"), rows, numeric=(2,))
    return _section("verification", title, chart + table)


def _tiles(report: ComplianceReport) -> str:
    summary = report.summary()
    missed = summary["deadlines_missed"] + summary["deadlines_overdue"]
    tiles = [
        (_count(summary["users"]), "users in consent/state"),
        (f"{summary['deadlines_met']:,} met / {missed:,} missed", "request deadlines"),
        (_count(summary["personal_columns"]), f"personal columns in {summary['assets_with_personal_data']:,} assets"),
        (f"{summary['verifications'] - summary['verifications_failed']:,} of {summary['verifications']:,}",
         "assets passing their last verification"),
    ]
    return '<section class="tiles">' + "".join(
        f'<div class="tile"><span class="figure">{_esc(figure)}</span><span class="caption">{_esc(caption)}</span></div>'
        for figure, caption in tiles) + "</section>"


def render_report(report: ComplianceReport) -> str:
    """The report as one HTML document: inline CSS and SVG, no script, no external resource."""
    policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ketch-spark compliance report</title><style>{_CSS}</style></head><body><main>"
        "<h1>Compliance report</h1>"
        f'<p class="meta">Warehouse <code>{_esc(report.warehouse)}</code>, read {_esc(_when(report.generated_at))}'
        " by ketch-spark.</p>"
        + _tiles(report) + _consent_section(report) + _deadline_section(report) + _personal_data_section(report)
        + _verification_section(report) + "</main></body></html>\n"
    )


def write_report(spark: SparkSession, cfg: KetchConfig, out: str | Path,
                 now: dt.datetime | None = None) -> ComplianceReport:
    """Gathers the figures (:func:`gather_report`) and writes them as HTML to the local file ``out``.

    The file's folder is created if missing.
    """
    report = gather_report(spark, cfg, now=now)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(report), encoding="utf-8")
    report_progress(f"wrote {path}")
    return report
