"""riser_lite's own on-disk dataset format: plain UTF-8 text a person can read, diff and edit (no pickle).

A dataset is one directory::

    items.tsv             header "item_id<TAB>title", then one item per line
    train.jsonl           one example per line, history oldest first, time a number or null:
    valid.jsonl           {"user": "u0001", "history": [3, 17], "target": 5, "time": null}
    test.jsonl
    oracle_<split>.jsonl  optional (synthetic data): line i is example i's next-item distribution,
                          {"<item id>": probability, ...}, non-zero entries only
    meta.json             name, source, max_history, filtered records, row counts, the generator that
                          made the data if any (`RecDataset.generator`)

Synthetic data is usually saved without its oracle files (tens of MB); `riser_lite.data.synthetic.
load_synthetic` restores the oracle by re-running the generator recorded in meta.json.

Floats are written with Python's shortest round-trip repr, so reloading gives back exactly the numbers
saved. `save_dataset` writes a complete new directory beside the old one and swaps it in with renames, so
an interrupted save leaves the previous dataset intact. `load_native` names the file, line and field of the
first problem it finds.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

from riser_lite.data.textio import iter_json_lines, iter_lines, read_json_object
from riser_lite.data.types import SPLITS, DataError, Example, FilterRecord, RecDataset
from riser_lite.data.validate import check_example, check_title, validate_dataset

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


def _file_texts(ds: RecDataset, include_oracle: bool) -> dict[str, str]:
    """The content of every file of the dataset, by file name."""
    texts = {ITEMS_FILE: ITEMS_HEADER + "\n" + "".join(f"{item}\t{ds.catalog[item]}\n"
                                                       for item in sorted(ds.catalog))}
    for split in SPLITS:
        texts[f"{split}.jsonl"] = "".join(
            _dumps({"user": ex.user, "history": list(ex.history), "target": ex.target, "time": ex.time})
            + "\n" for ex in ds.splits[split])
    with_oracle = include_oracle and ds.oracle is not None
    for split in SPLITS if with_oracle else ():
        where = f"dataset {ds.name!r}, split {split!r}"
        rows = [{str(item): float(p) for item, p in sorted(dist.items()) if p != 0}
                for dist in ds.oracle[split]]
        for index, row in enumerate(rows):  # never write what `load_native` would refuse
            _check_distribution(row, path=f"{where}, example {index}", field="oracle")
        texts[f"oracle_{split}.jsonl"] = "".join(_dumps(row) + "\n" for row in rows)
    meta: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "name": ds.name, "source": ds.source,
        "max_history": ds.max_history,
        "filtered": [dataclasses.asdict(r) for r in ds.filtered],
        "counts": {"items": len(ds.catalog), **{s: len(ds.splits[s]) for s in SPLITS}},
        "oracle_files": with_oracle,
    }
    if ds.generator is not None:
        meta["generator"] = ds.generator
    texts[META_FILE] = json.dumps(meta, ensure_ascii=False, indent=2) + "\n"
    return texts


def _write_file(path: Path, text: str) -> None:
    """Write and flush to disk, so a rename that follows never exposes a half-written file."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_directory(path: Path) -> None:
    """Persist renames inside `path` (POSIX); a no-op where directories can't be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_dataset(ds: RecDataset, directory: str | Path, *, include_oracle: bool = True) -> Path:
    """Write `ds` to `directory` in the native format, atomically; return the directory.

    The files go to a fresh hidden sibling first; then the old directory (if any) is moved aside, the new
    one renamed into place and the old one deleted. An interruption leaves the old dataset, or both as
    hidden siblings (``.<name>.old-*``, ``.<name>.tmp-*``). A directory holding files that are not part of
    a native dataset is never replaced. `include_oracle=False` skips the (large) oracle files.
    """
    validate_dataset(ds, check_time_split=False)  # never write what `load_native` would refuse
    directory = Path(directory)
    texts = _file_texts(ds, include_oracle)
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


def read_meta(directory: str | Path) -> dict[str, Any]:
    """meta.json of a native dataset directory as a dict."""
    directory = Path(directory)
    if not directory.is_dir():
        parent = directory.absolute().parent
        leftovers = sorted(parent.glob(f".{directory.name}.old-*")) if parent.is_dir() else []
        hint = f"; an interrupted save left {leftovers[-1]} (rename it back)" if leftovers else ""
        raise DataError(f"directory not found{hint}", path=directory)
    return read_json_object(directory / META_FILE)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _meta_fields(meta: dict[str, Any], path: Path) -> tuple[str, str, int, list[FilterRecord]]:
    """(name, source, max_history, filtered) from meta.json, each type-checked."""
    checks = (("format", FORMAT, lambda v: v == FORMAT, f"expected {FORMAT!r}"),
              ("version", VERSION, lambda v: _is_int(v) and v <= VERSION,
               f"this riser_lite reads versions up to {VERSION}"),
              ("name", None, lambda v: isinstance(v, str) and v, "expected a non-empty string"),
              ("source", "", lambda v: isinstance(v, str), "expected a string"),
              ("max_history", 10, lambda v: _is_int(v) and v >= 1, "expected an integer >= 1"),
              ("filtered", [], lambda v: isinstance(v, list), "expected a list"))
    values = {}
    for key, default, ok, expected in checks:
        values[key] = meta.get(key, default)
        if not ok(values[key]):
            raise DataError(f"{key} {values[key]!r}; {expected}", path=path, field=key)
    filtered = []
    for index, record in enumerate(values["filtered"]):
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
    return values["name"], values["source"], values["max_history"], filtered


def _read_items(path: Path) -> dict[int, str]:
    """items.tsv -> {item id: title}; ids and titles unique, titles pass `check_title`."""
    catalog: dict[int, str] = {}
    title_line: dict[str, int] = {}
    id_line: dict[int, int] = {}
    for number, text in iter_lines(path):
        if number == 1 and text != ITEMS_HEADER:
            raise DataError(f"header {text!r}; expected {ITEMS_HEADER!r}", path=path, line=1)
        if number == 1 or not text:
            continue
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
        check_title(title, path=path, line=number)
        if title in title_line:
            raise DataError(f"title {title!r} already appears on line {title_line[title]}; expected unique "
                            "titles (the model names an item by its title)", path=path, line=number,
                            field="title")
        catalog[item], id_line[item], title_line[title] = title, number, number
    if not catalog:
        raise DataError("no items; expected at least one item line after the header", path=path)
    return catalog


def _read_split(path: Path, known: frozenset[int], max_history: int) -> list[Example]:
    """A split file -> examples, each line checked by `check_example` (file and line named)."""
    examples = []
    for number, record in iter_json_lines(path):
        for name in ("user", "history", "target"):
            if name not in record:
                raise DataError("missing field; expected keys user, history, target, time", path=path,
                                line=number, field=name)
        if not isinstance(record["history"], list):
            raise DataError(f"history is {type(record['history']).__name__}; expected a list of item ids",
                            path=path, line=number, field="history")
        when = record.get("time")
        ex = Example(record["user"], tuple(record["history"]), record["target"], when)
        check_example(ex, known, max_history, path=path, line=number)
        examples.append(ex if when is None else Example(ex.user, ex.history, ex.target, float(when)))
    return examples


def _check_distribution(dist: Mapping[str, Any], **where) -> None:
    """An oracle row as stored, {item id text: probability}: each in (0, 1], summing to 1 within
    `ORACLE_TOLERANCE`. `where` names the file and line, or the example being saved."""
    for key, p in dist.items():
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 < p <= 1.0:
            raise DataError(f"probability {p!r}; expected a number in (0, 1]", **{"field": key, **where})
    total = math.fsum(dist.values())
    if abs(total - 1.0) > ORACLE_TOLERANCE:
        raise DataError(f"oracle row sums to {total!r}; expected probabilities that sum to 1 (within "
                        f"{ORACLE_TOLERANCE})", **where)


def _parse_distribution(record: dict[str, Any], known: frozenset[int], path: Path,
                        line: int) -> dict[int, float]:
    """One oracle line -> {item id: probability}."""
    for key in record:
        if not _INT.fullmatch(key):
            raise DataError(f"key {key!r} is not an item id", path=path, line=line, field=key)
        if int(key) not in known:
            raise DataError(f"item {key} is not in {ITEMS_FILE} ({len(known)} items)", path=path, line=line,
                            field=key)
    _check_distribution(record, path=path, line=line)
    return {int(key): float(prob) for key, prob in record.items()}


def _read_oracle(directory: Path, known: frozenset[int], splits: Mapping[str, list[Example]],
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
        oracle[split] = [_parse_distribution(record, known, path, number)
                         for number, record in iter_json_lines(path)]
        if len(oracle[split]) != len(splits[split]):
            raise DataError(f"{len(oracle[split])} distributions for {len(splits[split])} examples in "
                            f"{split}.jsonl; expected one per example", path=path)
    return oracle


def _check_counts(meta: dict[str, Any], path: Path, catalog: Mapping[int, str],
                  splits: Mapping[str, list[Example]]) -> None:
    """Row counts recorded at save time must match: a mismatch means a truncated or mixed-up file."""
    counts = meta.get("counts", {})
    if not isinstance(counts, dict):
        raise DataError(f"counts {counts!r}; expected an object such as {{\"items\": 415, \"train\": 4170}}",
                        path=path, field="counts")
    actual = {"items": (ITEMS_FILE, len(catalog)), **{s: (f"{s}.jsonl", len(splits[s])) for s in SPLITS}}
    for key, expected in counts.items():
        if key in actual and expected != actual[key][1]:
            raise DataError(f"records {expected!r} {key} but {actual[key][0]} holds {actual[key][1]} "
                            "(truncated or replaced file?)", path=path, field="counts")


def load_native(directory: str | Path) -> RecDataset:
    """Read a dataset written by `save_dataset` (or by hand in the same format).

    Synthetic data saved without its oracle files loads without an oracle here. Raises `DataError` naming
    the file, line and field of the first problem.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    meta_path = directory / META_FILE
    name, source, max_history, filtered = _meta_fields(meta, meta_path)
    catalog = _read_items(directory / ITEMS_FILE)
    known = frozenset(catalog)
    splits = {s: _read_split(directory / f"{s}.jsonl", known, max_history) for s in SPLITS}
    _check_counts(meta, meta_path, catalog, splits)
    oracle = _read_oracle(directory, known, splits, meta)
    generator = meta.get("generator")
    if generator is not None and not isinstance(generator, dict):
        raise DataError(f"generator {generator!r}; expected an object {{function, seed, config}}",
                        path=meta_path, field="generator")
    ds = RecDataset(name=name, catalog=catalog, splits=splits, filtered=filtered, max_history=max_history,
                    oracle=oracle, source=source, generator=generator)
    validate_dataset(ds, check_time_split=False)  # the split scheme is the saver's business
    return ds
