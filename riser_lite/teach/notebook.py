"""Small helpers for the notebooks: record key metrics, detect the front end.

`record(name, value)` keeps a JSON-serialisable value and, when ``RISER_LITE_RECORD`` names a JSON file (the
notebook tests set it), adds it there so the tests can assert on what a notebook measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RECORD_ENV = "RISER_LITE_RECORD"
_recorded: dict[str, object] = {}


def record(name: str, value):
    """Record a named value (shown back to the reader, and saved for tests when RISER_LITE_RECORD is set)."""
    value = json.loads(json.dumps(value))  # fail early on values a test could not read back
    _recorded[name] = value
    path = os.environ.get(RECORD_ENV)
    if path:
        target = Path(path)
        data = json.loads(target.read_text()) if target.exists() else {}
        data[name] = value
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(target)  # atomic: an interrupted kernel never leaves a half-written record file
    return value


def recorded() -> dict[str, object]:
    """Everything recorded in this kernel so far."""
    return dict(_recorded)


def widgets_available() -> bool:
    """True when ipywidgets can be used (a kernel with a widget-capable front end is likely)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
