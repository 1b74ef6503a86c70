"""Set-up files agree with each other."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {_name(d): d.replace(" ", "") for d in project["dependencies"]}
    lines = [ln.strip()[2:].strip() for ln in (ROOT / "environment.yml").read_text().splitlines()
             if ln.strip().startswith("- ") and not ln.strip().startswith("- pip:")]
    pip_section = [ln for ln in lines if ln and not ln.startswith(("python", "pip", "-e", "--"))]
    env = {_name(d): d.replace(" ", "") for d in pip_section}
    assert env == deps, f"environment.yml and pyproject.toml disagree: {set(env.items()) ^ set(deps.items())}"
    assert any(ln.startswith("-e .") for ln in lines), "environment.yml must install the package itself"


def test_torch_is_never_pinned_to_upgrade():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = [d for d in project["dependencies"] if _name(d) == "torch"]
    assert torch and ">=" in torch[0] and "==" not in torch[0]
    makefile = (ROOT / "Makefile").read_text()
    assert "torch==$(TORCH_VERSION)" in makefile and "--upgrade torch" not in makefile


def test_console_script_and_readme_commands():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["riser-lite"] == "riser_lite.cli:main"
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
