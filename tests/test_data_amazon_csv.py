"""Processed Amazon CSVs (D3 / ReRe / MiniOneRec layout) on small files written by the tests."""

import csv
import io

import pytest

from riser_lite.data import DataError, load_dataset
from riser_lite.data.amazon_csv import load_amazon_csv

# Titles with the characters that make CSV and Python-literal quoting interesting.
TITLES = {
    0: 'Pendaflex Tabs, 2", Clear',
    1: "Teacher's Aid Chart",
    2: "Scotch Magic Tape",
    3: "Scotch Magic Tape",  # a duplicated title: made unique as "Scotch Magic Tape (#3)"
    4: "Avery Binder",
    5: "BIC Wite-Out",
}
SIDS = {i: f"<a_{i}><b_{i + 1}><c_{i + 2}>" for i in TITLES}
HEADER = ["user_id", "history_item_title", "item_title", "history_item_id", "item_id", "history_item_sid",
          "item_sid", "timestamp"]


def item_file_text(with_sid=True, titles=TITLES):
    if with_sid:
        return "".join(f"{SIDS[i]}\t{t}\t{i}\n" for i, t in titles.items())
    return "".join(f"{t}\t{i}\n" for i, t in titles.items())


def record(user, history, target, time, titles=TITLES):
    """One CSV record the way the family writes it: lists as Python literals (str(list))."""
    return [user, str([titles[i] for i in history]), titles[target], str(history), target,
            str([SIDS[i] for i in history]), SIDS[target], time]


SPLIT_ROWS = {
    "train": [record("A1", [0], 1, 100), record("A1", [0, 1], 2, 101), record("B2", [4], 5, 102)],
    "valid": [record("A1", [0, 1, 2], 3, 200)],
    "test": [record("B2", [4, 5], 0, 300), record("A1", [0, 1, 2, 3], 4, 301)],
}


def csv_text(rows, header=HEADER):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def write_flat(root, rows=None, items=None, names=("train.csv", "valid.csv", "test.csv"),
               item_name="x.item.txt"):
    root.mkdir(parents=True, exist_ok=True)
    rows = {**SPLIT_ROWS, **(rows or {})}
    for split, name in zip(("train", "valid", "test"), names, strict=True):
        text = rows[split]
        (root / name).write_bytes(text if isinstance(text, bytes) else csv_text(text).encode()
                                  if isinstance(text, list) else text.encode())
    items = item_file_text() if items is None else items
    (root / item_name).write_bytes(items if isinstance(items, bytes) else items.encode())
    return root


def test_flat_layout_loads_everything(tmp_path):
    ds = load_amazon_csv(write_flat(tmp_path / "d"))
    assert ds.catalog[2] == "Scotch Magic Tape" and ds.catalog[3] == "Scotch Magic Tape (#3)"
    assert ds.catalog[0] == 'Pendaflex Tabs, 2", Clear'
    assert [(ex.user, ex.history, ex.target, ex.time) for ex in ds.splits["train"]] == [
        ("A1", (0,), 1, 100.0), ("A1", (0, 1), 2, 101.0), ("B2", (4,), 5, 102.0)]
    assert ds.splits["test"][1].history == (0, 1, 2, 3)
    assert [(r.stage, r.count, r.unit) for r in ds.filtered] == [("x.item.txt", 1, "items renamed")]
    assert ds.name == "amazon-csv:train"


def test_d3_release_layout_with_category(tmp_path):
    """train/, valid/, test/ and info/ sub-directories holding one file per category."""
    root = tmp_path / "Amazon"
    for category in ("Office_Products_5_2016-10-2018-11", "Industrial_5_2016-10-2018-11"):
        for split in ("train", "valid", "test"):
            (root / split).mkdir(parents=True, exist_ok=True)
            (root / split / f"{category}.csv").write_text(csv_text(SPLIT_ROWS[split][:1]))
        (root / "info").mkdir(exist_ok=True)
        (root / "info" / f"{category}.txt").write_text(item_file_text(with_sid=False))
    with pytest.raises(DataError, match="several candidates.*category"):
        load_amazon_csv(root)
    ds = load_dataset("amazon-csv", root, category="Office_Products")
    assert ds.name == "amazon-csv:Office_Products" and len(ds.splits["train"]) == 1
    assert ds.splits["valid"][0].history == (0, 1, 2)


def test_pattern_names_and_two_column_item_file(tmp_path):
    root = write_flat(tmp_path / "d", names=("beauty_train.csv", "beauty_valid.csv", "beauty_test.csv"),
                      items=item_file_text(with_sid=False), item_name="items.txt")
    ds = load_amazon_csv(root)
    assert len(ds.splits["test"]) == 2 and ds.name == "amazon-csv:beauty_train"


def test_no_timestamp_column_means_unknown_times(tmp_path):
    header = HEADER[:5]
    rows = {s: [r[:5] for r in SPLIT_ROWS[s]] for s in SPLIT_ROWS}
    root = tmp_path / "d"
    write_flat(root)
    for split in rows:
        (root / f"{split}.csv").write_text(csv_text(rows[split], header=header))
    ds = load_amazon_csv(root)
    assert all(ex.time is None for s in ds.splits for ex in ds.splits[s])


def test_empty_and_long_histories_are_reported(tmp_path):
    rows = {"train": [record("A1", [], 1, 90), *SPLIT_ROWS["train"],
                      record("C3", [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5], 1, 103)]}
    ds = load_amazon_csv(write_flat(tmp_path / "d", rows=rows), max_history=10)
    reasons = {(r.stage, r.unit): r.count for r in ds.filtered}
    assert reasons[("train:train.csv", "rows")] == 1
    assert reasons[("train:train.csv", "histories truncated")] == 1
    assert ds.splits["train"][-1].history == (2, 3, 4, 5, 0, 1, 2, 3, 4, 5)


def test_train_after_evaluation_period_is_rejected(tmp_path):
    rows = {"train": [*SPLIT_ROWS["train"], record("C3", [0], 1, 250)]}
    root = write_flat(tmp_path / "d", rows=rows)
    with pytest.raises(DataError) as info:
        load_amazon_csv(root)
    assert "split 'train', example 3" in str(info.value) and info.value.field == "time"
    assert load_amazon_csv(root, check_time_split=False).splits["train"][3].time == 250.0


# --------------------------------------------------------------------------------------------------------
# Bad input: each error names the file, the line and the field
# --------------------------------------------------------------------------------------------------------


def _error(tmp_path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_amazon_csv(write_flat(tmp_path / "bad", **kwargs))
    return info.value


def test_missing_column(tmp_path):
    text = csv_text([r[1:] for r in SPLIT_ROWS["valid"]], header=HEADER[1:])
    err = _error(tmp_path, rows={"valid": text})
    assert (err.path.name, err.line, err.field) == ("valid.csv", 1, "user_id")
    assert "missing column" in str(err) and "expected a header with" in str(err)


def test_title_mismatch(tmp_path):
    bad = record("A1", [0, 1], 2, 101)
    bad[1] = str([TITLES[0], "Teachers Aid Chart"])
    err = _error(tmp_path, rows={"train": [SPLIT_ROWS["train"][0], bad]})
    assert (err.path.name, err.line, err.field) == ("train.csv", 3, "history_item_title")
    assert "Teachers Aid Chart" in str(err) and "x.item.txt" in str(err)
    bad = record("A1", [0, 1], 2, 101)
    bad[2] = "Something else"
    err = _error(tmp_path, rows={"train": [bad]})
    assert (err.line, err.field) == (2, "item_title")


def test_sid_mismatch(tmp_path):
    bad = record("A1", [0, 1], 2, 101)
    bad[6] = "<a_9><b_9><c_9>"
    err = _error(tmp_path, rows={"train": [bad]})
    assert (err.path.name, err.line, err.field) == ("train.csv", 2, "item_sid")


def test_unknown_item_id(tmp_path):
    bad = record("A1", [0, 1], 2, 101)
    bad[3] = "[0, 77]"
    bad[1] = str([TITLES[0], "x"])
    err = _error(tmp_path, rows={"test": [bad]})
    assert (err.path.name, err.line, err.field) == ("test.csv", 2, "history_item_id") and "77" in str(err)
    bad = record("A1", [0, 1], 2, 101)
    bad[4] = 99
    err = _error(tmp_path, rows={"test": [bad]})
    assert (err.line, err.field) == (2, "item_id") and "unknown item id 99" in str(err)


def test_list_cells_are_literals_never_code(tmp_path):
    bad = record("A1", [0, 1], 2, 101)
    bad[3] = "__import__('os').getcwd()"
    err = _error(tmp_path, rows={"train": [bad]})
    assert (err.line, err.field) == (2, "history_item_id") and "Python-literal list" in str(err)
    bad[3] = "[0, 1"
    assert _error(tmp_path, rows={"train": [bad]}).field == "history_item_id"
    bad[3] = "['0', '1']"
    assert "not a list of int" in str(_error(tmp_path, rows={"train": [bad]}))


def test_record_with_wrong_number_of_cells(tmp_path):
    text = csv_text(SPLIT_ROWS["train"]) + "A1,too,few\n"
    err = _error(tmp_path, rows={"train": text})
    assert (err.path.name, err.line) == ("train.csv", 5) and "3 cells" in str(err)


def test_multiline_record_reports_its_first_line(tmp_path):
    """A quoted title may span lines; later errors still point at the right physical line."""
    titles = {**TITLES, 5: "BIC\nWite-Out"}
    items = item_file_text(titles={i: t.replace("\n", " ") for i, t in titles.items()})
    good = record("B2", [4], 5, 102, titles=titles)
    bad = record("A1", [0], 1, 103)
    bad[7] = "soon"
    err = _error(tmp_path, rows={"train": [good, bad]}, items=items)
    assert (err.line, err.field) == (4, "timestamp") and "not a number" in str(err)


def test_bad_item_file(tmp_path):
    err = _error(tmp_path, items="Alpha\t0\nBeta\t0\n")
    assert (err.path.name, err.line, err.field) == ("x.item.txt", 2, "id")
    assert "duplicate item id 0" in str(err)
    err = _error(tmp_path, items="Alpha\t0\n \t1\n")
    assert (err.line, err.field) == (2, "title") and "blank title" in str(err)
    err = _error(tmp_path, items="Alpha\t0\nBeta 1\n")
    assert err.line == 2 and "tab-separated" in str(err)
    err = _error(tmp_path, items="<a>\tAlpha\t0\nBeta\t1\n")
    assert err.line == 2 and "3 tab-separated cells like the lines before" in str(err)


def test_non_utf8_csv(tmp_path):
    text = csv_text(SPLIT_ROWS["valid"]).encode() + b"A1,\"['x']\",caf\xe9,[0],1,\"['a']\",b,201\n"
    err = _error(tmp_path, rows={"valid": text})
    assert (err.path.name, err.line) == ("valid.csv", 3) and "not valid UTF-8" in str(err)


def test_missing_files(tmp_path):
    root = write_flat(tmp_path / "d")
    (root / "x.item.txt").unlink()
    with pytest.raises(DataError, match="no item file found"):
        load_amazon_csv(root)
    root = write_flat(tmp_path / "e")
    (root / "test.csv").unlink()
    with pytest.raises(DataError, match="no test CSV found"):
        load_amazon_csv(root)
    with pytest.raises(DataError, match="needs a path"):
        load_dataset("amazon-csv")
