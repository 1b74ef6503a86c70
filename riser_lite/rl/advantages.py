"""Group-relative advantages (GRPO) and the test for which groups can teach anything.

Shapes: ``P`` prompts × ``G`` rollouts; rewards are [P, G]. Flatten advantages with ``.reshape(-1)`` to
get the per-sequence [N] tensor the losses take (N = P·G, prompt-major, as rollouts are flattened).

- ``group_advantages``: A_i = (r_i − mean(r)) / (std(r) + ε). **[paper]** (GRPO, as stated in RISER).
- Population std (``unbiased=False``). **[choice]** see ``group_advantages``.
- ``learnable_groups``: a group teaches GRPO something only if its rewards differ. **[paper]** RISER calls
  the others *non-learnable*; with a binary hit reward they are mostly all-miss groups.
"""

from __future__ import annotations

import torch
from torch import Tensor


def learnable_groups(rewards: Tensor) -> Tensor:
    """Which groups have reward variance > 0, i.e. not all rewards equal.

    rewards: [P, G] float. Returns [P] bool.
    Compares max with min rather than ``var() > 0``: the float variance of equal values such as
    [0.3, 0.3, 0.3] can come out as 1e-15 instead of 0, and such a group must count as non-learnable.
    """
    if rewards.shape[1] == 0:
        return torch.zeros(rewards.shape[0], dtype=torch.bool)
    return rewards.amax(dim=1) > rewards.amin(dim=1)


def group_advantages(rewards: Tensor, eps: float = 1e-6, scale_by_std: bool = True,
                     learnable: Tensor | None = None) -> tuple[Tensor, dict]:
    """GRPO advantages: each rollout's reward relative to its own group.

    rewards: [P, G] float; learnable: [P] bool when already computed. Returns (advantages [P, G], info).

    A_i = (r_i − mean(r)) / (std(r) + eps) with the *population* std (divide by G, not G − 1): defined
    for any G ≥ 1, unit root-mean-square advantages in every learnable group (TRL's sample std differs by
    the constant sqrt(G / (G − 1)), a step-size rescale). ``scale_by_std=False``: A_i = r_i − mean(r)
    (Dr. GRPO). Groups whose rewards are all equal get exactly A = 0 (float rounding can leave
    r − mean ≈ 1e-8, which ``eps`` would turn into advantages of order 0.01).

    info: groups, zero_variance_groups (non-learnable), learnable_fraction.
    """
    if not torch.isfinite(rewards).all():  # one NaN reward would turn its whole group's advantages into NaN
        row, col = (~torch.isfinite(rewards)).nonzero()[0].tolist()
        raise ValueError(f"rewards must be finite numbers; prompt {row}, rollout {col} has "
                         f"{rewards[row, col].item()}")
    learnable = learnable_groups(rewards) if learnable is None else learnable  # [P]
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_by_std:
        population_std = centred.pow(2).mean(dim=1, keepdim=True).sqrt()  # divide by G, not G − 1
        centred = centred / (population_std + eps)
    advantages = torch.where(learnable[:, None], centred, torch.zeros_like(centred))
    num_groups = rewards.shape[0]
    info = {
        "groups": num_groups,
        "zero_variance_groups": int((~learnable).sum()),
        "learnable_fraction": float(learnable.float().mean()) if num_groups else 0.0,
    }
    return advantages, info
