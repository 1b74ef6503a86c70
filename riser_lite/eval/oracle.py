"""Reference scores of a dataset with an oracle (synthetic data): the oracle's ceiling, the prompt oracle's
(the ceiling a prompt allows, see `riser_lite.data.synthetic.prompt_oracle`) and the popularity floor.

Each score is a `Score(expected, realised)`: the mean over examples of the probability mass the ranking
earns under the true next-item distribution (low variance), and of the metric for the target actually drawn.
The rankings and metrics are those of evaluation (`riser_lite.eval.baselines`, `riser_lite.eval.metrics`), so
these are the reference rows `riser-lite evaluate` prints, averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from riser_lite.data.synthetic.prompt_oracle import prompt_oracle_rows
from riser_lite.data.types import SPLITS, DataError, RecDataset
from riser_lite.eval.baselines import expected_columns, oracle_ranks, popularity_ranks
from riser_lite.eval.metrics import hits_at_k, ndcg_values_at_k


class Score(NamedTuple):
    """A metric in expectation under the oracle (None without an oracle) and on the actual targets."""

    expected: float | None  # mean over examples of the probability mass the ranking earns (low variance)
    realised: float  # mean over examples of the metric for the target that was actually drawn


def _require_oracle(ds: RecDataset, split: str) -> list[dict[int, float]]:
    if ds.oracle is None:
        raise DataError(f"dataset {ds.name!r} has no oracle (only synthetic data has one)", field="oracle")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return ds.oracle[split]


def _mean(values: Sequence[float]) -> float:
    """Mean as a running sum in example order (0.0 for no examples)."""
    return sum(values) / max(len(values), 1)


def _score(ranks, lists, truth, metric: str, k: int) -> Score:
    """Score of a ranking's top-k lists: metric "hr" or "ndcg", expected under the true distributions
    `truth` (None: no oracle) and realised on the targets' ranks."""
    realised = _mean((hits_at_k if metric == "hr" else ndcg_values_at_k)(ranks, k).tolist())
    if truth is None:
        return Score(None, realised)
    return Score(_mean(expected_columns(lists, truth, (k,))[f"{metric}@{k}"].tolist()), realised)


def oracle_hit_rate(ds: RecDataset, split: str, k: int) -> Score:
    """HR@k of the oracle ranking (by the true probabilities): the best any recommender can expect.
    ``expected`` and ``realised`` differ only by sampling noise."""
    rows = _require_oracle(ds, split)
    return _score(*oracle_ranks(ds.splits[split], rows, k), rows, "hr", k)


def oracle_ndcg(ds: RecDataset, split: str, k: int) -> Score:
    """NDCG@k of the oracle ranking (gain 1/log2(rank + 2), rank from 0); ranking by the true probability
    also maximises expected NDCG, since the gains fall with the rank."""
    rows = _require_oracle(ds, split)
    return _score(*oracle_ranks(ds.splits[split], rows, k), rows, "ndcg", k)


def popularity_hit_rate(ds: RecDataset, split: str, k: int, *, exclude_history: bool = True) -> Score:
    """HR@k of recommending the most popular train targets (skipping items in the history by default);
    ``expected`` is None without an oracle."""
    ranks, lists = popularity_ranks(ds, ds.splits[split], k, exclude_history)
    return _score(ranks, lists, ds.oracle[split] if ds.oracle is not None else None, "hr", k)


def prompt_oracle_hit_rate(ds: RecDataset, split: str, k: int) -> Score:
    """HR@k of ranking by the prompt oracle (the next-item distribution given only the prompt's window)."""
    rows = _require_oracle(ds, split)
    prompt_rows = prompt_oracle_rows(ds, ds.splits[split])
    if prompt_rows is None:
        raise DataError(f"dataset {ds.name!r} records no synthetic generator, so its prompt oracle is "
                        "unknown", field="generator")
    return _score(*oracle_ranks(ds.splits[split], prompt_rows, k), rows, "hr", k)
