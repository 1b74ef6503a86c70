"""Execute notebooks in a fresh kernel, papermill-style, and check how they are committed.

`run_notebook(path, {"SMOKE": True})` injects the overrides in a new cell right after the cell tagged
``parameters``, runs every cell in a new ipykernel of *this* interpreter (the test's venv, whatever
``python`` on PATH or a user-level kernelspec says), and returns what the notebook recorded with
`teach.notebook.record`. A failing cell raises `NotebookError` with the cell's source and traceback.

The kernel runs with one intra-op thread (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``) unless the
environment of the test (or `run_notebook`'s ``env``) says otherwise: the notebooks' smoke models are tiny,
and several threads on a busy machine spin against each other and run many times slower.

`check_notebook_structure(path)` lists what is wrong with a committed notebook (empty when it is fine).
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
RECORD_ENV = "RISER_LITE_RECORD"
STATIC_ENV = "RISER_LITE_STATIC"
THREAD_DEFAULTS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # used where the environment sets none
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class NotebookError(RuntimeError):
    """A notebook cell failed; the message holds the notebook, the cell number, its source and traceback."""


def _kernel_manager():
    """An AsyncKernelManager whose "python3" kernel is sys.executable.

    jupyter_client resolves kernelspecs through a search path whose user directory comes first, so a
    stale ~/.local/share/jupyter/kernels/python3 could start another interpreter without our packages;
    a spec manager that returns a spec built here cannot.
    """
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    class ThisInterpreterSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name=f"Python 3 ({sys.executable})", language="python",
                              resource_dir=tempfile.gettempdir())

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ThisInterpreterSpecs())


def inject_parameters(nb: nbformat.NotebookNode, parameters: dict) -> nbformat.NotebookNode:
    """Insert a cell assigning `parameters` right after the cell tagged ``parameters`` (in place)."""
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise ValueError("the notebook has no cell tagged 'parameters' to override")
    lines = ["# Parameters injected by tests/nbrun.py"]
    for name, value in parameters.items():
        if not name.isidentifier():
            raise ValueError(f"parameter name {name!r} is not a Python identifier")
        text = repr(value)
        try:
            same = ast.literal_eval(text) == value  # only literals a reader could have typed round-trip
        except (ValueError, SyntaxError):
            same = False
        if not same:
            raise ValueError(f"parameter {name}={value!r} is not a plain literal")
        lines.append(f"{name} = {text}")
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(tagged[0] + 1, cell)
    return nb


def _failure(path: Path, nb: nbformat.NotebookNode, err: Exception) -> NotebookError:
    injected = 0  # cell numbers are those of the file: the injected parameters cell is not counted
    for index, cell in enumerate(nb.cells):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            injected = 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                trace = _ANSI.sub("", "\n".join(out.get("traceback", [])))
                return NotebookError(f"{path.name}: cell {index - injected} failed ({out.get('ename')}: "
                                     f"{out.get('evalue')})\n--- source ---\n{cell.source}\n"
                                     f"--- traceback ---\n{trace}")
    return NotebookError(f"{path.name}: {_ANSI.sub('', str(err))}")


def kernel_environment(record: Path, static: bool = True, env: dict | None = None,
                       base: dict | None = None) -> dict:
    """The environment of a notebook's kernel: `base` (default: this process's environment) with the
    thread defaults where it sets none, the record file, this checkout on PYTHONPATH, RISER_LITE_STATIC=1
    when `static`, and finally `env`."""
    base = dict(os.environ if base is None else base)
    kernel_env = {**THREAD_DEFAULTS, **base, RECORD_ENV: str(record), "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                  "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))}
    if static:
        kernel_env[STATIC_ENV] = "1"
    kernel_env.update(env or {})
    return kernel_env


def run_notebook(path: str | Path, parameters: dict | None = None, timeout: int = 600,
                 record_path: str | Path | None = None, *, static: bool = True,
                 executed_path: str | Path | None = None, env: dict | None = None) -> dict:
    """Execute a notebook top to bottom in a fresh kernel and return its recorded values.

    Args:
        path: the .ipynb file (it is read, never written).
        parameters: overrides, e.g. {"SMOKE": True}, injected after the ``parameters`` cell.
        timeout: seconds allowed per cell.
        record_path: JSON file for `teach.notebook.record` (a temporary file when None); any
            previous content is removed first.
        static: set RISER_LITE_STATIC=1 so widgets fall back to static figures.
        executed_path: where to save the executed notebook (with outputs), for debugging.
        env: extra environment variables for the kernel (they win over everything else).
    Returns:
        the recorded name -> value dict.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    path = Path(path).resolve()
    nb = nbformat.read(path, as_version=4)
    if parameters:
        inject_parameters(nb, parameters)
    with tempfile.TemporaryDirectory(prefix="nbrun-") as tmp:
        record = Path(record_path) if record_path is not None else Path(tmp) / "record.json"
        record.unlink(missing_ok=True)
        kernel_env = kernel_environment(record, static=static, env=env)
        client = NotebookClient(nb, km=_kernel_manager(), timeout=timeout, allow_errors=False,
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute(env=kernel_env)
        except (CellExecutionError, CellTimeoutError) as err:
            raise _failure(path, nb, err) from None
        finally:
            if executed_path is not None:
                nbformat.write(nb, executed_path)
        return json.loads(record.read_text()) if record.exists() else {}


def _assigned_names(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def check_notebook_structure(path: str | Path) -> list[str]:
    """Problems with a committed notebook: outputs left in, no ``parameters`` cell assigning SMOKE, no
    title + learning goals first cell, or an invalid nbformat v4 file. An empty list means it is fine."""
    path = Path(path)
    problems: list[str] = []
    try:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)
    except Exception as err:  # unreadable or invalid: nothing else can be checked
        return [f"not a valid notebook: {err}"]
    if nb.nbformat != 4 or nb.nbformat_minor < 5:
        problems.append(f"nbformat {nb.nbformat}.{nb.nbformat_minor}; expected 4.5+ (cells with ids)")
    if not nb.cells:
        return problems + ["no cells"]
    first = nb.cells[0]
    if first.cell_type != "markdown" or not first.source.lstrip().startswith("# "):
        problems.append("the first cell must be markdown starting with a '# ' title")
    elif "learning goals" not in first.source.lower():
        problems.append("the first cell must list the learning goals ('Learning goals')")
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            problems.append(f"cell {index} has outputs or an execution count; commit notebooks cleared")
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1 or tagged[0].cell_type != "code":
        problems.append(f"expected exactly one code cell tagged 'parameters', found {len(tagged)}")
    else:
        try:
            if "SMOKE" not in _assigned_names(tagged[0].source):
                problems.append("the parameters cell must assign SMOKE")
        except SyntaxError as err:
            problems.append(f"the parameters cell does not parse: {err}")
    return problems
