"""Training users held out of SFT for RL: one deterministic split, used by both stages.

RISER's protocol fine-tunes with SFT and with RL on disjoint training users. The held-out users are the
distinct training user ids, sorted (so example, dict and set order do not matter), permuted by
``numpy.random.default_rng(seed)``, the first ``floor(fraction * n + 0.5)`` of them. SFT records
`HoldoutSplit.record` in its run's config.json; RL (``prompt_users="heldout"``) rebuilds the split from it.
Validation and test examples are never split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from riser_lite.data.types import Example


@dataclass(frozen=True)
class HoldoutSplit:
    """The training examples split by user: those SFT trains on and those kept for RL prompts."""

    fraction: float  # share of the training users held out
    seed: int  # seed of the permutation that chose them
    kept: list[Example]  # examples of the users SFT trains on, in their original order
    held_out: list[Example]  # examples of the held-out users, in their original order
    held_out_users: tuple[str, ...]  # the held-out user ids, sorted
    num_users: int  # distinct users of all the training examples

    def record(self) -> dict:
        """What config.json records: enough to rebuild the split (fraction, seed) and check it (counts)."""
        return {"fraction": float(self.fraction), "seed": int(self.seed),
                "users_kept": self.num_users - len(self.held_out_users),
                "users_held_out": len(self.held_out_users), "examples_kept": len(self.kept),
                "examples_held_out": len(self.held_out)}


def split_rl_holdout(examples: list[Example], fraction: float, seed: int) -> HoldoutSplit:
    """Hold out `fraction` of the users of the training `examples` for RL (0: `kept` is `examples`)."""
    if not (isinstance(fraction, int | float) and math.isfinite(fraction) and 0 <= fraction < 1):
        raise ValueError(f"rl_holdout must be a number in [0, 1), got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"the rl_holdout seed must be an integer >= 0, got {seed!r}")
    users = sorted({ex.user for ex in examples})
    count = math.floor(fraction * len(users) + 0.5)
    order = np.random.default_rng(int(seed)).permutation(len(users))
    held = {users[i] for i in order[:count]}
    return HoldoutSplit(fraction=float(fraction), seed=int(seed),
                        kept=[ex for ex in examples if ex.user not in held],
                        held_out=[ex for ex in examples if ex.user in held],
                        held_out_users=tuple(sorted(held)), num_users=len(users))
