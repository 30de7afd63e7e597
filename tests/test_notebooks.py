"""Every analyst notebook is committed clean and runs top to bottom on a small demo warehouse."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ketch_spark.demo import run_demo
from ketch_spark.rights.requests import submit_requests

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
#: Notebooks that must also run on a warehouse where nothing was scanned or requested yet, and what they say then.
EMPTY_WAREHOUSE_SENTENCES = {
    "data_map": "The catalog is empty",
    "dsr_operations": "No data-subject requests yet",
}
_SPARK = "{spark.master: 'local[2]', spark.driver.memory: 1g, spark.ui.enabled: false, spark.sql.shuffle.partitions: 2}"


def _write_conf(root: Path, warehouse: str, policy: str) -> Path:
    conf = root / "ketch.yaml"
    conf.write_text(f"warehouse: {warehouse}\npolicy: {policy}\nspark: {_SPARK}\n")
    return conf


def _code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _execute(path: Path, conf: Path, monkeypatch) -> list[dict]:
    """Runs the notebook in a fresh kernel reading ``conf`` and returns every output of its code cells."""
    monkeypatch.setenv("KETCH_SPARK_CONF", str(conf))
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return [output for cell in _code_cells(notebook) for output in cell.get("outputs", [])]


def _errors_and_warnings(outputs: list[dict]) -> list[str]:
    """Error outputs, and stderr output that warns (Spark's WARN lines, Python's warnings)."""
    found = [f"{o['ename']}: {o['evalue']}" for o in outputs if o.get("output_type") == "error"]
    found += [o["text"] for o in outputs
              if o.get("output_type") == "stream" and o.get("name") == "stderr" and "warn" in o["text"].lower()]
    return found


def test_the_analyst_notebooks_are_there():
    assert {p.stem for p in NOTEBOOKS} >= {"consent_overview", "purpose_filter", "data_map", "dsr_operations"}
    assert set(EMPTY_WAREHOUSE_SENTENCES) <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs_and_asserts(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    cells = _code_cells(notebook)
    assert all(cell.outputs == [] and cell.execution_count is None for cell in cells), (
        f"{path.name} has outputs: clear them before committing")
    assert not [cell.source for cell in cells if re.search(r"^\s*assert\b", cell.source, flags=re.MULTILINE)]
    # the warehouse is a parameter: KETCH_SPARK_CONF names the config, the embedded default otherwise
    assert "KETCH_SPARK_CONF" in cells[0].source and "ks.notebook_session(" in cells[0].source


@pytest.fixture(scope="module")
def demo_conf(spark, base_config, tmp_path_factory) -> Path:
    """A config whose warehouse holds a small demo run (made with the shared session) and one overdue request."""
    root = tmp_path_factory.mktemp("notebook-demo")
    cfg = base_config.with_warehouse(root / "warehouse")
    run_demo(spark, cfg, n_users=400, out=io.StringIO())
    received = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=cfg.dsr.due_days + 5)
    submitted = submit_requests(spark, cfg, [{
        "request_id": "notebook-overdue-access", "org_id": "0x1F3A00C1", "kind": "access", "mode": "export",
        "identities": {"email": "late.subject@example.com"}, "received_at": received.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }])
    assert submitted.accepted == ["notebook-overdue-access"]
    return _write_conf(root, cfg.warehouse, cfg.policy_path)


@pytest.fixture(scope="module")
def empty_conf(base_config, tmp_path_factory) -> Path:
    """A config whose warehouse holds nothing yet."""
    root = tmp_path_factory.mktemp("notebook-empty")
    return _write_conf(root, str(root / "warehouse"), base_config.policy_path)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, demo_conf, monkeypatch):
    outputs = _execute(path, demo_conf, monkeypatch)
    assert not _errors_and_warnings(outputs)
    assert any(o.get("output_type") == "execute_result" for o in outputs)
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(EMPTY_WAREHOUSE_SENTENCES))
def test_notebook_runs_on_an_empty_warehouse(stem, empty_conf, monkeypatch):
    outputs = _execute(REPO / "notebooks" / f"{stem}.ipynb", empty_conf, monkeypatch)
    assert not _errors_and_warnings(outputs)
    printed = "".join(o["text"] for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")
    assert EMPTY_WAREHOUSE_SENTENCES[stem] in printed
