"""Notebook 01 (data) in smoke mode, with assertions on what it recorded."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbrun import run_notebook  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _lastfm_dir() -> Path | None:
    path = Path(os.environ.get("RISER_LITE_LASTFM") or ROOT.parent / "shared" / "data" / "lastfm")
    return path if (path / "train.jsonl").is_file() else None


@pytest.mark.notebook
@pytest.mark.slow
def test_01_data_notebook():
    lastfm = _lastfm_dir()
    params = {"SMOKE": True, "SOLUTIONS": True, "LASTFM_PATH": str(lastfm) if lastfm else None}
    r = run_notebook(ROOT / "notebooks" / "01_data.ipynb", params, timeout=300)
    # Pinned: the bundled data and its tokenizer are deterministic, so counts are exact and the fractions
    # computed from them agree to 1e-6 (relative) wherever the notebook runs.
    assert r["synthetic_items"] == 415
    assert r["synthetic_rows"] == {"train": 4170, "valid": 200, "test": 200}
    assert r["branching_fraction"] == pytest.approx(0.3842812006, rel=1e-6)
    assert r["tokens_per_item"] == pytest.approx(6.1012048193, rel=1e-6)  # title tokens + newline + EOS
    assert r["oracle_hr@10"] == pytest.approx(0.5523734291, rel=1e-6)
    assert r["prompt_oracle_hr@10"] == pytest.approx(0.5161, abs=1e-4)  # the ceiling a prompt allows
    assert r["popularity_hr@10"] == pytest.approx(0.1203215139, rel=1e-6)  # the floor, far below the ceiling
    # The exercise, filled with the reference answer, passes its checker and gives the library's number.
    assert r["check_decision_fraction"] is True
    assert r["exercise_decision_fraction"] == pytest.approx(r["branching_fraction"], rel=1e-12)
    if lastfm is None:
        assert "lastfm_items" not in r
        pytest.skip("LastFM data not found (set RISER_LITE_LASTFM): its part of the notebook was skipped")
    assert r["lastfm_items"] == 4606
    assert r["lastfm_rows"] == {"train": 50800 - 976, "valid": 122, "test": 122}  # empty histories removed
    assert "lastfm_branching_fraction" not in r  # SMOKE skips the LastFM trie
