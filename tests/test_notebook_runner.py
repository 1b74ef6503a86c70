"""The notebook runner (tests/nbrun.py, papermill) and how every notebook is committed."""

import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbrun import NotebookError, check_notebook_structure, run_notebook  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _notebook(tmp_path: Path, cells: list, name: str = "nb.ipynb") -> Path:
    nb = nbformat.v4.new_notebook(cells=cells)
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def _good_cells(body: str = "x = 1") -> list:
    return [nbformat.v4.new_markdown_cell("# Title\n\n**Learning goals**\n\n1. one"),
            nbformat.v4.new_code_cell("SMOKE = False\nN = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(body)]


def test_notebooks_exist():
    assert any(p.name == "01_data.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_structure(path):
    assert check_notebook_structure(path) == []


def test_structure_check_finds_each_problem(tmp_path):
    assert check_notebook_structure(_notebook(tmp_path, _good_cells())) == []
    cells = _good_cells()
    cells[2].outputs = [nbformat.v4.new_output("stream", text="hi")]
    assert any("outputs" in p for p in check_notebook_structure(_notebook(tmp_path, cells)))
    cells = _good_cells()
    cells[1].source = "FAST = True"
    assert check_notebook_structure(_notebook(tmp_path, cells)) == ["the parameters cell must assign SMOKE"]
    cells = _good_cells()
    cells[1].metadata = {}
    assert any("tagged 'parameters'" in p for p in check_notebook_structure(_notebook(tmp_path, cells)))
    cells = _good_cells()
    cells[0].source = "# Title only"
    assert any("learning goals" in p for p in check_notebook_structure(_notebook(tmp_path, cells)))
    assert any("markdown" in p for p in check_notebook_structure(_notebook(tmp_path, _good_cells()[1:])))


def test_papermill_injects_parameters_after_the_tagged_cell(tmp_path):
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(_notebook(tmp_path, _good_cells())))  # as run_notebook's papermill reads it
    nb = parameterize_notebook(nb, {"SMOKE": True, "PATH": "/a b", "K": [1, 2]}, kernel_name="python3",
                               language="python")
    injected = nb.cells[2]
    assert injected.metadata["tags"] == ["injected-parameters"]
    namespace = {}
    exec(injected.source, namespace)  # noqa: S102 - the test's own literals
    assert {k: namespace[k] for k in ("SMOKE", "PATH", "K")} == {"SMOKE": True, "PATH": "/a b", "K": [1, 2]}


@pytest.mark.notebook
def test_run_notebook_injects_records_and_reports_errors(tmp_path):
    body = ("import os, sys\nfrom riser_lite.teach.notebook import record\n"
            "record('smoke', SMOKE)\nrecord('python', sys.executable)\n"
            "record('static', os.environ.get('RISER_LITE_STATIC'))\nrecord('cwd', os.getcwd())\n"
            "assert N != 2, 'N must not be 2'")
    path = _notebook(tmp_path, _good_cells(body))
    recorded = run_notebook(path, {"SMOKE": True}, timeout=120, record_path=tmp_path / "rec.json")
    assert recorded == {"smoke": True, "python": sys.executable, "static": "1", "cwd": str(tmp_path)}
    with pytest.raises(NotebookError, match="N must not be 2") as err:
        run_notebook(path, {"N": 2}, timeout=120)
    assert "nb.ipynb: cell 2 failed (AssertionError: N must not be 2)" in str(err.value)
    assert "--- source ---\nimport os, sys" in str(err.value) and "--- traceback ---" in str(err.value)


def test_kernel_environment_defaults_to_one_thread(tmp_path):
    from nbrun import kernel_environment

    rec = tmp_path / "r.json"
    default = kernel_environment(rec, base={})
    assert default["OMP_NUM_THREADS"] == default["MKL_NUM_THREADS"] == "1"
    assert kernel_environment(rec, base={"OMP_NUM_THREADS": "2"})["OMP_NUM_THREADS"] == "2"
    assert kernel_environment(rec, base={"OMP_NUM_THREADS": "2"},
                              env={"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"
