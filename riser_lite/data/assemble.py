"""Steps every loader shares on the way from parsed rows to a `RecDataset`: item-file lines checked
(`add_item`), then unique titles (`unique_catalog`) and bounded histories (`bound_histories`), each change
reported as a `FilterRecord` so nothing changes silently."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from riser_lite.data.titles import MAX_TITLE_CHARS, TRUNCATED_TITLE_CHARS, is_blank_title, make_titles_unique
from riser_lite.data.types import DataError, Example, FilterRecord


def check_history_bounds(max_history: int, min_history: int) -> None:
    """Reject impossible bounds early, before any file is read."""
    if type(max_history) is not int or max_history < 1:
        raise ValueError(f"max_history must be an integer >= 1, got {max_history!r}")
    if type(min_history) is not int or not 1 <= min_history <= max_history:
        raise ValueError(f"min_history must be an integer in 1..max_history={max_history}, "
                         f"got {min_history!r}")


def add_item(titles: dict[int, str], first_line: dict[int, int], item: int, title: str, *, path: Path,
             line: int, title_field: str) -> None:
    """Add one line of an item file to `titles`: each id once, each title visible (errors name the line)."""
    if item in titles:
        raise DataError(f"duplicate item id {item} (first on line {first_line[item]}); expected each id once",
                        path=path, line=line, field="id")
    if is_blank_title(title):
        raise DataError(f"blank {title_field} for item {item}; expected a non-empty title", path=path,
                        line=line, field=title_field)
    titles[item], first_line[item] = title, line


def unique_catalog(titles: Mapping[int, str], stage: str, truncate_titles: bool = False,
                   ) -> tuple[dict[int, str], list[FilterRecord]]:
    """Catalogue with unique, whitespace-normalised titles (`riser_lite.data.titles.make_titles_unique`) and
    records of the items renamed; a title over `MAX_TITLE_CHARS` is an error (cut with `truncate_titles`)."""
    records = []
    cut = sum(len(title) > MAX_TITLE_CHARS for title in titles.values()) if truncate_titles else 0
    if cut:
        titles = {item: title[:TRUNCATED_TITLE_CHARS].rstrip() if len(title) > MAX_TITLE_CHARS else title
                  for item, title in titles.items()}
        records.append(FilterRecord(stage, cut, f"title longer than {MAX_TITLE_CHARS} characters; "
                                                "truncated (truncate_titles=True; items kept)",
                                    "titles truncated"))
    too_long = next((item for item, title in titles.items() if len(title) > MAX_TITLE_CHARS), None)
    if too_long is not None:
        raise DataError(f"title of item {too_long} has {len(titles[too_long])} characters; expected at most "
                        f"{MAX_TITLE_CHARS} (load_dataset(..., truncate_titles=True) cuts long titles "
                        "and counts them)", path=stage, field="title")
    try:
        catalog = make_titles_unique(titles)
    except ValueError as err:
        raise DataError(f"{err}", path=stage, field="title") from None
    renamed = sum(1 for item, title in catalog.items() if title != " ".join(titles[item].split()))
    if renamed:
        records.append(FilterRecord(stage, renamed, "title shared with a lower item id; suffixed ' (#<id>)' "
                                                    "to keep titles unique (items kept)", "items renamed"))
    return catalog, records


def bound_histories(examples: list[Example], stage: str, *, max_history: int, min_history: int,
                    empty_reason: str = "empty history: nothing to condition on",
                    ) -> tuple[list[Example], list[FilterRecord]]:
    """Drop examples with fewer than `min_history` history items and truncate longer than `max_history`.
    Empty histories (usually a format quirk, such as a user's first interaction) get their own record."""
    kept: list[Example] = []
    empty = short = truncated = 0
    for ex in examples:
        n = len(ex.history)
        if n == 0:
            empty += 1
        elif n < min_history:
            short += 1
        elif n > max_history:
            truncated += 1
            kept.append(Example(ex.user, ex.history[-max_history:], ex.target, ex.time))
        else:
            kept.append(ex)
    records = []
    if empty:
        records.append(FilterRecord(stage, empty, f"{empty_reason} (removed)"))
    if short:
        records.append(FilterRecord(stage, short, f"history shorter than min_history={min_history} "
                                                  "(removed)"))
    if truncated:
        records.append(FilterRecord(stage, truncated, f"history longer than max_history={max_history}; "
                                                      "kept its newest items (example kept)",
                                    "histories truncated"))
    return kept, records
