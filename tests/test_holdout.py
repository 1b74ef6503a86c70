"""Training users held out of SFT for RL prompts: the split, SFT on the rest, RL and sft-continued on them."""

import random

import numpy as np
import pytest

from riser_lite import runs
from riser_lite.data.holdout import split_rl_holdout
from riser_lite.data.types import DataError, Example
from riser_lite.rl.config import RLConfig
from riser_lite.rl.trainer import prompt_examples, step_seed, train_rl
from riser_lite.sft import SFTConfig, run_sft, train_sft


def examples_of(counts: dict[str, int]) -> list[Example]:
    """`counts[user]` training examples per user, interleaved across users (as real splits are not)."""
    rows = [Example(user, (i,), i + 1) for user, n in counts.items() for i in range(n)]
    return sorted(rows, key=lambda ex: (ex.history[0], ex.user))


COUNTS = {"u3": 1, "u0": 2, "u7": 3, "u1": 1, "u9": 2, "u2": 4, "u5": 1, "u8": 2, "u4": 1, "u6": 3}


# ---------------------------------------------------------------------------------------------- the split


def test_split_holds_out_the_seeded_share_of_sorted_users_disjointly():
    examples = examples_of(COUNTS)
    split = split_rl_holdout(examples, 0.3, seed=5)
    # By hand: sorted users u0..u9, permuted by default_rng(5), the first round(0.3 * 10) = 3 held out.
    users = sorted(COUNTS)
    expected = sorted(users[i] for i in np.random.default_rng(5).permutation(10)[:3])
    assert list(split.held_out_users) == expected
    assert expected == ["u1", "u6", "u7"]  # pinned: the rule must not change under existing run folders
    held = set(expected)
    assert split.kept == [ex for ex in examples if ex.user not in held]  # original order kept
    assert split.held_out == [ex for ex in examples if ex.user in held]
    assert {ex.user for ex in split.kept} | held == set(users) and not {ex.user for ex in split.kept} & held
    assert split.record() == {"fraction": 0.3, "seed": 5, "users_kept": 7, "users_held_out": 3,
                              "examples_kept": 20 - 7, "examples_held_out": 1 + 3 + 3}


def test_split_depends_on_the_seed_and_not_on_example_order():
    examples = examples_of(COUNTS)
    shuffled = examples[:]
    random.Random(1).shuffle(shuffled)
    split = split_rl_holdout(examples, 0.5, seed=0)
    again = split_rl_holdout(shuffled, 0.5, seed=0)
    assert again.held_out_users == split.held_out_users and again.record() == split.record()
    assert again.kept == [ex for ex in shuffled if ex.user not in split.held_out_users]
    others = {split_rl_holdout(examples, 0.5, seed=s).held_out_users for s in range(1, 6)}
    assert others - {split.held_out_users}  # other seeds choose other users


@pytest.mark.parametrize(("fraction", "held"), [(0.0, 0), (0.04, 0), (0.05, 1), (0.25, 3), (0.35, 4),
                                                (0.94, 9), (0.96, 10)])
def test_the_count_is_the_nearest_with_halves_up(fraction, held):
    split = split_rl_holdout(examples_of(COUNTS), fraction, seed=0)  # 10 users: fraction x 10, rounded
    assert len(split.held_out_users) == held


def test_holding_out_nobody_keeps_every_example_in_order():
    examples = examples_of(COUNTS)
    split = split_rl_holdout(examples, 0.0, seed=3)
    assert split.kept == examples and split.held_out == [] and split.held_out_users == ()


@pytest.mark.parametrize("fraction", [1.0, -0.1, float("nan"), "0.2"])
def test_a_bad_fraction_names_rl_holdout(fraction):
    with pytest.raises(ValueError, match=r"rl_holdout must be a number in \[0, 1\)"):
        split_rl_holdout(examples_of(COUNTS), fraction, seed=0)


# ---------------------------------------------------------------------------------------------- SFT


def test_sft_config_checks_rl_holdout_and_records_it():
    assert SFTConfig().recipe()["rl_holdout"] == 0.0
    assert SFTConfig(rl_holdout=0.25).recipe()["rl_holdout"] == 0.25
    for bad in (1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"rl_holdout must be a number in \[0, 1\)"):
            SFTConfig(rl_holdout=bad)


def fast(**overrides) -> SFTConfig:
    return SFTConfig(**{"epochs": 2, "batch_size": 8, "lr": 1e-2, "progress": False, "patience": 0,
                        **overrides})


def test_sft_trains_only_on_the_kept_users(micro_dataset, micro_start, monkeypatch):
    import riser_lite.sft as sft

    encoded = []
    original = sft.encode_examples
    monkeypatch.setattr(sft, "encode_examples",
                        lambda examples, *args: encoded.append(list(examples)) or original(examples, *args))
    model, tokenizer, _ = micro_start()
    result = train_sft(micro_dataset, model, tokenizer, fast(rl_holdout=0.25), seed=4)
    # 40 training users of one example each: round(0.25 * 40) = 10 held out, 30 examples left.
    split = split_rl_holdout(micro_dataset.splits["train"], 0.25, seed=4)
    assert result.rl_holdout == {"fraction": 0.25, "seed": 4, "users_kept": 30, "users_held_out": 10,
                                 "examples_kept": 30, "examples_held_out": 10}
    assert encoded[0] == split.kept and not {ex.user for ex in encoded[0]} & set(split.held_out_users)
    assert encoded[1] == micro_dataset.splits["valid"]  # validation untouched
    # 30 examples in batches of 8 (4 per epoch), two epochs; 40 would give 10
    assert result.summary["steps"] == 2 * 4


def test_sft_without_holdout_is_unchanged_and_records_nothing(micro_dataset, micro_start):
    import torch

    model, tokenizer, _ = micro_start()
    plain = train_sft(micro_dataset, model, tokenizer, fast(), seed=4)
    model2, _, _ = micro_start()
    zero = train_sft(micro_dataset, model2, tokenizer, fast(rl_holdout=0.0), seed=4)
    assert plain.rl_holdout is None and plain.summary["steps"] == 2 * 5  # all 40 examples
    assert plain.history == zero.history
    for a, b in zip(plain.model.parameters(), zero.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sft_refuses_a_holdout_that_leaves_nobody(micro_dataset, micro_start, tmp_path):
    model, tokenizer, _ = micro_start()
    with pytest.raises(DataError, match="rl_holdout=0.99 holds out all 40 training users"):
        train_sft(micro_dataset, model, tokenizer, fast(rl_holdout=0.99))
    with pytest.raises(DataError, match="holds out all 40"):
        run_sft(micro_dataset, preset="micro", config=fast(rl_holdout=0.99), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # checked before the folder is written


@pytest.fixture(scope="module")
def sft_runs(micro_dataset, tmp_path_factory):
    """{"data", "held", "plain"}: the micro data as a native folder, an SFT run holding out a quarter of
    the training users (1 epoch) and one holding out nobody."""
    from riser_lite.data.native import save_dataset

    root = tmp_path_factory.mktemp("holdout")
    save_dataset(micro_dataset, root / "data")
    spec = runs.dataset_spec("native", root / "data")
    config = fast(epochs=1)
    held = run_sft(spec, preset="micro", config=fast(epochs=1, rl_holdout=0.25), out=root / "held", seed=1)
    plain = run_sft(spec, preset="micro", config=config, out=root / "plain", seed=1)
    return {"data": root / "data", "held": held, "plain": plain}


def test_run_sft_records_the_split_in_config_json(sft_runs, micro_dataset):
    held, plain = runs.read_config(sft_runs["held"]), runs.read_config(sft_runs["plain"])
    split = split_rl_holdout(micro_dataset.splits["train"], 0.25, seed=1)
    assert held["rl_holdout"] == split.record() and held["sft"]["rl_holdout"] == 0.25
    assert held["rl_holdout"]["users_held_out"] == 10 and held["results"]["sft"]["steps"] == 4
    assert "rl_holdout" not in plain and plain["sft"]["rl_holdout"] == 0.0  # no split recorded


def test_cli_sft_prints_and_records_the_counts(sft_runs, tmp_path, capsys):
    from riser_lab.cli import main

    base = ["sft", "--data", "native", "--path", str(sft_runs["data"]), "--model", "micro", "--epochs", "1",
            "--batch-size", "16"]
    assert main([*base, "--out", str(tmp_path / "a"), "--rl-holdout", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert ("SFT trains on 20 examples of 20 users; 20 examples of 20 users held out for RL (rl_holdout 0.5, "
            "seed 0)") in printed
    assert runs.read_config(tmp_path / "a")["rl_holdout"]["examples_kept"] == 20
    with pytest.raises(SystemExit) as exit_info:  # argparse rejects it, as any bad option value
        main([*base, "--out", str(tmp_path / "c"), "--rl-holdout", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--rl-holdout" in err and "expected a finite number in [0, 1)" in err


# ---------------------------------------------------------------------------------------------- RL


def rl(**overrides) -> RLConfig:
    return RLConfig(**{"steps": 2, "prompts_per_step": 4, "group_size": 4, "eval_every": 0, "lr": 1e-3,
                       "seed": 2, **overrides})


def drawn(pool, config: RLConfig) -> list[list[str]]:
    """The users of the examples `train_rl` draws at each step from `pool` (its (seed, step) draw)."""
    out = []
    for step in range(1, config.steps + 1):
        rng = np.random.default_rng(step_seed(config.seed, step, 0))
        out.append([pool[i].user for i in rng.choice(len(pool), config.prompts_per_step, replace=False)])
    return out


def capture_prompts(monkeypatch) -> list[list[str]]:
    """The users of the examples each RL step collects, recorded as train_rl runs."""
    import riser_lite.rl.trainer as trainer

    seen, original = [], trainer.collect_step
    monkeypatch.setattr(trainer, "collect_step", lambda model, space, examples, *args, **kwargs: (
        seen.append([ex.user for ex in examples]) or original(model, space, examples, *args, **kwargs)))
    return seen


def test_rl_on_heldout_users_draws_only_their_examples(sft_runs, micro_dataset, tmp_path, monkeypatch):
    seen = capture_prompts(monkeypatch)
    config = rl(prompt_users="heldout")
    train_rl(sft_runs["held"], config, out=tmp_path / "rl")
    split = split_rl_holdout(micro_dataset.splits["train"], 0.25, seed=1)
    assert seen == drawn(split.held_out, config)
    assert all(user in split.held_out_users for users in seen for user in users)
    saved = runs.read_config(tmp_path / "rl")
    assert saved["rl"]["prompt_users"] == "heldout" and saved["rl_holdout"] == split.record()
    # An RL run started from this one finds the same users through the section it copied.
    assert prompt_examples(micro_dataset, saved, "heldout") == split.held_out


def test_rl_on_all_users_is_unchanged(sft_runs, micro_dataset, tmp_path, monkeypatch):
    seen = capture_prompts(monkeypatch)
    config = rl()
    train_rl(sft_runs["held"], config, out=tmp_path / "rl")
    assert seen == drawn(micro_dataset.splits["train"], config)  # every training user, as before
    assert runs.read_config(tmp_path / "rl")["rl"]["prompt_users"] == "all"


def test_rl_config_checks_prompt_users():
    assert RLConfig().prompt_users == "all"
    with pytest.raises(ValueError, match=r"prompt_users must be one of \('all', 'heldout'\), got 'some'"):
        RLConfig(prompt_users="some")


def test_heldout_prompts_need_a_start_that_held_users_out(sft_runs, micro_start, tmp_path, capsys):
    from riser_lab.cli import main

    with pytest.raises(runs.RunError, match=f"--prompt-users heldout.*{sft_runs['plain']} held out no"):
        train_rl(sft_runs["plain"], rl(prompt_users="heldout"), out=tmp_path / "a")
    with pytest.raises(runs.RunError, match="the start model .* held out no training users"):
        train_rl(micro_start(), rl(prompt_users="heldout"))
    code = main(["rl", "--run", str(sft_runs["plain"]), "--out", str(tmp_path / "b"), "--prompt-users",
                 "heldout", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--rl-holdout" in err and str(sft_runs["plain"]) in err


def test_a_recorded_split_that_no_longer_matches_the_data_is_refused(micro_dataset):
    recorded = split_rl_holdout(micro_dataset.splits["train"], 0.25, seed=1).record()
    with pytest.raises(runs.RunError, match="the data changed since SFT"):
        prompt_examples(micro_dataset, {"rl_holdout": {**recorded, "examples_held_out": 11}}, "heldout")


def test_too_few_heldout_examples_for_a_step_is_a_data_error(sft_runs):
    with pytest.raises(DataError, match="prompts_per_step=12 exceeds the 10 held-out train examples"):
        train_rl(sft_runs["held"], rl(prompt_users="heldout", prompts_per_step=12))


def test_rl_cli_passes_prompt_users(sft_runs, tmp_path):
    from riser_lab.cli import build_parser
    from riser_lab.cli.train import rl_config_from_args

    args = build_parser().parse_args(["rl", "--run", str(sft_runs["held"]), "--out", str(tmp_path / "rl"),
                                      "--prompt-users", "heldout"])
    assert rl_config_from_args(args).prompt_users == "heldout"
    assert rl_config_from_args(build_parser().parse_args(["rl", "--run", str(sft_runs["held"]), "--out",
                                                          str(tmp_path / "rl")])).prompt_users == "all"


# ---------------------------------------------------------------------------------------------- compare


def test_sft_continued_draws_the_prompts_rl_draws(sft_runs, micro_dataset, micro_start, tmp_path,
                                                  monkeypatch):
    import riser_lite.sft as sft
    from riser_lab.compare import continue_sft

    encoded = []
    original = sft.encode_examples
    monkeypatch.setattr(sft, "encode_examples",
                        lambda examples, *args: encoded.append([ex.user for ex in examples])
                        or original(examples, *args))
    model, tokenizer, _ = micro_start()
    config = rl(prompt_users="heldout", algo="grpo")
    start_config = {**runs.read_config(sft_runs["held"]), "start_run": str(sft_runs["held"])}
    continue_sft(model, tokenizer, micro_dataset, config, tmp_path, start_config=start_config)
    split = split_rl_holdout(micro_dataset.splits["train"], 0.25, seed=1)
    assert encoded == drawn(split.held_out, config)
    with pytest.raises(runs.RunError, match="held out no training users"):
        continue_sft(model, tokenizer, micro_dataset, config, tmp_path / "x")


def test_compare_cli_and_config_pass_prompt_users_to_every_variant():
    from riser_lab.cli import build_parser
    from riser_lab.cli.experiments import compare_config_from_args
    from riser_lab.compare import CompareConfig, rl_config

    args = build_parser().parse_args(["compare", "--prompt-users", "heldout", "--variants", "grpo",
                                      "sft-continued"])
    config = compare_config_from_args(args)
    assert config.prompt_users == "heldout"
    assert {rl_config(v, config, 0).prompt_users for v in ("grpo", "riser", "sft-continued")} == {"heldout"}
    assert rl_config("riser", CompareConfig(), 0).prompt_users == "all"
    with pytest.raises(ValueError, match="prompt_users must be one of"):
        CompareConfig(prompt_users="some").validate()
