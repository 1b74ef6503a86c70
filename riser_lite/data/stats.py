"""Summary statistics of a dataset (a JSON-serialisable dict) and a readable text rendering of them.

Used by ``riser-lite data`` and the data notebook: sizes per split, what the loader filtered and why,
history lengths, how concentrated the training targets are on popular items, and title lengths.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter

from riser_lite.data.types import SPLITS, RecDataset


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "mean": round(statistics.fmean(values), 3),
            "median": statistics.median(values), "max": max(values)}


def target_popularity(ds: RecDataset, top_fraction: float = 0.1) -> dict:
    """How concentrated training targets are on the most popular items (the long tail), and cold targets.

    ``top_share`` is the share of train targets that fall on the top `top_fraction` of catalogue items ranked
    by train-target count; ``cold`` counts valid/test targets never seen as a train target.
    """
    counts = Counter(ex.target for ex in ds.splits["train"])
    top_n = max(1, round(top_fraction * ds.num_items))
    total = sum(counts.values())
    top = sum(n for _, n in counts.most_common(top_n))
    return {
        "top_fraction": top_fraction,
        "top_items": top_n,
        "top_share": round(top / total, 4) if total else None,
        "train_target_items": len(counts),
        "items_never_train_target": ds.num_items - len(counts),
        "cold": {s: sum(ex.target not in counts for ex in ds.splits[s]) for s in ("valid", "test")},
    }


def dataset_stats(ds: RecDataset) -> dict:
    """Statistics of `ds` as plain JSON types (see `format_stats` for a text table)."""
    by_split = {**{s: ds.splits[s] for s in SPLITS}, "all": [ex for s in SPLITS for ex in ds.splits[s]]}
    times = {s: [ex.time for ex in ds.splits[s] if ex.time is not None] for s in SPLITS}
    titles = list(ds.catalog.values())
    return {
        "name": ds.name,
        "source": ds.source,
        "items": ds.num_items,
        "max_history": ds.max_history,
        "users": {**{s: len(ds.users(s)) for s in SPLITS}, "all": len(ds.users())},
        "rows": {**{s: len(ds.splits[s]) for s in SPLITS}, "all": sum(len(ds.splits[s]) for s in SPLITS)},
        "filtered": [dataclasses.asdict(r) for r in ds.filtered],
        "history_length": {split: _summary([len(ex.history) for ex in examples])
                           for split, examples in by_split.items()},
        "target_popularity": target_popularity(ds),
        "title_length": {"words": _summary([len(t.split()) for t in titles]),
                         "chars": _summary([len(t) for t in titles])},
        "target_time": {s: {"min": min(t), "max": max(t)} if t else None for s, t in times.items()},
        "has_oracle": ds.oracle is not None,
    }


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.2f}"
    return f"{int(value):,}" if isinstance(value, int | float) else str(value)


def format_stats(stats: dict) -> str:
    """A readable text table of `dataset_stats` output."""
    header = f"dataset {stats['name']}" + (f"  ({stats['source']})" if stats["source"] else "")
    lines = [header,
             f"items {_fmt(stats['items'])}   max_history {stats['max_history']}"
             + ("   (synthetic oracle available)" if stats.get("has_oracle") else ""), ""]
    lines.append(f"{'':<26}{'history length':^30}".rstrip())
    lines.append(f"{'split':<7}{'rows':>10}{'users':>9}{'min':>10}{'mean':>7}{'median':>8}{'max':>5}")
    for split in (*SPLITS, "all"):
        hist = stats["history_length"].get(split) or {}
        lines.append(f"{split:<7}{_fmt(stats['rows'][split]):>10}{_fmt(stats['users'][split]):>9}"
                     f"{_fmt(hist.get('min')):>10}{_fmt(hist.get('mean')):>7}{_fmt(hist.get('median')):>8}"
                     f"{_fmt(hist.get('max')):>5}")
    pop = stats["target_popularity"]
    share = "-" if pop["top_share"] is None else f"{100 * pop['top_share']:.1f}%"
    lines += ["", f"train targets on the top {pop['top_items']:,} items ({100 * pop['top_fraction']:.0f}% "
                  f"of the catalogue): {share}; items never a train target: "
                  f"{pop['items_never_train_target']:,}; cold targets valid {pop['cold']['valid']:,}, "
                  f"test {pop['cold']['test']:,}"]
    words, chars = stats["title_length"]["words"], stats["title_length"]["chars"]
    lines.append(f"title length: words {_fmt(words['min'])}..{_fmt(words['max'])} "
                 f"(mean {_fmt(words['mean'])}), chars {_fmt(chars['min'])}..{_fmt(chars['max'])} "
                 f"(mean {_fmt(chars['mean'])})")
    timed = {s: t for s, t in stats["target_time"].items() if t}
    if timed:
        spans = [f"{s} {_fmt(t['min'])}..{_fmt(t['max'])}" for s, t in timed.items()]
        lines.append("target time: " + "; ".join(spans))
    lines += ["", "filtered / changed on loading:"]
    if not stats["filtered"]:
        lines.append("  nothing")
    for record in stats["filtered"]:
        lines.append(f"  {record['stage']}: {record['count']:,} {record['unit']}: {record['reason']}")
    return "\n".join(lines)
