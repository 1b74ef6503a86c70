"""Processed Amazon CSVs as released by the D3 / ReRe / MiniOneRec family.

Each CSV has a header row and one example per record. Columns used (others are ignored):

==================== ======== ==========================================================================
column               required meaning
==================== ======== ==========================================================================
user_id              yes      user identifier (kept as text)
history_item_id      yes      Python-literal list of item ids, oldest first, e.g. ``[328, 2832]``
item_id              yes      target item id
history_item_title   yes      Python-literal list of the history's titles (cross-checked)
item_title           yes      the target's title (cross-checked)
history_item_sid     no       list of semantic ids (cross-checked when the item file has sids)
item_sid             no       the target's semantic id (idem)
timestamp            no       target time (seconds) -> `Example.time`; then every record needs one
==================== ======== ==========================================================================

List cells are parsed with `ast.literal_eval` (literals only; never `eval`). Item file lines are
``title<TAB>id`` or ``sid<TAB>title<TAB>id`` (one form per file). Titles in the CSV must equal the item
file's title for that id (after collapsing whitespace); a mismatch is an error naming file, line and field.

Where the files are found, given ``path``:

1. ``path`` is a directory with the split CSVs in it. For each split the first rule that matches wins:
   the exact names ``train.csv`` / ``valid.csv`` (or ``val.csv``, ``validation.csv``) / ``test.csv``;
   otherwise exactly one ``*train*.csv`` / ``*valid*.csv`` (or ``*val*.csv``) / ``*test*.csv``.
2. Otherwise ``path`` has sub-directories ``train/``, ``valid/`` (or ``val/``) and ``test/`` holding one
   ``*.csv`` each (the D3 / MiniOneRec release layout, e.g. ``train/Office_Products_5_2016-10-2018-11.csv``).

The item file is, in order: the ``item_file`` option; exactly one ``*.item.txt`` in ``path``;
``item.txt`` / ``items.txt`` in ``path``; exactly one ``*.txt`` in ``path/info/``. With several categories in
one folder, pass ``category="Office_Products"`` to keep only file names starting with it.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

from riser_lite.data.assemble import add_item, bound_histories, check_history_bounds, unique_catalog
from riser_lite.data.textio import iter_csv_records, iter_lines
from riser_lite.data.types import SPLITS, DataError, Example, RecDataset
from riser_lite.data.validate import validate_dataset

REQUIRED_COLUMNS = ("user_id", "history_item_id", "item_id", "history_item_title", "item_title")
EXACT_NAMES = {"train": ("train.csv",), "valid": ("valid.csv", "val.csv", "validation.csv"),
               "test": ("test.csv",)}
PATTERNS = {"train": ("*train*.csv",), "valid": ("*valid*.csv", "*val*.csv"), "test": ("*test*.csv",)}
SUBDIRS = {"train": ("train",), "valid": ("valid", "val", "validation"), "test": ("test",)}


def _norm(text: str) -> str:
    return " ".join(text.split())


def _only(candidates: list[Path], what: str, where: Path) -> Path | None:
    if len(candidates) > 1:
        names = sorted(p.name for p in candidates)
        raise DataError(f"several candidates for the {what}: {names}; pass category=... (file-name prefix) "
                        "or remove the extras", path=where)
    return candidates[0] if candidates else None


def _select(paths, category: str | None) -> list[Path]:
    return sorted(p for p in paths if p.is_file() and (category is None or p.name.startswith(category)))


def find_split_files(root: Path, category: str | None = None) -> dict[str, Path]:
    """The three split CSVs under `root`: per split, the first rule of the module docstring that matches."""
    found: dict[str, Path] = {}
    for split in SPLITS:
        exact = [root / name for name in EXACT_NAMES[split] if category is None and (root / name).is_file()]
        match = exact[0] if exact else None
        for pattern in [*PATTERNS[split], *(f"{sub}/*.csv" for sub in SUBDIRS[split])]:
            if match is None:
                match = _only(_select(root.glob(pattern), category), f"{split} CSV", root)
        if match is None:
            raise DataError(f"no {split} CSV found; expected one of {list(EXACT_NAMES[split])}, a single "
                            f"{' / '.join(PATTERNS[split])}, or one *.csv in a "
                            f"{'/ or '.join(SUBDIRS[split])}/ sub-directory", path=root)
        found[split] = match
    return found


def find_item_file(root: Path, category: str | None = None) -> Path:
    """The item file under `root`: the first rule of the module docstring that matches."""
    for pattern in ("*.item.txt", "item.txt", "items.txt", "info/*.txt"):
        match = _only(_select(root.glob(pattern), category), f"item file ({pattern})", root)
        if match is not None:
            return match
    raise DataError("no item file found; expected item_file=..., one *.item.txt, item.txt / items.txt, "
                    "or one info/*.txt (lines 'title<TAB>id' or 'sid<TAB>title<TAB>id')", path=root)


def read_item_file(path: str | Path) -> tuple[dict[int, str], dict[int, str]]:
    """Raw titles and semantic ids (empty when the file has none) from an item file."""
    path = Path(path)
    titles: dict[int, str] = {}
    sids: dict[int, str] = {}
    first_line: dict[int, int] = {}
    columns = None
    for number, text in iter_lines(path):
        if not text.strip():
            continue
        cells = text.split("\t")
        if len(cells) not in (2, 3) or columns is not None and len(cells) != columns:
            expected = "'title<TAB>id' or 'sid<TAB>title<TAB>id'" if columns is None else (
                f"{columns} tab-separated cells like the lines before")
            raise DataError(f"{len(cells)} tab-separated cells; expected {expected}", path=path, line=number)
        columns = len(cells)
        try:
            item = int(cells[-1])
        except ValueError:
            raise DataError(f"item id {cells[-1]!r} is not an integer", path=path, line=number,
                            field="id") from None
        add_item(titles, first_line, item, cells[-2], path=path, line=number, title_field="title")
        if columns == 3:
            sids[item] = cells[0]
    if not titles:
        raise DataError("no items; expected lines 'title<TAB>id' or 'sid<TAB>title<TAB>id'", path=path)
    return titles, sids


def literal_list(cell: str, path: Path, line: int, column: str, kind: type) -> list:
    """A CSV cell holding a Python-literal list of `kind` values (``"[1, 2]"``), else `DataError`."""
    try:
        value = ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise DataError(f"{cell[:60]!r} is not a Python-literal list", path=path, line=line,
                        field=column) from None
    if not isinstance(value, list | tuple) or any(type(v) is not kind for v in value):
        raise DataError(f"{cell[:60]!r} is not a list of {kind.__name__}", path=path, line=line,
                        field=column)
    return list(value)


def _item_id(cell: str, path: Path, line: int, column: str, titles: dict[int, str]) -> int:
    try:
        item = int(cell.strip())
    except ValueError:
        raise DataError(f"{cell[:60]!r} is not an integer item id", path=path, line=line,
                        field=column) from None
    if item not in titles:
        raise DataError(f"unknown item id {item}; expected an id listed in the item file", path=path,
                        line=line, field=column)
    return item


def item_cells(row: dict[str, str], history: list[int], target: int, what: str, path: Path,
               line: int) -> list[tuple[int, str, str]]:
    """(item, text, column) for each cell of the row's history_item_<what> list, then its item_<what>."""
    texts = literal_list(row[f"history_item_{what}"], path, line, f"history_item_{what}", str)
    if len(texts) != len(history):
        raise DataError(f"{len(texts)} {what}s for {len(history)} history ids; expected one per id",
                        path=path, line=line, field=f"history_item_{what}")
    cells = [(item, text, f"history_item_{what}") for item, text in zip(history, texts, strict=True)]
    return [*cells, (target, row[f"item_{what}"], f"item_{what}")]


def _cross_check(row: dict[str, str], history: list[int], target: int, what: str, expected: dict[int, str],
                 path: Path, line: int, item_file: Path) -> None:
    """The row's <what> cells agree with the item file (whitespace aside)."""
    for item, got, column in item_cells(row, history, target, what, path, line):
        if item in expected and _norm(got) != _norm(expected[item]):
            raise DataError(f"{what} {got[:80]!r} for item {item} differs from {expected[item][:80]!r} in "
                            f"{item_file.name}", path=path, line=line, field=column)


def read_csv_split(path: str | Path, split: str, titles: dict[int, str], sids: dict[int, str],
                   item_file: Path) -> list[Example]:
    """Examples of one CSV; every id resolved, every title (and sid) cross-checked against the item file."""
    path = Path(path)
    examples: list[Example] = []
    has_time = has_sid = None
    for line, row in iter_csv_records(path):
        if has_time is None:
            missing = [c for c in REQUIRED_COLUMNS if c not in row]
            if missing:
                raise DataError(f"missing column(s) {missing}; expected a header with "
                                f"{list(REQUIRED_COLUMNS)}", path=path, line=1, field=missing[0])
            has_time = "timestamp" in row
            has_sid = bool(sids) and "history_item_sid" in row and "item_sid" in row
        user = row["user_id"].strip()
        if not user:
            raise DataError("blank user id", path=path, line=line, field="user_id")
        history = literal_list(row["history_item_id"], path, line, "history_item_id", int)
        unknown = [i for i in history if i not in titles]
        if unknown:
            raise DataError(f"unknown item id {unknown[0]}; expected ids listed in the item file", path=path,
                            line=line, field="history_item_id")
        target = _item_id(row["item_id"], path, line, "item_id", titles)
        _cross_check(row, history, target, "title", titles, path, line, item_file)
        if has_sid:
            _cross_check(row, history, target, "sid", sids, path, line, item_file)
        time = None
        if has_time:
            try:
                time = float(row["timestamp"])
            except ValueError:
                time = math.nan
            if not math.isfinite(time):
                raise DataError(f"{row['timestamp'][:40]!r} is not a number; expected the target time in "
                                "seconds", path=path, line=line, field="timestamp")
        examples.append(Example(user, tuple(history), target, time))
    if has_time is None:
        raise DataError(f"no records; expected a header with {list(REQUIRED_COLUMNS)} and one row per "
                        "example", path=path)
    return examples


def load_amazon_csv(path: str | Path, *, max_history: int = 10, min_history: int = 1,
                    category: str | None = None, item_file: str | Path | None = None,
                    check_time_split: bool = True, truncate_titles: bool = False) -> RecDataset:
    """Load processed Amazon CSVs (see the module docstring) into a validated `RecDataset`.

    `check_time_split=False` skips the no-future-leak check for timed data split another way on purpose.
    `truncate_titles` cuts titles over `riser_lite.data.titles.MAX_TITLE_CHARS` (counted) instead of failing.
    """
    check_history_bounds(max_history, min_history)
    root = Path(path)
    if not root.is_dir():
        raise DataError("not a directory; expected a folder with train/valid/test CSVs and an item file",
                        path=root)
    files = find_split_files(root, category)
    items_path = Path(item_file) if item_file is not None else find_item_file(root, category)
    raw_titles, sids = read_item_file(items_path)
    catalog, filtered = unique_catalog(raw_titles, items_path.name, truncate_titles)
    splits: dict[str, list[Example]] = {}
    for split in SPLITS:
        examples = read_csv_split(files[split], split, raw_titles, sids, items_path)
        splits[split], records = bound_histories(examples, f"{split}:{files[split].name}",
                                                 max_history=max_history, min_history=min_history)
        filtered.extend(records)
    label = category or files["train"].stem
    ds = RecDataset(name=f"amazon-csv:{label}", catalog=catalog, splits=splits, filtered=filtered,
                    max_history=max_history, source=str(root.resolve()))
    validate_dataset(ds, check_time_split=check_time_split)
    return ds
