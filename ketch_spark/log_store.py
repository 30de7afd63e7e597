"""The Delta log store of an ``s3a://`` warehouse: commits from several drivers made safe with DynamoDB.

Delta writes each commit of a table as a new file ``_delta_log/<version>.json``
and relies on the storage to refuse a second writer of the same file. S3 does
not (Delta's default s3a log store only serialises the writers of one driver),
so two jobs committing to one table at once, on two machines, could both write
version N, the later silently replacing the earlier and losing its commit.

Delta's own answer, ``io.delta:delta-storage-s3-dynamodb`` (``S3DynamoDBLogStore``),
is not published for the Delta version ketch-spark runs on, so ketch-spark
ships a log store built on the same protocol (``jvm/DynamoDBLogStore.scala``,
class :data:`LOG_STORE_CLASS`): a commit is written to a temporary file, claimed
by a conditional write of the item (tablePath, fileName) in a DynamoDB table,
then copied to its place; the loser of a claim gets the error Delta expects and
runs its usual conflict check and retry. Its items have the key schema of
Delta's own store, so one lock table can serve both.

``python -m ketch_spark.jars install`` (``make install``) compiles it with the
Scala compiler pyspark ships into ``.ketch/jars/ketch-spark-log-store-<...>.jar``
once the Delta and s3 jar groups are installed; :func:`ketch_spark.spark_session`
puts the jar on the classpath and, when the config's warehouse is on s3a and
``delta.log_store.enabled`` is true (the default), the settings of
:func:`log_store_settings` in the session. They are static: Delta reads the log
store class from the SparkConf, so they must be set before the session starts.
On a cluster pass ``--jars <that jar>`` and the same settings with ``--conf``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ketch_spark.config import KetchConfig
from ketch_spark.errors import JarsNotInstalledError, KetchError
from ketch_spark.extensions import compile_scala, install_built_jar

__all__ = [
    "LOG_STORE_CLASS",
    "LOG_STORE_SCHEME_KEY",
    "LOG_STORE_SETTING_PREFIX",
    "build_log_store_jar",
    "try_build_log_store_jar",
    "log_store_jar",
    "log_store_settings",
    "required_log_store_jar",
    "uses_log_store",
]

logger = logging.getLogger(__name__)

LOG_STORE_CLASS = "org.apache.spark.sql.ketch.DynamoDBLogStore"
#: Delta's setting naming the log store of s3a:// paths (read from the SparkConf: static).
LOG_STORE_SCHEME_KEY = "spark.delta.logStore.s3a.impl"
#: Prefix of the log store's own settings (the Scala side reads the same names).
LOG_STORE_SETTING_PREFIX = "spark.ketch.logStore.ddb."
_SOURCE = Path(__file__).resolve().parent / "jvm" / "DynamoDBLogStore.scala"
_JAR_STEM = "ketch-spark-log-store"
_DEFAULT_REGION = "us-east-1"


def _jar_name() -> str:
    import pyspark

    digest = hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:12]
    return f"{_JAR_STEM}-spark{pyspark.__version__}-{digest}.jar"


def log_store_jar(jars_dir: Path) -> Path | None:
    """The log store jar built from the current source in ``jars_dir``, ``None`` when not built."""
    jar = jars_dir / _jar_name()
    return jar if jar.is_file() else None


def build_log_store_jar(jars_dir: Path) -> Path:
    """Builds the log store jar into ``jars_dir`` unless the current source is already built.

    Raises:
        JarsNotInstalledError: The Delta or s3 jar group (which it compiles against) is missing.
        KetchError: The compiler failed.
    """
    from ketch_spark.jars import installed_jar_paths

    built = log_store_jar(jars_dir)
    if built is not None:
        return built
    classpath = installed_jar_paths(jars_dir, ["delta", "s3"])
    return install_built_jar(jars_dir / _jar_name(), _JAR_STEM,
                             lambda staged: compile_scala([_SOURCE], staged, classpath))


def try_build_log_store_jar(jars_dir: Path) -> Path | None:
    """:func:`build_log_store_jar`, with a warning instead of an error (only s3a warehouses need it)."""
    try:
        return build_log_store_jar(jars_dir)
    except (KetchError, OSError) as exc:
        logger.warning("the DynamoDB log store of s3a warehouses was not built (%s)", exc)
        return None


def uses_log_store(cfg: KetchConfig) -> bool:
    """Whether sessions of ``cfg`` commit through the DynamoDB log store (an s3a warehouse, not turned off)."""
    return cfg.warehouse.startswith("s3a://") and cfg.delta.log_store.enabled


def log_store_settings(cfg: KetchConfig) -> dict[str, str]:
    """Spark settings of the DynamoDB log store for ``cfg``; empty unless :func:`uses_log_store`.

    The store's credentials are s3a's (``connectors.s3``), else the AWS SDK's default chain.
    """
    if not uses_log_store(cfg):
        return {}
    store = cfg.delta.log_store
    region = store.region or (cfg.section("connectors").get("s3") or {}).get("region") or _DEFAULT_REGION
    settings = {
        LOG_STORE_SCHEME_KEY: LOG_STORE_CLASS,
        f"{LOG_STORE_SETTING_PREFIX}tableName": store.table_name,
        f"{LOG_STORE_SETTING_PREFIX}region": str(region),
        f"{LOG_STORE_SETTING_PREFIX}createTable": str(store.create_table).lower(),
    }
    if store.endpoint:
        settings[f"{LOG_STORE_SETTING_PREFIX}endpoint"] = store.endpoint
    return settings


def required_log_store_jar(jars_dir: Path) -> Path:
    """The built log store jar; raises when an s3a warehouse needs it and it is missing.

    Raises:
        JarsNotInstalledError: Not built; the message says how to build it.
    """
    jar = log_store_jar(jars_dir)
    if jar is None:
        raise JarsNotInstalledError(
            f"the warehouse is on s3a and delta.log_store.enabled is true, but the DynamoDB log store is not built "
            f"in {jars_dir}; run `make install` (or `python -m ketch_spark.jars install --group delta --group s3`), "
            "or set delta.log_store.enabled: false if a single driver ever writes this warehouse"
        )
    return jar
