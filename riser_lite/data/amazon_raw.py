"""Raw Amazon reviews (2018 or 2023 release) prepared the way the D3 / ReRe / MiniOneRec family does.

Input: a reviews and a metadata file, JSON lines, gzip allowed (recognised by content):

======== ================================================ ===========================================
release  reviews: user, item, time                        metadata: item, title
======== ================================================ ===========================================
2018     ``reviewerID``, ``asin``, ``unixReviewTime`` (s)  ``asin``, ``title`` (``meta_<Category>.json``)
2023     ``user_id``, ``parent_asin``, ``timestamp`` (ms)  ``parent_asin``, ``title`` (``meta_<...>.jsonl``)
======== ================================================ ===========================================

The release is recognised from the first review's fields (or forced with ``version``). In a directory
the metadata file is the ``meta_*`` one and the reviews file the other; ``category`` chooses among
several, or give ``reviews=`` and ``meta=`` paths.

Preparation, every step reported as a `FilterRecord`:

1. titles: ``&quot;``/``&amp;`` decoded, whitespace and surrounding quotes stripped; an item is dropped
   when its title is missing, at most one character, holds HTML (a tag, an entity such as ``&nbsp;``) or
   has more than ``max_title_words`` (20) words. A repeated metadata record keeps the first;
2. interactions outside [``start``, ``end``] (unix seconds, optional), on items without a usable title,
   and exact duplicates (user, item, time) are removed;
3. iterative ``k``-core (default 5) until every user and item has at least ``k`` interactions;
4. items are numbered 0..N-1 in ASIN order (`PreparedAmazon.asin_of`);
5. each user's interactions in time order (ties in file order) give one example per interaction after
   the first: the up to ``max_history`` previous items -> this one, at its time (seconds);
6. all examples sorted by target time (ties by user, then position) and split 8:1:1 (``ratios``), so no
   training target is later than a validation or test target.

Unlike D3's script, which picks a time window itself (from October 2017, widened a year at a time until
10,000 items remain), the window here is yours to give or the whole file.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from riser_lite.data.assemble import bound_histories, check_history_bounds, unique_catalog
from riser_lite.data.textio import iter_json_lines
from riser_lite.data.titles import is_blank_title
from riser_lite.data.types import DataError, Example, FilterRecord, RecDataset
from riser_lite.data.validate import validate_dataset

# Field names per release: user, item, time in reviews; item in metadata; time unit to seconds.
FIELDS = {
    "2018": {"user": "reviewerID", "item": "asin", "time": "unixReviewTime", "meta_item": "asin",
             "to_seconds": 1.0},
    "2023": {"user": "user_id", "item": "parent_asin", "time": "timestamp", "meta_item": "parent_asin",
             "to_seconds": 1e-3},
}
Row = tuple[str, str, float]  # one interaction: (user, ASIN, time in seconds)
SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")
_TAG = re.compile(r"<\s*/?\s*[A-Za-z][^>]*>")  # an HTML tag such as <span id="..."> or </b>
_ENTITY = re.compile(r"&(#\d+|#x[0-9A-Fa-f]+|[A-Za-z]+);")  # an HTML entity such as &nbsp; or &#39;


@dataclass
class PreparedAmazon:
    """The prepared dataset plus what is needed to trace items back to Amazon."""

    dataset: RecDataset
    asin_of: dict[int, str]  # item id -> ASIN (the parent ASIN for the 2023 release)
    version: str  # "2018" or "2023"


def clean_title(value: object, max_words: int = 20) -> tuple[str | None, str | None]:
    """``(cleaned title, None)`` if usable, else ``(None, reason)``."""
    if not isinstance(value, str):
        return None, "no title"
    text = " ".join(value.replace("&quot;", '"').replace("&amp;", "&").split()).strip('"').strip()
    if len(text) <= 1 or is_blank_title(text):
        return None, "blank or one-character title"
    if _TAG.search(text) or _ENTITY.search(text):
        return None, "HTML in the title (a tag or an entity such as &nbsp;)"
    if len(text.split()) > max_words:
        return None, f"title longer than {max_words} words"
    return text, None


def find_raw_files(root: Path, category: str | None = None) -> tuple[Path, Path]:
    """(reviews, meta) in a directory: ``meta_*`` is the metadata, the other JSON-lines file the reviews."""
    candidates = sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
    if category is not None:
        candidates = [p for p in candidates if p.name.removeprefix("meta_").startswith(category)]
    meta = [p for p in candidates if p.name.startswith("meta_")]
    reviews = [p for p in candidates if not p.name.startswith("meta_")]
    for what, found in (("metadata file (meta_*.json[l][.gz])", meta),
                        ("reviews file (*.json[l][.gz])", reviews)):
        if len(found) != 1:
            names = [p.name for p in found]
            hint = ("pass category=... or reviews=/meta= paths" if found
                    else "download it first (data/README.md gives the URLs)")
            raise DataError(f"expected exactly one {what}, found {names or 'none'}; {hint}", path=root)
    return reviews[0], meta[0]


def detect_version(reviews: Path) -> str:
    """"2018" or "2023", from the fields of the first review record."""
    for number, record in iter_json_lines(reviews):
        for version, fields in FIELDS.items():
            if fields["user"] in record and fields["item"] in record:
                return version
        raise DataError(f"fields {sorted(record)[:12]} match no known release; expected reviewerID/asin/"
                        "unixReviewTime (2018) or user_id/parent_asin/timestamp (2023)", path=reviews,
                        line=number)
    raise DataError("no records; expected one JSON review per line", path=reviews)


def _text_field(record: dict, name: str, path: Path, line: int) -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value.strip():
        got = "missing field" if name not in record else f"{value!r} is not a non-empty string"
        raise DataError(f"{got}; expected the {name!r} text field", path=path, line=line, field=name)
    return value


def read_meta(path: Path, version: str, max_words: int,
              ) -> tuple[dict[str, str], set[str], list[FilterRecord]]:
    """(usable titles by ASIN, every ASIN with a record, records of items dropped per reason)."""
    key = FIELDS[version]["meta_item"]
    titles: dict[str, str] = {}
    seen: set[str] = set()
    dropped: Counter[str] = Counter()
    duplicates = 0
    for line, record in iter_json_lines(path):
        asin = _text_field(record, key, path, line)
        if asin in seen:
            duplicates += 1
            continue
        seen.add(asin)
        title, reason = clean_title(record.get("title"), max_words)
        if title is None:
            dropped[reason] += 1
        else:
            titles[asin] = title
    records = [FilterRecord(path.name, n, f"item dropped: {reason}", "items")
               for reason, n in sorted(dropped.items())]
    if duplicates:
        records.append(FilterRecord(path.name, duplicates, "repeated metadata record for an item (first "
                                                           "kept)", "records"))
    return titles, seen, records


def read_reviews(path: Path, version: str) -> list[Row]:
    """(user, ASIN, time in seconds) per review, in file order."""
    fields = FIELDS[version]
    scale = fields["to_seconds"]
    rows = []
    for line, record in iter_json_lines(path):
        user = _text_field(record, fields["user"], path, line)
        asin = _text_field(record, fields["item"], path, line)
        time = record.get(fields["time"])
        if isinstance(time, bool) or not isinstance(time, int | float) or not math.isfinite(time):
            got = ("missing field" if fields["time"] not in record else f"{time!r} is not finite"
                   if isinstance(time, float) else f"{time!r} is not a number")
            raise DataError(f"{got}; expected a unix time", path=path, line=line, field=fields["time"])
        rows.append((user, asin, time * scale))
    return rows


def k_core(rows: list[Row], k: int) -> tuple[list[Row], list[FilterRecord]]:
    """Iteratively drop users and items with fewer than `k` interactions until none is left."""
    start_users = len({r[0] for r in rows})
    start_items = len({r[1] for r in rows})
    start_rows, rounds = len(rows), 0
    while True:
        users = Counter(r[0] for r in rows)
        items = Counter(r[1] for r in rows)
        if all(n >= k for n in users.values()) and all(n >= k for n in items.values()):
            break
        rounds += 1
        rows = [r for r in rows if users[r[0]] >= k and items[r[1]] >= k]
    stage = f"{k}-core"
    why = f"fewer than {k} interactions ({rounds} rounds of removal)"
    counts = ((start_rows - len(rows), "interactions", "interaction of a removed user or item"),
              (start_users - len(users), "users", f"user with {why}"),
              (start_items - len(items), "items", f"item with {why}"))
    return rows, [FilterRecord(stage, n, reason, unit) for n, unit, reason in counts if n]


def _windows(rows: list[Row], item_id: dict[str, int], max_history: int) -> list[Example]:
    by_user: dict[str, list[tuple[float, int]]] = {}
    for user, asin, time in rows:  # file order, so sorting by time alone keeps ties in file order
        by_user.setdefault(user, []).append((time, item_id[asin]))
    examples = []
    for user, events in by_user.items():
        events.sort(key=lambda e: e[0])
        items = [item for _, item in events]
        for i in range(1, len(events)):
            examples.append(Example(user, tuple(items[max(0, i - max_history):i]), items[i], events[i][0]))
    return examples


def chronological_split(examples: list[Example], ratios: tuple[float, float, float],
                        ) -> dict[str, list[Example]]:
    """Sort by target time (ties: user, then input order) and cut at ratios[0] and ratios[0] + ratios[1]."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-9:
        raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {ratios!r}")
    order = sorted(range(len(examples)), key=lambda i: (examples[i].time, examples[i].user, i))
    ordered = [examples[i] for i in order]
    n = len(ordered)
    a, b = int(n * ratios[0]), int(n * (ratios[0] + ratios[1]))
    return {"train": ordered[:a], "valid": ordered[a:b], "test": ordered[b:]}


# Reasons an interaction is removed before the k-core, in the order they are tested and reported.
OUTSIDE = "outside the time window [start, end]"
NO_META = "item has no metadata record"
NO_TITLE = "item dropped for its title (see the metadata records)"
DUPLICATE = "exact duplicate (same user, item and time)"


def _drop_unusable(rows, titles, meta_items, stage, start, end):
    """Remove interactions outside the window, on items without (usable) metadata, and exact duplicates."""
    counts: Counter[str] = Counter()
    kept, seen = [], set()
    for row in rows:
        _, asin, time = row
        if (start is not None and time < start) or (end is not None and time > end):
            counts[OUTSIDE] += 1
        elif asin not in meta_items:
            counts[NO_META] += 1
        elif asin not in titles:
            counts[NO_TITLE] += 1
        elif row in seen:
            counts[DUPLICATE] += 1
        else:
            seen.add(row)
            kept.append(row)
    reasons = (OUTSIDE, NO_META, NO_TITLE, DUPLICATE)
    return kept, [FilterRecord(stage, counts[r], r, "interactions") for r in reasons if counts[r]]


def prepare_amazon_raw(path: str | Path | None = None, *, reviews: str | Path | None = None,
                       meta: str | Path | None = None, category: str | None = None, version: str = "auto",
                       k: int = 5, max_history: int = 10, min_history: int = 1, max_title_words: int = 20,
                       ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), start: float | None = None,
                       end: float | None = None, truncate_titles: bool = False) -> PreparedAmazon:
    """Prepare raw reviews + metadata (see the module docstring); returns the dataset and the ASIN mapping.

    `truncate_titles` cuts titles over `riser_lite.data.titles.MAX_TITLE_CHARS` (counted) instead of failing.
    """
    check_history_bounds(max_history, min_history)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if reviews is None or meta is None:
        if path is None:
            raise DataError("no input given; pass a directory path or reviews=... and meta=... files")
        root = Path(path)
        if not root.is_dir():
            raise DataError("not a directory; expected a folder with a reviews file and a meta_* file",
                            path=root)
        found_reviews, found_meta = find_raw_files(root, category)
        reviews, meta = reviews or found_reviews, meta or found_meta
    reviews, meta = Path(reviews), Path(meta)
    if version == "auto":
        version = detect_version(reviews)
    if version not in FIELDS:
        raise ValueError(f"version must be 'auto', '2018' or '2023', got {version!r}")

    titles, meta_items, filtered = read_meta(meta, version, max_title_words)
    rows = read_reviews(reviews, version)
    rows, records = _drop_unusable(rows, titles, meta_items, reviews.name, start, end)
    filtered += records
    rows, records = k_core(rows, k)
    filtered += records
    if not rows:
        raise DataError(f"no interactions left after the {k}-core filter; try a smaller k or more data",
                        path=reviews)

    asins = sorted({asin for _, asin, _ in rows})
    item_id = {asin: i for i, asin in enumerate(asins)}
    catalog, records = unique_catalog({item_id[a]: titles[a] for a in asins}, meta.name, truncate_titles)
    filtered += records
    examples = _windows(rows, item_id, max_history)
    users = len({user for user, _, _ in rows})
    filtered.append(FilterRecord("windows", users, "each user's first interaction has no history, so it is "
                                                   "never a target (it stays in later histories)",
                                 "interactions"))
    examples, records = bound_histories(examples, "windows", max_history=max_history, min_history=min_history)
    filtered += records
    splits = chronological_split(examples, ratios)
    label = category or reviews.name.split(".")[0]
    ds = RecDataset(name=f"amazon-raw:{label}", catalog=catalog, splits=splits, filtered=filtered,
                    max_history=max_history,
                    source=f"{reviews.resolve()} + {meta.name} (release {version}, {k}-core)")
    validate_dataset(ds)
    return PreparedAmazon(ds, dict(enumerate(asins)), version)
