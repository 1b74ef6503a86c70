"""LastFM next-artist data in the LLaRA format (also used by S-DPO).

A directory of UTF-8 files: ``train.jsonl``, ``valid.jsonl``, ``test.jsonl`` with one
``{"history": [item ids, oldest first, <= 10], "len_seq": int, "next": item id}`` per line, and
``id2name.txt`` with one ``<item id>::<artist name>`` per line.

LLaRA rows carry no user id, so users are derived from the row order: in train a new user starts at an
empty history or at a row that does not continue the previous window (``train-u0001``, ...); valid and test
hold one row per user (``valid-u0001``, ...).

Reported as `FilterRecord`s: rows with an empty history are removed (train has 976: each user's first
interaction, stored as all padding with ``len_seq=1``), as are rows shorter than ``min_history`` (LLaRA's
and S-DPO's loaders keep ``len_seq >= 3``, i.e. ``min_history=3``); longer histories are truncated; names
are normalised to Unicode NFC; a shared name gets " (#<id>)" (`riser_lite.data.titles.make_titles_unique`).

Anything else unexpected (a bad or repeated id, an unusable name, a missing field, a ``len_seq`` that
differs from the history length) is a `DataError` naming file, line and field.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from riser_lite.data.assemble import add_item, bound_histories, check_history_bounds, unique_catalog
from riser_lite.data.textio import iter_json_lines, iter_lines
from riser_lite.data.titles import title_problem
from riser_lite.data.types import SPLITS, DataError, Example, FilterRecord, RecDataset
from riser_lite.data.validate import validate_dataset

SPLIT_FILES = {"train": "train.jsonl", "valid": "valid.jsonl", "test": "test.jsonl"}
TITLE_FILE = "id2name.txt"
ENV_PATH = "RISER_LITE_LASTFM"  # where to look when no path is given
_INT = frozenset({int})  # JSON integers only: bools and floats are not item ids
MAX_ITEM_ID = 2**31 - 1  # ids are int32 tensors downstream
_DECIMAL = re.compile(r"[0-9]+")  # int() would also take "1_0", " 7", "+3", "-1" ("no item" in the package)
EMPTY_REASON = "empty history: the user's first interaction, stored by LLaRA as all padding with len_seq=1"


def read_id2name(path: str | Path) -> dict[int, str]:
    """Raw titles from an ``id::name`` file. Duplicate ids and blank names are errors (line, field named)."""
    path = Path(path)
    titles: dict[int, str] = {}
    first_line: dict[int, int] = {}
    for number, text in iter_lines(path):
        if not text.strip():
            continue
        if "::" not in text:
            raise DataError(f"{text[:60]!r} has no '::'; expected '<item id>::<name>'", path=path,
                            line=number)
        raw_id, name = text.split("::", 1)
        if not _DECIMAL.fullmatch(raw_id) or int(raw_id) > MAX_ITEM_ID:
            raise DataError(f"item id {raw_id[:40]!r} is not a plain decimal integer in [0, {MAX_ITEM_ID}]; "
                            "expected '<item id>::<name>'", path=path, line=number, field="id")
        item = int(raw_id)
        add_item(titles, first_line, item, name, path=path, line=number, title_field="name")
        problem = title_problem(name)
        if problem is not None:
            raise DataError(f"name of item {item} holds a {problem}; expected plain text", path=path,
                            line=number, field="name")
    if not titles:
        raise DataError("no items; expected '<item id>::<name>' lines", path=path)
    return titles


def _int_field(record: dict, name: str, path: Path, number: int) -> int:
    value = record.get(name)
    if name not in record:
        raise DataError(f"missing field; expected an integer {name!r}", path=path, line=number, field=name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{value!r} is not an integer", path=path, line=number, field=name)
    return value


def _continues(previous: tuple[tuple[int, ...], int] | None, history: tuple[int, ...]) -> bool:
    """True when `history` is the window that follows `previous` = (history, next) for the same user."""
    if previous is None or not history:
        return False
    prev_history, prev_next = previous
    if history[-1] != prev_next or len(history) < len(prev_history):
        return False
    kept = len(history) - 1  # the older part of `history` must be the newest items of the previous history
    return history[:-1] == (prev_history[len(prev_history) - kept:] if kept else ())


def read_llara_split(path: str | Path, split: str, catalog: dict[int, str]) -> list[Example]:
    """Examples of one LLaRA JSON-lines file, with derived user ids; every item is checked against the ids."""
    path = Path(path)
    rows: list[tuple[tuple[int, ...], int]] = []
    new_user: list[bool] = []
    previous = None
    known = frozenset(catalog)
    for number, record in iter_json_lines(path):
        if "history" not in record:
            raise DataError("missing field; expected a list of item ids 'history'", path=path, line=number,
                            field="history")
        history = record["history"]
        if not isinstance(history, list) or not _INT.issuperset(map(type, history)):
            raise DataError(f"{str(history)[:60]} is not a list of integer item ids", path=path, line=number,
                            field="history")
        length = _int_field(record, "len_seq", path, number)
        target = _int_field(record, "next", path, number)
        if history and length != len(history) or not history and length not in (0, 1):
            raise DataError(f"len_seq={length} but the history has {len(history)} items; expected them equal "
                            "(or len_seq 0/1 with an empty history)", path=path, line=number, field="len_seq")
        for item, field in [*((item, "history") for item in history), (target, "next")]:
            if item not in known:
                raise DataError(f"unknown item id {item}; expected an id listed in {TITLE_FILE}", path=path,
                                line=number, field=field)
        history = tuple(history)
        # Train holds consecutive windows per user; valid/test hold exactly one row per user.
        new_user.append(split != "train" or not _continues(previous, history))
        rows.append((history, target))
        previous = (history, target)
    width = max(4, len(str(sum(new_user))))
    examples, user = [], 0
    for (history, target), starts in zip(rows, new_user, strict=True):
        user += starts
        examples.append(Example(f"{split}-u{user:0{width}d}", history, target))
    return examples


def load_lastfm(path: str | Path | None = None, *, max_history: int = 10, min_history: int = 1,
                truncate_titles: bool = False) -> RecDataset:
    """Load a LLaRA-format directory (default: ``$RISER_LITE_LASTFM``) into a validated `RecDataset`.

    `truncate_titles` cuts names over `riser_lite.data.titles.MAX_TITLE_CHARS` (counted) instead of failing.
    """
    check_history_bounds(max_history, min_history)
    if path is None:
        path = os.environ.get(ENV_PATH)
        if not path:
            raise DataError(f"no LastFM directory given; pass path=... or set {ENV_PATH}")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"not a directory; expected a LLaRA-format folder with "
                        f"{sorted(SPLIT_FILES.values())} and {TITLE_FILE}", path=root)
    missing = [name for name in [*SPLIT_FILES.values(), TITLE_FILE] if not (root / name).is_file()]
    if missing:
        raise DataError(f"missing file(s) {missing}; expected {sorted(SPLIT_FILES.values())} and "
                        f"{TITLE_FILE}", path=root)
    raw_titles = read_id2name(root / TITLE_FILE)
    # NFC: names that differ only in how an accent is encoded are one name (then one shared-name conflict)
    normalised = {item: unicodedata.normalize("NFC", name) for item, name in raw_titles.items()}
    changed = sum(normalised[item] != name for item, name in raw_titles.items())
    catalog, filtered = unique_catalog(normalised, TITLE_FILE, truncate_titles)
    if changed:
        filtered.insert(0, FilterRecord(TITLE_FILE, changed, "name normalised to Unicode NFC (items kept)",
                                        "names normalised"))
    splits: dict[str, list[Example]] = {}
    for split in SPLITS:
        examples = read_llara_split(root / SPLIT_FILES[split], split, raw_titles)
        splits[split], records = bound_histories(examples, SPLIT_FILES[split], max_history=max_history,
                                                 min_history=min_history, empty_reason=EMPTY_REASON)
        filtered.extend(records)
    ds = RecDataset(name="lastfm", catalog=catalog, splits=splits, filtered=filtered, max_history=max_history,
                    source=str(root.resolve()))
    validate_dataset(ds)
    return ds
