"""Reference scores of a dataset with an oracle (synthetic data): the oracle's ceiling, the prompt oracle's
(the ceiling a prompt allows, see `riser_lite.data.synthetic.prompt_oracle`) and the popularity floor.

Each score is a `Score(expected, realised)`: the mean over examples of the probability mass the ranking
earns under the true next-item distribution (low variance), and of the metric for the target actually drawn.
The rankings and the metrics are those of evaluation (`baselines.oracle_ranks`, `baselines.PopularityRanker`,
`baselines.expected_columns`, `metrics.hits_at_k` / `ndcg_values_at_k`), so these numbers are exactly the
reference rows `riser-lite evaluate` prints; this module only averages them. The synthetic world supplies
the distributions; scoring against them lives here, with evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from riser_lite.data.synthetic.prompt_oracle import prompt_oracle_rows
from riser_lite.data.types import SPLITS, DataError, RecDataset
from riser_lite.eval.baselines import PopularityRanker, expected_columns, oracle_ranks
from riser_lite.eval.metrics import hits_at_k, ndcg_values_at_k, ranks_of_targets


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


def oracle_hit_rate(ds: RecDataset, split: str, k: int) -> Score:
    """HR@k of the oracle ranking: the best any recommender can expect (it ranks by the true probabilities).

    ``expected`` = mean of the top-k oracle probabilities; ``realised`` = fraction of examples whose actual
    target is among the oracle's top k. The two differ only by sampling noise.
    """
    rows = _require_oracle(ds, split)
    ranks, lists = oracle_ranks(ds.splits[split], rows, k)
    return Score(_mean(expected_columns(lists, rows, (k,))[f"hr@{k}"].tolist()),
                 _mean(hits_at_k(ranks, k).tolist()))


def oracle_ndcg(ds: RecDataset, split: str, k: int) -> Score:
    """NDCG@k of the oracle ranking (gain 1/log2(rank + 2), rank from 0), in expectation and realised.

    Ranking by true probability also maximises expected NDCG, since the gains fall with the rank.
    """
    rows = _require_oracle(ds, split)
    ranks, lists = oracle_ranks(ds.splits[split], rows, k)
    return Score(_mean(expected_columns(lists, rows, (k,))[f"ndcg@{k}"].tolist()),
                 _mean(ndcg_values_at_k(ranks, k).tolist()))


def popularity_hit_rate(ds: RecDataset, split: str, k: int, *, exclude_history: bool = True) -> Score:
    """HR@k of recommending the most popular train targets (skipping items in the history by default).

    ``expected`` uses the oracle when the dataset has one (else None); ``realised`` uses the actual targets.
    """
    examples = ds.splits[split]
    lists = PopularityRanker.from_dataset(ds, exclude_history).rank_all(examples, k)
    realised = _mean(hits_at_k(ranks_of_targets(lists, [ex.target for ex in examples]), k).tolist())
    if ds.oracle is None:
        return Score(None, realised)
    return Score(_mean(expected_columns(lists, ds.oracle[split], (k,))[f"hr@{k}"].tolist()), realised)


def prompt_oracle_hit_rate(ds: RecDataset, split: str, k: int) -> Score:
    """HR@k of ranking by the prompt oracle (the next-item distribution given only the prompt's window):
    ``expected`` under the true distributions, ``realised`` on the drawn targets."""
    rows = _require_oracle(ds, split)
    examples = ds.splits[split]
    prompt_rows = prompt_oracle_rows(ds, examples)
    if prompt_rows is None:
        raise DataError(f"dataset {ds.name!r} records no synthetic generator, so its prompt oracle is "
                        "unknown", field="generator")
    ranks, lists = oracle_ranks(examples, prompt_rows, k)
    return Score(_mean(expected_columns(lists, rows, (k,))[f"hr@{k}"].tolist()),
                 _mean(hits_at_k(ranks, k).tolist()))
