"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel at its small size.

A notebook reads ``PYROVAE_NOTEBOOK_SMALL`` in its first code cell and shrinks its sizes when it
is ``"1"``; it ends with cells that ``assert`` its results against known values, so running it
is a value check. Adding a notebook is adding the file: it is picked up here. Notebooks are
stored without outputs, so diffs stay readable and nothing stale is committed.
"""

from pathlib import Path

import nbclient  # the dev extra installs nbformat, nbclient and ipykernel
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
SWITCH = "PYROVAE_NOTEBOOK_SMALL"


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs_and_reads_the_switch(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert not cell.outputs and cell.execution_count is None, \
            f"{path.name}: stored with outputs; clear them before committing"
    assert SWITCH in code[0].source, f"{path.name}: the first code cell must read {SWITCH}"
    assert "assert" in code[-1].source, f"{path.name}: the last cell must check results"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv(SWITCH, "1")  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on failure
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "all checks passed" in text
