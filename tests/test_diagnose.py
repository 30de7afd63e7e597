"""Spark, Delta and JVM failures become one line naming what is at fault and what to do.

The failures are real: raised by the test session on bad inputs, or real Java exception objects
(Delta's concurrency conflict, the JVM's out-of-memory error) wrapped the way Py4J delivers them."""

from __future__ import annotations

import pytest
from py4j.protocol import Py4JJavaError

from ketch_spark.diagnose import FailureContext, explain_failure, failure_text


def _java_failure(spark, java_exception) -> Py4JJavaError:
    """A Py4J error carrying ``java_exception``, as a failed JVM call delivers it."""
    return Py4JJavaError("An error occurred while calling o42.execute", java_exception)


def _raised(call) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_json_read_as_parquet_names_the_file_and_the_format(spark, tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.json").write_text('{"org_id": "o-1", "user_id": "u-1"}\n')
    exc = _raised(lambda: spark.read.parquet(str(drop)).collect())
    line = explain_failure(exc, FailureContext("consent ingest", inputs=(str(drop),), fmt="parquet"))
    assert line is not None and "\n" not in line
    assert f"{drop}/a.json is not a Parquet file" in line and "--format json, csv, tcf or gpp" in line


def test_a_write_under_a_file_names_the_warehouse(spark, tmp_path):
    (tmp_path / "wh").write_text("a file, not a folder")
    exc = _raised(lambda: spark.range(1).write.format("delta").save(str(tmp_path / "wh" / "consent" / "state")))
    line = explain_failure(exc, FailureContext("consent compact", warehouse=str(tmp_path / "wh")))
    assert line is not None and line.startswith(f"cannot write under the warehouse {tmp_path / 'wh'}")
    assert "`warehouse:`" in line


def test_two_compactions_at_once_say_so(spark):
    gateway = spark.sparkContext._gateway
    parameters = gateway.new_array(gateway.jvm.java.lang.String, 2)  # <conflictingCommit>, <docLink>
    parameters[0], parameters[1] = "", "https://docs.delta.io/concurrency-control"
    conflict = _java_failure(spark, gateway.jvm.io.delta.exceptions.ConcurrentTransactionException(parameters))
    assert "checkpoint" in failure_text(conflict)  # Delta's own words speak of streaming queries
    line = explain_failure(conflict, FailureContext("consent compact", table="consent/state"))
    assert line is not None and line.startswith("two compactions at once") and "checkpoint" not in line
    append = _java_failure(spark, gateway.jvm.io.delta.exceptions.ConcurrentAppendException("files were added"))
    line = explain_failure(append, FailureContext("consent ingest", table="consent/events", warehouse="/wh"))
    assert line is not None and "consent/events under /wh" in line and "one at a time" in line


def test_heap_exhausted_suggests_driver_memory(spark):
    oom = _java_failure(spark, spark.sparkContext._gateway.jvm.java.lang.OutOfMemoryError("Java heap space"))
    line = explain_failure(oom, FailureContext("catalog scan", driver_memory="3g"))
    assert line is not None and "(now 3g)" in line and "spark.driver.memory: 8g" in line


def test_missing_jars_name_the_setting(spark):
    missing = _java_failure(
        spark, spark.sparkContext._gateway.jvm.java.lang.ClassNotFoundException("io.delta.sql.DeltaSparkSessionExtension"))
    line = explain_failure(missing, FailureContext("consent compact"))
    assert line is not None and "Delta jars" in line and "KETCH_SPARK_JARS" in line and "jars_dir" in line


def test_an_unknown_failure_is_left_to_the_caller():
    assert explain_failure(RuntimeError("something else"), FailureContext("dsr run")) is None
