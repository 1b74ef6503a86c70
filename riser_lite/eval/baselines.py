"""Reference rankers scored with the same metrics as the model: popularity below it, the oracle above it.

- **Popularity**: every user gets the items that were most often a *train target*, most frequent first
  (ties by item id). By default the user's history items are skipped: on the bundled synthetic data a
  consumed item is never drawn again and on LastFM no test target repeats a history item, so skipping them
  is what a sensible popularity recommender does, and the model sees the history in its prompt too.
  `exclude_history=False` gives the plain list (nothing excluded), the same for every user.
- **Oracle** (synthetic data only, `RecDataset.oracle[split][i] = {item: probability}`): ranks items by
  their true next-item probability, which maximises expected HR@K and NDCG@K. Its *expected* metrics
  (probability mass of its top K) are the ceiling no model that sees only the prompt can beat; its
  *realised* metrics use the targets actually drawn.

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


def oracle_ranking(distribution: Mapping[int, float], k: int, item_ids: Sequence[int] = ()) -> list[int]:
    """The k most probable items under `distribution`, ties by item id.

    If the distribution has fewer than k items with positive probability, the list is filled with the
    remaining `item_ids` (probability 0) in id order, so it is a full-length ranking like the model's.
    """
    ranked = sorted((i for i, p in distribution.items() if p > 0), key=lambda i: (-distribution[i], i))[:k]
    if len(ranked) < k:
        chosen = set(ranked)
        ranked += list(itertools.islice((i for i in sorted(item_ids) if i not in chosen), k - len(ranked)))
    return ranked


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
    """(rank of each target in its oracle list or None beyond max_k, the top-max_k oracle lists)."""
    lists = [oracle_ranking(dist, max_k, item_ids) for dist in distributions]
    return ranks_of_targets(lists, [ex.target for ex in examples]), lists
