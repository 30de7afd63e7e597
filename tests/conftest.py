"""Shared fixtures: one Delta-enabled SparkSession for the whole run, configs under tmp_path."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from ketch_spark.config import KetchConfig, load_config
from ketch_spark.errors import JarsNotInstalledError
from ketch_spark.extensions import extension_jar
from ketch_spark.jars import TEST_JAR_GROUPS, default_jars_dir, installed_jar_paths

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["services"]

#: Tests of ketch-spark's optional session extension run only where `make install` could build it.
needs_extension = pytest.mark.skipif(
    extension_jar(default_jars_dir()) is None, reason="ketch-spark's optional session extension is not built"
)

TEST_SPARK_SETTINGS = {
    "spark.master": "local[2]",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "3g",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
}


def oracle_jar_settings() -> dict[str, str]:
    """The test-only jars (IAB's GPP library, an oracle) on the driver's classpath, when installed."""
    try:
        paths = installed_jar_paths(default_jars_dir(), list(TEST_JAR_GROUPS))
    except JarsNotInstalledError:
        return {}
    return {"spark.driver.extraClassPath": os.pathsep.join(paths)}


@pytest.fixture(scope="session")
def base_config() -> KetchConfig:
    """The repository's conf/ketch.yaml (policy included), before re-rooting."""
    return load_config(REPO / "conf" / "ketch.yaml")


@pytest.fixture(scope="session")
def spark(base_config: KetchConfig, tmp_path_factory: pytest.TempPathFactory):
    """The one SparkSession of the test run."""
    from ketch_spark.session import spark_session

    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    cfg = base_config.with_warehouse(warehouse)
    # the test session loads the opt-in session extension when it is built (its tests skip otherwise)
    cfg = dataclasses.replace(cfg, filter=dataclasses.replace(cfg.filter, session_extension=True))
    session = spark_session(
        cfg,
        app_name="ketch-spark-tests",
        extra={**TEST_SPARK_SETTINGS, **oracle_jar_settings(), "spark.sql.warehouse.dir": str(warehouse)},
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture()
def cfg(base_config: KetchConfig, tmp_path: Path) -> KetchConfig:
    """A config whose warehouse is a fresh folder of this test."""
    return base_config.with_warehouse(tmp_path / "warehouse")


@pytest.fixture(scope="session")
def policy(base_config: KetchConfig):
    """The repository's policy."""
    return base_config.policy()


@pytest.fixture(scope="session")
def iab(spark):
    """IAB Tech Lab's GppModel class (the GPP oracle) through the test session's JVM."""
    from py4j.java_gateway import JavaClass

    model = spark.sparkContext._jvm.com.iab.gpp.encoder.GppModel
    if not isinstance(model, JavaClass):
        pytest.fail("IAB's GPP library is not on the test session's classpath: run `make install` (jar group gpp-oracle)")
    return model
