"""The session loads the Delta jars from the project folder: write, update, read history."""

from __future__ import annotations

import dataclasses
import os
import logging

import pytest
import pyspark
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from conftest import needs_extension
from ketch_spark.errors import JarsNotInstalledError, KetchError
from ketch_spark.extensions import (
    EXTENSION_CLASS,
    build_extension_jar,
    extension_active,
    extension_jar,
    try_build_extension_jar,
)
from ketch_spark.jars import default_jars_dir
from ketch_spark.session import _extensions, delta_settings, s3a_settings, session_settings
from ketch_spark.config import config_from_mapping


def test_delta_write_update_history(spark, tmp_path):
    path = str(tmp_path / "t")
    spark.createDataFrame([(1, "a"), (2, "b")], "id int, v string").write.format("delta").save(path)
    DeltaTable.forPath(spark, path).update(F.col("id") == 2, {"v": F.lit("B")})

    history = DeltaTable.forPath(spark, path).history().orderBy("version").select("version", "operation").collect()
    assert [(r.version, r.operation) for r in history] == [(0, "WRITE"), (1, "UPDATE")]
    assert_df_equality(
        spark.read.format("delta").load(path),
        spark.createDataFrame([(1, "a"), (2, "B")], "id int, v string"),
        ignore_row_order=True,
    )
    old = spark.read.format("delta").option("versionAsOf", 0).load(path)
    assert sorted(r.v for r in old.collect()) == ["a", "b"]


def test_session_is_configured(spark):
    conf = spark.conf
    assert conf.get("spark.sql.session.timeZone") == "UTC"
    assert conf.get("spark.sql.shuffle.partitions") == "2"
    assert spark.sparkContext.master == "local[2]"
    assert spark.sparkContext.getConf().get("spark.broadcast.compress") == "false"  # embedded default
    assert conf.get("spark.sql.catalog.spark_catalog") == delta_settings()["spark.sql.catalog.spark_catalog"]
    extensions = conf.get("spark.sql.extensions").split(",")
    built = extension_jar(default_jars_dir()) is not None
    assert extensions == [delta_settings()["spark.sql.extensions"], *([EXTENSION_CLASS] if built else [])]
    assert extension_active(spark) is built  # the test session opts in; on the classpath and registered when built


@pytest.mark.parametrize("master, running, where", [
    ("local[2]", False, "class path"), ("local", False, "class path"), ("local[2]", True, "spark.jars"),
    ("local-cluster[2,1,1024]", False, "spark.jars"), ("spark://master:7077", False, "spark.jars"),
])
def test_jars_go_on_the_class_path_of_a_new_local_jvm_else_through_spark_jars(base_config, monkeypatch, master,
                                                                              running, where):
    monkeypatch.setattr("ketch_spark.session._jvm_running", lambda: running)
    mine = {"spark.driver.extraClassPath": "/opt/mine.jar", "spark.jars": "/opt/other.jar"}
    settings = session_settings(base_config, {"spark.master": master, **mine})
    class_path = settings["spark.driver.extraClassPath"].split(os.pathsep)
    jars = settings["spark.jars"].split(",")
    delta = [p for p in (class_path if where == "class path" else jars) if "delta-spark" in p]
    assert len(delta) == 1 and "/opt/mine.jar" in class_path and "/opt/other.jar" in jars  # the caller's kept
    assert not any("delta-spark" in p for p in (jars if where == "class path" else class_path))


def _session_jars(settings: dict) -> list[str]:
    """The jars the settings load, wherever they are placed (see session._place_jars)."""
    return [*settings.get("spark.jars", "").split(","), *settings.get("spark.driver.extraClassPath", "").split(os.pathsep)]


def test_session_extension_is_opt_in(base_config):
    settings = session_settings(base_config)
    assert base_config.filter.session_extension is False
    assert settings["spark.sql.extensions"] == delta_settings()["spark.sql.extensions"]
    assert not any("ketch-spark-extensions" in jar for jar in _session_jars(settings))


@needs_extension
def test_opted_in_session_loads_the_jar_built_for_this_pyspark(base_config):
    cfg = dataclasses.replace(base_config, filter=dataclasses.replace(base_config.filter, session_extension=True))
    settings = session_settings(cfg)
    jar = extension_jar(default_jars_dir())
    assert f"spark{pyspark.__version__}-" in jar.name and str(jar) in _session_jars(settings)
    assert settings["spark.sql.extensions"].split(",")[-1] == EXTENSION_CLASS


def test_opted_in_session_without_the_jar_starts_without_it_with_one_warning(base_config, monkeypatch, caplog):
    cfg = dataclasses.replace(base_config, filter=dataclasses.replace(base_config.filter, session_extension=True))
    monkeypatch.setattr("ketch_spark.session.extension_jar", lambda jars_dir: None)
    with caplog.at_level(logging.WARNING, logger="ketch_spark.session"):
        settings = session_settings(cfg)
    assert settings["spark.sql.extensions"] == delta_settings()["spark.sql.extensions"]
    assert [r.getMessage() for r in caplog.records if "session extension" in r.getMessage()][0].count("make install") == 1


def test_a_failed_extension_build_is_a_warning(tmp_path, monkeypatch, caplog):
    def fail(output):
        raise KetchError("could not compile KeptKeySets.scala")

    monkeypatch.setattr("ketch_spark.extensions._compile", fail)
    with caplog.at_level(logging.WARNING, logger="ketch_spark.extensions"):
        assert try_build_extension_jar(tmp_path) is None
    assert "consent filters work without it" in caplog.text and not list(tmp_path.glob("*.jar"))


def test_submitted_session_extensions_are_kept_next_to_deltas():
    delta = delta_settings()["spark.sql.extensions"]
    submitted = [" com.example.Audit", delta, ""]
    assert _extensions(submitted, [EXTENSION_CLASS]) == f"{delta},com.example.Audit,{EXTENSION_CLASS}"
    assert _extensions([""], []) == delta


@needs_extension
def test_extension_jar_is_built_once_per_source(tmp_path):
    jar = extension_jar(default_jars_dir())
    assert jar is not None and jar.parent == default_jars_dir()
    assert build_extension_jar(jar.parent) == jar  # the current source is built already: no compile
    assert extension_jar(tmp_path) is None


def test_s3a_settings_from_connectors_section():
    cfg = config_from_mapping(
        {"connectors": {"s3": {"endpoint": "http://127.0.0.1:5000", "path_style_access": True, "access_key_id": "k", "secret_access_key": "s"}}}
    )
    settings = s3a_settings(cfg)
    assert settings["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:5000"
    assert settings["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert settings["spark.hadoop.fs.s3a.access.key"] == "k"
    assert settings["spark.hadoop.fs.s3a.input.stream.type"] == "classic"  # rewritten objects are read afresh
    assert s3a_settings(config_from_mapping({})) == {"spark.hadoop.fs.s3a.input.stream.type": "classic"}


def test_missing_jars_say_where_they_were_looked_for(base_config, tmp_path):
    import pytest

    from ketch_spark.errors import JarsNotInstalledError

    cfg = dataclasses.replace(base_config, jars_dir=str(tmp_path / "no-jars"))
    with pytest.raises(JarsNotInstalledError) as info:
        session_settings(cfg)
    message = str(info.value)
    assert str(tmp_path / "no-jars") in message and "KETCH_SPARK_JARS" in message and "jars_dir" in message


def test_the_embedded_jvm_logs_without_start_up_warnings(base_config):
    from ketch_spark.session import LOG4J2_FILE

    options = session_settings(base_config)["spark.driver.extraJavaOptions"]
    assert options == f"-Dlog4j2.configurationFile={LOG4J2_FILE.as_uri()}" and LOG4J2_FILE.is_file()
    quiet = {line.split("=")[1].strip() for line in LOG4J2_FILE.read_text().splitlines() if ".name = " in line}
    assert {"org.apache.spark.util.Utils", "org.apache.hadoop.util.NativeCodeLoader"} <= quiet
    own = config_from_mapping({"spark": {"spark.driver.extraJavaOptions": "-Dx=1"}})
    assert session_settings(own)["spark.driver.extraJavaOptions"].endswith(" -Dx=1")
    chosen = config_from_mapping({"spark": {"spark.driver.extraJavaOptions": "-Dlog4j2.configurationFile=my.xml"}})
    assert session_settings(chosen)["spark.driver.extraJavaOptions"] == "-Dlog4j2.configurationFile=my.xml"


def test_notebook_session_sends_the_jvms_output_to_its_log_file(base_config, tmp_path, monkeypatch, capfd):
    import os
    import subprocess
    import sys

    from ketch_spark import session as session_module

    def starts_a_jvm(cfg, app_name):
        # what py4j's launch does: a child process inheriting this process's stdout and stderr
        subprocess.run([sys.executable, "-c", "import sys; print('jvm out'); print('WARN jvm err', file=sys.stderr)"],
                       check=True)
        os.write(2, b"WARNING: Using incubator modules\n")
        return f"session {app_name}"

    monkeypatch.setattr(session_module, "spark_session", starts_a_jvm)
    log = tmp_path / "logs" / "jvm.log"
    assert session_module.notebook_session(base_config, "nb", log_file=log) == "session nb"
    subprocess.run([sys.executable, "-c", "import sys; print('after'); print('later err', file=sys.stderr)"], check=True)

    captured = capfd.readouterr()
    assert "WARN" not in captured.err and "jvm" not in captured.out
    assert "after" in captured.out and "later err" in captured.err  # both descriptors are restored
    assert log.read_text().splitlines() == ["jvm out", "WARN jvm err", "WARNING: Using incubator modules"]
    assert log.stat().st_mode & 0o777 == 0o600


def test_notebook_session_names_its_log_file_when_spark_cannot_start(base_config, tmp_path, monkeypatch):
    import pytest

    from ketch_spark import session as session_module
    from ketch_spark.errors import JarsNotInstalledError

    def fails(cfg, app_name):
        raise JarsNotInstalledError("no jars")

    monkeypatch.setattr(session_module, "spark_session", fails)
    monkeypatch.setattr(session_module.tempfile, "gettempdir", lambda: str(tmp_path))
    with pytest.raises(JarsNotInstalledError) as info:
        session_module.notebook_session(base_config, "nb")
    if hasattr(info.value, "__notes__"):
        assert info.value.__notes__ == [f"the Spark JVM's output is in {tmp_path / 'ketch-spark-nb.log'}"]


def test_a_jvm_started_by_the_cli_writes_without_the_jdks_notice_and_deltas_vacuum_counts(capfd):
    import subprocess
    import sys

    from ketch_spark.session import jvm_notices_dropped

    child = ("import sys, time; print('WARNING: Using incubator modules: jdk.incubator.vector', file=sys.stderr); "
             "print('ERROR a real problem', file=sys.stderr, flush=True); time.sleep(0.5); "
             "print('Deleted 0 files and directories in a total of 1 directories.', flush=True); "
             "print('Deleted rows stay deleted', flush=True); "
             "print('WARN later, after the launch', file=sys.stderr)")
    with jvm_notices_dropped():
        # what py4j's launch does: a long-lived child inheriting stderr
        jvm = subprocess.Popen([sys.executable, "-c", child])
    print("own line", file=sys.stderr, flush=True)  # this process's stderr is back as it was
    jvm.wait(timeout=30)
    import time

    deadline = time.monotonic() + 5
    err = out = ""
    while ("after the launch" not in err or "stay deleted" not in out) and time.monotonic() < deadline:
        time.sleep(0.05)
        captured = capfd.readouterr()
        err, out = err + captured.err, out + captured.out
    assert "incubator" not in err
    assert "ERROR a real problem" in err and "WARN later, after the launch" in err and "own line" in err
    assert "in a total of" not in out and "Deleted rows stay deleted" in out


def test_s3a_warehouse_commits_through_the_dynamodb_log_store(base_config):
    from ketch_spark.log_store import LOG_STORE_CLASS, log_store_jar

    cfg = dataclasses.replace(
        base_config.with_warehouse("s3a://lake/warehouse"),
        sections={"connectors": {"s3": {"region": "eu-west-1", "access_key_id": "AKIAEXAMPLE"}}},
    )
    settings = session_settings(cfg)
    assert settings["spark.delta.logStore.s3a.impl"] == LOG_STORE_CLASS
    assert settings["spark.ketch.logStore.ddb.tableName"] == "ketch_delta_log"
    assert settings["spark.ketch.logStore.ddb.region"] == "eu-west-1"  # s3a's region unless delta.log_store sets one
    assert "spark.ketch.logStore.ddb.endpoint" not in settings
    assert str(log_store_jar(default_jars_dir())) in _session_jars(settings)
    off = dataclasses.replace(cfg, delta=dataclasses.replace(
        cfg.delta, log_store=dataclasses.replace(cfg.delta.log_store, enabled=False)))
    assert not any(key.startswith(("spark.delta.logStore", "spark.ketch.logStore")) for key in session_settings(off))
    assert not any(key.startswith("spark.delta.logStore") for key in session_settings(base_config))


def test_s3a_warehouse_without_the_built_log_store_says_how_to_build_it(base_config, monkeypatch):
    monkeypatch.setattr("ketch_spark.log_store.log_store_jar", lambda jars_dir: None)
    with pytest.raises(JarsNotInstalledError, match="make install"):
        session_settings(base_config.with_warehouse("s3a://lake/warehouse"))
