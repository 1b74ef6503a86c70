"""Checks every loaded dataset passes, whatever its source. Errors name the split, example index and field.

`validate_dataset` is run by every loader before it returns; `check_title` and `check_example` are shared
with the file readers, which name the file and line instead.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from riser_lite.data.titles import MAX_TITLE_CHARS, is_blank_title
from riser_lite.data.types import SPLITS, DataError, Example, RecDataset


def _where(ds: RecDataset, split: str, index: int) -> str:
    return f"dataset {ds.name!r}, split {split!r}, example {index}"


def check_title(title, **where) -> None:
    """A title the model can write: visible, not too long, whitespace-normalised (the model answers with a
    title followed by a newline); `where`: path, line."""
    if not isinstance(title, str) or is_blank_title(title):
        raise DataError(f"blank title {title!r}; expected visible text", field="title", **where)
    if len(title) > MAX_TITLE_CHARS:
        raise DataError(f"title of {len(title)} characters; expected at most {MAX_TITLE_CHARS}",
                        field="title", **where)
    if title != " ".join(title.split()):
        raise DataError(f"title {title!r} has line breaks, leading/trailing or repeated whitespace; "
                        "expected normalised text (see riser_lite.data.titles.make_titles_unique)",
                        field="title", **where)


def validate_catalog(ds: RecDataset) -> None:
    """Catalogue ids are ints; titles pass `check_title` and are unique."""
    if not ds.catalog:
        raise DataError(f"dataset {ds.name!r} has an empty catalogue; expected at least one item")
    owner: dict[str, int] = {}
    for item, title in ds.catalog.items():
        where = f"dataset {ds.name!r}, catalogue item {item!r}"
        if type(item) is not int:
            raise DataError(f"item id has type {type(item).__name__}; expected int", path=where, field="id")
        check_title(title, path=where)
        if title in owner:
            raise DataError(f"title {title!r} is also the title of item {owner[title]}; expected unique "
                            "titles (see riser_lite.data.titles.make_titles_unique)", path=where,
                            field="title")
        owner[title] = item


def check_example(ex: Example, known: Collection[int], max_history: int, **where) -> None:
    """A non-empty user, 1..`max_history` history items and a target from `known` (the catalogue's ids), a
    finite time or None; `where` says where the example is."""
    if not isinstance(ex.user, str) or not ex.user:
        raise DataError(f"user {ex.user!r}; expected a non-empty string", field="user", **where)
    if not isinstance(ex.history, tuple) or not 1 <= len(ex.history) <= max_history:
        size = len(ex.history) if isinstance(ex.history, tuple) else type(ex.history).__name__
        raise DataError(f"history of {size} items; expected a tuple of 1..max_history={max_history} item ids",
                        field="history", **where)
    for position, item in enumerate(ex.history):
        if type(item) is not int or item not in known:  # not bools, not numpy integers
            raise DataError(f"item {item!r} at position {position} is not in the catalogue ({len(known)} "
                            "items)", field="history", **where)
    if type(ex.target) is not int:
        raise DataError(f"{ex.target!r} is not an integer item id", field="target", **where)
    if ex.target not in known:
        raise DataError(f"item {ex.target} is not in the catalogue ({len(known)} items)", field="target",
                        **where)
    if ex.time is not None and (isinstance(ex.time, bool) or not isinstance(ex.time, int | float)
                                or not math.isfinite(ex.time)):
        raise DataError(f"time {ex.time!r}; expected a finite number or None", field="time", **where)


def validate_examples(ds: RecDataset) -> None:
    """Every example passes `check_example`."""
    if type(ds.max_history) is not int or ds.max_history < 1:
        raise DataError(f"dataset {ds.name!r}: max_history={ds.max_history!r}; expected an integer >= 1")
    known = frozenset(ds.catalog)
    for split in SPLITS:
        for index, ex in enumerate(ds.splits[split]):
            where = _where(ds, split, index)
            if not isinstance(ex, Example):
                raise DataError(f"expected an Example, got {type(ex).__name__}", path=where)
            check_example(ex, known, ds.max_history, path=where)


def validate_oracle(ds: RecDataset, tolerance: float = 1e-4) -> None:
    """The synthetic oracle has one distribution over catalogue items per example."""
    if ds.oracle is None:
        return
    for split in SPLITS:
        rows = ds.oracle.get(split)
        if rows is None or len(rows) != len(ds.splits[split]):
            got = "no rows" if rows is None else f"{len(rows)} rows"
            raise DataError(f"dataset {ds.name!r}: oracle has {got} for split {split!r}; expected "
                            f"{len(ds.splits[split])} (one per example)", field="oracle")
        for index, dist in enumerate(rows):
            unknown = [item for item in dist if item not in ds.catalog]
            if unknown:
                raise DataError(f"oracle gives probability to item(s) {unknown[:5]} not in the catalogue",
                                path=_where(ds, split, index), field="oracle")
            total = sum(dist.values())
            if any(p < 0 for p in dist.values()) or abs(total - 1.0) > tolerance:
                raise DataError(f"oracle probabilities sum to {total:.6f} (or are negative); expected a "
                                "distribution summing to 1", path=_where(ds, split, index), field="oracle")


def check_no_future_leak(ds: RecDataset) -> None:
    """No train target may be later than the earliest valid/test target (the global chronological split).

    A violation means the model would train on interactions from the evaluation period; ties at the
    boundary are allowed. Checked only when every example of every split has a time.
    """
    examples = [ex for split in SPLITS for ex in ds.splits[split]]
    held_out = [ex.time for split in ("valid", "test") for ex in ds.splits[split]]
    if not held_out or any(ex.time is None for ex in examples):
        return
    boundary = min(held_out)
    late = [i for i, ex in enumerate(ds.splits["train"]) if ex.time > boundary]
    if late:
        raise DataError(f"train target time {ds.splits['train'][late[0]].time} is later than the earliest "
                        f"valid/test target time {boundary} ({len(late)} train examples are); expected a "
                        "chronological split where training never sees the evaluation period",
                        path=_where(ds, "train", late[0]), field="time")


def validate_dataset(ds: RecDataset, *, check_time_split: bool = True) -> None:
    """Run every check; raise `DataError` at the first problem.

    `check_time_split=False` skips `check_no_future_leak`, for timed data split another way on purpose.
    """
    validate_catalog(ds)
    validate_examples(ds)
    validate_oracle(ds)
    if check_time_split:
        check_no_future_leak(ds)
