import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from riser_lite.rl.advantages import group_advantages, learnable_groups


def test_one_hit_in_four_by_hand():
    # mean 0.25, population std sqrt(0.25 · 0.75) = sqrt(3)/4: A = 0.75 / (sqrt(3)/4) = sqrt(3), −1/sqrt(3).
    adv, info = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    s3 = math.sqrt(3)
    assert torch.allclose(adv, torch.tensor([[s3, -1 / s3, -1 / s3, -1 / s3]]), atol=1e-5)
    assert info == {"groups": 1, "zero_variance_groups": 0, "learnable_fraction": 1.0}


def test_population_std_not_sample_std():
    # G = 2, rewards [1, 0]: population std 0.5 gives ±1; the sample std 0.7071 would give ±0.7071.
    adv, _ = group_advantages(torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(adv, torch.tensor([[1.0, -1.0]]), atol=1e-5)


def test_zero_variance_groups_get_exactly_zero():
    # Seven equal rewards of 0.3 have a float mean that is not exactly 0.3 (var ≈ 1e-15): without the
    # explicit zeroing, (r − mean)/(std + eps) would give |A| ≈ 0.03.
    rewards = torch.tensor([[0.0] * 7, [1.0] * 7, [0.3] * 7, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    assert rewards[2].var(unbiased=False) > 0
    adv, info = group_advantages(rewards)
    assert torch.all(adv[:3] == 0.0)
    assert info["zero_variance_groups"] == 3 and info["groups"] == 4
    assert learnable_groups(rewards).tolist() == [False, False, False, True]


def test_without_std_scaling():
    adv, _ = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), scale_by_std=False)
    assert torch.allclose(adv, torch.tensor([[0.75, -0.25, -0.25, -0.25]]))


def test_group_of_one_and_empty_batch():
    adv, info = group_advantages(torch.tensor([[1.0], [0.0]]))
    assert torch.all(adv == 0.0) and info["zero_variance_groups"] == 2
    adv, info = group_advantages(torch.zeros(0, 4))
    assert adv.shape == (0, 4) and info["groups"] == 0 and info["learnable_fraction"] == 0.0
    assert learnable_groups(torch.zeros(0, 4)).shape == (0,)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(2, 8), st.integers(0, 10_000), st.booleans())
def test_learnable_groups_have_zero_mean_unit_rms(num_prompts, group_size, seed, binary):
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.rand(num_prompts, group_size, generator=generator)
    if binary:
        rewards = (rewards > 0.7).float()
    adv, info = group_advantages(rewards)
    learnable = learnable_groups(rewards)
    assert info["zero_variance_groups"] == int((~learnable).sum())
    assert torch.all(adv[~learnable] == 0.0)
    if learnable.any():
        a = adv[learnable]
        assert torch.allclose(a.mean(1), torch.zeros(a.shape[0]), atol=1e-4)
        # unit root-mean-square up to eps, which matters only when the group's std is tiny
        spread = (rewards[learnable].amax(1) - rewards[learnable].amin(1)) > 1e-2
        assert torch.allclose(a.pow(2).mean(1)[spread], torch.ones(int(spread.sum())), atol=1e-3)
