"""JVM jars Spark needs, resolved once from Maven Central into a project folder.

``python -m ketch_spark.jars install`` (run by ``make install``) resolves every
group below with Spark's own resolver into ``.ketch/jars`` and writes a manifest;
it also builds ketch-spark's session extension there (:mod:`ketch_spark.extensions`)
and, with the s3 group, the DynamoDB log store of s3a warehouses (:mod:`ketch_spark.log_store`).
:func:`ketch_spark.spark_session` then puts those files on the classpath, so later
starts are offline. On a cluster, pass the same coordinates to
``spark-submit --packages`` instead (see :func:`packages_argument`).

:data:`TEST_JAR_GROUPS` are jars only the test suite and benchmarks load (oracle
libraries); ``install`` resolves them too, but no session of ours puts them on
its classpath.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from ketch_spark.errors import JarsNotInstalledError, KetchError
from ketch_spark.extensions import DELTA_EXTENSION, EXTENSION_CLASS, extension_jar, try_build_extension_jar

__all__ = [
    "JAR_GROUPS",
    "SUBMIT_DEFAULT_GROUPS",
    "TEST_JAR_GROUPS",
    "default_jars_dir",
    "install_jars",
    "installed_jar_paths",
    "packages_argument",
]

logger = logging.getLogger(__name__)

SPARK_MINOR = "4.2"
SCALA = "2.13"
DELTA_VERSION = "4.4.0"
HADOOP_VERSION = "3.5.0"
POSTGRES_JDBC_VERSION = "42.7.14"
IABGPP_VERSION = "3.2.4"

#: Maven coordinates per feature. Delta's artifact name carries the Spark minor
#: version (see delta's ``configure_spark_with_delta_pip``); hadoop-aws must match
#: the Hadoop client bundled with pyspark.
JAR_GROUPS: Mapping[str, tuple[str, ...]] = {
    "delta": (f"io.delta:delta-spark_{SPARK_MINOR}_{SCALA}:{DELTA_VERSION}",),
    "postgres": (f"org.postgresql:postgresql:{POSTGRES_JDBC_VERSION}",),
    "s3": (f"org.apache.hadoop:hadoop-aws:{HADOOP_VERSION}",),
}
#: What ``packages`` and ``path`` print without ``--group``: the jars every job needs. The s3
#: group's AWS SDK bundle alone is about 655 MB, so it is pulled only on request.
SUBMIT_DEFAULT_GROUPS: tuple[str, ...] = ("delta",)
#: Test-only coordinates: IAB Tech Lab's GPP library, the oracle of the GPP decoder's tests.
TEST_JAR_GROUPS: Mapping[str, tuple[str, ...]] = {
    "gpp-oracle": (f"com.iabgpp:iabgpp-encoder:{IABGPP_VERSION}",),
}
_MANIFEST = "manifest.json"


def default_jars_dir(configured: str | None = None) -> Path:
    """Folder of resolved jars: the configured one, ``$KETCH_SPARK_JARS``, or ``.ketch/jars``.

    ``.ketch/jars`` sits in the project checkout when the package is imported from
    one, else in the current directory.
    """
    if configured:
        return Path(configured).expanduser().resolve()
    if os.environ.get("KETCH_SPARK_JARS"):
        return Path(os.environ["KETCH_SPARK_JARS"]).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / ".ketch" / "jars"
    return Path.cwd() / ".ketch" / "jars"


def _coordinates(group: str) -> tuple[str, ...]:
    return JAR_GROUPS[group] if group in JAR_GROUPS else TEST_JAR_GROUPS[group]


def _read_manifest(jars_dir: Path) -> dict[str, list[str]]:
    path = jars_dir / _MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def packages_argument(groups: Iterable[str] = ("delta",)) -> str:
    """Comma-separated coordinates for ``spark-submit --packages``."""
    return ",".join(coord for group in groups for coord in _coordinates(group))


def installed_jar_paths(jars_dir: Path, groups: Iterable[str]) -> list[str]:
    """Absolute paths of the installed jars of ``groups``.

    Raises:
        JarsNotInstalledError: A group was never resolved; the message says how to fix it.
    """
    manifest = _read_manifest(jars_dir)
    paths: list[str] = []
    for group in groups:
        files = manifest.get(",".join(_coordinates(group)))
        if files is None or not all((jars_dir / name).is_file() for name in files):
            raise JarsNotInstalledError(
                f"the {group!r} jars are not installed in {jars_dir} (the config's jars_dir, else "
                f"$KETCH_SPARK_JARS, else .ketch/jars); run `make install` (or `python -m ketch_spark.jars "
                f"install`), or set KETCH_SPARK_JARS or jars_dir to the folder holding them; on a cluster "
                f"pass --packages {packages_argument([group])}"
            )
        paths.extend(str(jars_dir / name) for name in files)
    return sorted(set(paths))


def _resolve_with_spark(coordinates: tuple[str, ...], ivy_dir: Path) -> list[Path]:
    """Runs Spark's own resolver (spark-submit --packages) on a no-op script.

    A subprocess per call: Spark reads ``--packages`` only when its JVM starts.
    """
    import pyspark

    spark_submit = Path(pyspark.__file__).resolve().parent / "bin" / "spark-submit"
    noop = ivy_dir / "noop.py"
    noop.write_text("", encoding="utf-8")
    command = [
        str(spark_submit),
        "--master", "local[1]",
        "--packages", ",".join(coordinates),
        "--conf", f"spark.jars.ivy={ivy_dir}",
        str(noop),
    ]
    env = {**os.environ, "SPARK_HOME": str(spark_submit.parent.parent), "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise KetchError(f"could not resolve {', '.join(coordinates)} from Maven Central:\n{tail}")
    return sorted((ivy_dir / "jars").glob("*.jar"))


_VERSIONED_JAR = re.compile(r"^(?P<artifact>.+?)-\d[\w.\-]*\.jar$")


def _artifact(jar_name: str) -> str:
    """Artifact id of a jar file name: ``group_artifact-1.2.jar`` (Ivy) or ``artifact-1.2.jar``."""
    match = _VERSIONED_JAR.match(jar_name)
    stem = match.group("artifact") if match else jar_name
    return stem.split("_", 1)[1] if "_" in stem and "." in stem.split("_", 1)[0] else stem


def _bundled_artifacts() -> set[str]:
    """Artifacts pyspark already ships; resolving them again would only shadow Spark's own."""
    import pyspark

    return {_artifact(jar.name) for jar in (Path(pyspark.__file__).resolve().parent / "jars").glob("*.jar")}


def install_jars(groups: Iterable[str] = tuple(JAR_GROUPS), jars_dir: Path | None = None) -> Path:
    """Resolves the jars of ``groups`` once; a group already in the manifest is skipped.

    Each group is resolved in a fresh Spark driver (Spark reads
    ``spark.jars.packages`` only when its JVM starts), so call this from a process
    that has not started Spark yet.
    """
    jars_dir = jars_dir or default_jars_dir()
    jars_dir.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(jars_dir)
    missing = [g for g in groups if ",".join(_coordinates(g)) not in manifest]
    if not missing:
        logger.info("jars already installed in %s", jars_dir)
        return jars_dir
    bundled = _bundled_artifacts()
    with tempfile.TemporaryDirectory(dir=jars_dir) as tmp:
        ivy_dir = Path(tmp)
        for group in missing:
            shutil.rmtree(ivy_dir / "jars", ignore_errors=True)
            resolved = [j for j in _resolve_with_spark(_coordinates(group), ivy_dir) if _artifact(j.name) not in bundled]
            for jar in resolved:
                shutil.copy2(jar, jars_dir / jar.name)
            manifest[",".join(_coordinates(group))] = [jar.name for jar in resolved]
            logger.info("resolved %s: %d jars", group, len(resolved))
    (jars_dir / _MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return jars_dir


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ketch_spark.jars", description=__doc__)
    parser.add_argument("command", choices=["install", "packages", "path", "extension"])
    parser.add_argument(
        "--group", action="append", choices=sorted({**JAR_GROUPS, **TEST_JAR_GROUPS}),
        help="repeat for several; default for packages and path: delta only (what every job needs; add s3 and "
             "postgres for the stores you use); for install: every group, the test-only ones included",
    )
    parser.add_argument("--dir", help="jars folder (default .ketch/jars)")
    args = parser.parse_args(argv)
    groups = args.group or list(SUBMIT_DEFAULT_GROUPS)
    jars_dir = default_jars_dir(args.dir)
    if args.command == "packages":
        print(packages_argument(groups))
    elif args.command == "path":
        print(",".join(installed_jar_paths(jars_dir, groups)))
    elif args.command == "extension":
        jar = extension_jar(jars_dir)
        if jar is None:
            raise JarsNotInstalledError(f"the session extension is not built in {jars_dir}; run `make install`")
        print(f"--jars {jar} --conf spark.sql.extensions={DELTA_EXTENSION},{EXTENSION_CLASS}")
    else:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        install_jars(args.group or [*JAR_GROUPS, *TEST_JAR_GROUPS], jars_dir)
        try_build_extension_jar(jars_dir)
        if ",".join(JAR_GROUPS["s3"]) in _read_manifest(jars_dir):
            from ketch_spark.log_store import try_build_log_store_jar

            try_build_log_store_jar(jars_dir)
        (jars_dir / _MANIFEST).touch()
        print(f"jars ready in {jars_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
