"""ketch-spark's Spark session extension: kept key sets keep their broadcast relation.

From its second use in an application the consent filter keeps a purpose's key set
in memory (see :mod:`ketch_spark.consent.filter`). Spark still collects, hashes and
broadcasts that key set again for every query that joins to it: for a big customer
(a million granted users) that is about a second per query, whatever the query.
The extension (``jvm/KeptKeySets.scala``) plans a broadcast semi or anti join whose
build side is a kept key set on a broadcast hash relation built once per key set
and build-side filter (e.g. one org) and reused by every later query, so a filtered
query costs little more than the unfiltered one. The plan keeps its
``BroadcastHashJoin``; its build side reads ``KeptBroadcast <key set>`` instead of
``BroadcastExchange``. Without the extension the filter gives the same rows.

It is opt-in: it plans with Spark internals (``QueryExecution.prepareExecutedPlan``,
the ``BroadcastHashJoinExec`` constructor, ``HashedRelationBroadcastMode``), which
change between Spark versions. ``python -m ketch_spark.jars install`` (``make
install``) compiles the source with the Scala compiler pyspark ships into
``.ketch/jars/ketch-spark-extensions-spark<version>-<hash>.jar``, named after the
pyspark version and the source it was built from; a compile failure is a warning,
not an error. With ``filter.session_extension: true`` the embedded session puts the
jar on the classpath and registers it; a missing jar is one warning and a session
without it. On a cluster pass ``--jars <that jar>`` and add :data:`EXTENSION_CLASS`
to ``spark.sql.extensions`` (``python -m ketch_spark.jars extension`` prints both).
Under another Spark version, or when it fails to link, the extension turns itself
off with one warning and Spark plans the join the usual way. Setting
``spark.ketch.keptRelations.enabled=false`` in a session turns it off too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from py4j.java_gateway import JavaClass
from py4j.protocol import Py4JError
from pyspark.sql import SparkSession

from ketch_spark.errors import KetchError

__all__ = [
    "DELTA_EXTENSION",
    "EXTENSION_CLASS",
    "KEPT_KEY_SET_PREFIX",
    "KEPT_RELATIONS_CONF",
    "build_extension_jar",
    "compile_scala",
    "install_built_jar",
    "try_build_extension_jar",
    "extension_active",
    "extension_jar",
    "kept_relation_count",
    "release_kept_relations",
    "set_kept_relation_capacity",
]

logger = logging.getLogger(__name__)

EXTENSION_CLASS = "org.apache.spark.sql.ketch.KetchSparkExtensions"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
#: Session setting: "false" plans kept key sets' joins the usual way (a broadcast per query).
KEPT_RELATIONS_CONF = "spark.ketch.keptRelations.enabled"
#: Cached relations named with this prefix are kept key sets (the Scala side checks the same prefix).
KEPT_KEY_SET_PREFIX = "ketch_kept_key_set_"
_SOURCE = Path(__file__).resolve().parent / "jvm" / "KeptKeySets.scala"
_JAR_STEM = "ketch-spark-extensions"


def _spark_version() -> str:
    import pyspark

    return pyspark.__version__


def _jar_name() -> str:
    """The jar's name: the pyspark version and a digest of the source it is built from."""
    digest = hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:12]
    return f"{_JAR_STEM}-spark{_spark_version()}-{digest}.jar"


def extension_jar(jars_dir: Path) -> Path | None:
    """The extension jar built from the current source for this pyspark in ``jars_dir``, ``None`` when not built."""
    jar = jars_dir / _jar_name()
    return jar if jar.is_file() else None


def _pyspark_jars() -> list[Path]:
    import pyspark

    return sorted((Path(pyspark.__file__).resolve().parent / "jars").glob("*.jar"))


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else "java"


def _compile(output: Path) -> None:
    """Compiles the Scala source into ``output`` with the compiler pyspark bundles (no download)."""
    build_info = output.parent / "BuildInfo.scala"
    build_info.write_text(
        "package org.apache.spark.sql.ketch\n\n/** The Spark version this jar was compiled against. */\n"
        f'object BuildInfo {{ val SparkVersion = "{_spark_version()}" }}\n',
        encoding="utf-8",
    )
    compile_scala([_SOURCE, build_info], output)


def install_built_jar(target: Path, stem: str, build: Callable[[Path], None]) -> Path:
    """Builds a jar with ``build(staged_path)`` beside ``target``, moves it there, and removes older ``stem-*.jar``.

    A failed build leaves the installed jars as they were.
    """
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staged = Path(tmp) / target.name
        build(staged)
        staged.replace(target)
    for old in target.parent.glob(f"{stem}-*.jar"):
        if old != target:
            old.unlink()
    logger.info("built %s", target.name)
    return target


def compile_scala(sources: list[Path], output: Path, classpath: list[str] | None = None) -> None:
    """Compiles Scala ``sources`` into the jar ``output`` with the compiler pyspark bundles (no download).

    Args:
        sources: The .scala files.
        output: The jar to write.
        classpath: Jars besides pyspark's own that the sources use.

    Raises:
        KetchError: The compiler failed (the message holds its output).
    """
    jars = _pyspark_jars()
    compiler = [j for j in jars if j.name.startswith(("scala-compiler-", "scala-library-", "scala-reflect-"))]
    if len(compiler) != 3:
        raise KetchError(
            f"pyspark's jars folder lacks the Scala compiler (found {[j.name for j in compiler]}); "
            "reinstall pyspark (`make install`)"
        )
    command = [
        _java(), "-cp", os.pathsep.join(map(str, compiler)), "scala.tools.nsc.Main",
        "-nowarn", "-classpath", os.pathsep.join([*map(str, jars), *(classpath or [])]), "-d", str(output),
        *map(str, sources),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not output.is_file():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise KetchError(f"could not compile {sources[0].name} (java 17+ must be on PATH or in JAVA_HOME):\n{tail}")


def build_extension_jar(jars_dir: Path) -> Path:
    """Builds the extension jar into ``jars_dir`` unless the current source is already built.

    Jars of older sources are removed, so the session never loads two versions.

    Raises:
        KetchError: The compiler failed (the message holds its output).
    """
    jars_dir.mkdir(parents=True, exist_ok=True)
    built = extension_jar(jars_dir)
    if built is not None:
        return built
    return install_built_jar(jars_dir / _jar_name(), _JAR_STEM, _compile)


def try_build_extension_jar(jars_dir: Path) -> Path | None:
    """:func:`build_extension_jar`, with a warning instead of an error when it cannot be built (it is optional)."""
    try:
        return build_extension_jar(jars_dir)
    except (KetchError, OSError) as exc:
        logger.warning("ketch-spark's optional session extension was not built (%s); consent filters work without it", exc)
        return None


def _registry(spark: SparkSession) -> JavaClass | None:
    """The JVM registry of kept relations, ``None`` when the extension is not registered in ``spark`` or is off."""
    if EXTENSION_CLASS not in spark.conf.get("spark.sql.extensions", "").split(","):
        return None
    try:
        registry = spark.sparkContext._jvm.org.apache.spark.sql.ketch.KeptKeySets
        return registry if isinstance(registry, JavaClass) and registry.active() else None
    except Py4JError:  # a jar of another build: treated as absent
        return None


def extension_active(spark: SparkSession) -> bool:
    """Whether ``spark`` registers the extension, has a working jar and does not turn kept relations off."""
    enabled = spark.conf.get(KEPT_RELATIONS_CONF, "true").strip().lower() == "true"
    return enabled and _registry(spark) is not None


def set_kept_relation_capacity(spark: SparkSession, entries: int) -> None:
    """Keeps at most ``entries`` broadcast relations of kept key sets (least recently used dropped)."""
    registry = _registry(spark)
    if registry is not None:
        registry.setCapacity(entries)


def release_kept_relations(spark: SparkSession, key_set_name: str, *, destroy: bool = False) -> int:
    """Drops the broadcast relations of one kept key set; returns how many.

    By default a query still running on them finishes (Spark's context cleaner frees
    them once unused); ``destroy`` frees them at once, so no query may be using them.
    """
    registry = _registry(spark)
    return 0 if registry is None else int(registry.release(key_set_name, destroy))


def kept_relation_count(spark: SparkSession) -> int:
    """How many broadcast relations of kept key sets the application holds."""
    registry = _registry(spark)
    return 0 if registry is None else int(registry.size())
