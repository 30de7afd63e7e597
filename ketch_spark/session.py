"""spark_session(): a Delta-enabled SparkSession, embedded local Spark by default."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Mapping

from pyspark.sql import SparkSession

from ketch_spark.config import KetchConfig
from ketch_spark.jars import JAR_GROUPS, default_jars_dir, installed_jar_paths
from ketch_spark.errors import JarsNotInstalledError
from ketch_spark.extensions import DELTA_EXTENSION, EXTENSION_CLASS, extension_jar
from ketch_spark.log_store import log_store_jar, log_store_settings, required_log_store_jar, uses_log_store
from ketch_spark.preflight import check_warehouse_for_master
from ketch_spark.spark_submit import inside_spark_submit, submitted_setting

__all__ = [
    "spark_session", "notebook_session", "jvm_notices_dropped", "JVM_NOTICES", "JVM_STDOUT_NOTICES",
    "session_settings", "delta_settings", "s3a_settings", "is_connect_session", "LOG4J2_FILE",
]

logger = logging.getLogger(__name__)

_DELTA = {
    "spark.sql.extensions": DELTA_EXTENSION,
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
_LOCAL_DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "4g",
    # Delta rebuilds a table's snapshot after every commit in this many tasks (default 50,
    # sized for clusters); on one machine each task's setup costs more than its work.
    "spark.databricks.delta.snapshotPartitions": str(min(8, os.cpu_count() or 2)),
    # In local mode a broadcast never leaves the JVM: tasks read the driver's object itself,
    # so compressing and checksumming its serialized copy (the consent filter's key set, up
    # to hundreds of MB) is pure cost.
    "spark.broadcast.compress": "false",
    "spark.broadcast.checksum": "false",
}
_DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
_DRIVER_CLASS_PATH = "spark.driver.extraClassPath"
#: Log4j 2 configuration of the embedded JVM: Spark's default without the start-up warnings.
LOG4J2_FILE = Path(__file__).with_name("log4j2.properties")
_S3A_KEYS = {
    "endpoint": "fs.s3a.endpoint",
    "region": "fs.s3a.endpoint.region",
    "access_key_id": "fs.s3a.access.key",
    "secret_access_key": "fs.s3a.secret.key",
    "path_style_access": "fs.s3a.path.style.access",
    "ssl_enabled": "fs.s3a.connection.ssl.enabled",
}


def is_connect_session(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect client session (its JVM, and py4j, live elsewhere).

    Code that reaches into the JVM (``spark.sparkContext``, ``_jvm``, ``_jsparkSession``)
    must not run on such a session. The check imports nothing: a process that never
    made a Connect session has not loaded pyspark's Connect client either.
    """
    if "pyspark.sql.connect.session" not in sys.modules:
        return False
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    return isinstance(spark, ConnectSession)


def delta_settings() -> dict[str, str]:
    """The two settings that turn on Delta in a SparkSession."""
    return dict(_DELTA)


#: Spark setting of s3a's input stream (``classic`` reads every open afresh).
S3A_STREAM_TYPE_KEY = "spark.hadoop.fs.s3a.input.stream.type"


def s3a_settings(cfg: KetchConfig) -> dict[str, str]:
    """Spark settings for s3a:// from the config's ``connectors.s3`` section.

    Keys: endpoint, region, access_key_id, secret_access_key, path_style_access,
    ssl_enabled. Without an endpoint, s3a uses its own defaults (AWS, instance role).
    """
    s3 = cfg.section("connectors").get("s3") or {}
    settings = {
        f"spark.hadoop.{hadoop_key}": str(s3[key]).lower() if isinstance(s3[key], bool) else str(s3[key])
        for key, hadoop_key in _S3A_KEYS.items()
        if s3.get(key) is not None
    }
    if s3.get("access_key_id"):
        settings["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        )
    if settings:
        settings.setdefault("spark.hadoop.fs.s3a.impl", "org.apache.hadoop.fs.s3a.S3AFileSystem")
    # Erasure rewrites objects in place; the analytics input stream caches object
    # metadata per key and then fails (HTTP 412) or reads a stale length after a rewrite.
    settings.setdefault(S3A_STREAM_TYPE_KEY, "classic")
    return settings


def _local_jars(jars_dir: Path, extension: Path | None, log_store: Path | None) -> str:
    paths = installed_jar_paths(jars_dir, ["delta"])
    paths.extend(str(jar) for jar in (extension, log_store) if jar is not None)
    for group in JAR_GROUPS:
        if group == "delta":
            continue
        try:
            paths.extend(installed_jar_paths(jars_dir, [group]))
        except JarsNotInstalledError:
            logger.debug("optional jar group %s not installed", group)
    return ",".join(sorted(set(paths)))


def _submitted_extensions() -> list[str]:
    """The session extensions spark-submit was given (``--conf spark.sql.extensions=...``)."""
    return (submitted_setting("spark.sql.extensions") or "").split(",")


def _master(settings: Mapping[str, str], managed: bool) -> str | None:
    """The master the session will run on: spark-submit's (or the running context's), else the settings'."""
    if not managed:
        return settings.get("spark.master")
    from pyspark import SparkContext

    active = SparkContext._active_spark_context  # noqa: SLF001
    return active.master if active is not None else submitted_setting("spark.master")


def _extensions(submitted: list[str], ours: list[str]) -> str:
    """Delta's extension, then the submitted and our own ones, each once (setting the key replaces the list)."""
    names = [DELTA_EXTENSION, *submitted, *ours]
    return ",".join(dict.fromkeys(name.strip() for name in names if name.strip()))


def spark_session(
    cfg: KetchConfig | None = None,
    app_name: str = "ketch-spark",
    extra: Mapping[str, str] | None = None,
) -> SparkSession:
    """Returns a Delta-enabled SparkSession.

    Outside spark-submit it starts embedded Spark (``local[*]`` unless the config
    sets ``spark.master``) with the jars installed by ``make install``, offline.
    A warehouse on s3a commits through the DynamoDB log store
    (:mod:`ketch_spark.log_store`) unless ``delta.log_store.enabled`` is false.
    Inside spark-submit the cluster's master and ``--packages`` win; only the
    Delta, s3a and configured settings are added (session extensions given to
    spark-submit, such as ketch-spark's own, are kept next to Delta's). The
    embedded JVM logs with :data:`LOG4J2_FILE` (Spark's default without the
    start-up warnings) unless ``spark.driver.extraJavaOptions`` names another file.

    Args:
        cfg: Configuration; ``None`` loads the default one.
        app_name: Spark application name.
        extra: Settings applied last (tests use it for local[2] and the like).

    Raises:
        JarsNotInstalledError: Embedded mode and the Delta jars (or, for an s3a
            warehouse, the DynamoDB log store) are not installed.
        ConfigError: The warehouse is a relative path and the master is not local.
    """
    from ketch_spark.config import load_config

    cfg = cfg or load_config()
    managed = inside_spark_submit()
    settings = session_settings(cfg, extra, managed=managed)
    check_warehouse_for_master(_master(settings, managed), cfg)
    builder = SparkSession.builder.appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    logger.info("spark session ready (master=%s)", spark.sparkContext.master)
    return spark


@contextlib.contextmanager
def _descriptors_pointed_at(target: int, descriptors: tuple[int, ...]) -> Iterator[None]:
    """Points this process's ``descriptors`` (1, 2) at ``target`` while the block runs, then restores them.

    A child process started in the block, such as the JVM py4j launches, keeps them for its whole life.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(fd) for fd in descriptors]
    try:
        for fd in descriptors:
            os.dup2(target, fd)
        yield
    finally:
        for fd, copy in zip(descriptors, saved):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def _process_output_to(log_file: Path) -> Iterator[None]:
    """Points this process's standard output and error at ``log_file`` (appended, 0600) while the block runs."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    target = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with _descriptors_pointed_at(target, (1, 2)):
            yield
    finally:
        os.close(target)


#: Lines the JDK itself prints at start-up that say nothing a user can act on (Spark's launcher
#: always adds the incubating vector module, and the JDK announces it on stderr).
JVM_NOTICES = ("WARNING: Using incubator modules:",)
#: Lines Delta prints on the JVM's standard output (not through its log) after each VACUUM,
#: between a command's human report and its JSON line.
JVM_STDOUT_NOTICES = (re.compile(r"Deleted \d+ files and directories in a total of \d+ directories\.\s*$"),)


def _relay_lines(source: int, target: int, dropped: tuple[str | re.Pattern[str], ...]) -> None:
    """Copies lines from file descriptor ``source`` to ``target`` until end of file, without ``dropped`` ones.

    A dropped entry is a prefix or a pattern matched at the start of the line.
    Closes both descriptors at the end.
    """
    prefixes = tuple(d for d in dropped if isinstance(d, str))
    patterns = [d for d in dropped if not isinstance(d, str)]
    try:
        with os.fdopen(source, "rb") as lines_in:
            for line in iter(lines_in.readline, b""):
                text = line.decode("utf-8", "replace")
                if not text.startswith(prefixes) and not any(p.match(text) for p in patterns):
                    with contextlib.suppress(OSError):
                        os.write(target, line)
    finally:
        os.close(target)


@contextlib.contextmanager
def _relayed(fd: int, dropped: tuple[str | re.Pattern[str], ...]) -> Iterator[None]:
    """While the block runs, ``fd`` points at a relay to its old target that drops ``dropped`` lines."""
    read_end, write_end = os.pipe()
    relay = threading.Thread(target=_relay_lines, args=(read_end, os.dup(fd), dropped), name=f"jvm-fd{fd}",
                             daemon=True)
    relay.start()
    try:
        with _descriptors_pointed_at(write_end, (fd,)):
            yield
    finally:
        os.close(write_end)  # the JVM holds its own copy: the relay ends when the JVM does


@contextlib.contextmanager
def jvm_notices_dropped(dropped: tuple[str, ...] = JVM_NOTICES,
                        dropped_stdout: tuple[str | re.Pattern[str], ...] = JVM_STDOUT_NOTICES) -> Iterator[None]:
    """A JVM started in the block writes its stderr and stdout through relays that drop notices.

    ``dropped`` (the JDK's start-up notices) leave its stderr, ``dropped_stdout``
    (Delta's VACUUM counts) its stdout. Everything else the JVM writes (errors,
    Spark's warnings at the configured level) still reaches this process's
    stderr and stdout, for the JVM's whole life; this process's own descriptors
    are untouched once the block ends.
    """
    with _relayed(2, dropped), _relayed(1, dropped_stdout):
        yield


def notebook_session(
    cfg: KetchConfig | None = None,
    app_name: str = "ketch-spark-notebook",
    *,
    log_file: str | os.PathLike[str] | None = None,
) -> SparkSession:
    """Returns :func:`spark_session`'s session with the JVM's own output kept out of the notebook.

    A Jupyter kernel shows in the cells whatever its child processes write to their
    standard output and error: for the embedded Spark JVM, the JDK's "Using incubator
    modules" notice at start-up, Spark's log lines and Delta's messages. The JVM started
    here writes them to ``log_file`` instead; Python errors, including those raised from
    the JVM, still reach the cell. When a session is already running, it is returned as
    :func:`spark_session` returns it, and its JVM's output goes where it went before.

    Args:
        cfg: Configuration; ``None`` loads the default one.
        app_name: Spark application name.
        log_file: File that receives the JVM's output (appended, created 0600); default
            ``ketch-spark-<app_name>.log`` in the system's temporary folder.

    Raises:
        JarsNotInstalledError: Embedded mode and the Delta jars are not installed.
    """
    path = Path(log_file) if log_file is not None else Path(tempfile.gettempdir()) / f"ketch-spark-{app_name}.log"
    try:
        with _process_output_to(path):
            spark = spark_session(cfg, app_name=app_name)
    except Exception as exc:
        if hasattr(exc, "add_note"):
            exc.add_note(f"the Spark JVM's output is in {path}")
        raise
    logger.info("spark session ready; the JVM's output goes to %s", path)
    return spark


def session_settings(cfg: KetchConfig, extra: Mapping[str, str] | None = None, *, managed: bool = False) -> dict[str, str]:
    """The settings :func:`spark_session` gives the builder (``managed``: inside spark-submit).

    Raises:
        JarsNotInstalledError: Not managed and the Delta jars are not installed.
    """
    settings: dict[str, str] = {}
    extension: Path | None = None
    if not managed:
        settings.update(_LOCAL_DEFAULTS)
        settings["spark.master"] = "local[*]"
        jars_dir = default_jars_dir(cfg.jars_dir)
        extension = extension_jar(jars_dir) if cfg.filter.session_extension else None
        log_store = required_log_store_jar(jars_dir) if uses_log_store(cfg) else log_store_jar(jars_dir)
        jars = _local_jars(jars_dir, extension, log_store)
        if cfg.filter.session_extension and extension is None:
            logger.warning(
                "filter.session_extension is on but ketch-spark's session extension is not built for this pyspark "
                "in %s (run `make install`): the session starts without it, and consent filters broadcast a kept "
                "key set for every query", jars_dir
            )
    settings.update(_DELTA)
    ours = [EXTENSION_CLASS] if extension is not None else []
    settings["spark.sql.extensions"] = _extensions(_submitted_extensions() if managed else [], ours)
    settings.update(s3a_settings(cfg))
    settings.update(log_store_settings(cfg))
    settings.update(cfg.spark)
    settings.update(extra or {})
    if managed:
        settings.pop("spark.master", None)
    else:
        settings[_DRIVER_JAVA_OPTIONS] = _with_log4j_file(settings.get(_DRIVER_JAVA_OPTIONS, ""))
        _place_jars(settings, jars)
    return settings


def _place_jars(settings: dict[str, str], jars: str) -> None:
    """Puts ketch-spark's jars where an embedded session loads them, next to any the settings name.

    On a local master (not local-cluster) in a JVM this session starts, on the driver's class path: the
    driver is the executor, and through ``spark.jars`` Spark would copy every jar
    (~700 MB with the AWS SDK) into each application's scratch folder, about a
    second of every start. On a cluster master, or in a JVM already running (whose
    class path is fixed), through ``spark.jars``.
    """
    master = settings.get("spark.master", "")
    if (master == "local" or master.startswith("local[")) and not _jvm_running():
        settings[_DRIVER_CLASS_PATH] = os.pathsep.join(filter(None, [*jars.split(","), settings.get(_DRIVER_CLASS_PATH)]))
    else:
        settings["spark.jars"] = ",".join(filter(None, [jars, settings.get("spark.jars")]))


def _jvm_running() -> bool:
    """Whether this Python process already talks to a Spark JVM (a session started and perhaps stopped)."""
    from pyspark import SparkContext

    return getattr(SparkContext, "_gateway", None) is not None


def _with_log4j_file(java_options: str) -> str:
    """The driver's Java options with ketch-spark's log4j2 file, unless the options already name one."""
    if "log4j2.configurationFile" in java_options:
        return java_options
    return f"-Dlog4j2.configurationFile={LOG4J2_FILE.as_uri()} {java_options}".strip()
