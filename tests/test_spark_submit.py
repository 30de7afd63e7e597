"""What spark-submit jobs rely on without a cluster: the shipped config, the warehouse check, the jars to submit."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import ketch_spark.spark_submit as spark_submit
from ketch_spark.config import load_config
from ketch_spark.errors import ConfigError
from ketch_spark.jars import _main as jars_main
from ketch_spark.jars import packages_argument
from ketch_spark.preflight import check_warehouse_for_master, is_local_master
from ketch_spark.session import spark_session

REPO = Path(__file__).resolve().parent.parent
POLICY = (REPO / "conf" / "policy.yaml").read_text()


def _submitted(monkeypatch: pytest.MonkeyPatch, *files: Path) -> None:
    """Makes this process look like a client-mode driver that spark-submit gave ``--files`` ``files``."""
    spark_files = ",".join(path.as_uri() for path in files)
    monkeypatch.setattr(spark_submit, "inside_spark_submit", lambda: True)
    monkeypatch.setattr(spark_submit, "submitted_setting",
                        lambda key, default=None: spark_files if key == "spark.files" else default)


def _shipped_conf(folder: Path, warehouse: str = "./ketch-data", policy: str = "policy.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "ketch.yaml"
    conf.write_text(f"warehouse: {warehouse}\npolicy: {policy}\n")
    return conf


def test_client_mode_reads_the_config_and_policy_that_files_shipped(tmp_path, monkeypatch):
    conf = _shipped_conf(tmp_path / "submitter" / "conf")
    (conf.parent / "policy.yaml").write_text(POLICY)
    driver = tmp_path / "driver"
    driver.mkdir()
    monkeypatch.chdir(driver)
    _submitted(monkeypatch, conf, conf.parent / "policy.yaml")

    cfg = load_config("ketch.yaml")

    assert cfg.source == str(conf) and cfg.policy_path == str(conf.parent / "policy.yaml")
    assert cfg.warehouse == str(driver / "ketch-data") and cfg.warehouse_as_written == "./ketch-data"
    assert cfg.policy().purpose("analytics").bit == 1


def test_a_policy_shipped_from_another_folder_is_found_among_the_files(tmp_path, monkeypatch):
    conf = _shipped_conf(tmp_path / "a")
    policy = tmp_path / "b" / "policy.yaml"
    policy.parent.mkdir()
    policy.write_text(POLICY)
    monkeypatch.chdir(tmp_path)
    _submitted(monkeypatch, conf, policy)
    assert load_config("ketch.yaml").policy_path == str(policy)


def test_cluster_mode_reads_the_copy_in_the_working_folder(tmp_path, monkeypatch):
    conf = _shipped_conf(tmp_path, warehouse="s3a://lake/ketch")
    (tmp_path / "policy.yaml").write_text(POLICY)
    monkeypatch.chdir(tmp_path)
    _submitted(monkeypatch)  # YARN and Kubernetes put --files in the driver's working folder
    cfg = load_config("ketch.yaml")
    assert Path(cfg.source).resolve() == conf and cfg.policy_path == str(tmp_path / "policy.yaml")


def test_a_bare_config_name_that_was_not_shipped_says_how_to_ship_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _submitted(monkeypatch)
    with pytest.raises(ConfigError, match=r"ketch.yaml: file not found .* nor among spark-submit's --files; "
                                          r"pass --files conf/ketch.yaml"):
        load_config("ketch.yaml")
    monkeypatch.setattr(spark_submit, "inside_spark_submit", lambda: False)
    with pytest.raises(ConfigError, match="ketch.yaml: file not found; pass an existing YAML file"):
        load_config("ketch.yaml")


def test_outside_spark_submit_a_missing_policy_is_not_replaced_by_another(tmp_path, monkeypatch):
    conf = _shipped_conf(tmp_path / "conf")
    (tmp_path / "policy.yaml").write_text(POLICY)  # in the working folder, not next to the config
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(spark_submit, "inside_spark_submit", lambda: False)
    assert load_config(conf).policy_path == str(tmp_path / "conf" / "policy.yaml")
    assert spark_submit.shipped_file("policy.yaml") is None


def test_only_a_bare_name_is_looked_up_among_the_shipped_files(tmp_path, monkeypatch):
    conf = _shipped_conf(tmp_path / "conf")
    monkeypatch.chdir(tmp_path)
    _submitted(monkeypatch, conf)
    assert spark_submit.shipped_file("ketch.yaml") == conf
    assert spark_submit.shipped_file("elsewhere/ketch.yaml") is None
    assert spark_submit.shipped_file("policy.yaml") is None
    assert [spark_submit.is_bare_name(n) for n in ("ketch.yaml", "conf/ketch.yaml", "/ketch.yaml", ".")] == [
        True, False, False, False]


@pytest.mark.parametrize("master", ["yarn", "spark://10.0.0.1:7077", "k8s://https://kube:6443", "mesos://m:5050"])
def test_a_relative_warehouse_is_refused_on_a_cluster(tmp_path, master):
    cfg = load_config(_shipped_conf(tmp_path, warehouse="./ketch-data", policy=str(REPO / "conf" / "policy.yaml")))
    with pytest.raises(ConfigError) as info:
        check_warehouse_for_master(master, cfg)
    message = str(info.value)
    assert "'./ketch-data' is a relative path" in message and f"Spark runs on {master}" in message
    assert "to an absolute path or an s3a:// URI" in message and str(tmp_path / "ketch.yaml") in message
    # a copy with other settings keeps the warehouse as written, so it is refused too
    with pytest.raises(ConfigError):
        check_warehouse_for_master(master, dataclasses.replace(cfg, spark={"spark.x": "1"}))


@pytest.mark.parametrize("master", ["local", "local[*]", "local[2]", "local-cluster[2,1,1024]", None, ""])
def test_a_relative_warehouse_is_fine_on_a_local_master(tmp_path, master):
    cfg = load_config(_shipped_conf(tmp_path, policy=str(REPO / "conf" / "policy.yaml")))
    assert is_local_master(master)
    check_warehouse_for_master(master, cfg)


@pytest.mark.parametrize("warehouse", ["/data/ketch", "s3a://lake/ketch", "hdfs://nn:8020/ketch", "file:/data/k"])
def test_an_absolute_or_uri_warehouse_is_fine_on_a_cluster(tmp_path, warehouse):
    cfg = load_config(_shipped_conf(tmp_path, warehouse=warehouse, policy=str(REPO / "conf" / "policy.yaml")))
    check_warehouse_for_master("yarn", cfg)


def test_with_warehouse_forgets_the_written_one(tmp_path, base_config):
    relative = dataclasses.replace(base_config, warehouse_as_written="./ketch-data")
    check_warehouse_for_master("yarn", relative.with_warehouse(tmp_path / "wh"))


def test_spark_session_refuses_a_relative_warehouse_on_a_cluster_before_starting(tmp_path, monkeypatch):
    monkeypatch.setattr("ketch_spark.session.inside_spark_submit", lambda: False)
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: ketch-data\npolicy: {REPO / 'conf' / 'policy.yaml'}\n"
                    "spark: {spark.master: 'spark://10.0.0.1:7077'}\n")
    with pytest.raises(ConfigError, match="Spark runs on spark://10.0.0.1:7077"):
        spark_session(load_config(conf))


def test_jars_packages_prints_delta_only_unless_groups_are_named(capsys):
    assert jars_main(["packages"]) == 0
    assert capsys.readouterr().out.strip() == packages_argument(["delta"]) == "io.delta:delta-spark_4.2_2.13:4.4.0"
    assert jars_main(["packages", "--group", "delta", "--group", "s3"]) == 0
    assert capsys.readouterr().out.strip().split(",") == [
        "io.delta:delta-spark_4.2_2.13:4.4.0", "org.apache.hadoop:hadoop-aws:3.5.0"]
