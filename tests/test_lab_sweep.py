"""The lab's learning-rate sweep and validation choice rule (`python -m riser_lab.sweep`,
`python -m riser_lab.choose`): the map and its curves, reuse of trained runs on validation, the rule by
hand and on the committed reference, and one-line errors on a malformed sweep file."""

import dataclasses
import json
from pathlib import Path

import pytest
from test_compare import small_config

from riser_lab import choose, compare
from riser_lab.choose import choose_settings, format_choice
from riser_lab.cli.experiments import compare_config_from_args
from riser_lab.sweep import SWEEP_FILE, build_parser, format_map, lr_folder, run_sweep, sweep_file
from riser_lite.data import load_dataset


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_sweep_command_builds_the_compare_config():
    args = build_parser().parse_args(["--lrs", "1e-4", "3e-4", "--prompt-users", "heldout", "--quick"])
    assert args.lrs == [1e-4, 3e-4] and compare_config_from_args(args).prompt_users == "heldout"


def test_sweep_maps_learning_rates_with_curves_and_the_sft_continued_baseline(small_data, tmp_path):
    from riser_lite.runs import read_metrics

    config = small_config(small_data, tmp_path / "sft", variants=("grpo", "grpo-raw", "sft-continued"),
                          seeds=(0,), rl_steps=2, rl_eval_every=1, rl_eval_examples=6)
    sweep = run_sweep(config, (1e-3, 1e-2), tmp_path / "sweep", log=lambda _: None)
    assert json.loads((tmp_path / "sweep" / SWEEP_FILE).read_text()) == json.loads(json.dumps(sweep))
    cells = {(c["variant"], c["lr"]): c for c in sweep["cells"]}
    assert set(cells) == {(v, lr) for v in config.variants for lr in (1e-3, 1e-2)}
    for cell in cells.values():
        results = json.loads((tmp_path / "sweep" / f"lr{cell['lr']:g}" / "compare.json").read_text())
        sft_value = results["models"]["sft"]["metrics"][cell["quality"]]["value"]
        assert cell["collapsed"] == (cell["metrics"][cell["quality"]] < 0.8 * sft_value)
    # Every RL curve starts at SFT's validation and then has one point per step (eval every step).
    for name in ("grpo@0.001", "grpo-raw@0.01"):
        curve = sweep["curves"][name]
        assert curve[0] == {"rollouts_used": 0, **sweep["sft_validation"]}
        assert [p["rollouts_used"] for p in curve[1:]] == [32, 64]  # 4 prompts x 8 draws per step
    # The no-RL baseline: the same steps, no rollouts, a model that moved away from SFT.
    records = read_metrics(tmp_path / "sweep" / "lr0.01" / "sft-continued" / "seed0", stage="rl")
    assert [r["step"] for r in records] == [1, 2] and all(r["rollouts_used"] == 0 for r in records)
    assert cells["sft-continued", 1e-2]["paired_vs_sft"]["hr@10"]["n"] == 15
    assert "grpo-raw" in format_map(sweep) and "lr 0.01" in format_map(sweep)


def test_choose_on_validation_reuses_the_runs_and_applies_the_rule(small_data, tmp_path, monkeypatch):
    import riser_lite.rl.trainer

    config = small_config(small_data, tmp_path / "sft", variants=("grpo", "sft-continued"), seeds=(0,),
                          rl_steps=2)
    out = tmp_path / "sweep"
    tested = run_sweep(config, (1e-3, 1e-2), out, log=lambda _: None)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(riser_lite.rl.trainer, "train_rl", no_training)
    monkeypatch.setattr(compare, "continue_sft", no_training)
    valid = run_sweep(dataclasses.replace(config, eval_split="valid"), (1e-3, 1e-2), out, log=lambda _: None)
    assert (out / sweep_file("valid")).is_file() and (out / "sweep.json").is_file()
    assert {c["split"] for c in valid["cells"]} == {"valid"}
    assert {c["split"] for c in tested["cells"]} == {"test"}
    results = json.loads((out / "lr0.001" / "compare_valid.json").read_text())
    valid_users = [ex.user for ex in load_dataset("synthetic", small_data).splits["valid"]]
    assert results["eval"]["users"] == valid_users  # all 10 validation users (15 asked)

    # The rule by hand: within 0.01 of SFT's list quality, the most accepted; else the best list.
    chosen = choose_settings([valid])
    for variant in ("grpo", "sft-continued"):
        cells = [c for c in valid["cells"] if c["variant"] == variant]
        quality, sft_quality = cells[0]["quality"], cells[0]["sft_metrics"][cells[0]["quality"]]
        kept = [c for c in cells if c["metrics"][quality] >= sft_quality - 0.01]
        if kept:
            want = max(kept, key=lambda c: c["metrics"]["expected_sampled_hit"])
        else:
            want = max(cells, key=lambda c: c["metrics"][quality])
        assert chosen[variant]["cell"] == want and chosen[variant]["kept_list"] == bool(kept)
    assert "grpo" in format_choice(chosen)
    with pytest.raises(ValueError, match="validation sweeps"):
        choose_settings([tested])

    # The command: the same choice as JSON; a folder without a validation sweep is one clear line.
    assert choose.main([str(out), "--out", str(tmp_path / "choice.json")]) == 0
    assert json.loads((tmp_path / "choice.json").read_text()) == json.loads(json.dumps(chosen))
    assert choose.main([str(tmp_path)]) == 2


def test_the_committed_reference_choice_follows_the_rule():
    """docs/results/synthetic_rl.json: each chosen setting is what the validation rule picks among the grid's
    seed-0 cells (the map), and its test row holds the runs of that setting."""
    path = Path(__file__).resolve().parents[1] / "docs" / "results" / "synthetic_rl.json"
    reference = json.loads(path.read_text())
    for variant, pick in reference["chosen"].items():
        cells = [c for c in reference["map"] if c["variant"] == variant]
        sft_quality = pick["valid_sft"]["expected_ndcg@10"]
        kept = [c for c in cells if c["valid_expected_ndcg@10"] >= sft_quality - 0.01]
        best = (max(kept, key=lambda c: c["valid_accept_sampled"]) if kept
                else max(cells, key=lambda c: c["valid_expected_ndcg@10"]))
        assert (best["lr"], best["lambda_pair"], best["beta_kl"]) == (pick["lr"], pick["lambda_pair"],
                                                                     pick["beta_kl"]), variant
        assert pick["kept_list"] == bool(kept)
        row = reference["test"][variant]
        assert (row["lr"], row["lambda_pair"], row["beta_kl"]) == (pick["lr"], pick["lambda_pair"],
                                                                   pick["beta_kl"])
        assert len(row["seeds"]) == len(row["runs"]) == len(row["expected_ndcg@10"]["per_seed"])


def test_sweep_rates_that_print_alike_get_their_own_folders():
    assert lr_folder(Path("o"), 1e-4) != lr_folder(Path("o"), 1.000001e-4)
    assert lr_folder(Path("o"), 1e-3).name == "lr0.001"


def sweep_cell(**fields) -> dict:
    metrics = {"ndcg@10": 0.30, "sampled_hit": 0.20}
    return {"variant": "riser", "lr": 1e-4, "split": "valid", "quality": "ndcg@10", "metrics": metrics,
            "sft_metrics": {"ndcg@10": 0.31, "sampled_hit": 0.10}, **fields}


@pytest.mark.parametrize(("cells", "expected"), [
    ([sweep_cell(), {k: v for k, v in sweep_cell().items() if k != "metrics"}],
     "field 'metrics': cell 2: missing or not a dict"),
    ([sweep_cell(metrics={"ndcg@10": 0.3})], "field 'metrics': cell 1: no number for column 'sampled_hit'"),
    ([sweep_cell(lr="fast")], "field 'lr': cell 1: missing or not a number"),
    ("cells", "expected a JSON object with a list 'cells'"),
])
def test_choose_names_the_cell_and_field_of_a_malformed_sweep(tmp_path, capsys, cells, expected):
    path = tmp_path / "sweep_valid.json"
    path.write_text(json.dumps({"cells": cells}))
    assert choose.main([str(path)]) == 2
    assert expected in one_line(capsys.readouterr().err)


def test_choose_out_writes_a_new_file_or_an_earlier_choice_and_never_a_users_file(tmp_path, capsys):
    sweep = tmp_path / "sweep_valid.json"
    sweep.write_text(json.dumps({"cells": [sweep_cell()]}))
    choice = tmp_path / "choice.json"
    assert choose.main([str(sweep), "--out", str(choice)]) == 0
    assert json.loads(choice.read_text())["riser"]["kept_list"] is True
    assert choose.main([str(sweep), "--out", str(choice)]) == 0  # its own earlier choice: replaced
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": 1}')
    capsys.readouterr()
    assert choose.main([str(sweep), "--out", str(mine)]) == 2
    assert mine.read_text() == '{"mine": 1}'
    assert "exists and is not an earlier choice" in one_line(capsys.readouterr().err)
