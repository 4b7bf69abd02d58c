"""The probe notebooks run top to bottom, and each one's closing assert cell checks its claim.

Every notebook in ``notebooks/`` is executed with nbclient in a fresh ``python3`` kernel whose
working directory is a temporary folder (a notebook writes nothing into the repository) and
whose ``PYTHONPATH`` starts with this checkout (so the kernel imports the code under test). A
cell that raises fails the test with the cell's traceback; a claim that stops holding fails
its notebook's assert cell. The notebooks are stored without outputs, to keep diffs readable.
A notebook that needs optional packages lists their modules in its metadata
(``"pdesim": {"requires": [...]}``) and is skipped, naming them, where one is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

# the dev extras install these; a missing one must fail the suite, not skip it
import ipykernel  # noqa: F401  (registers the python3 kernel)
import nbclient
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks


def _sentence(path: Path) -> str:
    """'03_explosion_without_layernorm.ipynb' -> '03 explosion without layernorm'."""
    return path.stem.replace("_", " ")


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_the_seven_probe_notebooks_are_there():
    assert {path.name for path in NOTEBOOKS} >= {
        "01_master_pde.ipynb",
        "02_drift_without_residual.ipynb",
        "03_explosion_without_layernorm.ipynb",
        "04_energy_and_lyapunov.ipynb",
        "05_diffusion_spectrum_and_cfl.ipynb",
        "06_clustering_and_rank_collapse.ipynb",
        "07_discrete_vs_continuous.ipynb",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_sentence)
def test_notebook_opens_with_its_claim_and_ends_with_an_assert_cell(path):
    notebook = _read(path)
    first, last = notebook.cells[0], notebook.cells[-1]
    assert first.cell_type == "markdown" and "**Claim.**" in first.source
    assert last.cell_type == "code" and "\nassert " in "\n" + last.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_sentence)
def test_notebook_is_stored_without_outputs(path):
    for cell in _code_cells(_read(path)):
        assert cell.outputs == [] and cell.execution_count is None, f"strip the outputs of {path.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_sentence)
def test_notebook_runs_and_its_claim_holds(path, tmp_path, monkeypatch):
    # The kernel inherits this environment: make it import this checkout, from a scratch folder.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = _read(path)
    requires = notebook.metadata.get("pdesim", {}).get("requires", [])
    missing = [name for name in requires if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)}, not installed here (pip install -e '.[dev]')")
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        failure = ANSI_COLOUR.sub("", str(error))
    if failure is not None:  # outside the except block, so the report is the cell's traceback alone
        pytest.fail(f"{path.name}: a cell failed\n{failure}", pytrace=False)
    assert list(tmp_path.iterdir()) == [], f"{path.name} wrote files: {sorted(p.name for p in tmp_path.iterdir())}"
    figures = [
        output for cell in _code_cells(notebook) for output in cell.outputs if "image/png" in output.get("data", {})
    ]
    assert figures, f"{path.name} draws no figure"
