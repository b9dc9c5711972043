"""The notebooks run top to bottom (nbclient, this interpreter's kernel), are stored clean and write nothing here.

Each notebook works in a temporary folder of its own; the test also points ``OPTIMIZER_STUDIES_DIR`` and the
working files of Jupyter and matplotlib into ``tmp_path`` and checks that the notebooks folder is unchanged.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_evaluate.ipynb", "02_tune.ipynb", "03_apply.ipynb")
KERNEL = "optimizer-test-python"


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kodak_dir: Path) -> str:
    """A kernelspec for this very interpreter, found first on JUPYTER_PATH, and a sandboxed environment."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "optimizer tests",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    monkeypatch.setenv("OPTIMIZER_STUDIES_DIR", str(tmp_path / "studies"))
    monkeypatch.setenv("OPTIMIZER_DATASETS", str(kodak_dir.parent))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    return KERNEL


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_clean(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: stored with outputs"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str, kernel_env: str, tmp_path: Path) -> None:
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=kernel_env,
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
        allow_errors=False,
    )
    client.execute()  # raises CellExecutionError naming the cell on any error
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert images, f"{name}: no figure was displayed"
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, f"{name} wrote into the notebooks folder"
    assert not (tmp_path / "studies").exists() or not any((tmp_path / "studies").iterdir())
