"""The command line: a bad argument ends in one line and exit status 2, before any folder is made."""

import argparse
from pathlib import Path

import pytest

from riser_lab.cli import build_parser, main
from riser_lite import runs
from riser_lite.data import load_dataset
from riser_lite.data.native import save_dataset
from riser_lite.sft import SFTConfig, run_sft


@pytest.fixture(scope="module")
def sft_run(small_data, tmp_path_factory) -> Path:
    return run_sft(runs.dataset_spec("synthetic", small_data), preset="micro",
                   out=tmp_path_factory.mktemp("sft") / "run",
                   config=SFTConfig(epochs=1, batch_size=16, progress=False))


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse exits by itself on a bad argument
        return stop.code


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["sft", "--epochs", "0"], "argument --epochs: 0 is too small; expected an integer >= 1"),
    (["sft", "--lr", "-1"], "argument --lr: -1 is out of range; expected a finite number in (0, inf)"),
    (["sft", "--lr", "nan"], "argument --lr: nan is out of range"),
    (["sft", "--batch-size", "0"], "argument --batch-size: 0 is too small"),
    (["sft", "--seed", "-1"], "argument --seed: -1 is too small; expected an integer >= 0"),
    (["rl", "--steps", "0"], "argument --steps: 0 is too small"),
    (["rl", "--lr", "inf"], "argument --lr: inf is out of range"),
    (["rollout", "--group-size", "0"], "argument --group-size: 0 is too small"),
    (["evaluate", "--max-examples", "0"], "argument --max-examples: 0 is too small"),
    (["demo", "--sft-epochs", "0"], "argument --sft-epochs: 0 is too small"),
    (["compare", "--rl-lr", "0"], "argument --rl-lr: 0 is out of range"),
    (["sft", "--dropout", "1"], "argument --dropout: 1 is out of range; expected a finite number in "
                                "[0, 1)"),
])
def test_bad_numbers_exit_with_one_line(args, message, sft_run, tmp_path, capsys):
    command = args[0]
    if command in ("rl", "rollout", "evaluate"):
        args = [*args, "--run", str(sft_run)]
    if command == "rl":
        args = [*args, "--out", str(tmp_path / "out")]
    assert exit_code(args) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_missing_run_folder_and_file_as_out(sft_run, tmp_path, capsys):
    assert exit_code(["rl", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "argument --run:" in one_error_line(capsys) and not (tmp_path / "o").exists()
    target = tmp_path / "file.txt"
    target.write_text("mine")
    assert exit_code(["rl", "--run", str(sft_run), "--out", str(target)]) == 2
    assert "argument --out:" in one_error_line(capsys) and target.read_text() == "mine"
    assert exit_code(["evaluate", "--run", str(target)]) == 2
    assert "is a file, not a run folder" in one_error_line(capsys)


def test_arguments_that_do_not_fit_together_are_one_line(sft_run, tmp_path, capsys):
    out = tmp_path / "rl"
    assert exit_code(["rl", "--run", str(sft_run), "--out", str(out), "--prompt-users", "heldout"]) == 2
    assert "heldout" in one_error_line(capsys) and not out.exists()


def test_debug_shows_the_traceback(sft_run, tmp_path):
    with pytest.raises(runs.RunError, match="is the start run"):
        main(["rl", "--run", str(sft_run), "--out", str(sft_run), "--steps", "1", "--debug"])


def test_an_empty_validation_split_is_refused_before_a_folder_is_made(small_data, tmp_path, capsys):
    dataset = load_dataset("synthetic", small_data)
    dataset.splits["valid"] = []
    dataset.oracle = None
    save_dataset(dataset, tmp_path / "data")
    out = tmp_path / "run"
    assert exit_code(["sft", "--data", "native", "--path", str(tmp_path / "data"), "--out", str(out),
                      "--model", "micro"]) == 2
    line = one_error_line(capsys)
    assert "has no valid examples" in line and "field 'valid'" in line
    assert not out.exists()  # nothing half-made for `evaluate` to call resumable


def test_checkpoint_every_is_a_tenth_of_the_steps():
    from riser_lite.rl.trainer import checkpoint_every

    assert [checkpoint_every(s) for s in (1, 8, 40, 200, 5000)] == [1, 1, 4, 20, 20]


def test_rl_short_run_keeps_a_checkpoint_per_step(sft_run, tmp_path, capsys):
    out = tmp_path / "rl"
    assert main(["rl", "--run", str(sft_run), "--out", str(out), "--steps", "2"]) == 0
    assert runs.read_json(out / runs.STATE_DIR / "rl" / "latest.json")["step"] == 2
    assert runs.read_config(out)["runtime"]["threads"] == 1


def test_every_subcommand_has_debug_and_checked_numbers():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in sub.choices.items():
        assert "--debug" in subparser._option_string_actions, name
        for action in subparser._actions:
            assert action.type not in (int, float), (name, action.dest)  # every number is range-checked


def test_sft_into_a_run_of_another_recipe_is_one_line(sft_run, small_data, capsys):
    before = runs.file_sha256(sft_run / "model" / "model.safetensors")
    assert exit_code(["sft", "--path", str(small_data), "--model", "micro", "--epochs", "2", "--out",
                      str(sft_run)]) == 2
    assert "holds a run with a different ['sft']" in one_error_line(capsys)
    assert runs.file_sha256(sft_run / "model" / "model.safetensors") == before


@pytest.mark.parametrize("extra, message", [
    (["--sid-sasrec", "{tmp}"], "no saved SASRec model (expected sasrec.json"),
])
def test_a_bad_sasrec_source_for_codes_is_one_line(extra, message, small_data, tmp_path, capsys):
    out = tmp_path / "run"
    extra = [arg.replace("{tmp}", str(tmp_path)) for arg in extra]
    assert exit_code(["sft", "--path", str(small_data), "--items", "sid", *extra, "--out", str(out),
                      "--model", "micro"]) == 2
    assert message in one_error_line(capsys) and not out.exists()
