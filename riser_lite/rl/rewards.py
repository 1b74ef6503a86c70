"""Rewards for a group of rolled-out items, and statistics that say whether a group can teach anything.

Shapes: ``P`` prompts, ``G`` rollouts (group members) per prompt. Rollouts are item ids, so comparing a
rollout with the target is one integer comparison (decoding is constrained to catalogue titles).

- ``hit_reward``: r = 1 if the rolled-out item is the target, else 0. **[reported]** RISER's reward.
- ``rank_reward``: ReRe's hit + rank penalty for wrong beams. **[choice]** offered as an option (ReRe).
- ``group_stats``: how many groups are learnable, all-miss, how diverse. **[choice]** what the notebooks log.
- ``RewardFn``: any callable ``(rollout_items, targets) -> rewards`` can replace the two above.
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
    """Binary hit reward.

    rollout_items: [P, G] long item ids; targets: [P] long item ids.
    Returns [P, G] float: 1.0 where the rollout is the target item, else 0.0.
    """
    return (rollout_items == targets[:, None]).to(torch.get_default_dtype())


def rank_penalties(group_size: int) -> Tensor:
    """ReRe's penalty for a wrong item at each 0-based beam position k < G.

    penalty_k = -(1 / log2(k + 2)) / sum_{j<G} 1 / log2(j + 2), so the penalties of a whole group sum to -1
    and an early wrong beam (which the model ranked high) is punished more than a late one.
    Returns [G] float.
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
    """Number of distinct catalogue items in each group (-1, no item, counts as none).

    rollout_items: [P, G] long. Returns [P] long.
    """
    return (first_appearance(rollout_items) & (rollout_items >= 0)).sum(dim=1)


def group_stats(rewards: Tensor, rollout_items: Tensor, targets: Tensor | None = None) -> dict[str, float]:
    """Statistics of a batch of groups, as python floats for logging.

    rewards: [P, G] float; rollout_items: [P, G] long; targets: [P] long, optional.
    A rollout counts as a hit if it equals the target (when ``targets`` is given) or else if its reward
    is positive (true for ``hit_reward`` and ``rank_reward``; a custom reward may need ``targets``).

    Returns:
        groups: P.
        learnable_fraction: fraction of groups whose rewards are not all equal (variance > 0).
        all_miss_fraction: fraction of groups with no hit.
        hit_rate: fraction of all rollouts that hit.
        reward_mean: mean reward over all rollouts.
        reward_var: mean over groups of the within-group (population) reward variance.
        unique_items_per_group: mean number of distinct items in a group.
    """
    num_groups = rewards.shape[0]
    if num_groups == 0 or rewards.shape[1] == 0:
        keys = ("learnable_fraction", "all_miss_fraction", "hit_rate", "reward_mean", "reward_var",
                "unique_items_per_group")
        return {"groups": float(num_groups), **dict.fromkeys(keys, 0.0)}
    hits = (rollout_items == targets[:, None]) if targets is not None else (rewards > 0)
    return {
        "groups": float(num_groups),
        "learnable_fraction": learnable_groups(rewards).float().mean().item(),
        "all_miss_fraction": (~hits.any(dim=1)).float().mean().item(),
        "hit_rate": hits.float().mean().item(),
        "reward_mean": rewards.float().mean().item(),
        "reward_var": rewards.float().var(dim=1, unbiased=False).mean().item(),
        "unique_items_per_group": unique_items_per_group(rollout_items).float().mean().item(),
    }


# ----------------------------------------------------------------------------- groups of rollouts

def compute_rewards(groups, targets, reward: str | Callable = "hit") -> Tensor:
    """Rewards [P, G] float of the rollouts: "hit" (RISER), "rank" (ReRe's hit + rank penalty; beam order)
    or any callable (items [P, G], targets [P]) -> [P, G]. Invalid rollouts (-1) never hit."""
    targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if targets.shape[0] != groups.num_prompts:
        raise ValueError(f"need one target per prompt: {groups.num_prompts} prompts, "
                         f"{targets.shape[0]} targets")
    if callable(reward):
        fn = reward
    elif reward in ("hit", "rank"):
        fn = hit_reward if reward == "hit" else rank_reward
    else:
        raise ValueError(f"reward must be 'hit', 'rank' or a callable, got {reward!r}")
    values = torch.as_tensor(fn(groups.items, targets)).float()
    if values.shape != groups.items.shape:
        raise ValueError(f"reward function returned shape {tuple(values.shape)}, "
                         f"expected {tuple(groups.items.shape)}")
    return values


def rollout_stats(groups, targets, reward: str | Callable = "hit",
                  rewards: Tensor | None = None) -> dict[str, float]:
    """Group statistics, as python floats.

    rewards: [P, G] when already computed (``compute_rewards(groups, targets, reward)``).
    learnable_fraction (reward variance > 0), all_miss_fraction, hit_rate, reward_mean, reward_var,
    unique_items_per_group (see `group_stats`), plus:
    duplicate_rate: fraction of rollouts repeating a catalogue item earlier in their group;
    valid_rate: fraction of rollouts that are catalogue items;
    group_prob_mass: mean over groups of the total sampling probability of the group's distinct items
    (how much of the policy's belief a group covers);
    draws_per_prompt, group_size.
    """
    targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    values = compute_rewards(groups, targets, reward) if rewards is None else rewards
    stats = group_stats(values, groups.items, targets)
    if groups.num_prompts == 0:
        return {**stats, "duplicate_rate": 0.0, "valid_rate": 0.0, "group_prob_mass": 0.0,
                "draws_per_prompt": float(groups.num_samples_drawn), "group_size": float(groups.group_size)}
    distinct = first_appearance(groups.items) & groups.valid
    mass = torch.where(distinct, groups.item_prob, torch.zeros(())).sum(1)
    stats.update(
        duplicate_rate=(groups.valid & ~distinct).float().mean().item(),
        valid_rate=groups.valid.float().mean().item(),
        group_prob_mass=mass.mean().item(),
        draws_per_prompt=float(groups.num_samples_drawn),
        group_size=float(groups.group_size),
    )
    return stats


def first_appearance(items: Tensor) -> Tensor:
    """[P, n] bool: True at the first occurrence of each item in its row."""
    values, order = items.sort(dim=1, stable=True)  # stable: an item's earliest occurrence sorts first
    first_sorted = torch.ones_like(values, dtype=torch.bool)
    first_sorted[:, 1:] = values[:, 1:] != values[:, :-1]
    return torch.zeros_like(first_sorted).scatter_(1, order, first_sorted)
