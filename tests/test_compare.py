"""The experiments layer: statistics against hand computations, the variants' switches, and a small
comparison end to end (JSON structure, same users everywhere, reuse of finished runs, value sanity).
The sweep and the choice rule of the lab: tests/test_lab_sweep.py."""

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from riser_lab import compare
from riser_lab.cli import build_parser
from riser_lab.cli.experiments import compare_config_from_args
from riser_lab.compare import (
    DEFAULT_VARIANTS,
    VARIANTS,
    CompareConfig,
    format_table,
    mean_records,
    rl_config,
    run_compare,
    summarize_seeds,
)
from riser_lite.data import load_dataset
from riser_lite.eval.metrics import hits_at_k, ndcg_values_at_k, paired_test, sign_flip_pvalue

# ---------------------------------------------------------------------------------------------- statistics


def brute_force_pvalue(d) -> float:
    """Share of all 2^n sign patterns whose |mean| is at least the observed |mean|."""
    d = np.asarray(d, dtype=float)
    observed = abs(d.mean())
    flips = [abs(np.mean(np.array(signs) * d)) for signs in itertools.product((1, -1), repeat=len(d))]
    return float(np.mean([f >= observed - 1e-12 for f in flips]))


def test_sign_flip_pvalue_by_hand():
    # ±1 ±2 ±3: only +++ and --- reach |sum| = 6 of 8 patterns.
    assert sign_flip_pvalue([1, 2, 3]) == 0.25
    # ±0.5 ±0.25: sums 0.75, 0.25, -0.25, -0.75; |sum| >= 0.75 for 2 of 4.
    assert sign_flip_pvalue([0.5, 0.25]) == 0.5
    # ±3 ±1 ±1: |sum| = 5 twice, 3 four times, 1 twice; observed 5 -> 2/8.
    assert sign_flip_pvalue([3, 1, 1]) == 0.25
    assert sign_flip_pvalue([1, -1]) == 1.0  # observed mean 0: every pattern is as extreme
    assert sign_flip_pvalue([0.0, 0.0, 0.0]) == 1.0
    assert sign_flip_pvalue([2.0]) == 1.0  # one user: +2 and -2 are equally extreme


def test_sign_flip_pvalue_exact_matches_brute_force():
    rng = np.random.default_rng(0)
    for n in range(1, 9):
        d = rng.choice([-1.0, 0.0, 0.5, 1.0], size=n)
        assert sign_flip_pvalue(d, num_permutations=10_000) == pytest.approx(brute_force_pvalue(d), abs=1e-12)


def test_sign_flip_pvalue_monte_carlo_approximates_the_exact_value():
    d = np.array([0.3, 0.1, -0.05, 0.2, 0.4, -0.1, 0.25, 0.0, 0.15, -0.2])  # 1024 patterns
    exact = brute_force_pvalue(d)
    assert 0.02 < exact < 0.5
    mc = sign_flip_pvalue(d, num_permutations=1000, seed=3)  # fewer than 2^10: random flips
    assert mc == sign_flip_pvalue(d, num_permutations=1000, seed=3)  # seeded
    assert abs(mc - exact) < 4 * np.sqrt(exact * (1 - exact) / 1000) + 1 / 1001
    # Never 0: (1 + hits) / (1 + R), even when no random pattern is as extreme (all differences positive).
    assert sign_flip_pvalue(np.ones(40), num_permutations=200) == pytest.approx(1 / 201)


def test_paired_test_is_the_mean_of_differences():
    a = np.array([1.0, 0.0, 1.0, 1.0, 0.5])
    b = np.array([0.0, 0.0, 1.0, 0.5, 0.5])
    test = paired_test(a, b, num_bootstrap=500, num_permutations=100, seed=1)
    assert test["diff"] == pytest.approx(np.mean(a - b)) == pytest.approx(a.mean() - b.mean())
    assert test["lo"] <= test["diff"] <= test["hi"]
    assert test["p_value"] == brute_force_pvalue(a - b)  # 2^5 = 32 <= 100 patterns: exact
    assert test["n"] == 5
    same = paired_test(a, a, num_bootstrap=100)
    assert (same["diff"], same["lo"], same["hi"], same["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="equal length"):
        paired_test(a, b[:3])


def test_summarize_seeds_by_hand():
    per_seed = [{"hr@10": np.array([1.0, 0.0, 0.0, 1.0])}, {"hr@10": np.array([1.0, 1.0, 0.0, 0.0])},
                {"hr@10": np.array([0.0, 0.0, 0.0, 1.0])}]
    summaries, averaged = summarize_seeds(per_seed, CompareConfig(num_bootstrap=300))
    s = summaries["hr@10"]
    assert s["per_seed"] == [0.5, 0.5, 0.25]
    assert s["value"] == pytest.approx(np.mean([0.5, 0.5, 0.25]))
    assert s["seed_sd"] == pytest.approx(np.std([0.5, 0.5, 0.25], ddof=1))
    assert averaged["hr@10"] == pytest.approx([2 / 3, 1 / 3, 0.0, 2 / 3])  # per user, over seeds
    assert s["lo"] <= s["value"] <= s["hi"] and s["n"] == 4


def test_mean_records_averages_step_by_step():
    a = [{"step": 1, "x": 1.0, "algo": "grpo"}, {"step": 2, "x": 3.0, "y": 1.0}]
    b = [{"step": 1, "x": 2.0, "algo": "grpo"}, {"step": 2, "x": 5.0}, {"step": 3, "x": 9.0}]
    assert mean_records([a, b]) == [{"step": 1.0, "x": 1.5}, {"step": 2.0, "x": 4.0}]  # common steps, keys


def test_aggregate_by_hand():
    """Seed means, paired differences and which baselines each variant is tested against, on made-up ranks."""
    config = CompareConfig(variants=("grpo", "riser", "riser-no-clip"), seeds=(0, 1), ks=(1, 10),
                           num_bootstrap=100)
    sft = {"ranks": [0, None, 5, 12], "top_items": [[]] * 4}
    ranks = {("grpo", 0): [0, None, None, 3], ("grpo", 1): [1, None, 5, None],
             ("riser", 0): [0, 2, 5, 9], ("riser", 1): [0, 0, None, 9],
             ("riser-no-clip", 0): [0, 2, 5, 9], ("riser-no-clip", 1): [0, 0, None, 9]}
    runs = {key: {"ranks": r, "top_items": [[]] * 4, "rl": {"gradient_prompt_fraction": 0.5 + key[1] / 4}}
            for key, r in ranks.items()}
    models = compare.aggregate(config, sft, runs)
    assert set(models["grpo"]["paired"]) == {"sft"}
    assert set(models["riser"]["paired"]) == {"grpo", "sft"}
    assert set(models["riser-no-clip"]["paired"]) == {"grpo", "riser", "sft"}  # an ablation vs full RISER
    # HR@10 per user, mean over seeds: grpo [1, 0, .5, .5], riser [1, 1, .5, 1], SFT [1, 0, 1, 0].
    assert models["grpo"]["metrics"]["hr@10"]["value"] == pytest.approx(0.5)
    assert models["riser"]["metrics"]["hr@10"]["per_seed"] == [1.0, 0.75]
    assert models["riser"]["paired"]["grpo"]["hr@10"]["diff"] == pytest.approx(0.375)  # mean of [0, 1, 0, .5]
    assert models["riser"]["paired"]["sft"]["hr@10"]["diff"] == pytest.approx(0.375)  # mean of [0, 1, -.5, 1]
    assert models["riser-no-clip"]["paired"]["riser"]["hr@10"]["diff"] == 0.0  # identical ranks
    assert models["riser-no-clip"]["paired"]["riser"]["hr@10"]["p_value"] == 1.0
    assert models["riser"]["rl"]["gradient_prompt_fraction"] == pytest.approx(0.625)  # mean over seeds
    assert models["sft"]["metrics"]["hr@1"]["value"] == 0.25  # one model, one "seed"


# ---------------------------------------------------------------------------------------------- variants


def test_variants_map_to_the_right_switches():
    config = CompareConfig(draws_per_prompt=12, prompts_per_step=5, rl_steps=7)
    rl = {name: rl_config(name, config, seed=4) for name in VARIANTS}
    assert {c.draws_per_prompt() for c in rl.values()} == {12}  # the same rollout budget for every variant
    assert {(c.steps, c.prompts_per_step, c.seed) for c in rl.values()} == {(7, 5, 4)}
    switches = ("use_pairs", "use_dedup", "use_certainty_weights", "use_clipping")
    on = {name: {s for s in switches if getattr(rl[name], s)} for name in rl}
    assert on["grpo"] == on["rere"] == {"use_clipping"}
    assert on["riser"] == set(switches)
    for name, off in (("riser-no-pairs", "use_pairs"), ("riser-no-dedup", "use_dedup"),
                      ("riser-no-certainty", "use_certainty_weights"), ("riser-no-clip", "use_clipping")):
        assert on[name] == set(switches) - {off}, name  # exactly one part of RISER switched off
        assert rl[name].algo == "riser"
    assert (rl["grpo"].rollout_mode, rl["rere"].rollout_mode) == ("sample", "beam")
    assert rl["rere"].reward == "rank" and rl["riser"].reward == "hit"
    assert rl["riser"].group_size == 6 and rl["riser-no-dedup"].group_size == 12  # dedup keeps half


def test_config_validation_names_the_problem():
    for bad, match in (({"variants": ("ppo",)}, "variants"), ({"variants": ("grpo", "grpo")}, "variants"),
                       ({"seeds": ()}, "seeds"), ({"preset": "huge"}, "preset"),
                       ({"num_beams": 5}, "num_beams"),
                       ({"table_k": 3}, "table_k"), ({"eval_split": "dev"}, "eval_split"),
                       ({"items": "code"}, "items")):
        with pytest.raises(ValueError, match=match):
            CompareConfig(**bad).validate()
    CompareConfig().validate()
    CompareConfig.quick().validate()


def test_cli_builds_the_config():
    parser = build_parser()
    args = parser.parse_args(["compare", "--quick", "--variants", "grpo", "riser-no-pairs",
                              "--seeds", "3", "4", "--rl-steps", "2", "--sft-run", "x/sft"])
    config = compare_config_from_args(args)
    assert config.variants == ("grpo", "riser-no-pairs") and config.seeds == (3, 4)
    assert (config.rl_steps, config.sft_run) == (2, "x/sft")
    quick = CompareConfig.quick()
    assert (config.prompts_per_step, config.eval_examples) == (quick.prompts_per_step, quick.eval_examples)
    assert args.out == "runs/compare"
    default = compare_config_from_args(parser.parse_args(["compare", "--data", "lastfm", "--path", "/d"]))
    assert (default.variants, default.seeds, default.data, default.path) == (DEFAULT_VARIANTS, (0, 1, 2),
                                                                             "lastfm", "/d")


# ---------------------------------------------------------------------------------------------- end to end


def small_config(path: Path, sft_run: Path, **overrides) -> CompareConfig:
    base = dict(path=str(path), sft_run=str(sft_run), preset="micro", variants=("grpo", "riser"),
                seeds=(0, 1),
                rl_steps=2, prompts_per_step=4, draws_per_prompt=8, eval_examples=15, num_bootstrap=200,
                num_permutations=2000, threads=1, progress=False)
    return CompareConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def compared(small_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    config = small_config(small_data, root / "sft")  # no SFT run there yet: trained first
    results = run_compare(config, root / "out", log=lambda _: None)
    return root, config, results


def test_compare_results(compared, small_data):
    root, config, results = compared
    out = root / "out"
    assert json.loads((out / "compare.json").read_text()) == results
    models = results["models"]
    assert list(models) == ["sft", "grpo", "riser"]
    assert (root / "sft" / "model" / "model.safetensors").is_file()  # the missing SFT run was trained

    # The same test users for every run: the first 15 of the split, recorded with each evaluation.
    users = [ex.user for ex in load_dataset("synthetic", small_data).splits["test"][:15]]
    assert results["eval"]["users"] == users and results["eval"]["num_examples"] == 15
    for variant in ("grpo", "riser"):
        for seed in (0, 1):
            saved = json.loads((out / variant / f"seed{seed}" / compare.EVAL_FILE).read_text())
            assert saved["users"] == users
            assert models[variant]["seeds"][str(seed)]["ranks"] == saved["ranks"]
            assert models[variant]["seeds"][str(seed)]["rl"]["rollouts_used"] == 2 * 4 * 8  # same budget

    for name, entry in [*models.items(), *results["baselines"].items()]:
        metrics = entry["metrics"]
        for column, s in metrics.items():
            assert 0.0 <= s["lo"] <= s["value"] + 1e-12 and s["value"] <= s["hi"] + 1e-12 <= 1.0 + 1e-12, \
                (name, column)
        hr = [metrics[f"hr@{k}"]["value"] for k in config.ks]
        assert hr == sorted(hr), name  # HR@K grows with K
        assert all(metrics[f"ndcg@{k}"]["value"] <= metrics[f"hr@{k}"]["value"] + 1e-12 for k in config.ks)

    # Seed means and paired differences, recomputed by hand from the recorded per-user ranks.
    def per_user(ranks, metric):
        return hits_at_k(ranks, 10) if metric == "hr" else ndcg_values_at_k(ranks, 10)

    seeds = {v: [models[v]["seeds"][str(s)]["ranks"] for s in (0, 1)] for v in ("grpo", "riser")}
    for metric in ("hr", "ndcg"):
        riser = np.mean([per_user(r, metric) for r in seeds["riser"]], axis=0)
        grpo = np.mean([per_user(r, metric) for r in seeds["grpo"]], axis=0)
        sft = per_user(models["sft"]["ranks"], metric)
        assert models["riser"]["metrics"][f"{metric}@10"]["value"] == pytest.approx(riser.mean())
        paired = models["riser"]["paired"]
        assert paired["grpo"][f"{metric}@10"]["diff"] == pytest.approx(np.mean(riser - grpo))
        assert paired["sft"][f"{metric}@10"]["diff"] == pytest.approx(np.mean(riser - sft))
        for base in ("grpo", "sft"):
            assert 0.0 < models["riser"]["paired"][base][f"{metric}@10"]["p_value"] <= 1.0
    assert set(models["grpo"]["paired"]) == {"sft"}  # GRPO is not tested against itself
    assert "expected_ndcg@10" in models["riser"]["paired"]["grpo"]  # synthetic data: the oracle's view
    assert {"expected_sampled_hit", "expected_greedy_hit"} <= set(models["riser"]["paired"]["sft"])
    # One recommendation can hold no more probability than the oracle's top item.
    ceiling = results["baselines"]["oracle"]["metrics"]["expected_hr@1"]["value"]
    for name in models:
        assert 0.0 < models[name]["metrics"]["expected_sampled_hit"]["value"] <= ceiling + 1e-12
    assert set(results["baselines"]) == {"popularity", "prompt_oracle", "oracle"}

    # RISER turns no-hit groups into pairs: every prompt gives a gradient.
    fraction = {v: models[v]["rl"]["gradient_prompt_fraction"] for v in ("grpo", "riser")}
    assert fraction["riser"] == 1.0 >= fraction["grpo"]
    assert models["riser"]["rl"]["unique_items_per_group"] <= 4  # dedup keeps half of the 8 draws

    table = format_table(results)
    for label in ("SFT", "GRPO", "RISER", "popularity", "prompt oracle", "oracle", "E[accept] sampled"):
        assert label in table
    assert len(compare.metric_bars(results).data) == 6  # SFT, GRPO, RISER, popularity, prompt oracle, oracle
    assert len(compare.sample_efficiency(results).data) == 4  # 2 variants x (gradient, learnable)


def test_compare_reuses_finished_runs(compared, small_data, monkeypatch):
    import riser_lite.rl.trainer

    root, config, first = compared
    out = root / "out"
    calls = []
    original = riser_lite.rl.trainer.train_rl
    trainer = riser_lite.rl.trainer
    monkeypatch.setattr(trainer, "train_rl", lambda *a, **k: calls.append(a) or original(*a, **k))
    files = sorted(out.glob("*/seed*/model/model.safetensors")) + sorted(out.glob("*/*/" + compare.EVAL_FILE))
    stamps = {f: f.stat().st_mtime_ns for f in files}

    again = run_compare(config, out, log=lambda _: None)
    assert calls == []  # nothing retrained
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # nothing rewritten
    assert all(again["models"][v]["seeds"][s]["reused"] for v in ("grpo", "riser") for s in ("0", "1"))
    assert again["models"]["riser"]["metrics"] == first["models"]["riser"]["metrics"]

    # An interrupted compare (this run's evaluation missing): only that run is evaluated again, from its
    # finished checkpoint, without redoing any RL step.
    run = out / "riser" / "seed1"
    metrics_log = (run / "metrics.jsonl").read_text()
    (run / compare.EVAL_FILE).unlink()
    resumed = run_compare(config, out, log=lambda _: None)
    assert len(calls) == 1 and (run / "metrics.jsonl").read_text() == metrics_log
    assert resumed["models"]["riser"]["seeds"]["1"]["ranks"] == first["models"]["riser"]["seeds"]["1"][
        "ranks"]

    # Other RL settings in the same folders: a clear error instead of a silent mix.
    with pytest.raises(ValueError, match="other settings"):
        run_compare(small_config(small_data, root / "sft", rl_steps=3), out, log=lambda _: None)


def test_compare_on_semantic_ids_trains_a_sid_run_and_refuses_a_mismatched_one(small_data, tmp_path):
    config = small_config(small_data, tmp_path / "sft", items="sid", variants=("riser",), seeds=(0,),
                          rl_steps=1, eval_examples=5)
    results = run_compare(config, tmp_path / "out", log=lambda _: None)
    saved = json.loads((tmp_path / "sft" / "config.json").read_text())
    assert saved["data"]["items"]["form"] == "sid"  # the new SFT run writes items as codes
    rl_run = json.loads((tmp_path / "out" / "riser" / "seed0" / "config.json").read_text())
    assert rl_run["data"]["items"] == saved["data"]["items"]  # RL and its evaluation use the same codes
    evaluation = json.loads((tmp_path / "out" / "riser" / "seed0" / compare.EVAL_FILE).read_text())
    assert len(evaluation["ranks"]) == 5
    assert list(results["models"]) == ["sft", "riser"]
    with pytest.raises(ValueError, match="writes items as 'sid', not 'title'"):
        run_compare(replace(config, items="title"), tmp_path / "out2", log=lambda _: None)


def test_lambda_and_beta_reach_only_the_variants_they_belong_to(small_data, tmp_path):
    from riser_lite.rl.config import RLConfig

    config = small_config(small_data, tmp_path / "sft", lambda_pair=0.3, beta_kl=0.05)
    default = RLConfig()
    assert compare.rl_config("riser", config, 0).lambda_pair == 0.3
    assert compare.rl_config("riser-no-pairs", config, 0).lambda_pair == default.lambda_pair
    assert compare.rl_config("grpo", config, 0).lambda_pair == default.lambda_pair
    assert compare.rl_config("grpo", config, 0).beta_kl == 0.05
    assert compare.rl_config("sft-continued", config, 0).beta_kl == default.beta_kl
