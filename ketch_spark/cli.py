"""The ``ketch-spark`` command line; jobs/*.py call the same :func:`main`.

Every command takes ``--conf PATH`` (default conf/ketch.yaml), prints what it did
for a person, and prints a one-line JSON summary last, for machines. A handler
gets a SparkSession unless its parser declares ``needs_spark=False`` (it then gets
``None``); a summary whose ``status`` is not ``ok`` makes the exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
import time
from typing import Any, Callable, Sequence

from ketch_spark.config import DEFAULT_CONFIG_PATH, KetchConfig, load_config
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
    return result.summary()


def _consent_compact(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.consent.compact import compact_consent

    return compact_consent(spark, cfg, batch_id=args.batch_id, full=args.full).summary()


def _catalog_scan(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.catalog import AssetCatalog

    return AssetCatalog(spark, cfg).scan(*args.source).summary()


def _catalog_list(spark, cfg: KetchConfig, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from ketch_spark.catalog import AssetCatalog

    assets_df = AssetCatalog(spark, cfg).assets()
    rows = assets_df.select("system", "location", "format", "status", "row_estimate").orderBy("system", "location").collect()
    for row in rows:
        print(f"{row.system:<9} {row.format or '-':<8} {row.status:<7} {row.row_estimate or 0:>12}  {row.location}")
    return {"assets": len(rows)}


_FOUND_HEADERS = ("asset", "column", "category", "identity type", "confidence", "method")


def _print_found_columns(rows: list, nothing: str) -> dict:
    """Prints personal columns as a table (or ``nothing``); the summary counts columns and assets."""
    from ketch_spark.console import format_table

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
    from pathlib import Path

    from ketch_spark.rights.requests import read_request_file, submit_requests

    if not Path(args.input).is_file():
        raise KetchError(f"input {args.input} is not a file; expected a JSON-lines file of requests")
    result = submit_requests(spark, cfg, read_request_file(args.input))
    for rejection in result.rejected:
        print(f"rejected {rejection['request_id'] or '#' + str(rejection['index'])}: {rejection['reason']}")
    return result.summary()


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
    return summary


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


def _with_conf(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--conf", default=argparse.SUPPRESS, help=f"config YAML (default {DEFAULT_CONFIG_PATH})"
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ketch-spark`` (every command accepts ``--conf``)."""
    parser = _with_conf(argparse.ArgumentParser(prog="ketch-spark", description=__doc__.splitlines()[0]))
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _with_conf(commands.add_parser("demo", help="generate data and run every step on the embedded default"))
    demo.add_argument("--users", type=int, default=20_000, help="number of synthetic users (default 20000)")
    demo.set_defaults(handler=_demo)

    consent = commands.add_parser("consent", help="consent signals: ingest and compact").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    ingest = _with_conf(consent.add_parser(
        "ingest", help="raw files -> consent/events, bad rows -> consent/quarantine", epilog=_ingest_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter))
    ingest.add_argument("--input", action="append", required=True, help="file or folder, local or s3a:// (repeatable)")
    ingest.add_argument("--format", choices=["json", "csv", "parquet", "tcf", "gpp"], default="json")
    ingest.add_argument("--batch-id", default=None)
    ingest.set_defaults(handler=_consent_ingest)
    compact = _with_conf(consent.add_parser("compact", help="consent/events -> consent/state (incremental)"))
    compact.add_argument("--batch-id", default=None, help="apply only this batch")
    compact.add_argument("--full", action="store_true", help="rebuild the state from all events")
    compact.set_defaults(handler=_consent_compact)

    catalog = commands.add_parser("catalog", help="data asset catalog").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    scan = _with_conf(catalog.add_parser("scan", help="discover and classify assets"))
    scan.add_argument("--source", action="append", required=True, help="URI to scan (repeatable)")
    scan.set_defaults(handler=_catalog_scan)
    listing = _with_conf(catalog.add_parser("list", help="list catalogued assets"))
    listing.set_defaults(handler=_catalog_list)
    columns = _with_conf(catalog.add_parser(
        "columns", help="list the personal columns the catalog found",
        description="Lists the personal columns of the catalogued assets: asset, column path, category, identity "
                    "type (what a data-subject request matches on), confidence and method (the evidence that "
                    "agreed). Examples: ketch-spark catalog columns --identity-type email; "
                    "ketch-spark catalog columns --asset s3a://lake/crm/contacts"))
    columns.add_argument("--identity-type", choices=_identity_types(), default=None,
                         help="only columns giving this identity type")
    columns.add_argument("--asset", default=None, help="only this asset (id, location or name, see `catalog list`)")
    columns.set_defaults(handler=_catalog_columns)
    search = _with_conf(catalog.add_parser(
        "search", help="find personal columns by asset, column, category or identity type",
        description="Lists the personal columns whose asset location or name, column path, category or identity "
                    "type contains TEXT, ignoring case. Example: ketch-spark catalog search email"))
    search.add_argument("text", metavar="TEXT", help="text to look for, e.g. email, phone, contacts, user.id")
    search.set_defaults(handler=_catalog_search)
    review = _with_conf(catalog.add_parser(
        "review", help="columns to review: low confidence, inferred from context, changed since the last scan",
        description="Lists the columns a person should confirm or correct with `catalog label`. Example: "
                    "ketch-spark catalog review --below 0.9"))
    review.add_argument("--below", type=float, default=0.8, help="list classifications below this confidence")
    review.set_defaults(handler=_catalog_review)
    label = _with_conf(catalog.add_parser(
        "label", help="record a reviewed classification that every later scan keeps",
        description="Example: ketch-spark catalog label --asset s3a://lake/crm/contacts --column id --as user_id"))
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
    submit = _with_conf(dsr.add_parser("submit", help="validate requests and store the valid ones in dsr/requests"))
    submit.add_argument("--input", required=True, help="local JSON-lines file, one request per line")
    submit.set_defaults(handler=_dsr_submit)
    status = _with_conf(dsr.add_parser("status", help="list requests: status, due date, overdue"))
    status.set_defaults(handler=_dsr_status)
    run = _with_conf(dsr.add_parser("run", help="process open (and failed) requests: erase, verify, export"))
    run.add_argument("--kind", choices=["erasure", "access"], default=None, help="process one kind only")
    run.add_argument("--dry-run", action="store_true", help="report the rows each request would touch; change nothing")
    run.set_defaults(handler=_dsr_run)
    verify = _with_conf(dsr.add_parser("verify-receipt", help="check an erasure receipt's signature (no Spark)"))
    verify.add_argument("file", metavar="FILE", help="local receipt file (dsr/receipts/<request_id>.json)")
    verify.set_defaults(handler=_dsr_verify_receipt, needs_spark=False)
    return parser


def _no_library_chatter(record: logging.LogRecord) -> bool:
    """The command's log shows Great Expectations' warnings, not its INFO lines (its loggers stay untouched)."""
    return not (record.name.startswith("great_expectations") and record.levelno < logging.WARNING)


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
    try:
        cfg = load_config(getattr(args, "conf", None))
        spark = None
        if getattr(args, "needs_spark", True):
            from ketch_spark.session import spark_session

            spark = spark_session(cfg, app_name=f"ketch-spark {command}")
            spark.sparkContext.setLogLevel("ERROR")
        summary = args.handler(spark, cfg, args)
    except KetchError as exc:
        print(f"ketch-spark {command}: error: {exc}", file=sys.stderr)
        print(json.dumps({"command": command, "status": "error", "error": str(exc)}))
        return 1
    summary = {"command": command, "status": "ok", **summary, "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(summary, default=str))
    return 0 if summary["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
