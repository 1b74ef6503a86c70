"""riser_lite's own on-disk dataset format: plain UTF-8 text a person can read, diff and edit (no pickle).

A dataset is one directory::

    items.tsv             header "item_id<TAB>title", then one item per line
    train.jsonl           one example per line, history oldest first, time a number or null:
    valid.jsonl           {"user": "u0001", "history": [3, 17], "target": 5, "time": null}
    test.jsonl
    oracle_<split>.jsonl  optional (synthetic data): line i is example i's next-item distribution,
                          {"<item id>": probability, ...}, non-zero entries only
    meta.json             name, source, max_history, filtered records, row counts, the generator that
                          made the data if any (`RecDataset.generator`: synthetic data records its config
                          and seed), and any extra keys

Synthetic data is usually saved without its oracle files (one distribution over the whole catalogue per
example is tens of MB). `riser_lite.data.synthetic.load_synthetic` then restores the oracle exactly by
re-running the generator recorded in meta.json, after checking that it reproduces the saved catalogue and
examples; this module only reads and writes files.

Probabilities and times are written with Python's shortest round-trip float repr, so reloading gives back
exactly the numbers that were saved. `save_dataset` writes a complete new directory beside the old one and
swaps it in with renames, so an interrupted save leaves the previous dataset intact. `load_native` checks
every line and names the file, line and field of the first problem it finds.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from riser_lite.data.textio import iter_json_lines, iter_lines
from riser_lite.data.titles import is_blank_title
from riser_lite.data.types import SPLITS, DataError, Example, FilterRecord, RecDataset
from riser_lite.data.validate import validate_dataset

FORMAT = "riser_lite.native"
VERSION = 1
ITEMS_FILE = "items.tsv"
META_FILE = "meta.json"
ITEMS_HEADER = "item_id\ttitle"
ORACLE_TOLERANCE = 1e-6  # a stored distribution must sum to 1 within this (exact floats sum to ~1e-15)
NATIVE_FILES = frozenset({ITEMS_FILE, META_FILE, *(f"{s}.jsonl" for s in SPLITS),
                          *(f"oracle_{s}.jsonl" for s in SPLITS)})
_INT = re.compile(r"-?[0-9]+")


# --------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> str:
    """Compact one-line JSON, keeping non-ASCII characters readable."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _file_texts(ds: RecDataset, include_oracle: bool, extra_meta: Mapping[str, Any] | None) -> dict[str, str]:
    """The content of every file of the dataset, by file name."""
    texts = {ITEMS_FILE: ITEMS_HEADER + "\n" + "".join(f"{item}\t{ds.catalog[item]}\n"
                                                       for item in sorted(ds.catalog))}
    for split in SPLITS:
        texts[f"{split}.jsonl"] = "".join(
            _dumps({"user": ex.user, "history": list(ex.history), "target": ex.target, "time": ex.time})
            + "\n" for ex in ds.splits[split])
    if include_oracle and ds.oracle is not None:
        for split in SPLITS:
            texts[f"oracle_{split}.jsonl"] = "".join(
                _dumps(_oracle_entries(dist, f"dataset {ds.name!r}, split {split!r}, example {index}")) + "\n"
                for index, dist in enumerate(ds.oracle[split]))
    meta: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "name": ds.name, "source": ds.source,
        "max_history": ds.max_history,
        "filtered": [{"stage": r.stage, "count": r.count, "reason": r.reason, "unit": r.unit}
                     for r in ds.filtered],
        "counts": {"items": len(ds.catalog), **{s: len(ds.splits[s]) for s in SPLITS}},
        "oracle_files": include_oracle and ds.oracle is not None,
    }
    if ds.generator is not None:
        meta["generator"] = ds.generator
    for key, value in (extra_meta or {}).items():
        if key in meta:
            raise ValueError(f"extra_meta key {key!r} would overwrite a standard meta.json field")
        meta[key] = value
    texts[META_FILE] = json.dumps(meta, ensure_ascii=False, indent=2) + "\n"
    return texts


def _oracle_entries(dist: Mapping[int, float], where: str) -> dict[str, float]:
    """An oracle row as written: non-zero entries by item id, checked as `load_native` will check them."""
    entries = {str(item): float(dist[item]) for item in sorted(dist) if dist[item] != 0}
    total = math.fsum(entries.values())
    if any(not 0.0 < p <= 1.0 for p in entries.values()) or abs(total - 1.0) > ORACLE_TOLERANCE:
        raise DataError(f"oracle row sums to {total!r} or has probabilities outside [0, 1]; expected a "
                        f"distribution (within {ORACLE_TOLERANCE})", path=where, field="oracle")
    return entries


def _write_file(path: Path, text: str) -> None:
    """Write and flush to disk, so a rename that follows never exposes a half-written file."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_directory(path: Path) -> None:
    """Persist renames inside `path` (POSIX); a no-op where directories can't be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_dataset(ds: RecDataset, directory: str | Path, *, include_oracle: bool = True,
                 extra_meta: Mapping[str, Any] | None = None) -> Path:
    """Write `ds` to `directory` in the native format, atomically; return the directory.

    The files are written to a fresh sibling directory first; only then is the old directory (if any) moved
    aside and the new one renamed into place, and the old one deleted. An interruption before the swap
    leaves the old dataset untouched; one between the two renames leaves both as hidden siblings
    (``.<name>.old-*``, ``.<name>.tmp-*``), so nothing is lost. A directory holding files that are not part
    of a native dataset is never replaced.

    `include_oracle=False` skips the oracle files (they hold one distribution per example and can be large).
    `extra_meta` adds keys to meta.json (for example the generator's config and seed).
    """
    validate_dataset(ds, check_time_split=False)  # never write what `load_native` would refuse
    directory = Path(directory)
    texts = _file_texts(ds, include_oracle, extra_meta)
    if directory.exists():
        if not directory.is_dir():
            raise DataError("exists and is not a directory; expected a dataset directory", path=directory)
        foreign = sorted(p.name for p in directory.iterdir() if p.name not in NATIVE_FILES)
        if foreign:
            raise DataError(f"refusing to replace a directory that holds other files {foreign[:5]}; "
                            "choose an empty or dataset-only directory", path=directory)
    parent = directory.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=parent))
    old: Path | None = None
    try:
        os.chmod(staging, directory.stat().st_mode & 0o7777 if directory.exists() else 0o755)
        for name, text in texts.items():
            _write_file(staging / name, text)
        if directory.exists():
            old = parent / f".{directory.name}.old-{os.getpid()}-{time.time_ns()}"
            os.rename(directory, old)
        os.rename(staging, directory)
    except BaseException:
        if old is not None and not directory.exists():
            os.rename(old, directory)  # put the previous dataset back
            old = None
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _sync_directory(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory


# --------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------


def _missing_directory_hint(directory: Path) -> str:
    """If an interrupted save left the previous dataset beside `directory`, say where it is."""
    parent = directory.absolute().parent
    leftovers = sorted(parent.glob(f".{directory.name}.old-*")) if parent.is_dir() else []
    return f"; an interrupted save left {leftovers[-1]} (rename it back)" if leftovers else ""


def read_meta(directory: str | Path) -> dict[str, Any]:
    """meta.json of a native dataset directory as a dict (checked to be a JSON object)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"directory not found{_missing_directory_hint(directory)}", path=directory)
    path = directory / META_FILE
    if not path.is_file():
        raise DataError("file not found; every native dataset directory has a meta.json", path=path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise DataError(f"byte at offset {err.start} is not valid UTF-8; expected UTF-8 text", path=path,
                        line=line) from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON ({err.msg} at column {err.colno})", path=path,
                        line=err.lineno) from None
    except (ValueError, RecursionError) as err:  # nesting too deep, an integer of thousands of digits
        raise DataError(f"unreadable JSON ({type(err).__name__}: {str(err)[:80]})", path=path) from None
    if not isinstance(meta, dict):
        raise DataError(f"expected a JSON object, got {type(meta).__name__}", path=path, line=1)
    return meta


def _meta_fields(meta: dict[str, Any], path: Path) -> tuple[str, str, int, list[FilterRecord]]:
    """(name, source, max_history, filtered) from meta.json, each type-checked."""
    if meta.get("format", FORMAT) != FORMAT:
        raise DataError(f"format {meta['format']!r}; expected {FORMAT!r}", path=path, field="format")
    version = meta.get("version", VERSION)
    if not _is_int(version) or version > VERSION:
        raise DataError(f"version {version!r}; this riser_lite reads versions up to {VERSION}", path=path,
                        field="version")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise DataError(f"name {name!r}; expected a non-empty string", path=path, field="name")
    source = meta.get("source", "")
    if not isinstance(source, str):
        raise DataError(f"source {source!r}; expected a string", path=path, field="source")
    max_history = meta.get("max_history", 10)
    if not _is_int(max_history) or max_history < 1:
        raise DataError(f"max_history {max_history!r}; expected an integer >= 1", path=path,
                        field="max_history")
    filtered = []
    for index, record in enumerate(meta.get("filtered", [])):
        try:
            rec = FilterRecord(**record)
            ok = (isinstance(rec.stage, str) and _is_int(rec.count) and isinstance(rec.reason, str)
                  and isinstance(rec.unit, str))
        except TypeError:
            ok = False
        if not ok:
            raise DataError(f"entry {index} is {record!r}; expected {{stage: str, count: int, reason: str, "
                            "unit: str}", path=path, field="filtered")
        filtered.append(rec)
    return name, source, max_history, filtered


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_items(path: Path) -> dict[int, str]:
    """items.tsv -> {item id: title}; ids and titles unique, titles non-blank and whitespace-normalised."""
    catalog: dict[int, str] = {}
    title_line: dict[str, int] = {}
    id_line: dict[int, int] = {}
    for number, text in iter_lines(path):
        if number == 1:
            if text != ITEMS_HEADER:
                raise DataError(f"header {text!r}; expected {ITEMS_HEADER!r}", path=path, line=1)
            continue
        if not text:
            continue  # a blank line carries no item
        cells = text.split("\t")
        if len(cells) != 2:
            raise DataError(f"{len(cells)} tab-separated fields; expected 2 (item_id<TAB>title)", path=path,
                            line=number)
        raw_id, title = cells
        if not _INT.fullmatch(raw_id):
            raise DataError(f"item id {raw_id!r}; expected an integer", path=path, line=number,
                            field="item_id")
        item = int(raw_id)
        if item in id_line:
            raise DataError(f"item id {item} already appears on line {id_line[item]}; expected unique ids",
                            path=path, line=number, field="item_id")
        if is_blank_title(title):
            raise DataError("blank title; expected non-empty text", path=path, line=number, field="title")
        if title != " ".join(title.split()):
            raise DataError(f"title {title!r} has leading, trailing or repeated whitespace; expected "
                            "normalised text", path=path, line=number, field="title")
        if title in title_line:
            raise DataError(f"title {title!r} already appears on line {title_line[title]}; expected unique "
                            "titles (the model names an item by its title)", path=path, line=number,
                            field="title")
        catalog[item], id_line[item], title_line[title] = title, number, number
    if not catalog:
        raise DataError("no items; expected at least one item line after the header", path=path)
    return catalog


def _item_id(value: Any, catalog: Mapping[int, str], path: Path, line: int, field: str) -> int:
    if not _is_int(value):
        raise DataError(f"{value!r} is not an integer item id", path=path, line=line, field=field)
    if value not in catalog:
        raise DataError(f"item {value} is not in {ITEMS_FILE} ({len(catalog)} items)", path=path, line=line,
                        field=field)
    return value


def _parse_example(record: dict[str, Any], catalog: Mapping[int, str], max_history: int, path: Path,
                   line: int) -> Example:
    """One line of a split file -> Example, checking every field."""
    for name in ("user", "history", "target"):
        if name not in record:
            raise DataError("missing field; expected keys user, history, target, time", path=path, line=line,
                            field=name)
    user = record["user"]
    if not isinstance(user, str) or not user:
        raise DataError(f"user {user!r}; expected a non-empty string", path=path, line=line, field="user")
    history = record["history"]
    if not isinstance(history, list) or not 1 <= len(history) <= max_history:
        size = f"{len(history)} items" if isinstance(history, list) else type(history).__name__
        raise DataError(f"history is {size}; expected a list of 1..max_history={max_history} item ids",
                        path=path, line=line, field="history")
    items = tuple(_item_id(item, catalog, path, line, "history") for item in history)
    target = _item_id(record["target"], catalog, path, line, "target")
    when = record.get("time")
    if when is not None:
        if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
            raise DataError(f"time {when!r}; expected a finite number or null", path=path, line=line,
                            field="time")
        when = float(when)
    return Example(user, items, target, when)


def _read_split(path: Path, catalog: Mapping[int, str], max_history: int) -> list[Example]:
    if not path.is_file():
        raise DataError("file not found; a native dataset has train.jsonl, valid.jsonl and test.jsonl",
                        path=path)
    return [_parse_example(record, catalog, max_history, path, number)
            for number, record in iter_json_lines(path)]


def _parse_distribution(record: dict[str, Any], catalog: Mapping[int, str], path: Path,
                        line: int) -> dict[int, float]:
    """One oracle line -> {item id: probability}; positive probabilities summing to 1."""
    dist: dict[int, float] = {}
    for key, prob in record.items():
        if not _INT.fullmatch(key):
            raise DataError(f"key {key!r} is not an item id", path=path, line=line, field=key)
        item = _item_id(int(key), catalog, path, line, key)
        if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0.0 < prob <= 1.0:
            raise DataError(f"probability {prob!r}; expected a number in (0, 1]", path=path, line=line,
                            field=key)
        dist[item] = float(prob)
    total = math.fsum(dist.values())
    if abs(total - 1.0) > ORACLE_TOLERANCE:
        raise DataError(f"probabilities sum to {total!r}; expected 1 (within {ORACLE_TOLERANCE})", path=path,
                        line=line)
    return dist


def _read_oracle(directory: Path, catalog: Mapping[int, str], splits: Mapping[str, list[Example]],
                 meta: dict[str, Any]) -> dict[str, list[dict[int, float]]] | None:
    """The oracle files: all three splits or none, each with one line per example."""
    paths = {s: directory / f"oracle_{s}.jsonl" for s in SPLITS}
    present = [s for s, p in paths.items() if p.is_file()]
    if meta.get("oracle_files") is False and present:
        raise DataError(f"says there are no oracle files, but {paths[present[0]].name} exists (left over "
                        "from another dataset?)", path=directory / META_FILE, field="oracle_files")
    if not present and meta.get("oracle_files") is not True:
        return None
    if len(present) != len(SPLITS):
        missing = next(p for s, p in paths.items() if s not in present)
        raise DataError(f"file not found, but {[paths[s].name for s in present] or 'meta.json'} says the "
                        "oracle was saved; expected an oracle file for every split or for none", path=missing)
    oracle = {}
    for split, path in paths.items():
        rows = [_parse_distribution(record, catalog, path, number)
                for number, record in iter_json_lines(path)]
        if len(rows) != len(splits[split]):
            raise DataError(f"{len(rows)} distributions for {len(splits[split])} examples in {split}.jsonl; "
                            "expected one per example", path=path)
        oracle[split] = rows
    return oracle


def _check_counts(meta: dict[str, Any], path: Path, catalog: Mapping[int, str],
                  splits: Mapping[str, list[Example]]) -> None:
    """Row counts recorded at save time must match: a mismatch means a truncated or mixed-up file."""
    counts = meta.get("counts", {})
    if not isinstance(counts, dict):
        raise DataError(f"counts {counts!r}; expected an object such as {{\"items\": 415, \"train\": 4170}}",
                        path=path, field="counts")
    actual = {ITEMS_FILE: len(catalog), **{f"{s}.jsonl": len(splits[s]) for s in SPLITS}}
    for key, expected in counts.items():
        file = ITEMS_FILE if key == "items" else f"{key}.jsonl"
        if file in actual and expected != actual[file]:
            raise DataError(f"records {expected!r} {key} but {file} holds {actual[file]} (truncated or "
                            "replaced file?)", path=path, field="counts")


def load_native(directory: str | Path) -> RecDataset:
    """Read a dataset written by `save_dataset` (or by hand in the same format).

    Synthetic data saved without its oracle files loads without an oracle here;
    `riser_lite.data.synthetic.load_synthetic` restores it from the generator meta.json records.

    Raises `DataError` naming the file, line and field of the first problem: malformed JSON, a missing or
    mistyped field, an item id that items.tsv does not define, a blank or duplicate title, bytes that are
    not UTF-8, an oracle row that is not a distribution.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    meta_path = directory / META_FILE
    name, source, max_history, filtered = _meta_fields(meta, meta_path)
    items_path = directory / ITEMS_FILE
    if not items_path.is_file():
        raise DataError("file not found; a native dataset lists its items in items.tsv", path=items_path)
    catalog = _read_items(items_path)
    splits = {s: _read_split(directory / f"{s}.jsonl", catalog, max_history) for s in SPLITS}
    _check_counts(meta, meta_path, catalog, splits)
    oracle = _read_oracle(directory, catalog, splits, meta)
    generator = meta.get("generator")
    if generator is not None and not isinstance(generator, dict):
        raise DataError(f"generator {generator!r}; expected an object {{function, seed, config}}",
                        path=meta_path, field="generator")
    ds = RecDataset(name=name, catalog=catalog, splits=splits, filtered=filtered, max_history=max_history,
                    oracle=oracle, source=source, generator=generator)
    # The shared checks every loader runs. The split scheme is the saver's business (by user, by time...),
    # so the chronological-leak check is not imposed here.
    validate_dataset(ds, check_time_split=False)
    return ds
