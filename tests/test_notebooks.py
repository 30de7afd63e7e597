"""Every analyst notebook runs top to bottom on a small demo warehouse."""

from __future__ import annotations

import io
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ketch_spark.demo import run_demo

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def demo_conf(spark, base_config, tmp_path_factory) -> Path:
    """A config whose warehouse holds a small demo run (made with the shared session)."""
    root = tmp_path_factory.mktemp("notebook-demo")
    cfg = base_config.with_warehouse(root / "warehouse")
    run_demo(spark, cfg, n_users=400, out=io.StringIO())
    conf = root / "ketch.yaml"
    conf.write_text(
        f"warehouse: {cfg.warehouse}\npolicy: {cfg.policy_path}\n"
        "spark: {spark.master: 'local[2]', spark.driver.memory: 1g, spark.ui.enabled: false, spark.sql.shuffle.partitions: 2}\n"
    )
    return conf


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, demo_conf, monkeypatch):
    monkeypatch.setenv("KETCH_SPARK_CONF", str(demo_conf))
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "execute_result" for o in outputs)
