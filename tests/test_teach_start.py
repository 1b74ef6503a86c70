"""The start of notebooks 03-06: use the finished SFT run there is, or train one named by its settings."""

import json

import pytest

from riser_lite.sft import SFTConfig, run_sft
from riser_lite.teach.start import (
    CLASS_SFT,
    REAL_SFT,
    SMOKE_REAL_SFT,
    SMOKE_SFT,
    SFTSettings,
    class_start,
    finished_sft_run,
    lastfm_folder,
    load_or_train_sft,
    sample_examples,
)


def test_folder_name_holds_every_setting():
    assert SFTSettings().folder_name(0) == "sft-tiny-2ep-b32-v200-seed0"
    assert SFTSettings("micro", 1, 16, None).folder_name(3) == "sft-micro-1ep-b16-vall-seed3"


@pytest.mark.slow
def test_a_changed_02_run_is_used_and_a_missing_one_is_trained_beside_it(tmp_path, capsys):
    # Notebook 02 with other settings than the later notebooks' (batch 16, 20 validation examples).
    changed = run_sft("synthetic", preset="micro", out=tmp_path / "sft", seed=0,
                      config=SFTConfig(epochs=1, batch_size=16, max_valid=20, progress=False))
    start = load_or_train_sft(tmp_path / "sft", SMOKE_SFT, seed=0, progress=False)
    assert start.path == changed and not start.trained_here
    assert "micro backbone, 1 epochs (ran 1.0), batch 16" in start.settings
    assert "20 validation" in start.settings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]  # nothing trained, nothing written
    assert len(start.space) == len(start.dataset.catalog) and start.run.path == changed

    # No run in the folder: the start is trained beside it, in a folder named by its settings, once.
    capsys.readouterr()
    first = load_or_train_sft(tmp_path / "missing", SMOKE_SFT, seed=0, progress=False)
    assert first.path == tmp_path / "sft-micro-1ep-b32-v50-seed0" and first.trained_here
    assert "training" in capsys.readouterr().out and not (tmp_path / "missing").exists()
    again = load_or_train_sft(tmp_path / "missing", SMOKE_SFT, seed=0, progress=False)
    assert again.path == first.path and not again.trained_here

    # An unfinished run (interrupted 02) is left as it is, and the named start is used instead.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"format": 1, "sft": {"epochs": 9}}))
    assert not finished_sft_run(broken)
    start = load_or_train_sft(broken, SMOKE_SFT, seed=0, progress=False)
    assert start.path == first.path and not start.trained_here
    assert json.loads((broken / "config.json").read_text()) == {"format": 1, "sft": {"epochs": 9}}


def test_sample_examples_is_seeded_and_bounded(small_data):
    from riser_lite.data import load_dataset

    dataset = load_dataset("native", small_data)
    a, b = sample_examples(dataset, 5, seed=1), sample_examples(dataset, 5, seed=1)
    assert [e.target for e in a] == [e.target for e in b] and len(a) == 5
    assert len(sample_examples(dataset, 10**6, seed=0)) == len(dataset.splits["train"])
    assert [e.target for e in sample_examples(dataset, 5, seed=2)] != [e.target for e in a]


def test_class_start_picks_the_backbones_start_and_refuses_other_names(tmp_path, monkeypatch):
    assert class_start("tiny") == CLASS_SFT and class_start("tiny", smoke=True) == SMOKE_SFT
    assert class_start("smollm2-135m") == REAL_SFT and REAL_SFT.data == "lastfm" and REAL_SFT.pretrained
    assert class_start("smollm2-135m", "synthetic").data == "synthetic"
    tiny_lastfm = class_start("tiny", "lastfm")
    assert (tiny_lastfm.preset, tiny_lastfm.data, tiny_lastfm.pretrained) == ("tiny", "lastfm", False)
    # Every setting is in the folder name, so two starts never share a folder.
    assert REAL_SFT.folder_name(0) == "sft-smollm2-135m-lastfm-n400-1ep-b8-v50-seed0"
    assert REAL_SFT.config(progress=False).lr == 5e-4 and CLASS_SFT.config(progress=False).lr == 5e-3
    assert REAL_SFT.config(progress=False).max_train == 400
    with pytest.raises(ValueError, match="BACKBONE must be one of"):
        class_start("gpt2")
    with pytest.raises(ValueError, match="DATA must be one of"):
        class_start("tiny", "movielens")
    monkeypatch.delenv("RISER_LITE_LASTFM", raising=False)
    with pytest.raises(FileNotFoundError, match="RISER_LITE_LASTFM unset.*set DATA = 'synthetic'"):
        lastfm_folder(None)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} holds no train.jsonl"):
        lastfm_folder(tmp_path)


@pytest.mark.slow
@pytest.mark.xdist_group("smollm2")
def test_a_tiny_run_in_sft_run_is_not_the_real_models_start(tmp_path, lastfm_path):
    tiny = run_sft("synthetic", preset="micro", out=tmp_path / "sft", seed=0,
                   config=SFTConfig(epochs=1, max_valid=20, progress=False))
    start = load_or_train_sft(tmp_path / "sft", SMOKE_REAL_SFT, seed=0, progress=False,
                              lastfm_path=lastfm_path)
    assert start.path != tiny and start.trained_here
    assert start.path == tmp_path / "sft-smollm2-135m-lastfm-n8-1ep-b4-v8-seed0"
    config = start.run.config
    assert config["backbone"]["pretrained"] == "smollm2-135m" and config["lora"] == {}
    assert config["results"]["sft"]["windows"]["windows_kept"] == 8  # the cap, recorded with what it left out
    assert config["results"]["sft"]["steps"] == 2 and len(start.space) == 4606
    assert json.loads((start.path / "model" / "base.json").read_text())["name"] == "smollm2-135m"
    assert start.run.model.riser_lite_base["run"] == str(start.path.resolve())  # what an RL run records
    again = load_or_train_sft(start.path, SMOKE_REAL_SFT, seed=0, progress=False, lastfm_path=lastfm_path)
    assert again.path == start.path and not again.trained_here


def test_the_real_model_gets_the_gpu_preset_on_a_cuda_machine(monkeypatch):
    import torch

    from riser_lite.teach.start import GPU_REAL_SFT

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # a T4
    assert class_start("smollm2-135m") == GPU_REAL_SFT and GPU_REAL_SFT.mixed_precision == "fp16"
    assert GPU_REAL_SFT.config(progress=False).mixed_precision == "fp16"
    assert GPU_REAL_SFT.folder_name(0) == "sft-smollm2-135m-lastfm-n10000-fp16-1ep-b32-v122-seed0"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # Ampere or later
    assert class_start("smollm2-135m").mixed_precision == "bf16"
    assert class_start("smollm2-135m", smoke=True) == SMOKE_REAL_SFT  # the smoke runs stay tiny anywhere
    assert class_start("tiny") == CLASS_SFT
