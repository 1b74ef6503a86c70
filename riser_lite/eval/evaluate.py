r"""Evaluation of a recommender LM: HR@K and NDCG@K on a split, with intervals and reference rankers.

Two protocols rank the catalogue for each example's prompt (the template of `riser_lite.items.prompts`):

- ``"beam"``: trie-constrained beam search, `num_beams` beams, length_penalty 0: the protocol of the
  generative recommenders (D3, ReRe, MiniOneRec). A target outside the beams has no rank (a miss at every K).
- ``"exact"``: every item scored by log P(item | prompt) (`decoding.score_all_items`), ties by item id: what
  beam search approximates; `compare_protocols` measures how often the two disagree.

Both rank by the scores of `EvalConfig.policy`: ``"constrained"`` (the default) is the trie-constrained
policy $\pi_c$ that RL trains and samples (see `model.forward`); ``"raw"`` is log P(item) over the whole
vocabulary, what `generate` with a trie ranks by.

A result holds HR@K / NDCG@K with percentile-bootstrap intervals, the valid-output rate (beams decoded to
text and parsed back: measured, not assumed), catalogue coverage, per-example ranks and top items, the
popularity baselines and, on synthetic data, the oracle, the prompt oracle and the *expected* metrics under
the true next-item distribution $p$ (`riser_lite.eval.baselines`). **Acceptance** is what a hit reward
scores, the model's one recommendation under $\pi_c$: ``sampled_hit`` (one item drawn from
$\pi_c(\cdot \mid x)$, seeded; expected value $\sum_y \pi_c(y \mid x)\, p(y \mid x)$) and ``greedy_hit``
($\arg\max_y \pi_c(y \mid x)$; expected value $p(\arg\max_y \pi_c(y \mid x) \mid x)$).

Under `accelerate launch` / `torchrun` the batches are dealt out across processes and gathered back in
order (`riser_lite.distributed`): the result is the one-process result, and only the main process saves it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from riser_lite import distributed
from riser_lite.data.synthetic.prompt_oracle import prompt_oracle_rows
from riser_lite.data.types import SPLITS, DataError
from riser_lite.eval.baselines import expected_columns, oracle_ranks, popularity_ranks
from riser_lite.eval.metrics import (
    DEFAULT_KS,
    metric_columns,
    ranks_from_scores,
    ranks_of_targets,
    summarize_values,
    top_items,
)
from riser_lite.items.catalog import ItemSpace
from riser_lite.items.prompts import example_prompt
from riser_lite.model.decoding import beam_search, encode_prompts, greedy_texts, score_all_items
from riser_lite.model.forward import check_policy
from riser_lite.runs import load_run, load_run_dataset, own_entry, write_json

PROTOCOLS = ("beam", "exact")
ACCEPTANCE = ("sampled_hit", "greedy_hit")  # the reward of the constrained policy's one recommendation


@dataclass
class EvalConfig:
    """What to evaluate and how."""

    split: str = "test"  # "train" | "valid" | "test"
    protocol: str = "beam"  # "beam" (constrained beam search) | "exact" (rank every item by log-prob)
    num_beams: int = 20  # beams of the beam protocol; must be >= max(ks)
    ks: tuple[int, ...] = DEFAULT_KS  # cut-offs K of HR@K, NDCG@K and coverage@K
    batch_size: int = 16  # prompts decoded together
    max_examples: int | None = None  # evaluate the first N examples of the split only (None = all)
    num_bootstrap: int = 1000  # bootstrap resamples of the examples for the intervals
    alpha: float = 0.05  # intervals cover 1 - alpha (0.05: 95 %)
    seed: int = 0  # seeds the bootstrap and the sampled recommendation (decoding is deterministic)
    unconstrained: bool = False  # also decode greedily without the trie and measure its valid-output rate
    baselines: bool = True  # popularity (and the oracles on synthetic data) on the same examples
    # sampled_hit / greedy_hit: one more pass scoring every item under the constrained policy (about the
    # cost of the beam protocol again); on for `riser-lite evaluate`, compare and the demo
    acceptance: bool = False
    policy: str = "constrained"  # the scores lists are ranked by: "constrained" or "raw" (module docstring)

    def validate(self) -> None:
        check_policy(self.policy)
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if not self.ks or any(int(k) != k or k < 1 for k in self.ks):
            raise ValueError(f"ks must be positive integers, got {self.ks!r}")
        if self.protocol == "beam" and self.num_beams < max(self.ks):
            raise ValueError(f"num_beams ({self.num_beams}) must be >= the largest K ({max(self.ks)}): "
                             "beam search returns only num_beams items")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1 or None, got {self.max_examples}")

    @property
    def max_k(self) -> int:
        return max(self.ks)


@dataclass
class EvalResult:
    """Everything one evaluation measured. `to_dict()` is JSON-ready; `metrics` is the flat view."""

    split: str
    protocol: str
    num_examples: int
    summaries: dict[str, dict]  # "hr@10" / "ndcg@10" -> {"value", "lo", "hi", "n"}
    ranks: list[int | None]  # per example: 0-based rank of the target (None: beyond the returned beams)
    top_items: list[list[int]]  # per example: the model's max(ks) best items
    coverage: dict[str, float]  # "coverage@K": distinct items in the top K over examples / catalogue size
    valid_rate: float | None  # beam: share of returned beams that decode to a catalogue title
    unconstrained_valid_rate: float | None  # share of unconstrained greedy outputs naming a catalogue item
    expected: dict[str, dict] | None  # synthetic data: expected HR/NDCG of the model's lists under the oracle
    # "sampled_hit" / "greedy_hit" of the constrained policy's one recommendation (None: acceptance off)
    acceptance: dict[str, dict] | None = None
    expected_acceptance: dict[str, dict] | None = None  # synthetic data: their exact expected values
    # per example: "sampled_hit", "greedy_hit" (0/1) and on synthetic data "expected_sampled_hit",
    # "expected_greedy_hit" (probabilities), for paired comparisons of models on the same users
    acceptance_values: dict[str, list[float]] | None = None
    # "popularity", "popularity_all", and on synthetic data "oracle" and "prompt_oracle"
    baselines: dict[str, dict] = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # the EvalConfig used
    seconds: float = 0.0  # wall time of the evaluation

    @property
    def metrics(self) -> dict[str, float]:
        """Flat {name: value}: hr@K, ndcg@K, coverage@K and the valid-output rates that were measured."""
        flat = {name: s["value"] for name, s in self.summaries.items()}
        flat.update(self.coverage)
        for name in ("valid_rate", "unconstrained_valid_rate"):
            if getattr(self, name) is not None:
                flat[name] = getattr(self, name)
        return flat

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def _summarize(columns, config: EvalConfig) -> dict[str, dict]:
    return summarize_values(columns, config.num_bootstrap, config.alpha, config.seed)


def _scored(ranks, lists, distributions, config: EvalConfig) -> dict:
    """HR/NDCG summaries of target ranks and, with the true next-item distributions, the expected ones of
    the lists (else None)."""
    return {"summaries": _summarize(metric_columns(ranks, config.ks), config),
            "expected": None if distributions is None
            else _summarize(expected_columns(lists, distributions, config.ks), config)}


def list_metrics(ranks, lists, num_items: int, distributions, config: EvalConfig) -> dict:
    """The `EvalResult` fields any ranker's target ranks and top lists give: `_scored` and coverage."""
    coverage = {f"coverage@{k}": len({item for row in lists for item in row[:k]}) / num_items
                for k in config.ks}
    return {**_scored(ranks, lists, distributions, config), "coverage": coverage}


# ---------------------------------------------------------------------------------------------- rankings


def _examples_and_prompts(dataset, item_space: ItemSpace, config: EvalConfig):
    examples = list(dataset.splits[config.split])[: config.max_examples]
    if not examples:
        raise DataError(f"split {config.split!r} of dataset {dataset.name!r} has no examples to evaluate")
    for i, ex in enumerate(examples):
        if ex.target not in item_space.index_of:
            raise DataError(f"{config.split} example {i} (user {ex.user!r}): target {ex.target} is not in "
                            "the catalogue the model decodes")
    prompts = [example_prompt(ex, dataset.catalog, dataset.max_history) for ex in examples]
    return examples, prompts


def _by_batch(num_prompts: int, config: EvalConfig, run) -> list:
    """run(batch index, first prompt) of every batch, in order. Under several processes each decodes every
    P-th batch (the same batches as one process, so the same numbers) and all get every part back."""
    rank, world = distributed.rank_and_world()
    starts = range(0, num_prompts, config.batch_size)
    return distributed.gather_by_index([(b, run(b, starts[b]))
                                        for b in distributed.my_batches(len(starts), rank, world)])


def _beam_batch(model, item_space, ids, mask, num_beams, policy):
    """(ranked item lists, number of beams that decode to a catalogue title, beams returned)."""
    result = beam_search(model, item_space, ids, mask, num_beams=num_beams, policy=policy)
    flat_tokens = result.tokens.reshape(-1, result.tokens.shape[-1])
    flat_mask = result.token_mask.reshape(-1, result.tokens.shape[-1])
    texts = item_space.tokenizer.batch_decode(
        [row[m].tolist() for row, m in zip(flat_tokens, flat_mask, strict=True)],
        skip_special_tokens=True, clean_up_tokenization_spaces=False)
    parsed = torch.tensor([item_space.parse(text) for text in texts]).view(result.items.shape)
    # A beam counts as valid when its text names a catalogue item (and it is the item the search reported).
    valid = int(((parsed >= 0) & (parsed == result.items)).sum())
    return result.item_lists(), valid, result.items.shape[0] * min(num_beams, len(item_space))


def _rankings(model, item_space, examples, prompts, config: EvalConfig, protocol: str) -> dict:
    """Per example: the model's top max_k items and target rank, plus the valid-output rates."""
    parts = _by_batch(len(prompts), config, lambda b, start: _ranking_batch(
        model, item_space, examples, prompts, config, protocol, start))
    valid, slots = sum(p["valid"] for p in parts), sum(p["slots"] for p in parts)
    return {"lists": [row for p in parts for row in p["lists"]],
            "ranks": [r for p in parts for r in p["ranks"]], "valid_rate": valid / slots if slots else None,
            "unconstrained_valid_rate": sum(p["greedy"] for p in parts) / len(prompts) if config.unconstrained
            else None}


def _ranking_batch(model, item_space, examples, prompts, config: EvalConfig, protocol: str,
                   start: int) -> dict:
    """One batch of `_rankings`: top lists, target ranks, valid beams / beam slots, valid greedy outputs."""
    ids, mask = encode_prompts(item_space.tokenizer, prompts[start: start + config.batch_size])
    targets = [ex.target for ex in examples[start: start + config.batch_size]]
    out = {"valid": 0, "slots": 0, "greedy": 0}
    if protocol == "beam":
        top, out["valid"], out["slots"] = _beam_batch(model, item_space, ids, mask, config.num_beams,
                                                        config.policy)
        out["lists"], out["ranks"] = [row[: config.max_k] for row in top], ranks_of_targets(top, targets)
    else:
        scores = score_all_items(model, item_space, ids, mask, policy=config.policy)
        columns = torch.tensor([item_space.index_of[t] for t in targets])
        out["lists"] = top_items(scores, item_space.item_ids, config.max_k)
        out["ranks"] = ranks_from_scores(scores, columns).tolist()
    if config.unconstrained:
        texts = greedy_texts(model, item_space.tokenizer, ids, mask, item_space.max_response_len + 8)
        out["greedy"] = sum(item_space.parse(text) >= 0 for text in texts)
    return out


def _reference_rankers(dataset, examples, item_space, config: EvalConfig, distributions) -> dict[str, dict]:
    """Popularity (history skipped, and not) and on synthetic data the oracle and the prompt oracle."""
    out = {}
    for name, exclude in (("popularity", True), ("popularity_all", False)):
        ranks, lists = popularity_ranks(dataset, examples, config.max_k, exclude_history=exclude)
        out[name] = {"exclude_history": exclude, **_scored(ranks, lists, distributions, config)}
    if distributions is None:
        return out
    prompt_rows = prompt_oracle_rows(dataset, examples)  # None unless the generator is known
    for name, rows in (("oracle", distributions), ("prompt_oracle", prompt_rows)):
        if rows is not None:
            ranks, lists = oracle_ranks(examples, rows, config.max_k, item_space.item_ids)
            out[name] = {**_scored(ranks, lists, distributions, config),
                         "expected_acceptance": _distribution_acceptance(rows, distributions, config)}
    return out


def _distribution_acceptance(rows, distributions, config: EvalConfig) -> dict[str, dict]:
    """Acceptance under the true p of a ranker that recommends one item drawn from its distribution q
    (sampled_hit: sum_y q(y) p(y)) or its most probable item (greedy_hit: p(argmax q), ties by item id).
    For the oracle (q = p) greedy_hit is E[HR@1], the best acceptance any policy can expect."""
    sampled, greedy = [], []
    for row, truth in zip(rows, distributions, strict=True):
        sampled.append(sum(q * truth.get(item, 0.0) for item, q in row.items()))
        greedy.append(truth.get(min(row, key=lambda item: (-row[item], item)), 0.0))
    return _summarize({"sampled_hit": sampled, "greedy_hit": greedy}, config)


def _acceptance_batch(model, item_space, examples, prompts, config: EvalConfig, distributions, start: int,
                      index: int) -> dict[str, list[float]]:
    """Per example of one batch: sampled_hit and greedy_hit under the constrained policy, and with the true
    distributions p their expected values ("expected_..."). probs = exp(score_all_items) [B, I]; greedy =
    argmax (ties: catalogue order); the item drawn from probs uses a generator seeded by config.seed and the
    batch index, so the numbers do not depend on the process count."""
    seed = int(np.random.SeedSequence([config.seed, index]).generate_state(1)[0])
    end = start + config.batch_size
    ids, mask = encode_prompts(item_space.tokenizer, prompts[start:end])
    probs = score_all_items(model, item_space, ids, mask).double().exp()  # [B, I], the constrained policy
    item_ids = torch.tensor(item_space.item_ids)
    greedy = item_ids[probs.argmax(1)]
    sampled = item_ids[torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))[:, 0]]
    targets = torch.tensor([ex.target for ex in examples[start:end]])
    out = {"sampled_hit": (sampled == targets).double().tolist(),
           "greedy_hit": (greedy == targets).double().tolist()}
    if distributions is not None:
        truth = torch.tensor([[dist.get(item, 0.0) for item in item_space.item_ids]
                              for dist in distributions[start:end]], dtype=torch.float64)  # [B, I]
        out["expected_sampled_hit"] = (probs * truth).sum(1).tolist()
        out["expected_greedy_hit"] = truth.gather(1, probs.argmax(1, keepdim=True))[:, 0].tolist()
    return out


def _acceptance(model, item_space, examples, prompts, config: EvalConfig, distributions) -> dict:
    """{name: [N] per-example values} of `_acceptance_batch` over every batch."""
    parts = _by_batch(len(prompts), config, lambda b, start: _acceptance_batch(
        model, item_space, examples, prompts, config, distributions, start, b))
    return {name: [value for part in parts for value in part[name]] for name in parts[0]}


# ---------------------------------------------------------------------------------------------- public API


def evaluate(model, tokenizer, dataset, item_space: ItemSpace | None = None,
             config: EvalConfig | None = None) -> EvalResult:
    """Evaluate `model` (a causal LM; its tokenizer pads left) on `config.split` of `dataset` (a RecDataset)
    as the module docstring says. item_space: the `ItemSpace` of `tokenizer` (None: built from the
    catalogue; pass one to reuse it)."""
    config = config or EvalConfig()
    config.validate()
    start = time.perf_counter()
    item_space = item_space if item_space is not None else ItemSpace(dataset.catalog, tokenizer)
    examples, prompts = _examples_and_prompts(dataset, item_space, config)
    out = _rankings(model, item_space, examples, prompts, config, config.protocol)
    oracle = getattr(dataset, "oracle", None)
    distributions = oracle[config.split][: len(examples)] if oracle else None
    values = acceptance = expected_acceptance = None
    if config.acceptance:
        values = _acceptance(model, item_space, examples, prompts, config, distributions)
        acceptance = _summarize({k: values[k] for k in ACCEPTANCE}, config)
        if distributions is not None:
            expected_acceptance = _summarize({k: values[f"expected_{k}"] for k in ACCEPTANCE}, config)
    return EvalResult(
        split=config.split, protocol=config.protocol, num_examples=len(examples), ranks=out["ranks"],
        top_items=out["lists"], **list_metrics(out["ranks"], out["lists"], len(item_space), distributions,
                                               config),
        valid_rate=out["valid_rate"], unconstrained_valid_rate=out["unconstrained_valid_rate"],
        acceptance=acceptance, expected_acceptance=expected_acceptance, acceptance_values=values,
        baselines=_reference_rankers(dataset, examples, item_space, config, distributions) if config.baselines
        else {},
        config=asdict(config), seconds=time.perf_counter() - start)


def compare_protocols(model, tokenizer, dataset, item_space: ItemSpace | None = None,
                      config: EvalConfig | None = None) -> dict:
    """How often beam search ranks targets differently from the exact full-catalogue ranking, on the same
    examples. An exact rank >= num_beams counts as "not returned", all beam search can say about it.

    Returns a JSON-ready dict: `rank_differs` (fraction of examples whose target rank differs), `hit_differs`
    {"hr@K": fraction whose HR@K differs}, `topk_overlap` {"@K": mean share of the exact top K that beam
    search also put in its top K}, both protocols' summaries and ranks.
    """
    config = config or EvalConfig()
    config.validate()
    item_space = item_space if item_space is not None else ItemSpace(dataset.catalog, tokenizer)
    examples, prompts = _examples_and_prompts(dataset, item_space, config)
    quiet = replace(config, unconstrained=False)  # no greedy free-text pass
    beam = _rankings(model, item_space, examples, prompts, quiet, "beam")
    exact = _rankings(model, item_space, examples, prompts, quiet, "exact")
    exact_cut = [r if r < config.num_beams else None for r in exact["ranks"]]
    n = len(examples)
    return {
        "num_examples": n, "num_beams": config.num_beams, "split": config.split,
        "rank_differs": sum(b != e for b, e in zip(beam["ranks"], exact_cut, strict=True)) / n,
        "hit_differs": {f"hr@{k}": sum(((b is not None and b < k) != (e < k))
                                       for b, e in zip(beam["ranks"], exact["ranks"], strict=True)) / n
                        for k in config.ks},
        "topk_overlap": {f"@{k}": sum(len(set(b[:k]) & set(e[:k])) / k
                                      for b, e in zip(beam["lists"], exact["lists"], strict=True)) / n
                         for k in config.ks},
        "beam": _summarize(metric_columns(beam["ranks"], config.ks), config),
        "exact": _summarize(metric_columns(exact["ranks"], config.ks), config),
        "beam_ranks": beam["ranks"], "exact_ranks": exact["ranks"],
    }


def evaluate_run(run_path: str | Path, split: str = "test", protocol: str = "beam", *,
                 max_examples: int | None = None, seed: int = 0, save: bool = True, **overrides) -> dict:
    """Evaluate a run folder's model on the dataset it was trained on; returns (and unless `save` is False
    writes) a JSON dict: ``<run>/eval_<split>_<protocol>[_raw][_first<N>].json`` (raw policy; the first N
    examples only, so a partial evaluation never replaces the full one). `overrides`: EvalConfig fields."""
    torch.manual_seed(seed)
    run = load_run(run_path)
    dataset = load_run_dataset(run)
    overrides.setdefault("unconstrained", True)
    overrides.setdefault("acceptance", True)
    config = EvalConfig(split=split, protocol=protocol, max_examples=max_examples, seed=seed, **overrides)
    item_space = ItemSpace(dataset.catalog, run.tokenizer)
    target = None
    if save and distributed.is_main():  # several processes: every one holds the gathered result
        suffix = "" if config.policy == "constrained" else f"_{config.policy}"
        suffix += "" if max_examples is None else f"_first{max_examples}"
        target = own_entry(run.path, f"eval_{split}_{protocol}{suffix}.json")  # refused before the work
    out = {"run": str(run.path), "dataset": dataset.name,
           **evaluate(run.model, run.tokenizer, dataset, item_space, config).to_dict()}
    if target is not None:
        write_json(target, out)
    return out
