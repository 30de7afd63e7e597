"""Benchmark runner: `make bench` (or `python tests/benchmarks/run.py [NAME ...]`).

Every module ``bench_<name>.py`` beside this file defines::

    def run(spark, cfg, workdir: pathlib.Path, quick: bool) -> dict

returning ``{"figures": {...}, "targets": {...}, "notes": [...]}``. Figures are
ratios measured within one run (the machine is shared and noisy). Results are
merged into bench-report.json and bench-report.md beside this file, one section
per benchmark, so running one benchmark keeps the others' last figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REPORT_JSON = HERE / "bench-report.json"
REPORT_MD = HERE / "bench-report.md"

BENCH_SPARK_SETTINGS = {
    "spark.master": "local[2]",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "12g",
}


def _modules() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"ketch_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _markdown(report: dict) -> str:
    lines = ["# ketch-spark benchmarks", "", "Ratios are measured within one run on the machine named in each section.", ""]
    for name, section in sorted(report.get("benchmarks", {}).items()):
        lines += [f"## {name}", "", f"run {section['ran_at']} on {section['machine']} ({section['seconds']:.0f} s)", ""]
        lines += ["| figure | value | target |", "| --- | --- | --- |"]
        targets = section.get("targets", {})
        for key, value in section.get("figures", {}).items():
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            lines.append(f"| {key} | {shown} | {targets.get(key, '')} |")
        for note in section.get("notes", []):
            lines += ["", f"- {note}"]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all): {', '.join(_modules())}")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check a benchmark runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))

    # Python UDFs in a benchmark (the reference TC decoder) run in workers that need this interpreter's packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from ketch_spark.config import load_config
    from ketch_spark.session import spark_session

    modules = _modules()
    unknown = sorted(set(args.names) - set(modules))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(modules)}")
    report = json.loads(REPORT_JSON.read_text()) if REPORT_JSON.is_file() else {"benchmarks": {}}
    with tempfile.TemporaryDirectory(prefix="ketch-bench-") as tmp:
        base = load_config(REPO / "conf" / "ketch.yaml").with_warehouse(Path(tmp) / "warehouse")
        # the opt-in session extension is loaded (when built) so the filter benchmark can measure it on and off
        opted_in = dataclasses.replace(base, filter=dataclasses.replace(base.filter, session_extension=True))
        spark = spark_session(opted_in, app_name="ketch-spark-bench", extra=BENCH_SPARK_SETTINGS)
        spark.sparkContext.setLogLevel("ERROR")
        for name in args.names or list(modules):
            started = time.perf_counter()
            workdir = Path(tmp) / name
            workdir.mkdir()
            result = _load(modules[name]).run(spark, base.with_warehouse(workdir / "warehouse"), workdir, args.quick)
            report["benchmarks"][name] = {
                **result,
                "quick": args.quick,
                "ran_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()} {platform.node()} python {platform.python_version()}",
                "seconds": time.perf_counter() - started,
            }
            REPORT_JSON.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
            REPORT_MD.write_text(_markdown(report))
            print(json.dumps({"benchmark": name, **result.get("figures", {})}))
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
