"""Colab support: the one repository constant, and the badge and setup cell every notebook carries.

The setup cell runs before the package exists, so each notebook holds a copy of `setup_cell_source`;
`sync_notebook` writes the copies (``python tools/set_repo.py OWNER/NAME`` also sets `REPO`) and
`notebook_problems` lists where they differ. While `REPO` is None there are no badges and the cell, in Colab,
stops saying what to do; once set, it first checks that the repository answers (``git ls-remote``, never
asking for credentials), so a missing or private repository gets a message naming it.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO: str | None = None  # GitHub OWNER/NAME the notebooks install from and link to (None: not published)
BRANCH = "main"  # branch the badges open and the setup cell installs
NOTEBOOK_DIR = "notebooks"  # folder of the notebooks inside the repository
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
SETUP_MARKER = "# Setup"  # the setup cell starts with this line prefix (how `find_setup_cell` knows it)
_BADGE_LINE = re.compile(r"^\[!\[Open In Colab\]\([^)\s]*\)\]\((?P<url>[^)\s]*)\)[ \t]*$", re.MULTILINE)
_REPO_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")

_SETUP_TEMPLATE = '''\
# Setup. In Colab: install riser-lite from its repository and turn on interactive widgets.
# Elsewhere (JupyterLab, `make lab`, a local install) this cell does nothing.
import subprocess
import sys

REPO = {repo}  # GitHub OWNER/NAME riser-lite is published at (set with tools/set_repo.py)

if "google.colab" in sys.modules:
    if REPO is None:
        raise SystemExit("No repository is set for riser-lite: in a copy of the repository run "
                         "`python tools/set_repo.py OWNER/NAME`, push it to GitHub and open the notebooks "
                         "from there (docs/teaching_guide.md, 'Publishing for Colab').")
    URL = "https://github.com/" + REPO
    found = subprocess.run(["git", "ls-remote", "--heads", URL, "{branch}"], capture_output=True,
                           text=True, env={{"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin"}})
    if found.returncode != 0 or not found.stdout.strip():
        raise SystemExit(f"Cannot reach branch {branch} of {{URL}}: it does not exist, is private, or "
                         "there is no network. Set REPO to a public repository holding riser-lite.")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "riser-lite @ git+" + URL + "@{branch}"], check=True)
    from google.colab import output

    output.enable_custom_widget_manager()'''


def check_repo(repo: str | None) -> str:
    """`repo` if it looks like a GitHub ``owner/name``; otherwise a ValueError saying what was expected."""
    if repo is None:
        raise ValueError("no repository is set: run `python tools/set_repo.py OWNER/NAME` "
                         "(the GitHub repository riser-lite is published at)")
    if not isinstance(repo, str) or not _REPO_NAME.match(repo):
        raise ValueError(f"expected a GitHub repository as OWNER/NAME (e.g. 'someone/riser-lite'), "
                         f"got {repo!r}")
    return repo


def colab_url(notebook: str, repo: str | None = REPO, branch: str = BRANCH) -> str:
    """Colab's address for a notebook of the repository (`notebook`: a file name such as 01_data.ipynb)."""
    name = Path(notebook).name
    return f"https://colab.research.google.com/github/{check_repo(repo)}/blob/{branch}/{NOTEBOOK_DIR}/{name}"


def badge_markdown(notebook: str, repo: str | None = REPO, branch: str = BRANCH) -> str:
    """The one-line markdown badge that opens `notebook` in Colab."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(notebook, repo, branch)})"


def badge_links(markdown: str) -> list[str]:
    """The targets of every "Open In Colab" badge in a markdown text."""
    return [m.group("url") for m in _BADGE_LINE.finditer(markdown)]


def setup_cell_source(repo: str | None = REPO, branch: str = BRANCH) -> str:
    """The canonical source of every notebook's setup cell (REPO None: it explains how to set one)."""
    literal = "None" if repo is None else f'"{check_repo(repo)}"'
    return _SETUP_TEMPLATE.format(repo=literal, branch=branch)


def find_setup_cell(cells: list) -> int | None:
    """Index of the setup cell (the first code cell, when it starts with `SETUP_MARKER`), else None."""
    for index, cell in enumerate(cells):
        if cell.get("cell_type") == "code":
            return index if cell.get("source", "").startswith(SETUP_MARKER) else None
    return None


def _with_badge(title_cell: str, badge: str | None) -> str:
    """The title cell's text with exactly one badge on its own line after the '# ' title line (None: none)."""
    title, *rest = [line for line in title_cell.split("\n") if not _BADGE_LINE.match(line)]
    while rest and not rest[0].strip():
        rest.pop(0)
    badge_lines = [] if badge is None else ["", badge]
    return "\n".join([title, *badge_lines, "", *rest]).rstrip("\n")


def notebook_problems(path: str | Path, repo: str | None = REPO, branch: str = BRANCH) -> list[str]:
    """What differs from the canonical badge and setup cell in one notebook (empty when it is in sync)."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    problems = []
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown":
        problems.append("the first cell must be the markdown title cell (it holds the Colab badge)")
    else:
        links = badge_links(first.source)
        expected = [] if repo is None else [colab_url(path.name, repo, branch)]
        if links != expected:
            want = f"one Colab badge linking to {expected[0]}" if expected else "no Colab badge (REPO unset)"
            problems.append(f"the title cell must hold {want}; found {links}")
    index = find_setup_cell(nb.cells)
    if index is None:
        problems.append(f"the first code cell must be the setup cell (starting with {SETUP_MARKER!r})")
    elif nb.cells[index].source != setup_cell_source(repo, branch):
        problems.append(f"cell {index} (setup) differs from riser_lab.colab.setup_cell_source(); "
                        "run tools/set_repo.py")
    return problems


def sync_notebook(path: str | Path, repo: str | None = REPO, branch: str = BRANCH) -> bool:
    """Write the canonical badge and setup cell into a notebook; True if the file changed.

    The badge goes after the title line (replacing any Colab badge; none when no repository is set); the
    setup cell replaces a first code cell that starts with `SETUP_MARKER`, else it is inserted after the
    title cell. Nothing else changes.
    """
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if not nb.cells or nb.cells[0].cell_type != "markdown" or not nb.cells[0].source.startswith("# "):
        raise ValueError(f"{path}: the first cell must be a markdown cell starting with a '# ' title")
    before = nbformat.writes(nb)
    badge = None if repo is None else badge_markdown(path.name, repo, branch)
    nb.cells[0].source = _with_badge(nb.cells[0].source, badge)
    index = find_setup_cell(nb.cells)
    if index is None:
        nb.cells.insert(1, nbformat.v4.new_code_cell(setup_cell_source(repo, branch)))
    else:
        nb.cells[index].source = setup_cell_source(repo, branch)
    if nbformat.writes(nb) == before:
        return False
    nbformat.write(nb, path)
    return True
