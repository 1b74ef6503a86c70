"""Reference answers to the notebook exercises, written the way a learner would write them.

Each exercise cell defines a function with the signature its `teach.exercises` checker documents; with
``SOLUTIONS = True`` (instructors, the notebook tests) these answers are used instead, and `reveal(name)`
prints one. Each answer passes its checker against the library (tests/test_solutions.py).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import Tensor


def decision_fraction(branching: dict[int, list[bool]]) -> float:
    """{item: [bool per response token]} -> the share of all the catalogue's tokens that are decisions."""
    tokens = sum(len(flags) for flags in branching.values())
    decisions = sum(sum(flags) for flags in branching.values())
    return decisions / tokens if tokens else 0.0


def hr_and_ndcg_at_k(ranks: list[int | None], k: int) -> tuple[float, float]:
    """0-based ranks of the true items (None: not in the list) -> (HR@k, NDCG@k), means over users."""
    hits = [rank is not None and rank < k for rank in ranks]
    gains = [1 / math.log2(rank + 2) if hit else 0.0 for rank, hit in zip(ranks, hits, strict=True)]
    users = max(len(ranks), 1)
    return sum(hits) / users, sum(gains) / users


def group_advantages(rewards: Tensor) -> Tensor:
    """rewards [P, G] -> advantages [P, G]: (r − mean) / (std + eps) per group, 0 in all-equal groups."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = ((rewards - mean) ** 2).mean(dim=1, keepdim=True).sqrt()  # population std, defined for G = 1
    advantages = (rewards - mean) / (std + 1e-6)
    all_equal = rewards.amax(dim=1) == rewards.amin(dim=1)
    return torch.where(all_equal[:, None], torch.zeros_like(advantages), advantages)


def learnable_groups(rewards: Tensor) -> Tensor:
    """rewards [P, G] -> [P] bool: True where the rewards differ, i.e. the group gives a GRPO gradient."""
    return rewards.amax(dim=1) > rewards.amin(dim=1)


def convert_groups_to_pairs(rollout_items: Tensor, targets: Tensor,
                            rewards: Tensor) -> list[tuple[int, int, int]]:
    """Groups with equal rewards and no hit -> (prompt, chosen = target, rejected = each distinct item)."""
    pairs = []
    for p in range(rollout_items.shape[0]):
        has_hit = bool((rollout_items[p] == targets[p]).any())
        if learnable_groups(rewards[p : p + 1])[0] or has_hit:
            continue  # GRPO learns from this group already, or every rollout is the target
        for item in dict.fromkeys(rollout_items[p].tolist()):  # distinct, in first-seen order
            pairs.append((p, int(targets[p]), item))
    return pairs


def certainty_weights(branching: Tensor, mask: Tensor, d: float) -> Tensor:
    """[N, T] -> [N, T]: 1 where the trie branches (a decision), d where it forces the token, 0 on padding."""
    return torch.where(branching, 1.0, d) * mask.float()


def clipped_surrogate(logp: Tensor, old_logp: Tensor, advantages: Tensor, weights: Tensor,
                      eps_low: float, eps_high: float) -> Tensor:
    """Token-level clipped surrogate loss; logp, old_logp, weights [N, T], advantages [N]."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    objective = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)
    objective = torch.where(weights > 0, objective, torch.zeros_like(objective))  # padding may hold -inf
    per_sequence = (objective * weights).sum(1) / weights.sum(1).clamp_min(1e-12)
    has_tokens = weights.sum(1) > 0
    if not has_tokens.any():
        return (logp * 0).sum()
    return -per_sequence[has_tokens].mean()


def simpo_loss(chosen_logp: Tensor, chosen_weights: Tensor, rejected_logp: Tensor, rejected_weights: Tensor,
               beta: float, gamma: float) -> Tensor:
    """SimPO: −log σ(β·(s_w − s_l) − γ), s(y) = weighted mean log-prob. chosen [M, T1], rejected [M, T2]."""
    def score(logp: Tensor, weights: Tensor) -> Tensor:
        logp = torch.where(weights > 0, logp, torch.zeros_like(logp))
        return (logp * weights).sum(1) / weights.sum(1).clamp_min(1e-12)

    if chosen_logp.shape[0] == 0:
        return (chosen_logp.sum() + rejected_logp.sum()) * 0
    margin = beta * (score(chosen_logp, chosen_weights) - score(rejected_logp, rejected_weights)) - gamma
    return -torch.nn.functional.logsigmoid(margin).mean()


SOLUTIONS: dict[str, Callable] = {
    "decision_fraction": decision_fraction,
    "hr_and_ndcg_at_k": hr_and_ndcg_at_k,
    "group_advantages": group_advantages,
    "learnable_groups": learnable_groups,
    "convert_groups_to_pairs": convert_groups_to_pairs,
    "certainty_weights": certainty_weights,
    "clipped_surrogate": clipped_surrogate,
    "simpo_loss": simpo_loss,
}


def solution(name: str) -> Callable:
    """The reference answer of an exercise, by name (see SOLUTIONS)."""
    if name not in SOLUTIONS:
        raise KeyError(f"no exercise named {name!r}; expected one of {sorted(SOLUTIONS)}")
    return SOLUTIONS[name]


def reveal(name: str) -> str:
    """Print (and return) the source of a reference answer."""
    source = inspect.getsource(solution(name))
    print(source)
    return source
