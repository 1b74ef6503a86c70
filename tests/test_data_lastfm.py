"""LastFM (LLaRA format): the real release's counts, and every kind of bad input on small written files."""

import json

import pytest

from riser_lite.data import DataError, dataset_stats, format_stats, load_dataset
from riser_lite.data.lastfm import load_lastfm

# --------------------------------------------------------------------------------------------------------
# The real release (../shared/data/lastfm), read in place
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(lastfm_path):
    return load_lastfm(lastfm_path)


def test_real_lastfm_counts(real):
    ds = real
    assert ds.num_items == 4606
    assert {s: len(ds.splits[s]) for s in ds.splits} == {"train": 50800 - 976, "valid": 122, "test": 122}
    assert {s: len(ds.users(s)) for s in ds.splits} == {"train": 976, "valid": 122, "test": 122}
    assert [(r.stage, r.count, r.unit) for r in ds.filtered] == [("train.jsonl", 976, "rows")]
    assert "empty history" in ds.filtered[0].reason
    assert all(1 <= len(ex.history) <= 10 for s in ds.splits for ex in ds.splits[s])
    assert all(3 <= len(ex.history) for s in ("valid", "test") for ex in ds.splits[s])


def test_real_lastfm_rows_match_the_file(lastfm_path, real):
    """Examples are the file's non-empty rows, in order, and consecutive rows of a user are its windows."""
    ds = real
    rows = [json.loads(line) for line in (lastfm_path / "test.jsonl").read_text().splitlines()]
    expected = [(r["history"], r["next"]) for r in rows]
    assert [(list(ex.history), ex.target) for ex in ds.splits["test"]] == expected
    assert ds.splits["test"][0].user == "test-u0001" and ds.splits["test"][-1].user == "test-u0122"
    train = ds.splits["train"]
    for prev, ex in zip(train, train[1:], strict=False):
        if ex.user == prev.user:
            assert ex.history[-1] == prev.target and ex.history[:-1] == prev.history[-(len(ex.history) - 1):]
    assert train[0].user == "train-u0001" and train[-1].user == "train-u0976"


def test_real_lastfm_min_history_3_matches_llara(lastfm_path):
    ds = load_lastfm(lastfm_path, min_history=3)
    assert len(ds.splits["train"]) == 47872
    assert [(r.count, r.unit) for r in ds.filtered] == [(976, "rows"), (1952, "rows")]
    assert "min_history=3" in ds.filtered[1].reason


def test_real_lastfm_truncation_is_reported(lastfm_path):
    rows = [json.loads(line) for line in (lastfm_path / "train.jsonl").read_text().splitlines()]
    longer = sum(len(r["history"]) > 4 for r in rows)
    ds = load_lastfm(lastfm_path, max_history=4)
    truncated = [r for r in ds.filtered if r.unit == "histories truncated" and r.stage == "train.jsonl"]
    assert len(truncated) == 1 and truncated[0].count == longer
    assert max(len(ex.history) for ex in ds.splits["train"]) == 4


def test_real_lastfm_stats_and_cli_view(real):
    stats = dataset_stats(real)
    again = json.loads(json.dumps(stats))
    assert again["items"] == 4606 and again["rows"]["valid"] == 122 and again["rows"]["test"] == 122
    assert again["filtered"][0]["count"] == 976
    text = format_stats(stats)
    assert "4,606" in text and "976 rows" in text and "empty history" in text


# --------------------------------------------------------------------------------------------------------
# Small hand-written directories
# --------------------------------------------------------------------------------------------------------

NAMES = "0::Alpha\n1::Beta\n2::Gamma\n3::Delta\n4::Epsilon\n"


def _row(history, target, len_seq=None):
    return json.dumps({"history": history, "len_seq": len(history) if len_seq is None else len_seq,
                       "next": target})


def write_llara(root, train=None, valid=None, test=None, names=NAMES):
    root.mkdir(parents=True, exist_ok=True)
    train = train if train is not None else [_row([], 0, 1), _row([0], 1), _row([0, 1], 2),
                                             _row([], 3, 1), _row([3], 4)]
    valid = valid if valid is not None else [_row([0, 1, 2], 3)]
    test = test if test is not None else [_row([1, 2, 3], 4)]
    for name, lines in (("train", train), ("valid", valid), ("test", test)):
        (root / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines))
    (root / "id2name.txt").write_bytes(names.encode() if isinstance(names, str) else names)
    return root


def test_small_directory_users_and_filter(tmp_path):
    ds = load_lastfm(write_llara(tmp_path / "d"))
    assert [(ex.user, ex.history, ex.target) for ex in ds.splits["train"]] == [
        ("train-u0001", (0,), 1), ("train-u0001", (0, 1), 2), ("train-u0002", (3,), 4)]
    assert ds.splits["valid"][0].user == "valid-u0001"
    assert ds.catalog == {0: "Alpha", 1: "Beta", 2: "Gamma", 3: "Delta", 4: "Epsilon"}
    assert [(r.count, r.unit) for r in ds.filtered] == [(2, "rows")]


def test_user_boundary_without_empty_row(tmp_path):
    """A row that does not continue the previous window starts a new user even without an empty row."""
    train = [_row([0], 1), _row([0, 1], 2), _row([3], 4), _row([3, 4], 0)]
    ds = load_lastfm(write_llara(tmp_path / "d", train=train))
    assert [ex.user for ex in ds.splits["train"]] == ["train-u0001"] * 2 + ["train-u0002"] * 2


def test_duplicate_titles_are_made_unique_and_reported(tmp_path):
    ds = load_lastfm(write_llara(tmp_path / "d", names="0::Alpha\n1::Beta\n2::Alpha\n3::D\n4::E\n"))
    assert ds.catalog[0] == "Alpha" and ds.catalog[2] == "Alpha (#2)"
    renamed = [r for r in ds.filtered if r.unit == "items renamed"]
    assert [(r.stage, r.count) for r in renamed] == [("id2name.txt", 1)]


def test_via_load_dataset_and_environment(tmp_path, monkeypatch):
    root = write_llara(tmp_path / "d")
    monkeypatch.setenv("RISER_LITE_LASTFM", str(root))
    assert load_dataset("lastfm").num_items == 5
    monkeypatch.delenv("RISER_LITE_LASTFM")
    with pytest.raises(DataError, match="RISER_LITE_LASTFM"):
        load_dataset("lastfm")


def _error(tmp_path, **files) -> DataError:
    with pytest.raises(DataError) as info:
        load_lastfm(write_llara(tmp_path / "bad", **files))
    return info.value


def test_malformed_json_names_file_and_line(tmp_path):
    err = _error(tmp_path, valid=[_row([0, 1, 2], 3), '{"history": [0, 1], "len_seq": 2,'])
    assert err.path.name == "valid.jsonl" and err.line == 2 and "malformed JSON" in str(err)
    assert "valid.jsonl, line 2" in str(err)


def test_unknown_item_names_file_line_field(tmp_path):
    err = _error(tmp_path, test=[_row([1, 2, 4606], 4)])
    assert (err.path.name, err.line, err.field) == ("test.jsonl", 1, "history") and "4606" in str(err)
    err = _error(tmp_path, test=[_row([1, 2], 9)])
    assert (err.path.name, err.line, err.field) == ("test.jsonl", 1, "next")
    assert "unknown item id 9" in str(err)


def test_len_seq_mismatch_is_an_error(tmp_path):
    err = _error(tmp_path, train=[_row([0], 1), _row([0, 1], 2, len_seq=3)])
    assert (err.path.name, err.line, err.field) == ("train.jsonl", 2, "len_seq")
    assert "len_seq=3" in str(err) and "2 items" in str(err)


def test_missing_and_mistyped_fields(tmp_path):
    err = _error(tmp_path, valid=['{"history": [0, 1], "len_seq": 2}'])
    assert (err.line, err.field) == (1, "next") and "missing field" in str(err)
    err = _error(tmp_path, valid=['{"history": [0, "1"], "len_seq": 2, "next": 3}'])
    assert (err.line, err.field) == (1, "history")
    err = _error(tmp_path, valid=['{"history": [0, 1], "len_seq": 2, "next": true}'])
    assert (err.line, err.field) == (1, "next") and "not an integer" in str(err)
    err = _error(tmp_path, valid=["[0, 1, 2]"])
    assert err.line == 1 and "JSON object" in str(err)


def test_bad_id2name(tmp_path):
    err = _error(tmp_path, names="0::Alpha\n1::Beta\n1::Again\n")
    assert (err.path.name, err.line, err.field) == ("id2name.txt", 3, "id") and "first on line 2" in str(err)
    err = _error(tmp_path, names="0::Alpha\n1::   \n")
    assert (err.line, err.field) == (2, "name") and "blank" in str(err)
    err = _error(tmp_path, names="0::Alpha\nBeta\n")
    assert err.line == 2 and "::" in str(err)
    err = _error(tmp_path, names="0::Alpha\nx1::Beta\n")
    assert (err.line, err.field) == (2, "id")


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    err = _error(tmp_path, names=b"0::Alpha\n1::Beta\n2::Caf\xe9\n3::D\n4::E\n")
    assert (err.path.name, err.line) == ("id2name.txt", 3) and "UTF-8" in str(err) and "0xe9" in str(err)


def test_missing_file_and_bad_bounds(tmp_path):
    root = write_llara(tmp_path / "d")
    (root / "valid.jsonl").unlink()
    with pytest.raises(DataError, match=r"missing file\(s\) \['valid.jsonl'\]"):
        load_lastfm(root)
    with pytest.raises(ValueError, match="min_history"):
        load_lastfm(root, min_history=0)
    with pytest.raises(ValueError, match="max_history"):
        load_lastfm(root, max_history=0)
