"""Execute every lesson notebook in notebooks/ (quick mode) and check how it is committed.

Each notebook computes, plots and asserts what its lesson claims, so running it is the test:
any error or failed assert in a cell fails here.  Notebooks are committed without outputs.
"""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("ipywidgets")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def notebook(request):
    return request.param


def test_lesson_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    for name in ("6-2-0-what-is-noise.ipynb", "6-2-1-the-diffusion-idea.ipynb",
                 "6-2-2-the-forward-process.ipynb", "6-2-4-sampling-and-generation.ipynb",
                 "6-2-5-build-a-diffusion-model.ipynb", "6-2-6-schedules-and-playground.ipynb"):
        assert name in names, f"missing notebooks/{name}"


def test_committed_without_outputs(notebook):
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{notebook.name}: cells {dirty} have outputs or execution counts"
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code and "DDPM_QUICK" in code[0], f"{notebook.name}: the first code cell must read DDPM_QUICK"


def test_notebook_runs(notebook, monkeypatch):
    # the kernel inherits this process's environment
    monkeypatch.setenv("DDPM_QUICK", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError on any error or failed assert
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
