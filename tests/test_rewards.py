import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from riser_lite.rl.rewards import RewardFn, group_stats, hit_reward, rank_penalties, rank_reward

# 1/log2(k+2) for k = 0..3 is 1, 0.6309298, 0.5, 0.4306766; their sum is 2.5616064.
PENALTIES_G4 = [-0.3903800, -0.2463025, -0.1951900, -0.1681275]


def test_hit_reward_by_hand():
    items = torch.tensor([[3, 1, 3], [2, 2, 2]])
    targets = torch.tensor([3, 5])
    assert hit_reward(items, targets).tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert hit_reward(items, targets).dtype == torch.float32


def test_rank_penalties_g4_by_hand():
    penalties = rank_penalties(4)
    assert torch.allclose(penalties, torch.tensor(PENALTIES_G4), atol=1e-6)
    assert math.isclose(penalties.sum().item(), -1.0, abs_tol=1e-6)


def test_rank_reward_g4_by_hand():
    items = torch.tensor([
        [7, 3, 9, 4],  # hit at beam 1: the wrong beams 0, 2, 3 are penalised
        [1, 2, 5, 6],  # all miss: no penalty at all
        [3, 3, 3, 3],  # all hit
        [3, 8, 3, 9],  # two hits
    ])
    targets = torch.tensor([3, 3, 3, 3])
    p0, p1, p2, p3 = PENALTIES_G4
    expected = torch.tensor([
        [p0, 1.0, p2, p3],
        [0.0, 0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0, 1.0],
        [1.0, p1, 1.0, p3],
    ])
    assert torch.allclose(rank_reward(items, targets), expected, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 1000))
def test_rank_reward_properties(num_prompts, group_size, seed):
    generator = torch.Generator().manual_seed(seed)
    items = torch.randint(0, 4, (num_prompts, group_size), generator=generator)
    targets = torch.randint(0, 4, (num_prompts,), generator=generator)
    rewards, hits = rank_reward(items, targets), hit_reward(items, targets)
    assert torch.all(rewards[hits == 1] == 1.0)
    no_hit_groups = hits.sum(1) == 0
    assert torch.all(rewards[no_hit_groups] == 0.0)
    misses = hits == 0
    assert torch.all(rewards[misses] <= 0.0)
    assert torch.all(torch.where(misses, rewards, 0.0).sum(1) >= -1.0 - 1e-6)


def test_group_stats_by_hand():
    items = torch.tensor([[1, 2, 3, 3], [4, 4, 4, 4], [5, 5, 5, 5]])
    targets = torch.tensor([3, 9, 5])
    stats = group_stats(hit_reward(items, targets), items)
    assert stats["groups"] == 3
    assert stats["learnable_fraction"] == pytest.approx(1 / 3)  # only group 0 has a hit and a miss
    assert stats["all_miss_fraction"] == pytest.approx(1 / 3)
    assert stats["hit_rate"] == pytest.approx(6 / 12)
    assert stats["reward_mean"] == pytest.approx(0.5)
    assert stats["reward_var"] == pytest.approx(0.25 / 3)  # var [0, 0, 1, 1] = 0.25, others 0
    assert stats["unique_items_per_group"] == pytest.approx((3 + 1 + 1) / 3)
    assert all(isinstance(v, float) for v in stats.values())


def test_custom_reward_fn_and_targets():
    def near_miss(rollout_items, targets):  # any callable (items, targets) -> rewards fits RewardFn
        return 1.0 - (rollout_items - targets[:, None]).abs().float() / 10

    reward_fn: RewardFn = near_miss
    items, targets = torch.tensor([[3, 4], [8, 8]]), torch.tensor([3, 5])
    rewards = reward_fn(items, targets)
    stats = group_stats(rewards, items, targets)  # rewards are positive everywhere: hits come from targets
    assert stats["hit_rate"] == pytest.approx(1 / 4)
    assert stats["all_miss_fraction"] == pytest.approx(1 / 2)
    assert stats["learnable_fraction"] == pytest.approx(1 / 2)


def test_group_stats_empty_batch():
    stats = group_stats(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.long))
    assert stats["groups"] == 0 and stats["learnable_fraction"] == 0.0
