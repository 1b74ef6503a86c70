"""Nothing lost: --overwrite only of run folders, RL lineage, weights checksums, damaged run files named."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from riser_lab.cli import main
from riser_lite import runs
from riser_lite.rl.config import RLConfig
from riser_lite.rl.trainer import train_rl
from riser_lite.sft import SFTConfig, run_sft


def tiny_sft(data: Path, out: Path, seed: int = 0) -> Path:
    return run_sft(runs.dataset_spec("synthetic", data), preset="micro", out=out, seed=seed,
                   config=SFTConfig(epochs=1, batch_size=16, progress=False))


def tiny_rl(**overrides) -> RLConfig:
    base = dict(algo="riser", steps=2, prompts_per_step=2, group_size=2, oversample=4, inner_epochs=1,
                eval_every=0)
    return RLConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def sft_runs(small_data, tmp_path_factory):
    """Two SFT runs of different seeds (so different weights) on the small synthetic data."""
    root = tmp_path_factory.mktemp("sft")
    return tiny_sft(small_data, root / "a", seed=0), tiny_sft(small_data, root / "b", seed=1)


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------- ownership


def test_overwrite_refuses_a_folder_that_is_not_a_run(small_data, tmp_path, capsys):
    mine = tmp_path / "home"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    code = main(["sft", "--path", str(small_data), "--model", "micro", "--epochs", "1", "--out", str(mine),
                 "--overwrite"])
    assert code == 2
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]  # nothing written either
    err = capsys.readouterr().err
    assert "is not a riser-lite folder" in err and len(err.strip().splitlines()) == 1


def test_sft_into_a_non_empty_folder_is_refused_without_overwrite(small_data, tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(runs.RunError, match="not a riser-lite folder"):
        tiny_sft(small_data, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_clear_run_folder_removes_only_the_runs_own_files(sft_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sft_runs[0], run)
    (run / "my_notes.txt").write_text("keep")
    (run / "eval_notes.json").write_text("mine")  # matches the eval_*.json that format 1 deleted
    runs.write_json(runs.own_entry(run, "eval_test_beam.json"), {})  # an evaluation the package wrote
    kept = runs.clear_run_folder(run)
    assert kept == ["eval_notes.json", "my_notes.txt"] and (run / "my_notes.txt").read_text() == "keep"
    assert (run / "eval_notes.json").read_text() == "mine" and runs.owned_entries(run) == []


def test_clearing_a_folder_keeps_a_users_file_inside_an_owned_run_folder(tmp_path):
    # A demo's layout: out/grpo (owned by the demo) holds seed0, an owned run folder.
    def demo_folder(user_file: bool) -> Path:
        grpo = runs.claim_outputs(tmp_path / f"demo-{user_file}" / "grpo", "demo", ["seed0"])
        seed = runs.claim_outputs(grpo / "seed0", "run", ["metrics.jsonl"])
        (seed / "metrics.jsonl").write_text("{}\n")
        if user_file:
            (seed / "my_notes.txt").write_text("keep")
        return grpo

    grpo = demo_folder(user_file=False)
    assert runs.remove_owned_folder(grpo) == [] and not grpo.exists()  # everything was the package's
    grpo = demo_folder(user_file=True)
    assert runs.remove_owned_folder(grpo) == ["seed0"]  # kept, and said so
    assert (grpo / "seed0" / "my_notes.txt").read_text() == "keep"
    assert not (grpo / "seed0" / "metrics.jsonl").exists()


def test_overwrite_of_a_run_folder_retrains_and_keeps_foreign_files(sft_runs, small_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sft_runs[0], run)
    (run / "my_notes.txt").write_text("keep")
    before = runs.read_config(run)["parameters"]
    run_sft(runs.dataset_spec("synthetic", small_data), preset="micro", out=run, seed=3, overwrite=True,
            config=SFTConfig(epochs=1, batch_size=16, progress=False))
    assert runs.read_config(run)["seed"] == 3 and runs.read_config(run)["parameters"] == before
    assert (run / "my_notes.txt").read_text() == "keep"


def test_a_file_as_out_is_refused_before_anything_is_written(small_data, tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("a,b\n")
    with pytest.raises(runs.RunError, match="is a file"):
        tiny_sft(small_data, target)
    assert target.read_text() == "a,b\n"


# ---------------------------------------------------------------------------------------------- lineage


def test_rl_refuses_to_write_into_its_start_run(sft_runs, capsys):
    start = sft_runs[0]
    before = runs.file_sha256(start / "model" / "model.safetensors")
    code = main(["rl", "--run", str(start), "--out", str(start), "--steps", "1"])
    assert code == 2 and "is the start run" in capsys.readouterr().err
    assert runs.file_sha256(start / "model" / "model.safetensors") == before
    assert "rl" not in runs.read_config(start)


def test_rl_into_an_sft_run_folder_is_refused(sft_runs):
    with pytest.raises(runs.RunError, match="holds an SFT run"):
        train_rl(sft_runs[0], tiny_rl(), out=sft_runs[1])


def test_rl_records_its_lineage_and_refuses_a_resume_from_another_start(sft_runs, tmp_path):
    a, b = sft_runs
    out = tmp_path / "rl"
    train_rl(a, tiny_rl(steps=1), out=out)
    lineage = runs.read_config(out)["lineage"]
    assert lineage["start_run"] == str(a.resolve()) and lineage["start_stage"] == "sft"
    assert lineage["start_weights_sha256"] == runs.read_json(a / "model" / runs.CHECKSUM_FILE)
    assert lineage["start_weights_sha256"]["model.safetensors"] == runs.file_sha256(a / "model" /
                                                                                     "model.safetensors")
    with pytest.raises(runs.RunError, match="continues RL from"):
        train_rl(b, tiny_rl(steps=1), out=out)
    assert runs.read_config(out)["lineage"] == lineage  # untouched by the refused resume
    assert [r["step"] for r in train_rl(a, tiny_rl(steps=1), out=out).records] == [1]  # same start: resumes
    train_rl(b, tiny_rl(steps=1), out=out, resume=False)  # starting over takes the new start
    assert runs.read_config(out)["lineage"]["start_run"] == str(b.resolve())


def test_rl_resume_refused_when_the_start_was_retrained(sft_runs, tmp_path):
    start = tmp_path / "sft"
    shutil.copytree(sft_runs[0], start)
    out = tmp_path / "rl"
    train_rl(start, tiny_rl(steps=1), out=out)
    shutil.rmtree(start / "model")
    shutil.copytree(sft_runs[1] / "model", start / "model")  # same path, other weights
    with pytest.raises(runs.RunError, match="weights have changed"):
        train_rl(start, tiny_rl(steps=1), out=out)


def test_an_rl_run_as_start_needs_the_explicit_flag(sft_runs, tmp_path, capsys):
    first = tmp_path / "rl1"
    train_rl(sft_runs[0], tiny_rl(steps=1), out=first)
    with pytest.raises(runs.RunError, match="is an RL run"):
        train_rl(first, tiny_rl(steps=1), out=tmp_path / "rl2")
    assert not (tmp_path / "rl2").exists()
    code = main(["rl", "--run", str(first), "--out", str(tmp_path / "rl2"), "--steps", "1"])
    assert code == 2 and "allow_rl_start=True" in capsys.readouterr().err
    train_rl(first, tiny_rl(steps=1), out=tmp_path / "rl2", allow_rl_start=True)
    lineage = runs.read_config(tmp_path / "rl2")["lineage"]
    assert lineage["start_stage"] == "rl"
    assert lineage["start_lineage"]["start_run"] == str(sft_runs[0].resolve())


# ---------------------------------------------------------------------------------------------- checksums


def test_flipped_bytes_in_saved_weights_are_named(sft_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sft_runs[0], run)
    flip_byte(run / "model" / "model.safetensors")
    with pytest.raises(runs.RunError, match=r"model\.safetensors: checksum mismatch"):
        runs.load_run(run)


def test_flipped_bytes_in_a_checkpoint_are_named(sft_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sft_runs[0], run)
    folder = next((run / "state" / "sft").glob("ckpt-*"))
    flip_byte(folder / "weights.safetensors")
    with pytest.raises(runs.RunError, match=r"weights\.safetensors: checksum mismatch"):
        runs.load_checkpoint(run, "sft")


# ---------------------------------------------------------------------------------------------- damaged files


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "config.json").write_text('{"format": 1, "data": '), r"config\.json: not valid JSON"),
    (lambda run: (run / "config.json").write_bytes(b"\xff\xfe{}"), r"config\.json: byte 0 is not UTF-8"),
    (lambda run: (run / "model" / "config.json").unlink(), r"model/config\.json: file not found"),
    (lambda run: (run / "model" / "checksums.json").write_text("[1"), r"checksums\.json: not valid JSON"),
])
def test_damaged_run_files_are_named(sft_runs, tmp_path, damage, message):
    run = tmp_path / "run"
    shutil.copytree(sft_runs[0], run)
    damage(run)
    with pytest.raises(runs.RunError, match=message):
        runs.load_run(run)


def test_truncated_weights_without_checksums_are_named(sft_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sft_runs[0], run)
    (run / "model" / runs.CHECKSUM_FILE).unlink()  # as saved before checksums were recorded
    weights = run / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(runs.RunError, match=r"model: the saved model does not load"):
        runs.load_run(run)


def test_damaged_latest_json_is_named(sft_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sft_runs[0], run)
    (run / "state" / "sft" / "latest.json").write_text('{"checkpoint": ')
    with pytest.raises(runs.RunError, match=r"latest\.json: not valid JSON"):
        runs.load_checkpoint(run, "sft")
    (run / "state" / "sft" / "latest.json").write_text('{"checkpoint": "ckpt-99"}')
    with pytest.raises(runs.RunError, match="names checkpoint 'ckpt-99', which is not a folder"):
        runs.load_checkpoint(run, "sft")


def test_evaluate_cli_names_a_damaged_config(sft_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(sft_runs[0], run)
    (run / "config.json").write_text("{")
    with pytest.raises(SystemExit) as exit_info:  # argparse: --run must be a readable run folder
        main(["evaluate", "--run", str(run)])
    assert exit_info.value.code == 2 and "config.json: not valid JSON" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- metrics


def test_truncate_metrics_stops_at_the_first_damaged_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"stage": "rl", "step": s}).encode() for s in (1, 2)]
    path.write_bytes(b"\n".join([*lines, b'{"stage": "rl", "step": 3, "loss": \xff}',
                                 json.dumps({"stage": "rl", "step": 4}).encode()]) + b"\n")
    with pytest.warns(RuntimeWarning, match="line 3: byte"):
        message = runs.truncate_metrics(path, "rl", after_step=4)
    assert "line 3: byte" in message and "not UTF-8" in message and "ends at rl step 2" in message
    assert [r["step"] for r in runs.read_metrics(path)] == [1, 2]
    path.write_text('{"stage": "rl", "step": 1}\n{"stage": "rl", "step": "two"}\n')
    with pytest.warns(RuntimeWarning, match="step 'two' is not an integer"):
        runs.truncate_metrics(path, "rl", after_step=9)
    assert [r["step"] for r in runs.read_metrics(path)] == [1]
    path.write_text('{"stage": "rl", "step": 1}\n')
    assert runs.truncate_metrics(path, "rl", after_step=9) is None  # a whole file: nothing to say


def test_rl_resume_over_a_damaged_metrics_line_says_so(sft_runs, tmp_path):
    out = tmp_path / "rl"
    train_rl(sft_runs[0], tiny_rl(steps=2), out=out)
    metrics = out / runs.METRICS_FILE
    first, second = metrics.read_bytes().splitlines()
    metrics.write_bytes(first + b"\n" + second[:20] + b"\xff\n")  # cut and garbled, as by a failing disk
    with pytest.warns(RuntimeWarning, match=r"metrics\.jsonl, line 2: byte"):
        result = train_rl(sft_runs[0], tiny_rl(steps=2), out=out)
    assert [r["step"] for r in result.records] == [1]  # step 2's record is lost, and said to be
    assert metrics.read_bytes() == first + b"\n"
    assert torch.isfinite(torch.tensor(result.records[0]["loss"]))


def test_sft_resume_over_a_damaged_metrics_line_says_so(sft_runs, small_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sft_runs[0], run)
    config = runs.read_config(run)
    del config["results"]  # as if interrupted after its last checkpoint
    runs.write_json(run / runs.CONFIG_FILE, config)
    metrics = run / runs.METRICS_FILE
    lines = metrics.read_bytes().splitlines()
    metrics.write_bytes(b"\n".join([lines[0], b"\x00\xff", *lines[1:]]) + b"\n")
    with pytest.warns(RuntimeWarning, match=r"metrics\.jsonl, line 2: byte 1 is not UTF-8"):
        tiny_sft(small_data, run)
    assert [r["step"] for r in runs.read_metrics(run, "sft")] == [json.loads(lines[0])["step"]]
