"""Inputs that used to crash later are rejected at load, naming file, line and field (or counted if asked)."""

import json

import pytest
from test_data_lastfm import _row, write_llara

from riser_lite.data import DataError, load_dataset, titles
from riser_lite.data.lastfm import load_lastfm
from riser_lite.data.native import save_dataset
from riser_lite.data.types import RecDataset
from riser_lite.data.validate import validate_catalog

LONG = "x" * 200_000  # a 200 KB artist name


def test_a_title_over_the_limit_is_an_error_naming_the_file_and_item(tmp_path):
    names = f"0::Alpha\n1::Beta\n2::{LONG}\n3::Delta\n4::Epsilon\n"
    with pytest.raises(DataError) as info:
        load_lastfm(write_llara(tmp_path / "d", names=names))
    err = info.value
    assert (str(err.path), err.field) == ("id2name.txt", "title")
    assert "item 2 has 200000 characters; expected at most 500" in str(err) and "truncate_titles" in str(err)


def test_truncate_titles_cuts_and_counts(tmp_path):
    names = f"0::Alpha\n1::Beta\n2::{LONG}\n3::{LONG}\n4::{'y' * titles.MAX_TITLE_CHARS}\n"
    ds = load_dataset("lastfm", write_llara(tmp_path / "d", names=names), truncate_titles=True)
    assert len(ds.catalog[2]) == titles.TRUNCATED_TITLE_CHARS and ds.catalog[3] == ds.catalog[2] + " (#3)"
    assert ds.catalog[4] == "y" * titles.MAX_TITLE_CHARS  # at the limit: kept whole
    cut = [r for r in ds.filtered if r.unit == "titles truncated"]
    assert [(r.stage, r.count) for r in cut] == [("id2name.txt", 2)]


def test_zero_width_titles_are_blank(tmp_path):
    assert titles.is_blank_title("\u200b\u200c\u2060 \ufeff") and titles.is_blank_title("\u3000\t")
    assert not titles.is_blank_title("Ab\u200b") and not titles.is_blank_title("\u00e9")
    names = "0::Alpha\n1::\u200b\u200b\n2::Gamma\n3::Delta\n4::Epsilon\n"
    with pytest.raises(DataError) as info:
        load_lastfm(write_llara(tmp_path / "d", names=names))
    assert (info.value.line, info.value.field) == (2, "name") and "blank name" in str(info.value)
    ds = RecDataset("mem", {0: "A", 1: "\u200b"}, {"train": [], "valid": [], "test": []})
    with pytest.raises(DataError, match="blank title"):
        validate_catalog(ds)


@pytest.mark.parametrize("line, what", [
    ("[" * 100_000, "RecursionError"),
    (json.dumps({"history": [0], "len_seq": 1, "next": 0}).replace('"next": 0', '"next": ' + "7" * 5000),
     "ValueError"),
])
def test_deep_json_and_huge_integers_name_the_line(tmp_path, line, what):
    train = [_row([0], 1), line]
    with pytest.raises(DataError) as info:
        load_lastfm(write_llara(tmp_path / "d", train=train))
    err = info.value
    assert (err.path.name, err.line) == ("train.jsonl", 2) and what in str(err)


def test_deep_json_in_native_meta_names_the_file(small_data, tmp_path):
    ds = load_dataset("synthetic", small_data)
    save_dataset(ds, tmp_path / "n")
    (tmp_path / "n" / "meta.json").write_text("[" * 100_000)
    with pytest.raises(DataError) as info:
        load_dataset("native", tmp_path / "n")
    assert info.value.path.name == "meta.json" and "RecursionError" in str(info.value)


@pytest.mark.parametrize("split", ["train", "valid"])
def test_an_empty_train_or_valid_split_is_rejected_at_load(tmp_path, split):
    root = write_llara(tmp_path / "d", **{split: []})
    with pytest.raises(DataError) as info:
        load_dataset("lastfm", root)
    assert info.value.field == split and f"has no {split} examples" in str(info.value)
    assert len(load_dataset("lastfm", root, require=()).splits[split]) == 0  # inspecting it stays possible


def test_an_empty_split_after_filtering_says_so(tmp_path):
    root = write_llara(tmp_path / "d", valid=[_row([0], 3)])
    with pytest.raises(DataError, match="has no valid examples after 3 filter steps"):
        load_dataset("lastfm", root, min_history=2)



def test_sft_refuses_a_title_over_the_limit(tmp_path, capsys):
    from riser_lab.cli import main

    names = f"0::Alpha\n1::Beta\n2::{LONG}\n3::Delta\n4::Epsilon\n"
    root = write_llara(tmp_path / "d", names=names)
    base = ["sft", "--data", "lastfm", "--path", str(root), "--model", "micro", "--epochs", "1"]
    assert main([*base, "--out", str(tmp_path / "refused")]) == 2
    assert "expected at most 500" in capsys.readouterr().err and not (tmp_path / "refused").exists()


def test_sft_config_rejects_a_learning_rate_that_cannot_train():
    from riser_lite.sft import SFTConfig

    for lr in (float("nan"), 0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="lr must be a finite number > 0"):
            SFTConfig(lr=lr)
