"""Point the notebooks' Colab badges and setup cells at a repository, or check that they do.

    python tools/set_repo.py                  # write the badge and setup cell of REPO into every notebook
    python tools/set_repo.py OWNER/NAME       # publish: set REPO in riser_lab/colab.py, then sync
    python tools/set_repo.py --check          # list notebooks out of sync; exit 1 if any

The canonical texts are `riser_lab.colab.badge_markdown` and `riser_lab.colab.setup_cell_source`
(another branch than ``main``: change BRANCH in riser_lab/colab.py, then run this script).
Notebooks are rewritten only where they differ (the badge line in the title cell, the setup cell).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from riser_lab import colab  # noqa: E402

COLAB_MODULE = ROOT / "riser_lab" / "colab.py"
_REPO_LINE = re.compile(r'^REPO: str \| None = (None|"[^"]*")', re.MULTILINE)


def set_repo_constant(repo: str, module: Path | None = None) -> bool:
    """Rewrite the ``REPO: str | None = ...`` line of riser_lab/colab.py (or `module`); True if it changed."""
    module = module or COLAB_MODULE
    text = module.read_text()
    new, count = _REPO_LINE.subn(f'REPO: str | None = "{colab.check_repo(repo)}"', text, count=1)
    if count != 1:
        raise ValueError(f"{module} has no line starting with 'REPO: str | None = ' to rewrite")
    if new == text:
        return False
    module.write_text(new)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", nargs="?", default=None, help=f"GitHub OWNER/NAME (now: {colab.REPO})")
    parser.add_argument("--notebooks", type=Path, default=ROOT / colab.NOTEBOOK_DIR, help="notebook folder")
    parser.add_argument("--check", action="store_true", help="only report notebooks that are out of sync")
    args = parser.parse_args(argv)
    try:
        repo = colab.check_repo(args.repo) if args.repo else colab.REPO  # None: no badges, an explaining cell
    except ValueError as error:
        print(f"set_repo.py: {error}", file=sys.stderr)
        return 2
    notebooks = sorted(args.notebooks.glob("*.ipynb"))
    if not notebooks:
        print(f"no notebooks in {args.notebooks}", file=sys.stderr)
        return 1
    if args.check:
        bad = 0
        for path in notebooks:
            for problem in colab.notebook_problems(path, repo):
                print(f"{path.name}: {problem}")
                bad += 1
        return 1 if bad else 0
    if args.repo and set_repo_constant(repo):
        print(f"riser_lab/colab.py: REPO = {repo!r}")
    for path in notebooks:
        if colab.sync_notebook(path, repo):
            print(f"{path.name}: badge and setup cell updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
