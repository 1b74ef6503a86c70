"""Nothing lost, second pass: each case of a careless user's tries, with the exact outcome asserted.

Ownership by a marker file and its manifest, results never silently replaced, one writer at a time, diverged
training as a failure, data checks (LastFM, the 20-candidate files), and one-line errors for Ctrl-C, refused
pickles, unknown attention kernels and checksum keys that point outside a run.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_safety import tiny_rl  # a few cheap RL steps

from riser_lab.candidates import NUM_CANDIDATES, load_candidate_windows
from riser_lab.cli import main
from riser_lite import runs
from riser_lite.data import DataError
from riser_lite.data.lastfm import load_lastfm
from riser_lite.rl.trainer import train_rl
from riser_lite.sft import SFTConfig, run_sft

SFT_ARGS = ["--model", "micro", "--epochs", "1", "--batch-size", "16"]


@pytest.fixture(scope="module")
def sft_run(small_data, tmp_path_factory):
    """A finished SFT run of the micro backbone on the small synthetic data."""
    out = tmp_path_factory.mktemp("sft") / "run"
    return run_sft(runs.dataset_spec("synthetic", small_data), preset="micro", out=out, seed=0,
                   config=SFTConfig(epochs=1, batch_size=16, progress=False))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes: equal snapshots mean nothing was touched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def users_lookalike(folder: Path) -> Path:
    """A user's own folder whose config.json happens to have a "format" key (format 1 took it for a run)."""
    (folder / "model").mkdir(parents=True)
    (folder / "config.json").write_text('{"format": 1, "experiment": "mine"}')
    (folder / "metrics.jsonl").write_text('{"step": 1, "acc": 0.9}\n')
    (folder / "model" / "my_weights.bin").write_bytes(b"\x00weights")
    return folder


# ---------------------------------------------------------------------------------------------- ownership


def test_sft_overwrite_on_a_users_folder_with_a_format_key_deletes_nothing(small_data, tmp_path, capsys):
    mine = users_lookalike(tmp_path / "mine")
    before = snapshot(mine)
    code = main(["sft", "--path", str(small_data), *SFT_ARGS, "--out", str(mine), "--overwrite"])
    assert code == 2 and snapshot(mine) == before
    line = one_line(capsys.readouterr().err)
    assert "is not a riser-lite folder" in line and runs.MARKER_FILE in line and "re-run" in line


def test_rl_into_a_users_folder_with_a_format_key_deletes_nothing(sft_run, tmp_path, capsys):
    mine = users_lookalike(tmp_path / "mine")
    before = snapshot(mine)
    code = main(["rl", "--run", str(sft_run), "--out", str(mine), "--steps", "1"])
    assert code == 2 and snapshot(mine) == before
    assert "is not a riser-lite folder" in one_line(capsys.readouterr().err)


def test_sft_overwrite_keeps_a_users_eval_notes_beside_the_run(sft_run, small_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    (run / "eval_notes.json").write_text('{"mine": true}')  # matches format 1's eval_*.json glob
    runs.write_json(runs.own_entry(run, "eval_test_beam.json"), {"old": "evaluation"})
    run_sft(runs.dataset_spec("synthetic", small_data), preset="micro", out=run, seed=3, overwrite=True,
            config=SFTConfig(epochs=1, batch_size=16, progress=False))
    assert (run / "eval_notes.json").read_text() == '{"mine": true}'
    assert not (run / "eval_test_beam.json").exists()  # the package's own evaluation of the old run: gone
    assert runs.read_config(run)["seed"] == 3
    assert set(runs.owned_entries(run)) == {"config.json", "metrics.jsonl", "state", "model"}


def test_the_marker_holds_the_package_the_format_and_the_manifest(sft_run):
    marker = json.loads((sft_run / runs.MARKER_FILE).read_text())
    assert marker == {"package": "riser-lite", "format": 3, "kind": "run",
                      "files": ["config.json", "metrics.jsonl", "state", "model"]}


def test_a_run_folder_of_format_1_is_refused_with_how_to_rerun_it(sft_run, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(sft_run, old)
    (old / runs.MARKER_FILE).unlink()  # what format 1 wrote: config.json with "format": 1, no marker
    before = snapshot(old)
    with pytest.raises(SystemExit) as exit_info:  # --run is checked while the arguments are parsed
        main(["evaluate", "--run", str(old), "--max-examples", "1"])
    assert exit_info.value.code == 2
    assert f"has no {runs.MARKER_FILE}" in capsys.readouterr().err
    with pytest.raises(runs.RunError, match=r"must be re-run with a new --out"):
        runs.load_run(old)
    assert main(["sft", "--path", "unused", *SFT_ARGS, "--out", str(old)]) == 2
    assert "must be re-run with a new --out" in one_line(capsys.readouterr().err)
    assert snapshot(old) == before


@pytest.mark.parametrize("old_format", [1, 2])  # 2: runs that recorded the RL / SFT fields since removed
def test_a_marker_of_another_format_is_refused(sft_run, tmp_path, old_format):
    old = tmp_path / "old"
    shutil.copytree(sft_run, old)
    marker = json.loads((old / runs.MARKER_FILE).read_text())
    runs.write_json(old / runs.MARKER_FILE, {**marker, "format": old_format})
    with pytest.raises(runs.RunError, match=rf"run-folder format {old_format}, this version reads format 3 "
                                            r"only.*re-run"):
        runs.load_run(old)
    with pytest.raises(runs.RunError, match=f"run-folder format {old_format}"):
        runs.check_outputs(old)


def test_a_user_file_of_a_name_the_package_writes_is_refused_in_an_owned_folder(sft_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    (run / "eval_test_beam_first1.json").write_text("mine")
    with pytest.raises(runs.RunError, match=r"eval_test_beam_first1.json exists and was not written by "):
        runs.own_entry(run, "eval_test_beam_first1.json")
    assert (run / "eval_test_beam_first1.json").read_text() == "mine"


# ---------------------------------------------------------------------------------------------- results kept


def test_a_finished_rl_run_rerun_with_another_algo_is_refused(sft_run, tmp_path, capsys):
    out = tmp_path / "rl"
    train_rl(sft_run, tiny_rl(steps=1), out=out)
    shutil.rmtree(out / "state")  # finished and its resume state removed: format 1 replaced it silently
    before = snapshot(out)
    code = main(["rl", "--run", str(sft_run), "--out", str(out), "--algo", "grpo", "--steps", "1"])
    assert code == 2 and snapshot(out) == before
    line = one_line(capsys.readouterr().err)
    assert "holds an RL run of another config (algo 'riser')" in line and "another --out" in line


def test_evaluate_of_the_first_examples_never_replaces_the_full_evaluation(sft_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    assert main(["evaluate", "--run", str(run), "--batch-size", "32"]) == 0
    full = (run / "eval_test_beam.json").read_bytes()
    assert main(["evaluate", "--run", str(run), "--batch-size", "32", "--max-examples", "1"]) == 0
    assert (run / "eval_test_beam.json").read_bytes() == full
    assert json.loads(full)["num_examples"] == 20
    assert json.loads((run / "eval_test_beam_first1.json").read_text())["num_examples"] == 1
    assert {"eval_test_beam.json", "eval_test_beam_first1.json"} <= set(runs.owned_entries(run))


@pytest.mark.parametrize(("command", "files"), [
    (["sasrec"], ["eval_test.json"]),
    (["compare", "--rl-steps", "1"], ["compare.json"]),
    (["demo"], ["results.json", "report.html"]),
])
def test_sasrec_compare_demo_refuse_a_users_folder_holding_their_file_names(command, files, small_data,
                                                                            tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in files:
        (mine / name).write_text(f"my own {name}")
    code = main([command[0], "--path", str(small_data), *command[1:], "--out", str(mine)])
    assert code == 2
    assert {p.name: p.read_text() for p in mine.iterdir()} == {name: f"my own {name}" for name in files}
    assert "is not a riser-lite folder" in one_line(capsys.readouterr().err)


def test_sasrec_over_a_sasrec_folder_of_another_dataset_is_refused(small_data, tmp_path, capsys):
    from riser_lite.data.synthetic import SyntheticConfig, write_synthetic

    other = tmp_path / "other"
    write_synthetic(other, SyntheticConfig(num_genres=2, series_per_genre=1, standalones_per_genre=6,
                                           num_train_users=20, num_valid_users=5, num_test_users=5,
                                           min_length=4, max_length=6), seed=1)
    args = ["--out", str(tmp_path / "s")]
    assert main(["sasrec", "--path", str(small_data), *args]) == 0
    before = snapshot(tmp_path / "s")
    capsys.readouterr()
    assert main(["sasrec", "--path", str(other), *args]) == 2
    assert snapshot(tmp_path / "s") == before
    assert "holds a SASRec of other settings or data" in one_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------- one writer


def test_a_second_writer_is_refused_and_a_stale_lock_is_named(sft_run, small_data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    args = ["sft", "--path", str(small_data), *SFT_ARGS, "--out", str(run), "--overwrite"]
    with runs.writer_lock(run):  # this process writes the run: a second command is refused
        before = snapshot(run)
        assert main(args) == 2
        assert snapshot(run) == before
        line = one_line(capsys.readouterr().err)
        assert f"is being written by another riser-lite process (PID {os.getpid()}" in line
    assert not (run / runs.LOCK_FILE).exists()  # released
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (run / runs.LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert f"stale lock of process {dead.pid}, which is no longer running" in line
    assert f"rm {run / runs.LOCK_FILE}" in line
    assert runs.read_config(run)["seed"] == 0  # refused before --overwrite removed anything


def test_rl_takes_the_lock_too(sft_run, tmp_path):
    out = tmp_path / "rl"
    runs.claim_outputs(out)
    with runs.writer_lock(out), pytest.raises(runs.RunError, match="being written by another"):
        train_rl(sft_run, tiny_rl(steps=1), out=out)
    assert sorted(p.name for p in out.iterdir()) == [runs.MARKER_FILE]


# ---------------------------------------------------------------------------------------------- divergence


def test_sft_with_a_huge_learning_rate_fails_naming_the_step_and_keeps_the_checkpoint(small_data, tmp_path,
                                                                                     capsys):
    out = tmp_path / "run"
    with pytest.raises(runs.DivergedError) as info:
        run_sft(runs.dataset_spec("synthetic", small_data), preset="micro", out=out, seed=0,
                config=SFTConfig(epochs=2, batch_size=16, lr=1e30, checkpoint_every=1, progress=False))
    message = str(info.value)
    match = re.match(r"sft: the training loss is (nan|inf) at step (\d+): training diverged", message)
    step = int(match.group(2))
    assert step >= 2 and f"the last checkpoint (step {step - 1}) is kept" in message
    assert runs.load_checkpoint(out, "sft").step == step - 1 and not (out / "model").exists()
    assert not (out / runs.LOCK_FILE).exists()
    code = main(["sft", "--path", str(small_data), *SFT_ARGS, "--lr", "1e30", "--out", str(tmp_path / "cli")])
    assert code == 2 and "training diverged" in one_line(capsys.readouterr().err)


def test_rl_with_a_huge_learning_rate_fails_naming_the_step(sft_run, tmp_path):
    out = tmp_path / "rl"
    expected = r"rl: the policy's sampling distribution is nan at step 2: training diverged.*step 1\) is kept"
    with pytest.raises(runs.DivergedError, match=expected):
        train_rl(sft_run, tiny_rl(steps=3, lr=1e30), out=out)
    assert runs.load_checkpoint(out, "rl").step == 1


def test_rl_diverging_at_step_2_keeps_the_checkpoint_of_step_1(sft_run, tmp_path, monkeypatch):
    import riser_lite.rl.trainer as trainer

    update, calls = trainer.update_policy, []

    def update_then_diverge(model, optimizer, params, *args, **kwargs):
        info = update(model, optimizer, params, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # the second step's update blows up
            with torch.no_grad():
                next(iter(params.values())).fill_(float("inf"))
        return info

    monkeypatch.setattr(trainer, "update_policy", update_then_diverge)
    out = tmp_path / "rl"
    with pytest.raises(runs.DivergedError, match=r"at step 2: .*the last checkpoint \(step 1\) is kept"):
        train_rl(sft_run, tiny_rl(steps=3), out=out)
    assert runs.load_checkpoint(out, "rl").step == 1
    assert runs.read_config(out)["rl_progress"]["step"] == 1  # the saved model is step 1's
    assert [r["step"] for r in runs.read_metrics(out, "rl")] == [1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused on a CPU only")
def test_fp16_on_a_cpu_is_refused_in_one_line(small_data, tmp_path, capsys):
    code = main(["sft", "--path", str(small_data), *SFT_ARGS, "--mixed-precision", "fp16", "--out",
                 str(tmp_path / "run")])
    assert code == 2 and not (tmp_path / "run").exists()
    assert "--mixed-precision fp16 needs a CUDA GPU" in one_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------- data


def write_llara(root: Path, names: bytes | str) -> Path:
    root.mkdir(parents=True)
    rows = {"train": [([], 0, 1), ([0], 1, 1), ([0, 1], 2, 2)], "valid": [([0, 1], 2, 2)],
            "test": [([1, 2], 0, 2)]}
    for split, lines in rows.items():
        records = [json.dumps({"history": h, "len_seq": n, "next": t}) + "\n" for h, t, n in lines]
        (root / f"{split}.jsonl").write_text("".join(records))
    (root / "id2name.txt").write_bytes(names.encode("utf-8") if isinstance(names, str) else names)
    return root


@pytest.mark.parametrize(("names", "line", "field", "expected"), [
    ("0::A\n1_0::B\n2::C\n", 2, "id", "item id '1_0' is not a plain decimal integer in [0, 2147483647]"),
    ("0::A\n1::B\n-1::C\n", 3, "id", "item id '-1' is not a plain decimal integer"),
    ("0::A\n+1::B\n2::C\n", 2, "id", "item id '+1' is not a plain decimal integer"),
    ("0::A\n1::B\n99999999999::C\n", 3, "id", "item id '99999999999' is not a plain decimal integer in"),
    ("0::A\n1::B<|endoftext|>C\n2::C\n", 2, "name",
     "name of item 1 holds a special-token string '<|endoftext|>'"),
    ("0::A\n1::\x1b[31mRed\n2::C\n", 2, "name",
     r"name of item 1 holds a control character '\x1b' at position 0"),
    ("0::A\n1::B\n2::Bell\x07\n", 3, "name", r"control character '\x07' at position 4"),
])
def test_lastfm_ids_and_names_are_checked(tmp_path, names, line, field, expected):
    with pytest.raises(DataError) as info:
        load_lastfm(write_llara(tmp_path / "d", names))
    err = info.value
    assert (err.path.name, err.line, err.field) == ("id2name.txt", line, field)
    assert expected in str(err) and len(str(err).splitlines()) == 1


def test_lastfm_names_equal_after_nfc_are_one_name_reported(tmp_path):
    ds = load_lastfm(write_llara(tmp_path / "d", "0::Cafe\u0301\n1::Caf\u00e9\n2::C\n"))
    assert ds.catalog == {0: "Caf\u00e9", 1: "Caf\u00e9 (#1)", 2: "C"}
    assert [(r.stage, r.count, r.unit) for r in ds.filtered if r.stage == "id2name.txt"] == [
        ("id2name.txt", 1, "names normalised"), ("id2name.txt", 1, "items renamed")]


def test_the_real_lastfm_still_loads_with_the_same_counts(lastfm_path):
    ds = load_lastfm(lastfm_path)
    assert ds.num_items == 4606
    assert {s: len(ds.splits[s]) for s in ds.splits} == {"train": 49824, "valid": 122, "test": 122}
    assert [(r.stage, r.count) for r in ds.filtered] == [("train.jsonl", 976)]  # nothing renamed or refused
    windows = load_candidate_windows(lastfm_path / "sdpo_cans20" / "lastfm-test.json", ds.catalog)
    assert len(windows) == 2495


TITLES = {i: f"Artist {i}" for i in range(30)}


def window(**fields) -> dict:
    good = {"historyList": "Artist 21::Artist 22::Artist 23",
            "itemList": [f"Artist {i}" for i in range(NUM_CANDIDATES)], "trueSelection": "Artist 3"}
    return {**good, **fields}


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "cans.json: the file is empty; expected a JSON array of windows"),
    ('[{"historyList": "Caf\u00e9"}]'.encode("latin-1"), "cans.json: byte 21 is not UTF-8; expected a UTF-8"),
    (json.dumps({"windows": []}).encode(), "cans.json: a JSON dict; expected a JSON array of windows"),
    (json.dumps([window(), window(trueSelection=["Artist 3"])]).encode(),
     "cans.json, field 'trueSelection': window 2: ['Artist 3'] is a list; expected an item name (a string)"),
    (json.dumps([window(historyList=["Artist 21"])]).encode(),
     "cans.json, field 'historyList': window 1: a list; expected names joined by '::'"),
    (json.dumps([window(itemList=[f"Artist {i}" for i in range(5)])]).encode(),
     "cans.json, field 'itemList': window 1: 5 candidates; expected 20"),
    (json.dumps([window(itemList=[f"Artist {i}" for i in range(19)] + ["Artist 3"])]).encode(),
     "cans.json, field 'itemList': window 1: 'Artist 3' is listed twice; expected 20 different items"),
    (json.dumps([window(itemList="Artist 3")]).encode(),
     "cans.json, field 'itemList': window 1: a str; expected a list of 20 names"),
])
def test_every_malformed_candidate_file_is_one_line_naming_file_window_field(tmp_path, content, expected):
    path = tmp_path / "cans.json"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_candidate_windows(path, TITLES)
    assert str(info.value) == f"{path}{expected[len('cans.json'):]}" or expected in str(info.value)
    assert expected in str(info.value) and len(str(info.value).splitlines()) == 1


def test_a_candidate_name_in_another_unicode_form_is_found(tmp_path):
    path = tmp_path / "cans.json"
    titles = {**TITLES, 3: "Caf\u00e9"}
    decomposed = "Cafe\u0301"  # the same name as "Caf\u00e9", its accent a combining character
    row = window(itemList=[titles[i] if i != 3 else decomposed for i in range(20)], trueSelection=decomposed)
    path.write_text(json.dumps([row]))
    assert load_candidate_windows(path, titles)[0].target == 3


def test_candidates_with_a_run_and_another_path_is_refused(sft_run, tmp_path):
    from riser_lab.candidates import run_candidates

    with pytest.raises(runs.RunError, match=r"--path .* is not the data .* was trained on"):
        run_candidates(sft_run, data_path=tmp_path)


# ---------------------------------------------------------------------------------------------- one line


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import riser_lab.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_data", interrupted)
    assert main(["data"]) == 130
    assert "riser-lite data: interrupted (Ctrl-C)" in one_line(capsys.readouterr().err)


def test_ctrl_c_in_a_real_command_exits_130_without_a_traceback(small_data, tmp_path):
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "riser_lab.cli", "sft", "--path", str(small_data),
                             "--model", "micro", "--epochs", "50", "--patience", "0", "--batch-size", "4",
                             "--out", str(tmp_path / "run")], env=env, stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a test process may have set SIGINT to "ignore", which a
                            # child inherits (and Python then installs no KeyboardInterrupt handler)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (tmp_path / "run" / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130
    assert "riser-lite sft: interrupted (Ctrl-C)" in one_line(err)
    assert not (tmp_path / "run" / runs.LOCK_FILE).exists()


def test_a_refused_pickle_in_a_checkpoint_is_one_line(sft_run, tmp_path):
    import datetime

    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    folder = next((run / "state" / "sft").glob("ckpt-*"))
    torch.save({"when": datetime.date(2026, 1, 1)}, folder / "rng.pt")  # not loadable with weights_only
    meta = json.loads((folder / "meta.json").read_text())
    meta["sha256"]["rng.pt"] = runs.file_sha256(folder / "rng.pt")  # the checksum matches: the load refuses
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(runs.RunError, match=r"a checkpoint file does not load \(UnpicklingError: ") as info:
        runs.load_checkpoint(run, "sft")
    assert len(str(info.value).splitlines()) == 1


def test_an_unknown_attention_value_in_config_json_is_refused(sft_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    config = json.loads((run / "config.json").read_text())
    config["model"]["attention"] = "kernels-community/flash-attn"  # a hub repository: code from the network
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(runs.RunError, match=r"config.json: model.attention is 'kernels-community/flash-attn'"
                                            r"; expected one of eager, sdpa or null"):
        runs.load_run(run)


def test_checksum_keys_outside_the_run_are_refused_without_their_hash(sft_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    folder = next((run / "state" / "sft").glob("ckpt-*"))
    secret = runs.file_sha256(Path(sys.executable).resolve())
    meta = json.loads((folder / "meta.json").read_text())
    meta["sha256"] = {os.path.relpath(Path(sys.executable).resolve(), folder): secret}
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(runs.RunError, match="which is not a file of the checkpoint") as info:
        runs.load_checkpoint(run, "sft")
    assert secret[:8] not in str(info.value)
    record = run / "model" / runs.CHECKSUM_FILE
    record.write_text(json.dumps({"../config.json": "0" * 64}))
    with pytest.raises(runs.RunError, match=r"names '../config.json', which is not a file of the model"):
        runs.load_run(run)


# ---------------------------------------------------------------------------------------------- options


def test_a_generator_record_asking_for_more_than_the_files_hold_is_not_run(small_data, tmp_path):
    from riser_lite.data.synthetic import load_synthetic

    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    meta = json.loads((data / "meta.json").read_text())
    meta["generator"]["config"]["num_train_users"] = 10**8
    (data / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"asks for num_train_users=100000000 \(30 in the files\), more "
                                         "than the files hold; loaded without an oracle"):
        ds = load_synthetic(data)
    assert ds.oracle is None and len(ds.users("train")) == 30


def test_swapped_token_ids_in_a_runs_tokenizer_are_named(sft_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    path = run / "model" / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[10:12]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    path.write_text(json.dumps(tokenizer))
    assert main(["evaluate", "--run", str(run), "--max-examples", "1"]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{path}: checksum mismatch" in line and "changed after it was saved" in line


def test_a_checkpoint_claiming_more_steps_than_the_run_has_is_refused(sft_run, small_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    shutil.rmtree(run / "model")  # unfinished: the next call resumes from the checkpoint
    folder = next((run / "state" / "sft").glob("ckpt-*"))
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "step": 999}))
    expected = r"state/sft: the checkpoint records step 999, but this run has 10 steps; the resume state is"
    with pytest.raises(runs.RunError, match=expected):
        run_sft(runs.dataset_spec("synthetic", small_data), preset="micro", out=run, seed=0,
                config=SFTConfig(epochs=1, batch_size=16, progress=False))
    assert not (run / "model").exists()


def test_demo_rerun_with_other_settings_is_one_line(sft_run, small_data, tmp_path, capsys):
    out = runs.claim_outputs(tmp_path / "demo", "demo", ["sft"])
    shutil.copytree(sft_run, out / "sft")  # an earlier demo's SFT stage, of other settings than these
    before = snapshot(out / "sft")
    code = main(["demo", "--path", str(small_data), "--sft-epochs", "3", "--out", str(out)])
    assert code == 2 and snapshot(out / "sft") == before
    assert sorted(p.name for p in out.iterdir()) == [runs.MARKER_FILE, "sft"]
    line = one_line(capsys.readouterr().err)
    assert "holds a run with a different" in line and "use another --out to start over" in line


def test_compare_from_an_sft_run_of_other_data_is_one_line(sft_run, tmp_path, capsys):
    code = main(["compare", "--sft-run", str(sft_run), "--data", "native", "--out", str(tmp_path / "c")])
    assert code == 2 and not (tmp_path / "c").exists()  # checked first, claimed only once the start loads
    assert f"SFT run {sft_run} was trained on data" in one_line(capsys.readouterr().err)


def test_sft_model_of_an_empty_folder_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    code = main(["sft", "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
    assert code == 2 and not (tmp_path / "run").exists()
    assert f"{tmp_path / 'empty'}: not a Hugging Face model folder (no config.json)" in one_line(
        capsys.readouterr().err)


def test_python_helpers_refuse_nan_and_negative_inputs(micro_dataset):
    from riser_lite.eval.metrics import paired_test
    from riser_lite.rl.advantages import group_advantages
    from riser_lite.teach.start import sample_examples

    with pytest.raises(ValueError, match=r"paired column a has 1 values that are not finite numbers \(the "
                                         r"first at index 1: nan\)"):
        paired_test([1.0, float("nan"), 0.0], [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"rewards must be finite numbers; prompt 1, rollout 0 has nan"):
        group_advantages(torch.tensor([[1.0, 0.0], [float("nan"), 1.0]]))
    with pytest.raises(ValueError, match=r"count must be an integer >= 0, got -1"):
        sample_examples(micro_dataset, -1, seed=0)
    assert len(sample_examples(micro_dataset, 0, seed=0)) == 0


def test_a_relative_path_is_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runs.dataset_spec("native", "data/../data")["path"] == str(tmp_path / "data")


def test_a_runs_data_folder_holding_other_data_is_refused(sft_run, tmp_path, capsys):
    from riser_lite.data.synthetic import SyntheticConfig, write_synthetic

    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    config = runs.read_config(run)
    other = tmp_path / "other"  # the run's config.json now points at another dataset
    write_synthetic(other, SyntheticConfig(num_genres=2, series_per_genre=1, standalones_per_genre=6,
                                           num_train_users=20, num_valid_users=5, num_test_users=5,
                                           min_length=4, max_length=6), seed=1)
    runs.update_config(run, data={**config["data"], "path": str(other)})
    assert main(["evaluate", "--run", str(run), "--max-examples", "1"]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"the data at {other} is not the data this run was trained on" in line
    assert f"the run recorded {config['data_counts']}" in line


def test_a_notebook_start_of_an_older_format_is_left_alone(sft_run, tmp_path):
    from riser_lite.teach.start import finished_sft_run

    old = tmp_path / "sft"
    shutil.copytree(sft_run, old)
    assert finished_sft_run(old)
    (old / runs.MARKER_FILE).unlink()
    assert not finished_sft_run(old)  # the notebooks then train their start beside it


def test_a_permission_error_is_one_line(monkeypatch, capsys):
    import riser_lab.cli as cli

    def denied(args):
        raise PermissionError(13, "Permission denied", "/srv/data/train.jsonl")

    monkeypatch.setattr(cli, "_run_data", denied)
    assert main(["data"]) == 2
    assert one_line(capsys.readouterr().err) == ("riser-lite data: error: /srv/data/train.jsonl: permission "
                                                 "denied")


def test_a_run_is_never_written_into_a_folder_of_another_kind(small_data, tmp_path, capsys):
    demo = runs.claim_outputs(tmp_path / "demo", "demo", ["results.json"])
    before = snapshot(demo)
    assert main(["sft", "--path", str(small_data), *SFT_ARGS, "--out", str(demo)]) == 2
    assert snapshot(demo) == before
    assert f"{demo} is a riser-lite demo folder, not a run folder" in one_line(capsys.readouterr().err)


def test_a_manifest_naming_a_path_outside_the_folder_deletes_nothing(sft_run, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    marker = json.loads((run / runs.MARKER_FILE).read_text())
    (run / runs.MARKER_FILE).write_text(json.dumps({**marker, "files": [*marker["files"], "../victim.txt"]}))
    before = snapshot(run)
    assert main(["sft", "--path", "unused", *SFT_ARGS, "--out", str(run), "--overwrite"]) == 2
    assert victim.read_text() == "keep" and snapshot(run) == before
    assert "\"files\" must be a list of names of entries in the folder" in one_line(capsys.readouterr().err)


def test_titles_holding_the_tokenizers_special_tokens_are_refused_before_a_folder(micro_dataset, tmp_path):
    from dataclasses import replace

    catalog = {**micro_dataset.catalog, 3: "Red Star <|endoftext|> 3", 7: "Blue<|pad|>Sky 7"}
    dataset = replace(micro_dataset, catalog=catalog)
    with pytest.raises(DataError, match=r"field 'title': 2 item titles hold a special-token string of the "
                                        r"tokenizer \(the first, item 3: '<\|endoftext\|>' in 'Red Star"):
        run_sft(dataset, preset="micro", out=tmp_path / "run", config=SFTConfig(epochs=1, progress=False))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("fields", [{"algo": "riser", "group_size": 8, "oversample": 1},
                                    {"algo": "grpo", "oversample": 32}])
def test_rl_config_refuses_an_oversample_that_cannot_apply(fields):
    from riser_lite.rl.config import RLConfig

    refused = r"oversample \(m = \d+\) (applies to dedup|is less than group_size)"
    with pytest.raises(ValueError, match=refused):
        RLConfig(**fields)
    assert RLConfig(algo="riser", group_size=8, oversample=8).oversample == 8  # m = G: every draw kept
