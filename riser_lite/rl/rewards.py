"""Rewards for a group of rolled-out items, and statistics that say whether a group can teach anything.

Shapes: ``P`` prompts, ``G`` rollouts (group members) per prompt. Rollouts are item ids, so comparing a
rollout with the target is one integer comparison (decoding is constrained to catalogue titles).

- ``hit_reward``: r = 1 if the rolled-out item is the target, else 0. **[reported]** RISER's reward.
- ``rank_reward``: ReRe's hit + rank penalty for wrong beams. **[choice]** offered as an option (ReRe).
- ``group_stats``: how many groups are learnable, all-miss, how diverse. **[choice]** what the notebooks log.
- ``RewardFn``: any callable ``(rollout_items, targets) -> rewards`` can replace the two rewards.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from riser_lite.rl.advantages import learnable_groups

# A reward function maps rollout_items [P, G] long and targets [P] long to rewards [P, G] float.
RewardFn = Callable[[Tensor, Tensor], Tensor]


def hit_reward(rollout_items: Tensor, targets: Tensor) -> Tensor:
    """[P, G] float: 1.0 where the rollout (rollout_items [P, G] long) is the target ([P] long), else 0.0."""
    return (rollout_items == targets[:, None]).to(torch.get_default_dtype())


def rank_penalties(group_size: int) -> Tensor:
    """ReRe's penalty for a wrong item at each 0-based beam position k < G, [G] float.

    penalty_k = -(1 / log2(k + 2)) / sum_{j<G} 1 / log2(j + 2), so the penalties of a whole group sum to -1
    and an early wrong beam (which the model ranked high) is punished more than a late one.
    """
    discounts = torch.tensor([1.0 / math.log2(k + 2) for k in range(group_size)])
    return -discounts / discounts.sum()


def rank_reward(rollout_items: Tensor, targets: Tensor) -> Tensor:
    """Hit reward plus ReRe's rank penalty on wrong beams, only in groups that contain the target.

    rollout_items: [P, G] long, in beam order (position 0 = the model's top beam); targets: [P] long.
    Returns [P, G] float. An all-miss group stays all zero: with no hit to contrast against, ReRe adds
    no penalty (and the group stays non-learnable, which is what RISER's pair conversion looks for).
    """
    hits = hit_reward(rollout_items, targets)
    group_has_hit = hits.amax(dim=1, keepdim=True) > 0  # [P, 1]
    penalties = rank_penalties(rollout_items.shape[1]).to(hits.dtype)[None, :]  # [1, G]
    penalise = group_has_hit & (hits == 0)  # wrong beams in groups that contain the target
    return hits + torch.where(penalise, penalties, torch.zeros_like(hits))


def unique_items_per_group(rollout_items: Tensor) -> Tensor:
    """[P] long: distinct catalogue items in each group (rollout_items [P, G] long; -1, no item, is none)."""
    return (first_appearance(rollout_items) & (rollout_items >= 0)).sum(dim=1)


def first_appearance(items: Tensor) -> Tensor:
    """[P, n] bool: True at the first occurrence of each item in its row."""
    values, order = items.sort(dim=1, stable=True)  # stable: an item's earliest occurrence sorts first
    first_sorted = torch.ones_like(values, dtype=torch.bool)
    first_sorted[:, 1:] = values[:, 1:] != values[:, :-1]
    return torch.zeros_like(first_sorted).scatter_(1, order, first_sorted)


def _mean(x: Tensor) -> float:
    """The mean as a python float; 0.0 for no values (an empty batch)."""
    return x.float().mean().item() if x.numel() else 0.0


def group_stats(rewards: Tensor, rollout_items: Tensor, targets: Tensor | None = None) -> dict[str, float]:
    """Statistics of a batch of groups, as python floats (rewards [P, G] float, rollout_items [P, G] long).

    A rollout hits if it is the target (targets [P] long, when given) or else if its reward is positive.
    Keys: groups (P), learnable_fraction (rewards not all equal), all_miss_fraction (no hit), hit_rate (of
    all rollouts), reward_mean, reward_var (mean within-group population variance), unique_items_per_group.
    """
    hits = (rollout_items == targets[:, None]) if targets is not None else (rewards > 0)
    return {
        "groups": float(rewards.shape[0]),
        "learnable_fraction": _mean(learnable_groups(rewards)),
        "all_miss_fraction": _mean(~hits.any(dim=1)),
        "hit_rate": _mean(hits),
        "reward_mean": _mean(rewards),
        "reward_var": _mean(rewards.float().var(dim=1, unbiased=False)),
        "unique_items_per_group": _mean(unique_items_per_group(rollout_items)),
    }


# ----------------------------------------------------------------------------- groups of rollouts

def compute_rewards(groups, targets, reward: str | Callable = "hit") -> Tensor:
    """Rewards [P, G] float of the rollouts: "hit" (RISER), "rank" (ReRe's hit + rank penalty; beam order)
    or any `RewardFn`. Invalid rollouts (-1) never hit."""
    targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if targets.shape[0] != groups.num_prompts:
        raise ValueError(f"need one target per prompt: {groups.num_prompts} prompts, "
                         f"{targets.shape[0]} targets")
    fn = reward if callable(reward) else {"hit": hit_reward, "rank": rank_reward}.get(reward)
    if fn is None:
        raise ValueError(f"reward must be 'hit', 'rank' or a callable, got {reward!r}")
    values = torch.as_tensor(fn(groups.items, targets)).float()
    if values.shape != groups.items.shape:
        raise ValueError(f"reward function returned shape {tuple(values.shape)}, "
                         f"expected {tuple(groups.items.shape)}")
    return values


def rollout_stats(groups, targets, rewards: Tensor | None = None) -> dict[str, float]:
    """`group_stats` of a `Groups` (rewards: [P, G], default the hit reward), plus duplicate_rate (rollouts
    repeating a catalogue item earlier in their group), valid_rate (rollouts that are catalogue items),
    group_prob_mass (mean over groups of the sampling probability of the group's distinct items: how much
    of the policy's belief a group covers), draws_per_prompt and group_size."""
    targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    values = compute_rewards(groups, targets) if rewards is None else rewards
    distinct = first_appearance(groups.items) & groups.valid
    return {
        **group_stats(values, groups.items, targets),
        "duplicate_rate": _mean(groups.valid & ~distinct),
        "valid_rate": _mean(groups.valid),
        "group_prob_mass": _mean(torch.where(distinct, groups.item_prob, torch.zeros(())).sum(1)),
        "draws_per_prompt": float(groups.num_samples_drawn),
        "group_size": float(groups.group_size),
    }
