"""The dataset's own semantic IDs in the Amazon CSV layout (MiniOneRec releases codes with its data), for
`run_sft(..., items="sid", sids=load_amazon_sids(path))` instead of codes built from the training split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from riser_lab.sid import code_stats, resolve_collisions
from riser_lite.data.amazon_csv import (
    find_item_file,
    find_split_files,
    item_cells,
    literal_list,
    load_amazon_csv,
)
from riser_lite.data.textio import iter_csv_records, iter_lines
from riser_lite.data.types import DataError
from riser_lite.items.represent import SemanticIds, parse_code


def _parse_sid(text: str, **where) -> tuple[int, ...]:
    try:
        return parse_code(text)
    except ValueError as err:
        raise DataError(str(err), **where) from None


def _sids_from_item_file(path: Path) -> dict[int, tuple[tuple[int, ...], Path, int]]:
    """item -> (code, file, line) from a 'sid<TAB>title<TAB>id' item file (empty without a sid column)."""
    found = {}
    for number, text in iter_lines(path):
        cells = text.split("\t")
        if len(cells) == 3:
            found[int(cells[2])] = (_parse_sid(cells[0], path=path, line=number, field="sid"), path, number)
    return found


def _sids_from_csv(files: dict[str, Path]) -> dict[int, tuple[tuple[int, ...], Path, int]]:
    """item -> (code, file, line) from the CSVs' history_item_sid / item_sid columns; one code per item."""
    found: dict[int, tuple[tuple[int, ...], Path, int]] = {}
    for path in files.values():
        for line, row in iter_csv_records(path):
            if "history_item_sid" not in row or "item_sid" not in row:
                raise DataError("no history_item_sid / item_sid columns: this data carries no semantic IDs",
                                path=path, line=1, field="item_sid")
            history = literal_list(row["history_item_id"], path, line, "history_item_id", int)
            for item, text, column in item_cells(row, history, int(row["item_id"]), "sid", path, line):
                code = _parse_sid(text, path=path, line=line, field=column)
                first = found.setdefault(item, (code, path, line))
                if first[0] != code:
                    raise DataError(f"item {item} has code {code} here but {first[0]} at {first[1].name} "
                                    f"line {first[2]}; expected one code per item", path=path, line=line,
                                    field=column)
    return found


def load_amazon_sids(path: str | Path, *, category: str | None = None,
                     item_file: str | Path | None = None) -> SemanticIds:
    """The dataset's own semantic IDs (``<a_X><b_Y><c_Z>``) in the Amazon CSV layout
    (`riser_lite.data.amazon_csv`): from the item file's sid column if it has one, else from the CSVs'
    ``history_item_sid`` / ``item_sid`` columns.

    A code that does not parse, codes of different lengths, two codes for one item or an item without a
    code is an error naming file, line and field. Codes shared by several items (the released codes do
    collide) get one more level numbering them, most popular in training first (`resolve_collisions`).
    """
    root = Path(path)
    dataset = load_amazon_csv(root, category=category, item_file=item_file)
    items_path = Path(item_file) if item_file is not None else find_item_file(root, category)
    found, source = _sids_from_item_file(items_path), items_path.name
    if not found:
        found, source = _sids_from_csv(find_split_files(root, category)), "csv columns"
    first_item = next(iter(found))
    length = len(found[first_item][0])
    for item, (code, file, line) in found.items():
        if len(code) != length:
            raise DataError(f"code of {len(code)} levels for item {item}; expected {length} like item "
                            f"{first_item}'s", path=file, line=line, field="sid")
    missing = sorted(set(dataset.catalog) - set(found))
    if missing:
        raise DataError(f"{len(missing)} item(s) have no semantic ID, e.g. {missing[:5]}; expected a code "
                        "for every catalogue item", path=root if source == "csv columns" else items_path,
                        field="sid")
    popularity = Counter(ex.target for ex in dataset.splits["train"])
    codes, collisions = resolve_collisions({item: found[item][0] for item in dataset.catalog}, popularity)
    stats = {**code_stats(codes), **collisions, "cold_items": 0}
    return SemanticIds(codes=codes, stats=stats, config={"source": f"amazon-csv ({source})"})
