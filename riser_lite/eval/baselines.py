"""Reference rankers scored with the same metrics as the model: popularity below it, the oracle above it.

- **Popularity**: the items most often a *train target*, most frequent first (ties by item id). By default
  the user's history items are skipped: on the synthetic data a consumed item is never drawn again and on
  LastFM no test target repeats a history item, and the model sees the history in its prompt too.
- **Oracle** (synthetic data only, `RecDataset.oracle[split][i] = {item: probability}`): ranks items by
  their true next-item probability, which maximises expected HR@K and NDCG@K: the ceiling.

`expected_columns` gives the expected metrics of *any* ranked list under the oracle, a low-variance way to
compare models on synthetic data (the realised metrics add the noise of one draw per example).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from riser_lite.data.types import Example
from riser_lite.eval.metrics import ranks_of_targets


def popularity_counts(dataset) -> Counter:
    """How often each item is a train target (no peeking at test targets)."""
    return Counter(ex.target for ex in dataset.splits["train"])


def expected_columns(ranked_lists: Sequence[Sequence[int]], distributions: Sequence[Mapping[int, float]],
                     ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Expected HR@K and NDCG@K of ranked lists under the true next-item distributions.

    E[HR@K] = sum of the probabilities of the top K items; E[NDCG@K] = sum_r p(item at r) / log2(r + 2).
    Returns per-example values {"hr@K": [N], "ndcg@K": [N]}.
    """
    if len(ranked_lists) != len(distributions):
        raise ValueError(f"got {len(ranked_lists)} ranked lists but {len(distributions)} distributions")
    columns = {f"hr@{k}": np.zeros(len(ranked_lists)) for k in ks}
    columns.update({f"ndcg@{k}": np.zeros(len(ranked_lists)) for k in ks})
    for row, (items, dist) in enumerate(zip(ranked_lists, distributions, strict=True)):
        probs = [dist.get(item, 0.0) for item in items]
        for k in ks:
            top = probs[:k]
            columns[f"hr@{k}"][row] = sum(top)
            columns[f"ndcg@{k}"][row] = sum(p / math.log2(r + 2) for r, p in enumerate(top))
    return columns


def popularity_ranks(dataset, examples: Sequence[Example], max_k: int,
                     exclude_history: bool = True) -> tuple[list[int | None], list[list[int]]]:
    """(rank of each target in its popularity list or None beyond max_k, the top-max_k lists): most
    frequent train targets first (ties by item id), optionally skipping each user's history."""
    counts = popularity_counts(dataset)
    order = sorted(dataset.catalog, key=lambda item: (-counts.get(item, 0), item))
    lists = []
    for example in examples:
        seen = set(example.history) if exclude_history else set()
        lists.append(list(itertools.islice((item for item in order if item not in seen), max_k)))
    return ranks_of_targets(lists, [ex.target for ex in examples]), lists


def oracle_ranks(examples: Sequence[Example], distributions: Sequence[Mapping[int, float]], max_k: int,
                 item_ids: Sequence[int] = ()) -> tuple[list[int | None], list[list[int]]]:
    """(rank of each target in its oracle list or None beyond max_k, the top-max_k oracle lists).

    An oracle list holds the most probable items, ties by item id; with fewer than max_k items of positive
    probability it is filled with the other `item_ids` in id order, a full-length ranking like the model's.
    """
    lists, fill = [], sorted(item_ids)
    for dist in distributions:
        ranked = sorted((i for i, p in dist.items() if p > 0), key=lambda i: (-dist[i], i))[:max_k]
        chosen = set(ranked)
        ranked += list(itertools.islice((i for i in fill if i not in chosen), max_k - len(ranked)))
        lists.append(ranked)
    return ranks_of_targets(lists, [ex.target for ex in examples]), lists
