"""The Amazon CSV layout's own semantic IDs (riser_lab.amazon_sids.load_amazon_sids): item file or
CSV columns, counted collision repair, and errors naming file, line and field."""

import ast

import pytest

from riser_lab.amazon_sids import load_amazon_sids
from riser_lite.data import DataError
from tests.test_data_amazon_csv import SIDS, SPLIT_ROWS, TITLES, item_file_text, record, write_flat


def with_codes(codes: dict[int, str]) -> tuple[str, dict]:
    """An item file and split rows that carry `codes` instead of the default SIDS."""
    items = "".join(f"{codes[i]}\t{t}\t{i}\n" for i, t in TITLES.items())
    rows = {split: [[*r[:5], str([codes[i] for i in ast.literal_eval(r[3])]), codes[int(r[4])], r[7]]
                    for r in split_rows] for split, split_rows in SPLIT_ROWS.items()}
    return items, rows


def test_item_file_codes_load_and_collisions_are_a_counted_repair(tmp_path):
    items, rows = with_codes({**SIDS, 3: SIDS[2], 5: SIDS[2]})  # items 2, 3, 5 share one code
    sids = load_amazon_sids(write_flat(tmp_path / "d", rows=rows, items=items))
    assert sids.stats["colliding_items"] == 3 and sids.stats["collision_groups"] == 1
    # Training targets: 1, 2, 5 once each -> 2 and 5 tie on popularity, then item id order; 3 has none.
    assert [sids.codes[i] for i in (2, 5, 3)] == [(2, 3, 4, 0), (2, 3, 4, 1), (2, 3, 4, 2)]
    assert sids.codes[0] == (0, 1, 2, 0)  # the level is added to every item
    assert len(set(sids.codes.values())) == len(TITLES)
    assert sids.config["source"] == "amazon-csv (x.item.txt)"


def test_codes_from_the_csv_columns_when_the_item_file_has_none(tmp_path):
    sids = load_amazon_sids(write_flat(tmp_path / "d", items=item_file_text(with_sid=False)))
    assert sids.codes == {i: (i, i + 1, i + 2) for i in TITLES}
    assert sids.stats["collision_level"] is False and sids.config["source"] == "amazon-csv (csv columns)"


def bad_target_sid(text: str) -> dict:
    rows = [list(r) for r in SPLIT_ROWS["train"]]
    rows[1][6] = text  # the item_sid cell of the second record (file line 3)
    return {"train": rows}


def test_bad_codes_are_errors_naming_file_line_and_field(tmp_path):
    items = item_file_text(with_sid=False)
    with pytest.raises(DataError, match="not a semantic ID") as err:
        load_amazon_sids(write_flat(tmp_path / "a", rows=bad_target_sid("<a_1><b_x>"), items=items))
    assert (err.value.path.name, err.value.line, err.value.field) == ("train.csv", 3, "item_sid")
    # Item 2 is the target of train line 3 with another code than in valid.csv's history: both named.
    with pytest.raises(DataError, match=r"item 2 has code \(2, 3, 4\) here but \(9, 9, 9\) at train.csv "
                                        "line 3; expected one code per item") as err:
        load_amazon_sids(write_flat(tmp_path / "b", rows=bad_target_sid("<a_9><b_9><c_9>"), items=items))
    assert (err.value.path.name, err.value.line, err.value.field) == ("valid.csv", 2, "history_item_sid")
    items, rows = with_codes({**SIDS, 4: "<a_4><b_5>"})
    with pytest.raises(DataError, match="code of 2 levels for item 4; expected 3") as err:
        load_amazon_sids(write_flat(tmp_path / "c", rows=rows, items=items))
    assert (err.value.path.name, err.value.line, err.value.field) == ("x.item.txt", 5, "sid")


def test_an_item_without_a_code_is_an_error(tmp_path):
    rows = {"train": [record("A1", [0], 1, 100), record("A1", [0, 1], 2, 101)],  # item 5 in no row
            "valid": [record("A1", [0, 1, 2], 3, 200)], "test": [record("A1", [0, 1, 2, 3], 4, 301)]}
    root = write_flat(tmp_path / "d", rows=rows, items=item_file_text(with_sid=False))
    with pytest.raises(DataError, match=r"1 item\(s\) have no semantic ID, e.g. \[5\]"):
        load_amazon_sids(root)
