"""Ranking metrics and bootstrap intervals (eval.metrics), cross-checked against plain python loops."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from riser_lite.eval.metrics import (
    DEFAULT_KS,
    MetricSummary,
    bootstrap_ci,
    hit_rate_at_k,
    hits_at_k,
    ndcg_at_k,
    ndcg_values_at_k,
    rank_of_target,
    ranks_of_targets,
    summarize_ranks,
    summarize_values,
)


def brute_hr(ranks, k):
    total = 0
    for r in ranks:
        if r is not None and r < k:
            total += 1
    return total / len(ranks)


def brute_ndcg(ranks, k):
    total = 0.0
    for r in ranks:
        if r is not None and r < k:
            total += 1.0 / math.log2(r + 2)  # one relevant item: the ideal DCG is 1
    return total / len(ranks)


def random_ranks(rng: random.Random, n: int) -> list[int | None]:
    return [None if rng.random() < 0.3 else rng.randrange(0, 30) for _ in range(n)]


def test_rank_of_target_first_exact_match():
    assert rank_of_target([5, 3, 9], 5) == 0
    assert rank_of_target([5, 3, 9, 3], 3) == 1  # first match counts
    assert rank_of_target([5, 3, 9], 4) is None
    assert rank_of_target([], 1) is None
    assert ranks_of_targets([[1, 2], [2, 1], [3]], [1, 1, 1]) == [0, 1, None]
    with pytest.raises(ValueError, match="targets"):
        ranks_of_targets([[1]], [1, 2])


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_brute_force(seed):
    rng = random.Random(seed)
    ranks = random_ranks(rng, rng.randrange(1, 200))
    for k in (1, 2, 5, 10, 20, 50):
        assert hit_rate_at_k(ranks, k) == pytest.approx(brute_hr(ranks, k), abs=1e-12)
        assert ndcg_at_k(ranks, k) == pytest.approx(brute_ndcg(ranks, k), abs=1e-12)
        assert hits_at_k(ranks, k).tolist() == [float(r is not None and r < k) for r in ranks]


def test_hand_values():
    ranks = [0, 1, 4, None, 10]
    assert hit_rate_at_k(ranks, 1) == pytest.approx(0.2)
    assert hit_rate_at_k(ranks, 5) == pytest.approx(0.6)
    assert ndcg_at_k(ranks, 5) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert ndcg_values_at_k(ranks, 11).tolist()[-1] == pytest.approx(1 / math.log2(12))
    assert ndcg_at_k([float("inf")], 3) == 0.0  # infinity is accepted as "absent"
    assert hit_rate_at_k([], 5) == 0.0


def test_bad_ranks_and_k_raise():
    with pytest.raises(ValueError, match="non-negative"):
        hit_rate_at_k([-1], 5)
    with pytest.raises(ValueError, match="non-negative"):
        ndcg_at_k([1.5], 5)
    with pytest.raises(ValueError, match="positive"):
        hit_rate_at_k([1], 0)


def test_bootstrap_ci_contains_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.random(50) < 0.3, rng.random(5000) < 0.3
    lo_s, hi_s = bootstrap_ci(small, seed=1)
    lo_l, hi_l = bootstrap_ci(large, seed=1)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 4  # width ~ 1 / sqrt(n): 100x the examples, ~10x narrower
    # The 95% percentile interval of a proportion is close to the normal approximation.
    half = 1.96 * math.sqrt(large.mean() * (1 - large.mean()) / large.size)
    assert (hi_l - lo_l) / 2 == pytest.approx(half, rel=0.15)


def test_bootstrap_ci_is_deterministic_and_validates():
    values = [0.0, 1.0, 1.0, 0.0, 1.0]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    lo90, hi90 = bootstrap_ci(values, alpha=0.1, seed=3)
    lo99, hi99 = bootstrap_ci(values, alpha=0.01, seed=3)
    assert lo99 <= lo90 and hi90 <= hi99
    with pytest.raises(ValueError):
        bootstrap_ci([], seed=0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(values, alpha=1.5)
    with pytest.raises(ValueError, match="num_resamples"):
        bootstrap_ci(values, num_resamples=0)


def test_summarize_ranks():
    rng = random.Random(7)
    ranks = random_ranks(rng, 300)
    out = summarize_ranks(ranks, seed=0, num_bootstrap=200)
    assert list(out) == [f"hr@{k}" for k in DEFAULT_KS] + [f"ndcg@{k}" for k in DEFAULT_KS]
    for k in DEFAULT_KS:
        hr, ndcg = out[f"hr@{k}"], out[f"ndcg@{k}"]
        assert hr["value"] == pytest.approx(brute_hr(ranks, k))
        assert ndcg["value"] == pytest.approx(brute_ndcg(ranks, k))
        assert hr["lo"] <= hr["value"] <= hr["hi"] and hr["n"] == 300
        assert ndcg["value"] <= hr["value"]  # each NDCG gain is at most the hit
    # Shared resamples keep the intervals ordered with K.
    assert out["hr@5"]["lo"] <= out["hr@10"]["lo"] and out["hr@5"]["hi"] <= out["hr@10"]["hi"]
    summary = MetricSummary(**out["hr@1"])
    assert summary.to_dict() == out["hr@1"]


def test_summarize_values_matches_single_column_bootstrap():
    values = np.random.default_rng(1).random(40)
    out = summarize_values({"x": values}, num_resamples=300, seed=5)["x"]
    assert (out["lo"], out["hi"]) == pytest.approx(bootstrap_ci(values, num_resamples=300, seed=5))
    with pytest.raises(ValueError, match="no examples"):
        summarize_values({"x": []})
