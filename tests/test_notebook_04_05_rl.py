"""Notebooks 04 (preference pairs) and 05 (clipped RL) in smoke mode, with assertions on what they record."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbrun import run_notebook  # noqa: E402

from riser_lite.rl.config import RLConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One folder for both notebooks: 05 reuses the smoke SFT run that 04 trained."""
    return tmp_path_factory.mktemp("rl-notebooks")


@pytest.mark.notebook
@pytest.mark.slow
def test_04_preference_pairs(run_dir):
    r = run_notebook(ROOT / "notebooks" / "04_preference_pairs.ipynb",
                     {"SMOKE": True, "SOLUTIONS": True, "SFT_RUN": str(run_dir / "sft")}, timeout=600)
    # Every group is learnable or converted (an all-hit group would need 8 distinct draws of the target).
    assert r["gradient_prompt_fraction"] == 1.0
    assert r["converted_groups"] > 0 and r["pairs"] >= r["converted_groups"]
    assert 0.0 <= r["learnable_fraction"] < 1.0
    for loss in ("simpo", "dpo"):
        assert r[f"{loss}_last_loss"] < r[f"{loss}_first_loss"]  # the pair loss goes down on its own pairs
        assert r[f"{loss}_accuracy"] >= r["sft_pair_accuracy"]
        assert 0.0 <= r[f"val_hr@10_{loss}"] <= 1.0
    assert {"prompt", "chosen", "rejected"} <= set(r["export_columns"])
    assert r["export_rows"] == r["pairs"]
    # The exercises, filled with the reference answers, pass their checkers and give the library's numbers on
    # the notebook's own batch: the same pairs, and the SimPO loss where section 4's training started.
    assert r["check_convert_groups_to_pairs"] is True and r["check_simpo_loss"] is True
    assert r["exercise_pairs_match"] is True
    simpo = r["exercise_simpo_loss"]
    assert simpo["yours"] == pytest.approx(simpo["library"], rel=1e-5)
    assert simpo["library"] == pytest.approx(r["simpo_first_loss"], rel=1e-4) and simpo["library"] > 0


@pytest.mark.notebook
@pytest.mark.slow
def test_05_clipped_rl(run_dir):
    params = {"SMOKE": True, "SOLUTIONS": True, "SFT_RUN": str(run_dir / "sft"),
              "RL_DIR": str(run_dir / "rl")}
    r = run_notebook(ROOT / "notebooks" / "05_clipped_rl.ipynb", params, timeout=900)
    assert r["clip_frac_first_update"] == 0.0  # rho = 1 on the first pass: nothing can be clipped
    if r["learnable_groups_clip_demo"] > 0:
        assert r["clip_frac_last_update"] > 0.0
    assert 0.0 < r["branching_fraction"] < 1.0
    assert r["riser_gradient_prompt_fraction"] == 1.0
    assert r["grpo_gradient_prompt_fraction"] == pytest.approx(r["grpo_learnable_fraction"])
    assert r["grpo_rollouts_used"] == r["riser_rollouts_used"]  # the same rollout budget
    for name in ("SFT", "GRPO", "RISER"):
        assert 0.0 <= r[f"test_ndcg@10_{name}"] <= r[f"test_hr@10_{name}"] <= 1.0
    # The exercises, filled with the reference answers, pass their checkers and agree with the library on the
    # notebook's data.
    assert r["check_clipped_surrogate"] is True and r["check_certainty_weights"] is True
    surrogate = r["exercise_surrogate_loss"]
    assert surrogate["yours"] == pytest.approx(surrogate["library"], rel=1e-5, abs=1e-7)
    # Decisions are a share f of the tokens; with forced tokens at weight d they carry f / (f + d (1 - f)).
    f, d = r["branching_fraction"], RLConfig().certainty_d
    assert r["exercise_decision_weight_share"] == pytest.approx(f / (f + d * (1 - f)), rel=1e-5)
    assert r["exercise_decision_weight_share"] > f  # forced tokens weigh less than decisions
