"""Small helpers for the notebooks: record key metrics, detect the front end."""

from __future__ import annotations

import json
import os
from pathlib import Path

RECORD_ENV = "RISER_LITE_RECORD"  # names the JSON file `record` adds to (the notebook tests set it)


def record(name: str, value):
    """Return `value`, and add it under `name` to the JSON file `RECORD_ENV` names (if set), so the notebook
    tests can assert on what a notebook measured."""
    value = json.loads(json.dumps(value))  # fail early on values a test could not read back
    path = os.environ.get(RECORD_ENV)
    if path:
        target = Path(path)
        data = json.loads(target.read_text()) if target.exists() else {}
        data[name] = value
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(target)  # atomic: an interrupted kernel never leaves a half-written record file
    return value


def widgets_available() -> bool:
    """True when ipywidgets can be used (a kernel with a widget-capable front end is likely)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
