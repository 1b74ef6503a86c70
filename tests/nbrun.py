"""Execute notebooks with papermill in a fresh kernel, and check how they are committed.

`run_notebook(path, {"SMOKE": True})` runs a notebook with papermill (parameters injected after the cell
tagged ``parameters``) in a new ipykernel of *this* interpreter, and returns what the notebook recorded with
`teach.notebook.record`. A failing cell raises `NotebookError` with the cell's number in the file, its
source and traceback.

Two things the tests need that papermill's `execute_notebook` has no argument for, and how they are given:
- the kernel's interpreter: papermill resolves "python3" through jupyter's kernelspec search path, whose user
  directory comes first, so a stale ~/.local/share/jupyter/kernels/python3 could start another interpreter;
  a kernel manager built here is passed through papermill's engine arguments (``km``) instead;
- the kernel's environment (record file, one thread, static figures, this checkout on PYTHONPATH): papermill
  starts the kernel with this process's environment, so `run_notebook` sets it for the run and restores it.

The kernel runs with one intra-op thread (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``) unless the
environment of the test (or `run_notebook`'s ``env``) says otherwise: the notebooks' smoke models are tiny,
and several threads on a busy machine spin against each other and run many times slower.

`check_notebook_structure(path)` lists what is wrong with a committed notebook (empty when it is fine).
"""

from __future__ import annotations

import ast
import contextlib
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
INJECTED_TAG = "injected-parameters"  # papermill's tag on the cell it adds
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class NotebookError(RuntimeError):
    """A notebook cell failed; the message holds the notebook, the cell number, its source and traceback."""


def _kernel_manager():
    """An AsyncKernelManager whose "python3" kernel is sys.executable (see the module docstring)."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    class ThisInterpreterSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name=f"Python 3 ({sys.executable})", language="python",
                              resource_dir=tempfile.gettempdir())

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ThisInterpreterSpecs())


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


@contextlib.contextmanager
def _environment(values: dict):
    """os.environ replaced by `values` inside the block (the kernel papermill starts inherits it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _failure(path: Path, error) -> NotebookError:
    """A NotebookError from papermill's, numbering cells as in the file (the injected one not counted)."""
    nb = nbformat.read(path, as_version=4)
    index = error.cell_index
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if tagged and index > tagged[0]:
        index -= 1  # papermill put its parameters cell right after the tagged one
    trace = _ANSI.sub("", "\n".join(error.traceback))
    return NotebookError(f"{path.name}: cell {index} failed ({error.ename}: {error.evalue})\n"
                         f"--- source ---\n{error.source}\n--- traceback ---\n{trace}")


def with_parameters(path: str | Path, parameters: dict) -> nbformat.NotebookNode:
    """The notebook at `path` with papermill's parameters cell injected (what `run_notebook` executes), e.g.
    to hand a parameterised copy to JupyterLab."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(path))
    return parameterize_notebook(nb, parameters, kernel_name="python3", language="python")


def run_notebook(path: str | Path, parameters: dict | None = None, timeout: int = 600,
                 record_path: str | Path | None = None, *, static: bool = True,
                 executed_path: str | Path | None = None, env: dict | None = None) -> dict:
    """Execute a notebook top to bottom with papermill in a fresh kernel and return its recorded values.

    Args:
        path: the .ipynb file (it is read, never written); the kernel runs in its folder.
        parameters: overrides, e.g. {"SMOKE": True}, injected by papermill after the ``parameters`` cell.
        timeout: seconds allowed per cell.
        record_path: JSON file for `teach.notebook.record` (a temporary file when None); any
            previous content is removed first.
        static: set RISER_LITE_STATIC=1 so widgets fall back to static figures.
        executed_path: where to save the executed notebook (with outputs), for debugging.
        env: extra environment variables for the kernel (they win over everything else).
    Returns:
        the recorded name -> value dict.
    """
    import papermill
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    path = Path(path).resolve()
    with tempfile.TemporaryDirectory(prefix="nbrun-") as tmp:
        record = Path(record_path) if record_path is not None else Path(tmp) / "record.json"
        record.unlink(missing_ok=True)
        output = Path(executed_path) if executed_path is not None else Path(tmp) / path.name
        try:
            with _environment(kernel_environment(record, static=static, env=env)):
                papermill.execute_notebook(str(path), str(output), parameters=parameters or {},
                                           kernel_name="python3", language="python", km=_kernel_manager(),
                                           cwd=str(path.parent), execution_timeout=timeout,
                                           progress_bar=False)
        except PapermillExecutionError as error:
            raise _failure(path, error) from None
        except CellTimeoutError as error:
            raise NotebookError(f"{path.name}: a cell ran longer than {timeout} s ({error})") from None
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
