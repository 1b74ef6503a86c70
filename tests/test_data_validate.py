"""Dataset validation, statistics and the `load_dataset` dispatcher, on small hand-built datasets."""

import json
import math

import pytest

from riser_lite.data import (
    DataError,
    Example,
    FilterRecord,
    RecDataset,
    check_no_future_leak,
    dataset_stats,
    format_stats,
    load_dataset,
    validate_dataset,
)

CATALOG = {i: f"Item {i}" for i in range(10)}


def make(train=None, valid=None, test=None, catalog=None, max_history=3, oracle=None) -> RecDataset:
    train = train if train is not None else [Example("u1", (0,), 1, 1.0), Example("u1", (0, 1), 2, 2.0),
                                             Example("u2", (3,), 1, 3.0)]
    valid = valid if valid is not None else [Example("u1", (0, 1, 2), 4, 4.0)]
    test = test if test is not None else [Example("u2", (3, 1), 5, 5.0)]
    return RecDataset("tiny", dict(CATALOG if catalog is None else catalog),
                      {"train": train, "valid": valid, "test": test}, max_history=max_history, oracle=oracle)


def _error(ds, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        validate_dataset(ds, **kwargs)
    return info.value


def test_valid_dataset_passes():
    validate_dataset(make())


@pytest.mark.parametrize("example, field, words", [
    (Example("u3", (0, 42), 1), "history", "item 42 at position 1 is not in the catalogue"),
    (Example("u3", (0,), 42), "target", "item 42 is not in the catalogue"),
    (Example("u3", (), 1), "history", "history of 0 items"),
    (Example("u3", (0, 1, 2, 3), 4), "history", "history of 4 items; expected a tuple of 1..max_history=3"),
    (Example("u3", [0, 1], 4), "history", "history of list items"),
    (Example("u3", (0, True), 4), "history", "item True at position 1"),
    (Example("", (0,), 4), "user", "non-empty string"),
    (Example("u3", (0,), 4, math.nan), "time", "finite number"),
])
def test_bad_examples_name_split_index_field(example, field, words):
    ds = make(test=[Example("u2", (3, 1), 5), example])
    err = _error(ds)
    assert err.field == field and words in str(err)
    assert "dataset 'tiny', split 'test', example 1" in str(err)


@pytest.mark.parametrize("title, words", [
    ("   ", "blank title"),
    ("Item  0", "repeated whitespace"),
    ("Item\n1b", "line breaks"),
    ("Item 2", "also the title of item 2"),
])
def test_bad_titles(title, words):
    err = _error(make(catalog={**CATALOG, 7: title}))
    assert err.field == "title" and words in str(err) and "catalogue item 7" in str(err)


def test_catalogue_ids_must_be_ints():
    err = _error(make(catalog={**CATALOG, "10": "Item ten"}))
    assert err.field == "id" and "expected int" in str(err)


def test_oracle_checks():
    rows = {"train": [{1: 1.0}] * 3, "valid": [{4: 0.5, 5: 0.5}], "test": [{5: 1.0}]}
    validate_dataset(make(oracle=rows))
    err = _error(make(oracle={**rows, "valid": []}))
    assert "oracle has 0 rows for split 'valid'; expected 1" in str(err)
    err = _error(make(oracle={**rows, "test": [{5: 0.7}]}))
    assert "split 'test', example 0" in str(err) and "sum to 0.700000" in str(err)
    err = _error(make(oracle={**rows, "test": [{99: 1.0}]}))
    assert "[99] not in the catalogue" in str(err)


def test_future_leak():
    late = make(train=[Example("u1", (0,), 1, 1.0), Example("u9", (0,), 2, 4.5)])
    err = _error(late)
    assert "split 'train', example 1" in str(err) and err.field == "time"
    assert "4.5 is later than the earliest valid/test target time 4.0" in str(err)
    validate_dataset(late, check_time_split=False)
    tie = make(train=[Example("u1", (0,), 1, 4.0)])
    check_no_future_leak(tie)  # a tie at the boundary is allowed
    unknown = make(train=[Example("u1", (0,), 1, None), Example("u9", (0,), 2, 4.5)])
    check_no_future_leak(unknown)  # only checked when every time is known


def test_stats_values():
    train = [Example("u1", (0,), 1), Example("u1", (0, 1), 1), Example("u2", (3,), 1),
             Example("u2", (3, 1), 2)]
    ds = make(train=train, valid=[Example("u3", (0, 1, 2), 1)], test=[Example("u4", (2,), 9)])
    ds.filtered.append(FilterRecord("train.jsonl", 7, "empty history (removed)"))
    stats = json.loads(json.dumps(dataset_stats(ds)))
    assert stats["items"] == 10 and stats["rows"] == {"train": 4, "valid": 1, "test": 1, "all": 6}
    assert stats["users"] == {"train": 2, "valid": 1, "test": 1, "all": 4}
    assert stats["history_length"]["train"] == {"min": 1, "mean": 1.5, "median": 1.5, "max": 2}
    assert stats["history_length"]["all"]["max"] == 3
    pop = stats["target_popularity"]
    # top 10% of 10 items = 1 item (item 1, 3 of 4 train targets); item 9 never a train target -> cold.
    assert (pop["top_items"], pop["top_share"], pop["train_target_items"]) == (1, 0.75, 2)
    assert pop["cold"] == {"valid": 0, "test": 1} and pop["items_never_train_target"] == 8
    assert stats["title_length"]["words"] == {"min": 2, "mean": 2.0, "median": 2.0, "max": 2}
    assert stats["filtered"] == [{"stage": "train.jsonl", "count": 7, "reason": "empty history (removed)",
                                  "unit": "rows"}]
    assert stats["target_time"] == {"train": None, "valid": None, "test": None}
    text = format_stats(stats)
    assert "train.jsonl: 7 rows: empty history (removed)" in text and "75.0%" in text


def test_load_dataset_rejects_unknown_sources_and_bounds():
    with pytest.raises(ValueError, match="unknown data source 'movielens'"):
        load_dataset("movielens")
    with pytest.raises(ValueError, match="max_history"):
        load_dataset("synthetic", max_history=0)


def test_synthetic_and_native_through_load_dataset(tmp_path):
    from riser_lite.data.native import save_dataset
    from riser_lite.data.synthetic import SyntheticConfig

    small = SyntheticConfig(num_train_users=20, num_valid_users=5, num_test_users=5)
    ds = load_dataset("synthetic", seed=3, config=small, max_history=4)
    assert all(len(ex.history) <= 4 for s in ds.splits for ex in ds.splits[s]) and ds.max_history == 4
    assert all(len(ds.oracle[s]) == len(ds.splits[s]) for s in ds.splits)
    assert any(r.unit == "histories truncated" for r in ds.filtered)
    save_dataset(ds, tmp_path / "saved")
    again = load_dataset("native", tmp_path / "saved")
    assert again.splits == ds.splits and again.catalog == ds.catalog
    with pytest.raises(ValueError, match="takes no options"):
        load_dataset("native", tmp_path / "saved", k=3)
