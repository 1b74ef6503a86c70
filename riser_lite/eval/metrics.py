"""Ranking metrics: HR@K and NDCG@K from 0-based target ranks, with bootstrap confidence intervals.

A *rank* is the 0-based position of the first exact match of the target in a ranked list, or None when the
target is not in the list (for beam search: not among the returned beams). With one relevant item per
example (the next item):

- HR@K = 1 if rank < K else 0;
- NDCG@K = 1 / log2(rank + 2) if rank < K else 0 (the ideal DCG is 1: the target at rank 0).

Both are averaged over examples, with percentile bootstrap intervals over examples (how much the mean
would move on another draw of test users). Two models on the same users are compared pairwise
(`paired_test`): the mean per-user difference, its bootstrap interval and a sign-flip p-value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

DEFAULT_KS = (1, 5, 10, 20)
_BOOTSTRAP_BLOCK = 2 ** 22  # resampled indices held in memory at once


def rank_of_target(ranked_items: Sequence[int], target: int) -> int | None:
    """0-based position of the first exact match of `target` in `ranked_items`, or None if absent."""
    for position, item in enumerate(ranked_items):
        if item == target:
            return position
    return None


def ranks_of_targets(ranked_lists: Iterable[Sequence[int]], targets: Iterable[int]) -> list[int | None]:
    """`rank_of_target` for each (ranked list, target) pair."""
    ranked_lists, targets = list(ranked_lists), list(targets)
    if len(ranked_lists) != len(targets):
        raise ValueError(f"got {len(ranked_lists)} ranked lists but {len(targets)} targets")
    return [rank_of_target(items, target) for items, target in zip(ranked_lists, targets, strict=True)]


def ranks_from_scores(scores: torch.Tensor, target_columns: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all columns, ties by column (item id) order: an item with the
    target's score ranks above it only if its id is smaller. scores [B, I], target_columns [B] -> [B] long."""
    target = scores.gather(1, target_columns[:, None])
    columns = torch.arange(scores.shape[1], device=scores.device)[None, :]
    tied_before = (scores == target) & (columns < target_columns[:, None])
    return (scores > target).sum(1) + tied_before.sum(1)


def top_items(scores: torch.Tensor, item_ids: Sequence[int], k: int) -> list[list[int]]:
    """The k best items per row of scores [B, I] (column j = item_ids[j]), ties by column order."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, : min(int(k), scores.shape[1])]
    return torch.tensor(list(item_ids), dtype=torch.long)[order].tolist()


def _rank_array(ranks: Iterable[int | float | None]) -> np.ndarray:
    """Ranks as floats, absent (None) as +inf. Rejects negative or fractional ranks."""
    values = np.array([math.inf if r is None else r for r in ranks], dtype=np.float64)
    finite = values[np.isfinite(values)]
    if np.isnan(values).any() or (finite < 0).any() or (finite != np.floor(finite)).any():
        raise ValueError("ranks must be non-negative integers or None (target not in the list)")
    return values


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"K must be a positive integer, got {k!r}")
    return int(k)


def hits_at_k(ranks: Iterable[int | None], k: int) -> np.ndarray:
    """Per-example HR@K values: 1.0 where rank < K, else 0.0. [N] float64."""
    return (_rank_array(ranks) < _check_k(k)).astype(np.float64)


def ndcg_values_at_k(ranks: Iterable[int | None], k: int) -> np.ndarray:
    """Per-example NDCG@K values: 1 / log2(rank + 2) where rank < K, else 0.0. [N] float64."""
    values = _rank_array(ranks)
    inside = values < _check_k(k)
    gains = np.zeros_like(values)
    gains[inside] = 1.0 / np.log2(values[inside] + 2.0)
    return gains


def hit_rate_at_k(ranks: Iterable[int | None], k: int) -> float:
    """Mean HR@K over examples (0.0 for no examples)."""
    hits = hits_at_k(ranks, k)
    return float(hits.mean()) if hits.size else 0.0


def ndcg_at_k(ranks: Iterable[int | None], k: int) -> float:
    """Mean NDCG@K over examples (0.0 for no examples)."""
    gains = ndcg_values_at_k(ranks, k)
    return float(gains.mean()) if gains.size else 0.0


def _bootstrap_means(values: np.ndarray, num_resamples: int, seed: int) -> np.ndarray:
    """Means of `num_resamples` resamples (with replacement) of the rows of values [N, M] -> [R, M]."""
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_BLOCK // max(n, 1))
    means = []
    for start in range(0, num_resamples, block):
        index = rng.integers(0, n, size=(min(block, num_resamples - start), n))
        means.append(values[index].mean(axis=1))
    return np.concatenate(means, axis=0)


def bootstrap_ci(values: Iterable[float], num_resamples: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: the alpha/2 and 1 - alpha/2 quantiles of resampled means.
    Deterministic in `seed`. A single value gives the degenerate interval (value, value)."""
    summary = summarize_values({"values": list(values)}, num_resamples, alpha, seed)["values"]
    return summary["lo"], summary["hi"]


@dataclass
class MetricSummary:
    """A mean over examples with its bootstrap interval; `to_dict()` is JSON-ready."""

    value: float  # mean over examples
    lo: float  # lower end of the (1 - alpha) percentile bootstrap interval
    hi: float  # upper end
    n: int  # number of examples

    def to_dict(self) -> dict:
        return asdict(self)


def summarize_values(columns: Mapping[str, Sequence[float]], num_resamples: int = 1000, alpha: float = 0.05,
                     seed: int = 0) -> dict[str, dict]:
    """Mean and bootstrap interval of several per-example value columns of equal length.

    All columns share the same resamples (so e.g. HR@5 <= HR@10 holds in every resample).
    Returns {name: MetricSummary.to_dict()}.
    """
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    names = list(columns)
    arrays = [np.asarray(columns[name], dtype=np.float64) for name in names]
    if not arrays or arrays[0].size == 0 or arrays[0].ndim != 1:
        raise ValueError("nothing to summarise: no examples (expected 1-D columns of per-example values)")
    matrix = np.stack(arrays, axis=1)
    means = _bootstrap_means(matrix, num_resamples, seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=0)
    n = matrix.shape[0]
    return {name: MetricSummary(float(matrix[:, j].mean()), float(low[j]), float(high[j]), n).to_dict()
            for j, name in enumerate(names)}


def metric_columns(ranks: Sequence[int | None], ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Per-example values {"hr@K": [N], "ndcg@K": [N]} for every K."""
    hits = {f"hr@{k}": hits_at_k(ranks, k) for k in ks}
    return {**hits, **{f"ndcg@{k}": ndcg_values_at_k(ranks, k) for k in ks}}


def summarize_ranks(ranks: Sequence[int | None], ks: Sequence[int] = DEFAULT_KS, *, seed: int = 0,
                    num_bootstrap: int = 1000, alpha: float = 0.05) -> dict[str, dict]:
    """HR@K and NDCG@K with bootstrap intervals: {"hr@10": {"value", "lo", "hi", "n"}, "ndcg@10": ...}."""
    return summarize_values(metric_columns(ranks, ks), num_resamples=num_bootstrap, alpha=alpha, seed=seed)


# ------------------------------------------------------------------------------ paired comparisons


def paired_differences(a, b) -> np.ndarray:
    """Per-user differences a - b of two metric columns over the same users. [N], [N] -> [N]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired columns must be non-empty 1-D of equal length, got {a.shape}, {b.shape}")
    for name, column in (("a", a), ("b", b)):  # a NaN would make the mean, interval and p-value NaN
        bad = np.flatnonzero(~np.isfinite(column))
        if bad.size:
            raise ValueError(f"paired column {name} has {bad.size} values that are not finite numbers (the "
                             f"first at index {bad[0]}: {column[bad[0]]}); expected a metric per user")
    return a - b


def sign_flip_pvalue(diffs, num_permutations: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of "the mean difference is 0" by flipping the sign of each user's difference.

    Under the null hypothesis the two models are exchangeable for every user, so each difference is as
    likely with either sign. p = share of sign patterns whose |mean| is at least the observed one: all 2^n
    patterns when 2^n <= num_permutations (exact), else num_permutations random ones, counted as
    (1 + hits) / (1 + num_permutations) so that p is never 0.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError("sign_flip_pvalue needs a non-empty 1-D sequence of differences")
    observed = abs(d.mean()) - 1e-12  # tolerance: equal means must count as "at least as extreme"
    n = d.size
    if 2 ** n <= num_permutations:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)  # every pattern, [2^n, n]
        return float(np.mean(np.abs(signs @ d) / n >= observed))
    rng = np.random.default_rng(seed)
    hits, block = 0, max(1, 2 ** 22 // n)
    for start in range(0, num_permutations, block):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(block, num_permutations - start), n))
        hits += int(np.sum(np.abs(signs @ d) / n >= observed))
    return (1 + hits) / (1 + num_permutations)


def paired_test(a, b, *, num_bootstrap: int = 2000, num_permutations: int = 10000, alpha: float = 0.05,
                seed: int = 0) -> dict:
    """Mean of a - b over users, its percentile-bootstrap interval and sign-flip p-value."""
    d = paired_differences(a, b)
    lo, hi = bootstrap_ci(d, num_bootstrap, alpha, seed)
    return {"diff": float(d.mean()), "lo": lo, "hi": hi,
            "p_value": sign_flip_pvalue(d, num_permutations, seed), "n": int(d.size)}


def mean_of(records: Sequence[Mapping], key: str) -> float | None:
    """Mean of ``key`` over the records with a value for it (None and missing skipped); None if none has."""
    values = [r[key] for r in records if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def mean_dict(records: Sequence[Mapping]) -> dict[str, float | None]:
    """Key-wise ``mean_of`` over records (e.g. the loss infos of a step's updates), first-seen key order."""
    return {key: mean_of(records, key) for key in dict.fromkeys(k for r in records for k in r)}
