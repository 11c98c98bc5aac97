"""Run every lesson notebook in notebooks/ (quick mode); check how they are written and committed.

Each notebook computes, plots and asserts what its lesson claims, so running it is the test:
any error or failed assert in a cell fails here.  The static tests check the shape the course
asks for (issue 19): committed without outputs, the full mode's measured time stated up front,
every numbered section with a Predict, Checks and Try, asserts only in Checks cells, short cells.
"""
import re
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
MAX_CODE_LINES = 40  # a lesson cell stays short: split longer ones

# The notebooks that must exist, by name.  ---- Extend this list when a lesson is added ----
# (e.g. "6-2-7-guidance.ipynb"); every *.ipynb in notebooks/ is executed whether listed or not.
REQUIRED_NOTEBOOKS = [
    "6-2-0-what-is-noise.ipynb",
    "6-2-1-the-diffusion-idea.ipynb",
    "6-2-2-the-forward-process.ipynb",
    "6-2-3-learning-to-denoise.ipynb",
    "6-2-4-sampling-and-generation.ipynb",
    "6-2-5-build-a-diffusion-model.ipynb",
    "6-2-6-schedules-and-playground.ipynb",
    "6-2-7-guidance.ipynb",
]


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def notebook(request):
    return request.param


def test_lesson_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    missing = [name for name in REQUIRED_NOTEBOOKS if name not in names]
    assert not missing, f"missing notebooks: {missing}"


def test_committed_without_outputs(notebook):
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{notebook.name}: cells {dirty} have outputs or execution counts"
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code and "DDPM_QUICK" in code[0], \
        f"{notebook.name}: the first code cell must read DDPM_QUICK"


def test_full_mode_time_is_stated_up_front(notebook):
    nb = nbformat.read(notebook, as_version=4)
    intro = nb.cells[0].source
    assert nb.cells[0].cell_type == "markdown" and "full mode" in intro.lower(), notebook.name
    assert re.search(r"\b20\d\d-\d\d-\d\d\b", intro), \
        f"{notebook.name}: the introduction must say when the full mode's time was measured"
    # a placeholder such as {FULL_TIME} left unfilled (maths like x_{t-1} is fine)
    assert not re.search(r"\{[A-Z][A-Z_]*\}|FULL_TIME", intro), \
        f"{notebook.name}: an unfilled placeholder in the introduction"


def _sections(nb):
    """{section heading: its markdown text} for the '## <number>.' sections, line by line (a
    section's closing Try often shares a cell with the next section's heading)."""
    sections, current = {}, None
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("## "):
                current = line if re.match(r"## \d+\. ", line) else None
                if current is not None:
                    sections[current] = ""
            elif current is not None:
                sections[current] += line + "\n"
    return sections


def test_each_section_predicts_checks_and_tries(notebook):
    nb = nbformat.read(notebook, as_version=4)
    sections = _sections(nb)
    assert len(sections) >= 3, f"{notebook.name}: no numbered sections found"
    for title, body in sections.items():
        for word in ("**Predict", "**Checks", "**Try"):
            assert word in body, f"{notebook.name}, {title!r}: no {word}"
        assert body.index("**Predict") < body.index("**Checks") < body.index("**Try"), \
            f"{notebook.name}, {title!r}: Predict, Checks and Try out of order"


def test_asserts_live_in_checks_cells_and_cells_are_short(notebook):
    nb = nbformat.read(notebook, as_version=4)
    last_markdown = ""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            last_markdown = cell.source
            continue
        lines = cell.source.splitlines()
        assert len(lines) <= MAX_CODE_LINES, f"{notebook.name}: cell {i} has {len(lines)} lines"
        if any(line.lstrip().startswith("assert ") for line in lines):
            assert "**Checks" in last_markdown, \
                f"{notebook.name}: cell {i} asserts, but does not follow a Checks heading"


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
