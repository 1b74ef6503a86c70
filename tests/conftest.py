"""Shared test fixtures."""

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers share the cores: one intra-op thread each avoids oversubscription, which makes
    # the small models of the tests many times slower.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def lastfm_path() -> Path:
    """The real LastFM release (read in place, never copied): ``../shared/data/lastfm`` from the project root,
    or the directory named by ``RISER_LITE_LASTFM``. Tests using it are skipped where it is absent."""
    path = Path(os.environ.get("RISER_LITE_LASTFM") or Path(__file__).resolve().parents[2] / "shared" / "data"
                / "lastfm")
    if not (path / "train.jsonl").is_file():
        if os.environ.get("CI"):  # CI has the data beside the clone: a missing copy is a set-up error there
            pytest.fail(f"LastFM data not found at {path} (set RISER_LITE_LASTFM)")
        pytest.skip(f"LastFM data not found at {path} (set RISER_LITE_LASTFM)")
    return path
