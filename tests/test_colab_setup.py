"""Colab: every notebook's badge and setup cell, the setup cell's behaviour in and out of Colab, keeping
notebooks in sync (tools/set_repo.py), and the static fallback of the widgets where no widget front end is."""

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import ipywidgets
import nbformat
import plotly.graph_objects as go
import pytest
from packaging.requirements import Requirement

from riser_lab import colab
from riser_lite.teach import viz, widgets

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FORK = "someone/riser-fork"  # a published repository, for the tests of a set REPO
PIP_TARGET = "riser-lite @ git+https://github.com/someone/riser-fork@main"  # written out by hand
LS_REMOTE = ["git", "ls-remote", "--heads", "https://github.com/someone/riser-fork", "main"]


def _setup_source(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    index = colab.find_setup_cell(nb.cells)
    assert index is not None, f"{path.name}: the first code cell is not the setup cell"
    return nb.cells[index].source


@pytest.fixture
def processes(monkeypatch):
    """Every way the setup cell could start a process, replaced by a recorder (nothing really runs)."""
    calls = []

    def recorder(name):
        def record(*args, **kwargs):
            calls.append((name, args, kwargs))
            return subprocess.CompletedProcess(args[0] if args else [], 0, "abc\trefs/heads/main\n", "")
        return record

    for name in ("run", "call", "check_call", "check_output", "Popen"):
        monkeypatch.setattr(subprocess, name, recorder(name))
    monkeypatch.setattr("os.system", recorder("os.system"))
    return calls


@pytest.fixture
def fake_colab(monkeypatch):
    """A `google.colab` module, as Colab's kernels have imported at start-up; returns the events list."""
    events = []
    google, colab_module = types.ModuleType("google"), types.ModuleType("google.colab")
    google.colab = colab_module
    colab_module.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: events.append("widgets"))
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab_module)
    return events


def test_constants_and_urls():
    assert colab.REPO is None and colab.BRANCH == "main"  # not published: set with tools/set_repo.py
    with pytest.raises(ValueError, match="no repository is set: run `python tools/set_repo.py OWNER/NAME`"):
        colab.check_repo(None)
    assert colab.check_repo(FORK) == "someone/riser-fork"
    assert colab.colab_url("01_data.ipynb", FORK) == (
        "https://colab.research.google.com/github/someone/riser-fork/blob/main/notebooks/01_data.ipynb")
    fork = colab.colab_url("notebooks/02_sft.ipynb", "me/fork")
    assert fork.endswith("/github/me/fork/blob/main/notebooks/02_sft.ipynb")
    badge = colab.badge_markdown("03_rollouts.ipynb", FORK)
    assert colab.badge_links(f"# T\n\n{badge}\n\ntext") == [colab.colab_url("03_rollouts.ipynb", FORK)]
    for bad in ("riser-lite", "https://github.com/a/b", "a/b/c", "a b/c", ""):
        with pytest.raises(ValueError, match="OWNER/NAME"):
            colab.check_repo(bad)


def test_notebooks_exist():
    assert any(p.name == "01_data.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_has_the_canonical_setup_cell_and_no_badge_while_unpublished(path):
    assert colab.notebook_problems(path) == [], "run: python tools/set_repo.py"
    nb = nbformat.read(path, as_version=4)
    assert colab.badge_links(nb.cells[0].source) == []  # REPO unset: a badge would lead nowhere
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells[0].source == colab.setup_cell_source()  # first code cell: before the parameters cell
    assert "parameters" not in code_cells[0].get("metadata", {}).get("tags", [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_setup_cell_does_nothing_outside_colab(path, processes, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    modules_before = set(sys.modules)
    namespace = {}
    exec(compile(_setup_source(path), f"{path.name}:setup", "exec"), namespace)  # noqa: S102
    assert processes == []  # no pip, no process of any kind
    assert set(sys.modules) == modules_before  # imported nothing new (subprocess and sys are loaded)
    assert sorted(k for k in namespace if k != "__builtins__") == ["REPO", "subprocess", "sys"]
    assert namespace["REPO"] == colab.REPO


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_setup_cell_in_colab_without_a_repository_says_what_to_do(path, processes, fake_colab):
    with pytest.raises(SystemExit, match="No repository is set for riser-lite: .*set_repo.py OWNER/NAME"):
        exec(compile(_setup_source(path), f"{path.name}:setup", "exec"), {})  # noqa: S102
    assert processes == [] and fake_colab == []


def test_setup_cell_in_colab_checks_the_repository_then_installs_it_and_enables_widgets(processes,
                                                                                      fake_colab):
    exec(colab.setup_cell_source(FORK), {})  # noqa: S102
    assert [name for name, _, _ in processes] == ["run", "run"]
    (_, check_args, check_kwargs), (_, args, kwargs) = processes
    assert check_args[0] == LS_REMOTE and check_kwargs["env"]["GIT_TERMINAL_PROMPT"] == "0"
    assert kwargs == {"check": True}
    assert args[0] == [sys.executable, "-m", "pip", "install", "--quiet", PIP_TARGET]
    requirement = Requirement(args[0][-1])  # a valid PEP 508 direct reference to the repository
    assert requirement.name == "riser-lite" and requirement.url.startswith("git+https://github.com/someone/riser-fork")
    assert fake_colab == ["widgets"]


@pytest.mark.parametrize("answer", [subprocess.CompletedProcess(LS_REMOTE, 128, "", "not found"),
                                    subprocess.CompletedProcess(LS_REMOTE, 0, "", "")],
                         ids=["missing-or-private", "no-such-branch"])
def test_setup_cell_in_colab_stops_with_a_message_when_the_repository_is_unreachable(answer, monkeypatch,
                                                                                   fake_colab):
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        return answer

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(SystemExit, match="Cannot reach branch main of https://github.com/someone/riser-fork"):
        exec(colab.setup_cell_source(FORK), {})  # noqa: S102
    assert calls == [LS_REMOTE] and fake_colab == []  # pip never ran


def test_setup_cell_in_colab_stops_when_pip_fails(monkeypatch, fake_colab):
    def run(cmd, check=False, **kwargs):
        if cmd[0] == "git":
            return subprocess.CompletedProcess(cmd, 0, "abc\trefs/heads/main\n", "")
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(subprocess.CalledProcessError):
        exec(colab.setup_cell_source(FORK), {})  # noqa: S102
    assert fake_colab == []  # a failed install is reported, not followed by half a set-up


def _bare_notebook(path: Path, title: str = "# Title\n\n**Learning goals**\n\n1. one") -> Path:
    cells = [nbformat.v4.new_markdown_cell(title),
             nbformat.v4.new_code_cell("SMOKE = False", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def test_sync_notebook_adds_updates_and_is_idempotent(tmp_path):
    path = _bare_notebook(tmp_path / "07_new.ipynb")
    problems = colab.notebook_problems(path, FORK)
    assert len(problems) == 2 and "Colab badge" in problems[0] and "setup cell" in problems[1]
    assert colab.sync_notebook(path, FORK) is True
    assert colab.notebook_problems(path, FORK) == []
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].source == ("# Title\n\n" + colab.badge_markdown("07_new.ipynb", FORK)
                                  + "\n\n**Learning goals**\n\n1. one")
    assert [c.source for c in nb.cells[1:]] == [colab.setup_cell_source(FORK), "SMOKE = False", "x = 1"]
    text = path.read_text()
    assert colab.sync_notebook(path, FORK) is False and path.read_text() == text  # untouched when in sync

    assert colab.sync_notebook(path, "fork/riser") is True  # another fork: replaced in place, not added
    nb = nbformat.read(path, as_version=4)
    assert colab.badge_links(nb.cells[0].source) == [colab.colab_url("07_new.ipynb", "fork/riser")]
    assert nb.cells[0].source.count("Open In Colab") == 1 and "\n\n\n" not in nb.cells[0].source
    assert len(nb.cells) == 4 and nb.cells[1].source == colab.setup_cell_source("fork/riser")
    assert any("differs" in p for p in colab.notebook_problems(path, FORK))

    assert colab.sync_notebook(path, None) is True  # unpublished: the badge goes, the cell explains
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].source == "# Title\n\n**Learning goals**\n\n1. one"
    assert colab.notebook_problems(path, None) == [] and "REPO = None" in nb.cells[1].source
    assert "no Colab badge (REPO unset)" in colab.notebook_problems(_bare_notebook(
        tmp_path / "08.ipynb", "# T\n\n" + colab.badge_markdown("08.ipynb", FORK)), None)[0]


def test_notebook_problems_name_a_badge_to_another_notebook_and_an_edited_setup_cell(tmp_path):
    path = _bare_notebook(tmp_path / "02_sft.ipynb")
    colab.sync_notebook(path, FORK)
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source = nb.cells[0].source.replace("02_sft.ipynb", "01_data.ipynb")  # copied badge
    nb.cells[1].source += "\nprint('hi')"
    nbformat.write(nb, path)
    problems = colab.notebook_problems(path, FORK)
    assert len(problems) == 2
    assert "02_sft.ipynb" in problems[0] and "01_data.ipynb" in problems[0]
    assert "cell 1 (setup) differs" in problems[1]
    with pytest.raises(ValueError, match="title"):
        colab.sync_notebook(_bare_notebook(tmp_path / "x.ipynb", title="no title"))


def _set_repo_tool():
    spec = importlib.util.spec_from_file_location("set_repo", ROOT / "tools" / "set_repo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_set_repo_tool_checks_syncs_and_rewrites_the_constant(tmp_path, monkeypatch, capsys):
    tool = _set_repo_tool()
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name in ("01_a.ipynb", "02_b.ipynb"):
        _bare_notebook(folder / name)
    assert tool.main(["--check", "--notebooks", str(folder)]) == 1
    assert capsys.readouterr().out.count("\n") == 2  # the setup cell is missing (no badge while unset)
    assert tool.main(["--notebooks", str(folder)]) == 0
    assert tool.main(["--check", "--notebooks", str(folder)]) == 0

    module = tmp_path / "colab.py"  # a copy: the real constant is never rewritten by a test
    module.write_text((ROOT / "riser_lab" / "colab.py").read_text())
    monkeypatch.setattr(tool, "COLAB_MODULE", module)
    assert tool.main(["me/my-fork", "--notebooks", str(folder)]) == 0
    assert 'REPO: str | None = "me/my-fork"  #' in module.read_text()
    assert module.read_text().count("me/my-fork") == 1
    for name in ("01_a.ipynb", "02_b.ipynb"):
        assert colab.notebook_problems(folder / name, "me/my-fork") == []
    assert tool.set_repo_constant("me/my-fork", module) is False
    capsys.readouterr()
    assert tool.main(["not a repo", "--notebooks", str(folder)]) == 2  # a message, not a traceback
    assert "OWNER/NAME" in capsys.readouterr().err


# --------------------------------------------------------------- where widgets cannot be shown

def _views():
    records = [{"step": 0, "loss": 2.0}, {"step": 1, "loss": 1.0}]
    group = {"history": ["H"], "target": "T", "items": [0, 1], "titles": ["T", "X"], "probs": [0.6, 0.3],
             "rewards": [1.0, 0.0]}
    pair = {"prompt": "p", "chosen": "A\n", "rejected": "B\n", "margin": 0.5}
    return {
        "LiveCurve": lambda: widgets.LiveCurve(records=records, min_interval_s=0.0),
        "TrainingDashboard": lambda: widgets.TrainingDashboard(
            {"riser": [{"step": 0, "rollouts_used": 8, "learnable_fraction": 0.5}]},
            builder=viz.sample_efficiency),
        "RolloutInspector": lambda: widgets.RolloutInspector([group, group]),
        "SampleEfficiencyExplorer": lambda: widgets.SampleEfficiencyExplorer(
            lambda g, t: {"learnable_fraction": g / 16}, (2, 4), (1.0,)),
        "PairExplorer": lambda: widgets.PairExplorer([pair]),
        "TokenView": lambda: widgets.TokenView(["A", "\n"], ratios=[1.0, 1.3], branching=[True, False]),
    }


@pytest.mark.parametrize("name", list(_views()))
def test_views_fall_back_to_static_figures_without_a_widget_front_end(name, monkeypatch):
    """No widget front end (plain kernel, nbconvert, a viewer): the views build and show plain plotly
    figures and HTML, never an ipywidget that would print as text."""
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    monkeypatch.setattr(widgets, "widgets_available", lambda: False)
    shown = []
    monkeypatch.setattr(widgets, "_display", lambda *objects: shown.extend(objects))
    view = _views()[name]()
    assert view.static is True and type(view.figure) is go.Figure
    view.show()
    assert shown and not any(isinstance(obj, ipywidgets.Widget) for obj in shown)
    figures = [obj for obj in shown if isinstance(obj, go.Figure)]
    assert len(figures) == 1 and figures[0].data == view.figure.data and figures[0].data


@pytest.mark.parametrize("name", ["RolloutInspector", "SampleEfficiencyExplorer"])
def test_views_are_live_widgets_where_a_front_end_renders_them(name, monkeypatch):
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    monkeypatch.setattr(widgets, "widgets_available", lambda: True)
    shown = []
    monkeypatch.setattr(widgets, "_display", lambda *objects: shown.extend(objects))
    view = _views()[name]()
    assert view.static is False and isinstance(view.output, ipywidgets.Output) and view.figure.data
    assert view.output.outputs[0]["data"]["application/vnd.plotly.v1+json"]["data"]  # the figure, drawn
    view.show()
    assert shown == [view.widget] and view.widget.children[-1] is view.output


# --------------------------------------------------------------- what installing the package does in Colab

COLAB_CONSTRAINTS = ROOT / "tests" / "fixtures" / "colab_constraints.txt"
# Imported by riser_lite but installed by another dependency (IPython comes with ipywidgets) or present only
# in Colab (google.colab).
PROVIDED = {"IPython": "ipywidgets", "google": None}
DISTRIBUTIONS = {"sklearn": "scikit-learn"}  # import name -> distribution name, where they differ


def _third_party_imports() -> set[str]:
    """Top-level names of every module riser_lite and riser_lab import that are neither theirs nor the
    standard library."""
    import ast

    names = set()
    for path in [*(ROOT / "riser_lite").rglob("*.py"), *(ROOT / "riser_lab").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    own = ("riser_lite", "riser_lab", "__future__")
    names = {n for n in names if n not in sys.stdlib_module_names and n not in own}
    return {DISTRIBUTIONS.get(n, n) for n in names}


def _runtime_requirements() -> dict[str, Requirement]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name: Requirement(r) for r in project["dependencies"]}


def test_runtime_dependencies_are_exactly_what_the_library_imports():
    imports, requirements = _third_party_imports(), _runtime_requirements()
    assert imports - set(PROVIDED) == set(requirements), "pyproject.toml and riser_lite's imports disagree"
    assert all(provider in requirements for provider in PROVIDED.values() if provider)
    assert "jupyterlab" not in requirements and "anywidget" not in requirements  # the `lab` extra has them


def test_runtime_lower_bounds_admit_colabs_pins():
    """Offline half of the Colab check: every pinned version satisfies the package's own lower bounds."""
    requirements = _runtime_requirements()
    pins = [Requirement(line) for line in COLAB_CONSTRAINTS.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert len(pins) >= 15
    for pin in pins:
        if pin.name in requirements:
            version = next(iter(pin.specifier)).version
            assert requirements[pin.name].specifier.contains(version), (pin, requirements[pin.name])


def _pypi_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_installing_the_package_keeps_colabs_jupyter_pins(tmp_path):
    """`pip install --dry-run -c <Colab's pins> .` resolves with every pin kept and pulls in no JupyterLab."""
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable from here (CI runs this check with network)")
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "-c", str(COLAB_CONSTRAINTS), str(ROOT)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"pip cannot install riser-lite beside Colab's pins:\n{done.stderr[-3000:]}"
    import json

    installs = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    for line in COLAB_CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pin = Requirement(line)
            name = pin.name.lower().replace("_", "-")
            assert installs.get(name, next(iter(pin.specifier)).version) == next(iter(pin.specifier)).version
    assert "jupyterlab" not in installs and "anywidget" not in installs
    assert installs["riser-lite"] == "0.1.0"
