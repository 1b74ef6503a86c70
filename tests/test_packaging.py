"""Set-up files agree with each other."""

import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {_name(d): d.replace(" ", "") for d in project["dependencies"]}
    env_file = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env_file["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs one pip section"
    packages = [d for d in pip_lists[0] if not d.startswith(("-", "--"))]
    env = {_name(d): d.replace(" ", "") for d in packages}
    assert env == deps, f"environment.yml and pyproject.toml disagree: {set(env.items()) ^ set(deps.items())}"
    assert any(d.startswith("-e .") for d in pip_lists[0]), "environment.yml must install the package itself"
    assert any(str(d).startswith("python>=3.10") for d in env_file["dependencies"])


def test_torch_is_never_pinned_to_upgrade():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = [d for d in project["dependencies"] if _name(d) == "torch"]
    assert torch and ">=" in torch[0] and "==" not in torch[0]
    makefile = (ROOT / "Makefile").read_text()
    assert "torch==$(TORCH_VERSION)" in makefile and "--upgrade torch" not in makefile


def test_console_script_and_readme_commands():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["riser-lite"] == "riser_lab.cli:main"
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
