"""The ``ketch-spark`` command line; jobs/*.py call the same :func:`main`.

Every command takes ``--conf PATH`` (default conf/ketch.yaml), prints what it did
for a person, and prints a one-line JSON summary last, for machines.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
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
    ingest = _with_conf(consent.add_parser("ingest", help="raw files -> consent/events, bad rows -> consent/quarantine"))
    ingest.add_argument("--input", action="append", required=True, help="file or folder, local or s3a:// (repeatable)")
    ingest.add_argument("--format", choices=["json", "csv", "parquet", "tcf"], default="json")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the process exit code (0 ok, 1 failed, 2 usage)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
    started = time.perf_counter()
    try:
        cfg = load_config(getattr(args, "conf", None))
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
