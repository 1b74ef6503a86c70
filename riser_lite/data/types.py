"""The one in-memory representation every data source is loaded into.

A dataset is a catalogue (item id -> title) plus examples (user, history of item ids oldest first,
target item id, target time where known) in ``train`` / ``valid`` / ``test`` splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Bad input data. The message names the file, line and field, and what was expected."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = [str(path)] if path is not None else []
        where += [f"line {line}"] if line is not None else []
        where += [f"field {field!r}"] if field is not None else []
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


@dataclass(frozen=True)
class Example:
    """One next-item prediction example."""

    user: str  # user identifier (string, whatever the source uses)
    history: tuple[int, ...]  # item ids, oldest first (the prompt shows at most `max_history` of them)
    target: int  # the item id to predict
    time: float | None = None  # time of the target interaction (seconds or any monotone unit) if known


@dataclass(frozen=True)
class FilterRecord:
    """Rows removed by design (never silently): where, how many, and why."""

    stage: str  # e.g. "train.jsonl" or "5-core"
    count: int  # rows (or items/users, see `unit`) removed
    reason: str  # human-readable reason
    unit: str = "rows"  # what `count` counts


@dataclass
class RecDataset:
    """Catalogue + examples in splits, plus what was filtered on the way in."""

    name: str  # e.g. "synthetic", "lastfm"
    catalog: dict[int, str]  # item id -> title (unique: see riser_lite.data.titles.make_titles_unique)
    splits: dict[str, list[Example]]  # "train" / "valid" / "test" -> examples
    filtered: list[FilterRecord] = field(default_factory=list)  # what the loader removed and why
    max_history: int = 10  # histories longer than this are truncated to their newest items in prompts
    # Synthetic data only: the exact next-item distribution of each example, aligned with `splits`
    # (oracle[split][i] maps item id -> probability; probabilities sum to 1).
    oracle: dict[str, list[dict[int, float]]] | None = None
    source: str = ""  # where it came from (path or generator config), for reports
    # Generated data only: how it was made, {"function": dotted path, "seed", "config"} (meta.json
    # "generator"), so the generator can be re-run: the oracle restored, the world rebuilt.
    generator: dict | None = None

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise DataError(f"dataset {self.name!r} lacks split(s) {missing}; expected {list(SPLITS)}")

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    def users(self, split: str | None = None) -> set[str]:
        names = [split] if split else list(SPLITS)
        return {ex.user for s in names for ex in self.splits[s]}
