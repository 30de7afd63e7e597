"""The ``ketch-spark`` command line; jobs/*.py call the same :func:`main`.

Every command takes ``--conf PATH`` (default conf/ketch.yaml), prints what it did
for a person, and prints a one-line JSON summary last, for machines. A handler
gets a SparkSession unless its parser declares ``needs_spark=False`` (it then gets
``None``); a summary whose ``status`` is not ``ok`` makes the exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ketch_spark.console import format_table, showing_progress
from ketch_spark.config import DEFAULT_CONFIG_PATH, KetchConfig, default_config_path, load_config
from ketch_spark.diagnose import FailureContext, explain_failure
from ketch_spark.errors import KetchError

__all__ = ["main", "build_parser"]

logger = logging.getLogger("ketch_spark.cli")

Handler = Callable[[Any, KetchConfig, argparse.Namespace], dict]


def _demo(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.demo import run_demo

    return run_demo(spark, cfg, n_users=args.users, out=sys.stdout)


def _consent_ingest(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.consent.sources import ingest_consent

    result = ingest_consent(spark, cfg, args.input, fmt=args.format, batch_id=args.batch_id)
    for message in (result.expectations or {}).get("messages", []):
        print(f"ketch-spark consent ingest: expectation failed: {message}", file=sys.stderr)
    summary = result.summary()
    _print_counts([("batch", result.batch_id + (" (already ingested: nothing written)" if result.already_ingested
                                               else "")),
                   ("rows read", result.read), ("accepted", result.accepted), ("quarantined", result.quarantined),
                   ("duplicates", result.duplicates)])
    if result.reasons:
        print()
        print(format_table(("quarantine reason", "rows"), sorted(result.reasons.items(), key=lambda item: -item[1])))
    if result.read and result.quarantined == result.read:
        print(f"ketch-spark consent ingest: every record was quarantined ({_reasons_text(result.reasons)}); "
              f"is --format {args.format} the format of the files? (`ketch-spark consent ingest --help` shows "
              "one example per format)", file=sys.stderr)
        summary["status"] = "failed"
    return summary


def _reasons_text(reasons: dict[str, int]) -> str:
    return ", ".join(f"{reason} {rows:,}" for reason, rows in sorted(reasons.items(), key=lambda item: -item[1]))


def _consent_compact(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.consent.compact import compact_consent

    result = compact_consent(spark, cfg, batch_id=args.batch_id, full=args.full)
    _print_counts([("mode", "full rebuild" if result.full else "incremental"),
                   ("events applied", result.events_read), ("users changed", result.users_changed),
                   ("new users", result.inserted), ("committed", result.committed),
                   ("consent/state version", result.state_version)])
    return result.summary()


def _catalog_scan(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.catalog import AssetCatalog

    summary = AssetCatalog(spark, cfg).scan(*args.source).summary()
    _print_counts([(name.replace("_", " "), summary[name]) for name in
                   ("discovered", "sampled", "unchanged", "gone", "errors", "personal_columns", "changed_columns")])
    for failure in summary["error_assets"]:
        print(f"ketch-spark catalog scan: {failure['location']}: {failure['error']}", file=sys.stderr)
    if summary["errors"]:
        summary["status"] = "failed" if summary["errors"] >= summary["discovered"] else "partial"
    return summary


def _catalog_list(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.catalog import AssetCatalog

    assets_df = AssetCatalog(spark, cfg).assets()
    rows = assets_df.select("system", "location", "format", "status", "row_estimate").orderBy("system", "location").collect()
    for row in rows:
        print(f"{row.system:<9} {row.format or '-':<8} {row.status:<7} {row.row_estimate or 0:>12}  {row.location}")
    return {"assets": len(rows)}


#: Imported while Spark starts by the commands that validate consent batches (about 3 s on its own).
_EXPECTATIONS = ("great_expectations",)
_FOUND_HEADERS = ("asset", "column", "category", "identity type", "confidence", "method")


def _print_found_columns(rows: list, nothing: str) -> dict:
    """Prints personal columns as a table (or ``nothing``); the summary counts columns and assets."""
    if rows:
        print(format_table(_FOUND_HEADERS, [(r.location, r.column, r.category, r.identity_type, r.confidence, r.method)
                                            for r in rows]))
    else:
        print(nothing)
    return {"columns": len(rows), "assets": len({r.asset_id for r in rows})}


def _catalog_columns(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.catalog import AssetCatalog

    rows = AssetCatalog(spark, cfg).personal_columns(identity_type=args.identity_type, asset=args.asset).collect()
    scope = " ".join(filter(None, [args.identity_type and f"of identity type {args.identity_type}",
                                   args.asset and f"in asset {args.asset}"]))
    nothing = f"no personal columns found{' ' + scope if scope else ''}; `ketch-spark catalog list` shows the " \
              "assets, `ketch-spark catalog scan --source URI` adds some"
    return _print_found_columns(rows, nothing)


def _catalog_search(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.catalog import AssetCatalog

    rows = AssetCatalog(spark, cfg).search(args.text).collect()
    return {"text": args.text, **_print_found_columns(rows, f"no personal column matches {args.text!r}")}


def _catalog_review(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.catalog import AssetCatalog

    rows = AssetCatalog(spark, cfg).review(below=args.below).collect()
    for row in rows:
        confidence = "-" if row.confidence is None else f"{row.confidence:.2f}"
        print(f"{row.category or 'not personal':<15} {confidence:>5}  {row.column:<40} {row.location}\n"
              f"{'':<22}{row.reason}")
    if not rows:
        print("nothing to review")
    return {"to_review": len(rows)}


def _catalog_label(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.catalog import AssetCatalog

    category = None if args.not_personal else args.category
    label = AssetCatalog(spark, cfg).label(args.asset, args.column, category, args.by, args.note)
    print(f"labelled {label.column} of {label.asset_id} as {label.category or 'not personal'} "
          f"(by {label.labelled_by}); later scans keep it")
    return {"asset_id": label.asset_id, "column": label.column, "category": label.category,
            "labelled_by": label.labelled_by}


def _dsr_submit(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.rights.requests import read_request_file, submit_requests

    if not Path(args.input).is_file():
        raise KetchError(f"input {args.input} is not a file; expected a JSON-lines file of requests")
    result = submit_requests(spark, cfg, read_request_file(args.input))
    for rejection in result.rejected:
        print(f"rejected {rejection['request_id'] or '#' + str(rejection['index'])}: {rejection['reason']}")
    summary = result.summary()
    _print_counts([(name, summary[name]) for name in ("submitted", "accepted", "duplicates", "rejected")])
    return summary


def _dsr_status(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.rights.requests import request_status

    rows = request_status(spark, cfg).select("request_id", "kind", "mode", "status", "due_at", "overdue").collect()
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row.status] = statuses.get(row.status, 0) + 1
        due = row.due_at.strftime("%Y-%m-%d %H:%M") if row.due_at else "-"
        flag = "OVERDUE" if row.overdue else ""
        print(f"{row.request_id:<24} {row.kind:<8} {row.mode or '-':<9} {row.status:<8} {due:<16} {flag}".rstrip())
    return {"requests": len(rows), "statuses": statuses, "overdue": sum(1 for row in rows if row.overdue)}


def _dsr_run(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.rights.engine import run_requests

    summary = run_requests(spark, cfg, kind=args.kind, dry_run=args.dry_run).summary()
    if not summary["requests"]:
        print("no open or failed requests" + (f" of kind {args.kind}" if args.kind else ""))
    for asset in summary["assets"]:
        counts = f"matched {_count(asset.get('rows_matched'))} changed {_count(asset.get('rows_changed'))}"
        error = f"  error: {asset['error']}" if asset.get("error") else ""
        print(f"{asset['action']:<8} {asset.get('mode') or '-':<9} {counts:<30} {asset['status']:<6} "
              f"{asset['location']}{error}")
    for request_id, by_asset in sorted(summary["would_touch"].items()):
        for location, rows in sorted(by_asset.items()):
            print(f"would touch {request_id:<24} {rows:>10,} row(s)  {location}")
    for request_id, path in sorted({**summary["receipts"], **summary["exports"]}.items()):
        print(f"done        {request_id:<24} {path}")
    for request_id in summary["failed"]:
        print(f"failed      {request_id}")
    if summary["requests"]:
        _print_counts([("requests", summary["requests"]), ("done", len(summary["done"])),
                       ("failed", len(summary["failed"])), ("assets touched", len(summary["assets"])),
                       ("resurrected subjects", len(summary["resurrected"]))])
    if summary["failed"]:
        # a failed request stays open and is retried by the next run; scripts see it in the exit code
        summary["status"] = "failed" if not summary["done"] else "partial"
    return summary


def _report(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.report import write_report

    summary = write_report(spark, cfg, args.out).summary()
    _print_counts([("purposes", summary["purposes"]), ("users in consent/state", summary["users"]),
                   ("requests", summary["requests"]), ("deadlines met", summary["deadlines_met"]),
                   ("deadlines missed (done late)", summary["deadlines_missed"]),
                   ("deadlines missed (open, overdue)", summary["deadlines_overdue"]),
                   ("stores", summary["stores"]), ("personal columns", summary["personal_columns"]),
                   ("assets verified", summary["verifications"]),
                   ("verifications failed", summary["verifications_failed"])])
    print(f"\nwrote {Path(args.out).resolve()}")
    return {"out": str(Path(args.out).resolve()), **summary}


def _print_counts(rows: Sequence[tuple[str, Any]]) -> None:
    """A command's short report: one row per count, under a blank line."""
    print()
    print(format_table(None, rows))


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _dsr_verify_receipt(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001, ARG001
    from ketch_spark.rights.receipts import read_receipt_file, receipt_key, verify_receipt

    try:
        receipt = read_receipt_file(args.file)
    except OSError as exc:
        raise KetchError(f"{args.file}: cannot read the receipt ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise KetchError(str(exc)) from exc
    valid = verify_receipt(receipt, receipt_key(cfg.dsr))
    request_id = receipt.get("request_id")
    name = request_id if isinstance(request_id, str) else "?"
    print(f"receipt {name}: {'valid' if valid else 'INVALID (signature does not match)'}")
    return {"status": "ok" if valid else "invalid", "file": str(args.file), "request_id": request_id,
            "valid": valid}


#: One example record per ``--format`` of ``consent ingest`` (the README's table holds the same lines).
INGEST_FORMAT_EXAMPLES = (
    ("json", '{"org_id": "0xDEADC0DE", "user_id": "u-1", "ts": "2026-11-26T10:00:00Z", '
             '"purposes": {"analytics": true, "advertising": false}, "source": "api"}'),
    ("json", '{"org_id": "0xDEADC0DE", "user_id": "u-2", "ts": "2026-11-26T10:05:00Z", "purpose": "analytics", '
             '"granted": true, "source": "sdk"}'),
    ("csv", "org_id,user_id,ts,purpose,granted,source"),
    ("csv", "0xDEADC0DE,u-3,2026-11-26T10:00:00Z,analytics,true,s3_drop"),
    ("parquet", "org_id string, user_id string, ts timestamp, purpose string, granted boolean, source string"),
    ("parquet", "org_id string, user_id string, ts timestamp, purposes map<string,boolean>, source string"),
    ("tcf", '{"org_id": "0xDEADC0DE", "user_id": "u-4", "ts": "2026-11-26T10:00:00Z", '
            '"tc_string": "CQuUB9AQuUB9AAHABBENCWCAAIGAAABAAAAAACKAAIgAAA", "source": "cmp"}'),
    ("tcf", '{"org_id": "0xDEADC0DE", "user_id": "u-5", "ts": "2026-11-26T10:00:00Z", "us_privacy": "1YNN", '
            '"source": "cmp"}'),
    ("gpp", '{"org_id": "0xDEADC0DE", "user_id": "u-6", "ts": "2026-11-26T10:00:00Z", '
            '"gpp_string": "DBABLA~BAAQYAAAAgBA.QA", "source": "cmp"}'),
)


def _ingest_epilog() -> str:
    from ketch_spark.consent.sources import REASONS

    lines = ["input formats, one example each (CSV: a header line, then one choice per line;",
             "Parquet: the schema):"]
    lines += [f"  {fmt:<8} {example}" for fmt, example in INGEST_FORMAT_EXAMPLES]
    lines += ["", "bad records go to consent/quarantine with one of these reasons (README: what each means):",
              *textwrap.wrap(", ".join(REASONS), width=100, initial_indent="  ", subsequent_indent="  ")]
    return "\n".join(lines)


def _identity_types() -> list[str]:
    from ketch_spark.catalog.classify import IDENTITY_TYPES

    return sorted(set(IDENTITY_TYPES.values()))


#: What ``ketch-spark --help`` says first: what the tool does and where to start.
DESCRIPTION = """\
ketch-spark keeps a Spark + Delta Lake data lake within privacy law: it ingests consent signals
into one bitmap per user, catalogs where personal data lives, and erases or exports one person's
data on request. Data goes to the warehouse folder of the config (default ./ketch-data)."""

EPILOG = """\
start here:
  ketch-spark demo                                   run every step on generated data (a few minutes)
  ketch-spark consent ingest --input drops/ --format json
  ketch-spark consent compact
  ketch-spark catalog scan --source s3a://lake/processed/
  ketch-spark dsr submit --input requests.jsonl && ketch-spark dsr run
  ketch-spark report --out report.html                HTML compliance report of the warehouse

Every command prints a short report, then one JSON line (the last line of stdout) for scripts;
--quiet keeps only the JSON line. `ketch-spark COMMAND ACTION --help` explains each one."""


def _command(group, name: str, help: str, examples: Sequence[str], description: str | None = None,  # noqa: A002, ANN001
             epilog: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser with ``--conf``/``--quiet`` and an "examples:" block under its options."""
    blocks = ["examples:\n" + "\n".join(f"  {example}" for example in examples)]
    if epilog:
        blocks.append(epilog)
    parser = group.add_parser(name, help=help, description=description or help[:1].upper() + help[1:] + ".",
                              epilog="\n\n".join(blocks), formatter_class=argparse.RawDescriptionHelpFormatter)
    return _with_common(parser)


def _with_common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--conf", default=argparse.SUPPRESS, metavar="PATH",
                        help=f"config YAML (default: $KETCH_SPARK_CONF, else {DEFAULT_CONFIG_PATH} if it exists, "
                             "else built-in defaults)")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="print only the JSON summary line")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ketch-spark`` (every command accepts ``--conf`` and ``--quiet``)."""
    parser = _with_common(argparse.ArgumentParser(prog="ketch-spark", description=DESCRIPTION, epilog=EPILOG,
                                                  formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level; show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _command(commands, "demo", "generate data and run every step on the embedded default",
                    ["ketch-spark demo", "ketch-spark demo --users 2000 --conf /tmp/ketch.yaml"])
    demo.add_argument("--users", type=int, default=20_000, help="number of synthetic users (default 20000)")
    demo.set_defaults(handler=_demo, preload=_EXPECTATIONS)

    consent = commands.add_parser("consent", help="consent signals: ingest and compact").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    ingest = _command(
        consent, "ingest", "read raw consent files into consent/events; bad records go to consent/quarantine",
        ["ketch-spark consent ingest --input drops/2026-11-26/ --format json",
         "ketch-spark consent ingest --input s3a://drops/cmp/ --format tcf --batch-id cmp-2026-11-26"],
        epilog=_ingest_epilog())
    ingest.add_argument("--input", action="append", required=True, metavar="PATH",
                        help="file or folder, local or s3a:// (repeat for several)")
    ingest.add_argument("--format", choices=_formats(), default="json",
                        help="how the files are written (default json): json = JSON lines with purposes; csv = a "
                             "header line then one choice per line; parquet; tcf = JSON lines with tc_string or "
                             "us_privacy; gpp = JSON lines with gpp_string (examples below)")
    ingest.add_argument("--batch-id", default=None, metavar="ID",
                        help="name of this delivery; ingesting the same records under the same id again does "
                             "nothing, the same id with other records is refused (default: derived from the "
                             "files' paths, sizes and times, so unchanged files are not ingested twice)")
    ingest.set_defaults(handler=_consent_ingest, inputs_of=lambda args: args.input, table="consent/events",
                        preload=_EXPECTATIONS)
    compact = _command(consent, "compact", "apply new consent events to consent/state (incremental)",
                       ["ketch-spark consent compact", "ketch-spark consent compact --batch-id cmp-2026-11-26",
                        "ketch-spark consent compact --full"],
                       description="Applies the events not yet applied to consent/state, one row per user with "
                                   "the latest choice per purpose. Run one compaction at a time.")
    compact.add_argument("--batch-id", default=None, metavar="ID", help="apply only this ingested batch")
    compact.add_argument("--full", action="store_true", help="rebuild the state from all events")
    compact.set_defaults(handler=_consent_compact, table="consent/state")

    catalog = commands.add_parser("catalog", help="data asset catalog: scan, columns, search, review, label") \
        .add_subparsers(dest="action", required=True, metavar="ACTION")
    scan = _command(catalog, "scan", "discover and classify the assets under one or more locations",
                    ["ketch-spark catalog scan --source s3a://lake/processed/",
                     "ketch-spark catalog scan --source ./lake --source jdbc:postgresql://db:5432/dw"])
    scan.add_argument("--source", action="append", required=True, metavar="URI",
                      help="folder, s3a://bucket/prefix, jdbc:postgresql://host:port/db or dynamodb:// (repeatable)")
    scan.set_defaults(handler=_catalog_scan, table="catalog/assets")
    listing = _command(catalog, "list", "list the catalogued assets", ["ketch-spark catalog list"])
    listing.set_defaults(handler=_catalog_list)
    columns = _command(
        catalog, "columns", "list the personal columns the catalog found",
        ["ketch-spark catalog columns", "ketch-spark catalog columns --identity-type email",
         "ketch-spark catalog columns --asset s3a://lake/crm/contacts"],
        description="Lists the personal columns of the catalogued assets: asset, column path, category, identity "
                    "type (what a data-subject request matches on), confidence and method (the evidence that "
                    "agreed).")
    columns.add_argument("--identity-type", choices=_identity_types(), default=None,
                         help="only columns giving this identity type")
    columns.add_argument("--asset", default=None, help="only this asset (id, location or name, see `catalog list`)")
    columns.set_defaults(handler=_catalog_columns)
    search = _command(
        catalog, "search", "find personal columns by asset, column, category or identity type",
        ["ketch-spark catalog search email", "ketch-spark catalog search contacts"],
        description="Lists the personal columns whose asset location or name, column path, category or identity "
                    "type contains TEXT, ignoring case.")
    search.add_argument("text", metavar="TEXT", help="text to look for, e.g. email, phone, contacts, user.id")
    search.set_defaults(handler=_catalog_search)
    review = _command(
        catalog, "review", "columns to review: low confidence, inferred from context, changed since the last scan",
        ["ketch-spark catalog review", "ketch-spark catalog review --below 0.9"],
        description="Lists the columns a person should confirm or correct with `catalog label`.")
    review.add_argument("--below", type=float, default=0.8, help="list classifications below this confidence")
    review.set_defaults(handler=_catalog_review)
    label = _command(
        catalog, "label", "record a reviewed classification that every later scan keeps",
        ["ketch-spark catalog label --asset s3a://lake/crm/contacts --column id --as user_id",
         'ketch-spark catalog label --asset public.users --column account_ref --not-personal --note "company"'])
    label.add_argument("--asset", required=True, help="asset id, location or name (see `catalog list`)")
    label.add_argument("--column", required=True, help="dot path of the column, as `catalog review` shows it")
    decision = label.add_mutually_exclusive_group(required=True)
    decision.add_argument("--as", dest="category", help="the column's category (email, phone, user_id, ...)")
    decision.add_argument("--not-personal", action="store_true", help="the column holds no personal data")
    label.add_argument("--by", default=None, help="who decides (default: the OS user)")
    label.add_argument("--note", default=None, help="why (kept with the label)")
    label.set_defaults(handler=_catalog_label)

    dsr = commands.add_parser("dsr", help="data-subject requests: intake, processing, status").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    submit = _command(dsr, "submit", "validate requests and store the valid ones in dsr/requests",
                      ["ketch-spark dsr submit --input requests.jsonl"],
                      epilog='one request per line, e.g.\n  {"request_id": "r-1", "org_id": "0xDEADC0DE", '
                             '"kind": "erasure", "mode": "delete",\n   "identities": {"email": "jane@example.com"}}')
    submit.add_argument("--input", required=True, metavar="FILE", help="local JSON-lines file, one request per line")
    submit.set_defaults(handler=_dsr_submit, inputs_of=lambda args: [args.input])
    status = _command(dsr, "status", "list requests: status, due date, overdue", ["ketch-spark dsr status"])
    status.set_defaults(handler=_dsr_status)
    run = _command(dsr, "run", "process open (and failed) requests: erase, verify, export",
                   ["ketch-spark dsr run --dry-run", "ketch-spark dsr run", "ketch-spark dsr run --kind access"])
    run.add_argument("--kind", choices=["erasure", "access"], default=None, help="process one kind only")
    run.add_argument("--dry-run", action="store_true", help="report the rows each request would touch; change nothing")
    run.set_defaults(handler=_dsr_run)
    verify = _command(dsr, "verify-receipt", "check an erasure receipt's signature (no Spark)",
                      ["ketch-spark dsr verify-receipt ketch-data/dsr/receipts/r-1.json"])
    verify.add_argument("file", metavar="FILE", help="local receipt file (dsr/receipts/<request_id>.json)")
    verify.set_defaults(handler=_dsr_verify_receipt, needs_spark=False)

    report = _command(
        commands, "report", "write a self-contained HTML compliance report of the warehouse",
        ["ketch-spark report --out report.html", "ketch-spark report --out /tmp/compliance.html --conf conf/ketch.yaml"],
        description="Writes one HTML file, readable offline (no script, no external resource): consent coverage per "
                    "purpose, data-subject request deadlines met and missed, personal data by store and each "
                    "asset's last verification after an erasure, with bar charts. Sections whose tables do not "
                    "exist yet say so.")
    report.add_argument("--out", required=True, metavar="FILE", help="local HTML file to write (its folder is created)")
    report.set_defaults(handler=_report, output_of=lambda args: args.out)
    return parser


def _formats() -> tuple[str, ...]:
    from ketch_spark.consent.sources import FORMATS

    return FORMATS


def _no_library_chatter(record: logging.LogRecord) -> bool:
    """The command's log shows Great Expectations' warnings, not its INFO lines (its loggers stay untouched)."""
    return not (record.name.startswith("great_expectations") and record.levelno < logging.WARNING)


def _announce_config(args: argparse.Namespace) -> None:
    """Says which config a run without ``--conf`` uses (on stderr)."""
    if getattr(args, "conf", None) is not None:
        return
    path = default_config_path()
    if path is not None:
        print(f"ketch-spark: config {Path(path).resolve()} (no --conf given)", file=sys.stderr)
        return
    cfg = load_config()
    print(f"ketch-spark: no --conf and no {DEFAULT_CONFIG_PATH} here: built-in defaults (warehouse {cfg.warehouse}, "
          f"policy {cfg.policy_path}); pass --conf PATH or set KETCH_SPARK_CONF to use another", file=sys.stderr)


def _preflight(cfg: KetchConfig, args: argparse.Namespace) -> None:
    """Checks that need no Spark: the policy, the warehouse and the local inputs.

    Raises:
        KetchError: The message names what is wrong and where.
    """
    from ketch_spark.preflight import check_inputs_exist, check_output_file, check_warehouse

    inputs_of = getattr(args, "inputs_of", None)
    if inputs_of is not None:
        check_inputs_exist(inputs_of(args))
    output_of = getattr(args, "output_of", None)
    if output_of is not None:
        check_output_file(output_of(args))
    if getattr(args, "needs_spark", True):
        cfg.policy()
        check_warehouse(cfg)


def _failure_context(command: str, cfg: KetchConfig | None, args: argparse.Namespace, spark) -> FailureContext:  # noqa: ANN001
    memory = None
    if spark is not None:
        try:
            memory = spark.conf.get("spark.driver.memory", None)
        except Exception:  # noqa: BLE001 - the JVM may be gone; the explanation goes without the value
            memory = None
    inputs_of = getattr(args, "inputs_of", None)
    return FailureContext(
        command=command, inputs=tuple(inputs_of(args)) if inputs_of else tuple(getattr(args, "source", None) or ()),
        fmt=getattr(args, "format", None), warehouse=cfg.warehouse if cfg else None,
        table=getattr(args, "table", None), driver_memory=memory,
    )


def _import_in_background(modules: Sequence[str]) -> None:
    """Imports ``modules`` in a daemon thread (slow imports, such as Great Expectations', overlap Spark's start)."""
    import importlib
    import threading

    def load() -> None:
        for name in modules:
            with contextlib.suppress(Exception):  # the command's own import reports any problem
                importlib.import_module(name)

    if modules:
        threading.Thread(target=load, name="ketch-preload", daemon=True).start()


def _start_spark(cfg: KetchConfig, command: str, preload: Sequence[str] = ()):  # noqa: ANN202 - pyspark on use
    from ketch_spark.progress import report_progress
    from ketch_spark.session import jvm_notices_dropped, spark_session

    _import_in_background(preload)  # after pyspark's own import: the two never wait on each other
    report_progress("start Spark")
    with jvm_notices_dropped():
        spark = spark_session(cfg, app_name=f"ketch-spark {command}")
    spark.sparkContext.setLogLevel("ERROR")
    report_progress(f"Spark ready ({spark.sparkContext.master})")
    return spark


def _spark_failures() -> tuple[type[BaseException], ...]:
    """Exception types a command boundary translates: Py4J's and PySpark's (Delta's arrive as either)."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return (Py4JError, PySparkException)


def _error_summary(command: str, message: str, started: float) -> dict:
    return {"command": command, "status": "error", "error": message,
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the process exit code (0 ok, 1 failed, 2 usage)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_no_library_chatter)
    command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
    started = time.perf_counter()
    quiet = getattr(args, "quiet", False)
    cfg: KetchConfig | None = None
    spark = None
    try:
        if not quiet:
            _announce_config(args)
        cfg = load_config(getattr(args, "conf", None))
        _preflight(cfg, args)
        with contextlib.redirect_stdout(io.StringIO()) if quiet else showing_progress(f"ketch-spark {command}"):
            if getattr(args, "needs_spark", True):
                spark = _start_spark(cfg, command, getattr(args, "preload", ()))
            summary = args.handler(spark, cfg, args)
    except KetchError as exc:
        print(f"ketch-spark {command}: error: {exc}", file=sys.stderr)
        print(json.dumps(_error_summary(command, str(exc), started)))
        return 1
    except _spark_failures() as exc:
        explanation = explain_failure(exc, _failure_context(command, cfg, args, spark))
        message = explanation or f"{type(exc).__name__}: {_first_line(exc)} (run with -v for the whole trace)"
        logger.info("%s failed", command, exc_info=True)
        print(f"ketch-spark {command}: error: {message}", file=sys.stderr)
        print(json.dumps(_error_summary(command, message, started)))
        return 1
    summary = {"command": command, "status": "ok", **summary, "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(summary, default=str))
    return 0 if summary["status"] == "ok" else 1


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("An error")]
    return (lines[0].lstrip(": ") if lines else repr(exc))[:300]


if __name__ == "__main__":
    raise SystemExit(main())
