"""The native on-disk format: exact round trips, atomic saves, and errors that name file, line and field."""

import json
import re
from pathlib import Path

import pytest

import riser_lite.data.native as native
from riser_lite.data.native import load_native, read_meta, save_dataset
from riser_lite.data.synthetic import SyntheticConfig, generate_synthetic, load_synthetic, write_synthetic
from riser_lite.data.types import DataError, Example, FilterRecord, RecDataset

SMALL = SyntheticConfig(num_train_users=12, num_valid_users=5, num_test_users=5)


def hand_made() -> RecDataset:
    """Small, with everything the format must carry: non-ASCII titles, times, filtered records, an oracle."""
    catalog = {1: "Café Noir", 2: "東京 Nights", 3: "Plain Title", 7: "Zebra: the Sequel"}
    splits = {
        "train": [Example("a", (1, 2), 3, 0.1), Example("a", (1, 2, 3), 7, 1e10 + 0.5)],
        "valid": [Example("b", (2,), 1, None)],
        "test": [Example("c ü", (7, 3), 2, 3.0)],
    }
    oracle = {"train": [{3: 1 / 3, 7: 2 / 3}, {7: 1.0}], "valid": [{1: 0.1, 2: 0.2, 3: 0.7}],
              "test": [{2: 0.25, 1: 0.75}]}
    filtered = [FilterRecord("train.jsonl", 2, "empty history (removed)"),
                FilterRecord("5-core", 3, "fewer than 5 interactions", "items")]
    return RecDataset("hand", catalog, splits, filtered, max_history=3, oracle=oracle, source="tests ✓")


@pytest.fixture
def saved(tmp_path) -> Path:
    return save_dataset(hand_made(), tmp_path / "hand")


# ---------------------------------------------------------------------------------------- round trips


def test_round_trip_is_exact(saved):
    loaded = load_native(saved)
    assert loaded == hand_made()  # floats (times, probabilities) come back bit for bit
    assert loaded.oracle["train"][0][3] == 1 / 3
    assert read_meta(saved)["counts"] == {"items": 4, "train": 2, "valid": 1, "test": 1}


def test_files_are_plain_readable_text(saved):
    assert (saved / "items.tsv").read_text(encoding="utf-8").splitlines()[:3] == [
        "item_id\ttitle", "1\tCafé Noir", "2\t東京 Nights"]
    first = json.loads((saved / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first == {"user": "a", "history": [1, 2], "target": 3, "time": 0.1}
    assert sorted(p.name for p in saved.iterdir()) == sorted(
        ["items.tsv", "meta.json", "train.jsonl", "valid.jsonl", "test.jsonl",
         "oracle_train.jsonl", "oracle_valid.jsonl", "oracle_test.jsonl"])


def test_synthetic_round_trip_with_oracle_files(tmp_path):
    ds = generate_synthetic(SMALL, seed=5)
    assert load_native(save_dataset(ds, tmp_path / "s")) == ds


def test_synthetic_oracle_is_regenerated_when_not_saved(tmp_path):
    ds = write_synthetic(tmp_path / "s", SMALL, seed=5)
    assert not list((tmp_path / "s").glob("oracle_*"))
    assert load_synthetic(tmp_path / "s") == ds
    assert load_synthetic(tmp_path / "s", with_oracle=False).oracle is None
    assert load_native(tmp_path / "s").oracle is None  # the file format alone knows no generator


def test_edited_synthetic_files_load_without_an_oracle_and_warn(tmp_path):
    write_synthetic(tmp_path / "s", SMALL, seed=5)
    items = tmp_path / "s" / "items.tsv"
    lines = items.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].split("\t")[0] + "\tA Renamed Title"
    items.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="differ from what the recorded generator produces"):
        ds = load_synthetic(tmp_path / "s")
    assert ds.oracle is None and ds.catalog[0] == "A Renamed Title"


def test_saving_without_the_oracle_drops_it(tmp_path):
    path = save_dataset(hand_made(), tmp_path / "h", include_oracle=False)
    loaded = load_native(path)
    assert loaded.oracle is None and loaded.splits == hand_made().splits


# ---------------------------------------------------------------------------------------- atomic saves


def test_interrupted_save_leaves_the_previous_dataset_intact(saved, monkeypatch):
    written = []

    def failing_write(path, text):
        if len(written) == 3:
            raise KeyboardInterrupt  # e.g. the user stops the cell halfway through
        written.append(path)
        path.write_text(text, encoding="utf-8")

    monkeypatch.setattr(native, "_write_file", failing_write)
    other = generate_synthetic(SMALL, seed=1)
    with pytest.raises(KeyboardInterrupt):
        save_dataset(other, saved)
    assert load_native(saved) == hand_made()
    assert [p.name for p in saved.parent.iterdir()] == ["hand"]  # no temporary directories left behind


def test_overwrite_replaces_every_file_and_leaves_no_stale_oracle(saved):
    save_dataset(hand_made(), saved, include_oracle=False)
    assert not list(saved.glob("oracle_*"))
    assert load_native(saved).oracle is None
    assert [p.name for p in saved.parent.iterdir()] == ["hand"]


def test_a_directory_with_other_files_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="holds other files"):
        save_dataset(hand_made(), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_invalid_datasets_are_refused_before_anything_is_written(tmp_path):
    bad = hand_made()
    bad.catalog[3] = "Two\nLines"
    with pytest.raises(DataError, match="title"):
        save_dataset(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    loose = hand_made()
    loose.oracle["test"][0] = {2: 0.25, 1: 0.75 - 1e-5}  # passes the in-memory check, not the file check
    with pytest.raises(DataError, match="oracle row sums to"):
        save_dataset(loose, tmp_path / "loose")
    assert not (tmp_path / "loose").exists()


def test_zero_oracle_entries_are_not_written(tmp_path):
    ds = hand_made()
    ds.oracle["valid"][0] = {1: 0.3, 2: 0.0, 3: 0.7}
    loaded = load_native(save_dataset(ds, tmp_path / "h"))
    assert loaded.oracle["valid"][0] == {1: 0.3, 3: 0.7}


def test_missing_directory_points_at_what_an_interrupted_save_left(tmp_path):
    (tmp_path / ".data.old-1-2").mkdir()
    with pytest.raises(DataError, match=r"\.data\.old-1-2"):
        load_native(tmp_path / "data")


# ---------------------------------------------------------------------------------------- errors


def replace_line(path: Path, number: int, new: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = new
    path.write_bytes(b"\n".join(lines))


# (file, line number to replace, new content, expected line in the error, expected field, message part)
CORRUPTIONS = [
    ("train.jsonl", 2, b'{"user": "a", "history": [1, 2', 2, None, "malformed JSON"),
    ("train.jsonl", 1, b'{"user": "a", "history": [1, 2], "time": null}', 1, "target", "missing field"),
    ("train.jsonl", 2, b'{"user": "a", "history": [1, 99], "target": 3}', 2, "history", "item 99"),
    ("valid.jsonl", 1, b'{"user": "b", "history": [2], "target": 42}', 1, "target", "item 42"),
    ("test.jsonl", 1, b'{"user": "c", "history": 7, "target": 2}', 1, "history", "expected a list"),
    ("test.jsonl", 1, b'{"user": "c", "history": [1, 2, 3, 7], "target": 2}', 1, "history", "max_history=3"),
    ("test.jsonl", 1, b'{"user": "c", "history": [7], "target": true}', 1, "target", "not an integer"),
    ("test.jsonl", 1, b'{"user": "c", "history": [7], "target": 2, "time": "noon"}', 1, "time", "finite"),
    ("test.jsonl", 1, b'{"user": 5, "history": [7], "target": 2}', 1, "user", "non-empty string"),
    ("train.jsonl", 1, b'{"user": "a", "history": [1, 2], "target": 3, "note": "caf\xe9"}', 1, None, "UTF-8"),
    ("items.tsv", 3, b"2\t   ", 3, "title", "blank title"),
    ("items.tsv", 4, b"3\tCaf\xc3\xa9 Noir", 4, "title", "already appears on line 2"),
    ("items.tsv", 4, b"1\tAnother", 4, "item_id", "already appears on line 2"),
    ("items.tsv", 4, b"x3\tAnother", 4, "item_id", "expected an integer"),
    ("items.tsv", 4, b"3\tPlain  Title", 4, "title", "whitespace"),
    ("items.tsv", 2, b"1\tCaf\xe9 Noir", 2, None, "UTF-8"),
    ("items.tsv", 1, b"id\tname", 1, None, "header"),
    ("items.tsv", 5, b"7\tZebra\textra", 5, None, "tab-separated"),
    ("oracle_valid.jsonl", 1, b'{"1": 0.1, "2": 0.2}', 1, None, "sum to"),
    ("oracle_test.jsonl", 1, b'{"2": 0.25, "9": 0.75}', 1, "9", "item 9"),
    ("oracle_test.jsonl", 1, b'{"2": 1.25, "1": -0.25}', 1, "2", "(0, 1]"),
    ("meta.json", 2, b'  "format": "riser_lite.native"', 3, None, "malformed JSON"),
]


@pytest.mark.parametrize(("file", "number", "new", "line", "field", "message"), CORRUPTIONS,
                         ids=[f"{c[0]}:{c[5]}" for c in CORRUPTIONS])
def test_errors_name_file_line_and_field(saved, file, number, new, line, field, message):
    replace_line(saved / file, number, new)
    with pytest.raises(DataError, match=re.escape(message)) as caught:
        load_native(saved)
    err = caught.value
    assert Path(err.path).name == file
    assert err.line == line
    assert err.field == field
    assert file in str(err) and f"line {line}" in str(err)


def test_truncated_split_file_is_caught_by_the_recorded_counts(saved):
    lines = (saved / "train.jsonl").read_text(encoding="utf-8").splitlines()
    (saved / "train.jsonl").write_text(lines[0] + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="train.jsonl holds 1") as caught:
        load_native(saved)
    assert Path(caught.value.path).name == "meta.json" and caught.value.field == "counts"


def test_oracle_files_must_cover_every_split(saved):
    (saved / "oracle_valid.jsonl").unlink()
    with pytest.raises(DataError, match="every split") as caught:
        load_native(saved)
    assert Path(caught.value.path).name == "oracle_valid.jsonl"


def test_oracle_row_count_must_match_the_examples(saved):
    (saved / "oracle_train.jsonl").write_text('{"3": 1.0}\n', encoding="utf-8")
    with pytest.raises(DataError, match="1 distributions for 2 examples"):
        load_native(saved)


@pytest.mark.parametrize("missing", ["meta.json", "items.tsv", "valid.jsonl"])
def test_missing_files_are_named(saved, missing):
    (saved / missing).unlink()
    with pytest.raises(DataError, match="file not found") as caught:
        load_native(saved)
    assert Path(caught.value.path).name == missing


def test_a_generator_record_that_is_not_an_object_is_named(saved):
    meta = json.loads((saved / "meta.json").read_text(encoding="utf-8"))
    meta["generator"] = "riser_lite.data.synthetic.generate_synthetic"
    (saved / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DataError, match="expected an object") as caught:
        load_native(saved)
    assert Path(caught.value.path).name == "meta.json" and caught.value.field == "generator"
