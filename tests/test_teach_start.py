"""The start of notebooks 03-06: use the finished SFT run there is, or train one named by its settings."""

import json

import pytest

from riser_lite.sft import SFTConfig, run_sft
from riser_lite.teach.start import (
    SMOKE_SFT,
    SFTSettings,
    finished_sft_run,
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
