"""Datasets for next-item recommendation: one in-memory form (`RecDataset`) for every source.

>>> from riser_lite.data import load_dataset, dataset_stats, format_stats
>>> ds = load_dataset("synthetic")                       # bundled small synthetic data (or generated)
>>> ds = load_dataset("lastfm", "../shared/data/lastfm")  # LLaRA-format LastFM
>>> print(format_stats(dataset_stats(ds)))

Sources (`load_dataset(source, path, **options)`; see each module for its format and options):

============ ================================================ ===========================================
source       path                                             options (besides seed, max_history)
============ ================================================ ===========================================
synthetic    None: the bundled ``data/synthetic`` if present, ``config`` (a SyntheticConfig) and/or its
             else generated; a directory: a saved dataset     fields (``num_train_users=50``): generate
lastfm       LLaRA folder (train/valid/test.jsonl, id2name)   ``min_history`` (1; LLaRA itself uses 3)
amazon-csv   folder of D3/ReRe/MiniOneRec CSVs + item file    ``min_history``, ``category``, ``item_file``,
                                                              ``check_time_split``
native       a folder written by ``save_dataset``             none
============ ================================================ ===========================================

Every load is validated (`validate_dataset`); everything a loader removed or changed is listed in
``ds.filtered``; an empty train or valid split is an error (training needs both). A title over
`riser_lite.data.titles.MAX_TITLE_CHARS` characters is an error, or with ``truncate_titles=True`` (lastfm,
Amazon) cut and counted. Histories longer than ``max_history`` are truncated to their newest items and
shorter than ``min_history`` removed, both reported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from riser_lite.data.amazon_csv import load_amazon_csv
from riser_lite.data.assemble import bound_histories, check_history_bounds
from riser_lite.data.lastfm import load_lastfm
from riser_lite.data.stats import dataset_stats, format_stats
from riser_lite.data.types import SPLITS, DataError, Example, FilterRecord, RecDataset
from riser_lite.data.validate import check_no_future_leak, validate_dataset

SOURCES = ("synthetic", "lastfm", "amazon-csv", "native")
BUNDLED_SYNTHETIC = Path(__file__).resolve().parents[2] / "data" / "synthetic"  # present in a source checkout


def _cap_histories(ds: RecDataset, max_history: int) -> RecDataset:
    """Saved or generated data cut to a smaller history bound (truncation only: an oracle stays aligned)."""
    if max_history < ds.max_history:
        for split in SPLITS:
            ds.splits[split], records = bound_histories(ds.splits[split], f"load_dataset:{split}",
                                                        max_history=max_history, min_history=1)
            ds.filtered += records
        ds.max_history = max_history
    return ds


def load_dataset(source: str, path: str | Path | None = None, *, seed: int = 0, max_history: int = 10,
                 require: tuple[str, ...] = ("train", "valid"), **options) -> RecDataset:
    """Load a dataset by source name (table in the module docstring); the result is always validated.

    `seed` matters only where something is random (the synthetic generator; the bundled data is seed 0).
    `max_history` bounds the history length of every example: longer ones are truncated to their newest
    items, and reported. Saved and generated data keep their own bound when it is smaller.
    `require`: splits that must hold examples (training needs train and valid); () to inspect any dataset.
    """
    check_history_bounds(max_history, 1)
    return _require_splits(_load(source, path, seed, max_history, options), require)


def _load(source: str, path, seed: int, max_history: int, options: dict) -> RecDataset:
    if source == "lastfm":
        return load_lastfm(path, max_history=max_history, **options)  # loaders validate before returning
    if source == "amazon-csv":
        _need_path(source, path)
        return load_amazon_csv(path, max_history=max_history, **options)
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; expected one of {list(SOURCES)}")
    if source == "native":
        _need_path(source, path)
    elif path is None and seed == 0 and not options and BUNDLED_SYNTHETIC.is_dir() and any(
            BUNDLED_SYNTHETIC.iterdir()):
        path = BUNDLED_SYNTHETIC
    # synthetic is imported here, so this package imports even before (or without) it.
    from riser_lite.data.synthetic import SyntheticConfig, generate_synthetic, load_synthetic

    if path is not None:  # saved data; a synthetic dataset gets its oracle back
        if options:
            raise ValueError(f"saved data ({path}) takes no options, got {sorted(options)}; options "
                             "configure the synthetic generator")
        ds = load_synthetic(path)
    else:
        config = options.pop("config", None)
        if options:  # SyntheticConfig fields, e.g. load_dataset("synthetic", num_train_users=50)
            config = dataclasses.replace(config or SyntheticConfig(), **options)
        ds = generate_synthetic(config, seed=seed)
    # Saved and generated data may be split by user rather than by time: no chronological-leak check.
    validate_dataset(_cap_histories(ds, max_history), check_time_split=False)
    return ds


def _require_splits(ds: RecDataset, require: tuple[str, ...]) -> RecDataset:
    """Reject a dataset with an empty required split: training on it would fail later, less clearly."""
    for split in require:
        if not ds.splits[split]:
            steps = (f" after {len(ds.filtered)} filter steps (`riser-lite data` lists them)" if ds.filtered
                     else "")
            raise DataError(f"dataset {ds.name!r} has no {split} examples{steps}; expected at least one",
                            path=ds.source or None, field=split)
    return ds


def _need_path(source: str, path) -> None:
    if path is None:
        raise DataError(f"source {source!r} needs a path (a directory); see help(riser_lite.data)")


__all__ = [
    "SOURCES", "SPLITS", "DataError", "Example", "FilterRecord",
    "RecDataset", "check_no_future_leak", "dataset_stats", "format_stats",
    "load_amazon_csv", "load_dataset", "load_lastfm",
    "validate_dataset",
]
