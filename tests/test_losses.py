import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from riser_lite.rl.advantages import group_advantages
from riser_lite.rl.losses import (
    aggregate,
    certainty_weights,
    clipped_surrogate_loss,
    dpo_loss,
    grpo_loss,
    k3_kl,
    masked_mean,
    riser_loss,
    simpo_loss,
)


def one_token(ratio: float, advantage: float, eps_low=0.2, eps_high=0.2):
    """Loss and d loss / d logp for a single token with the given ratio and advantage."""
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, info = clipped_surrogate_loss(logp, torch.zeros(1, 1), torch.tensor([advantage]), torch.ones(1, 1),
                                        eps_low, eps_high)
    loss.backward()
    return loss.item(), logp.grad.item(), info


# ----------------------------------------------------------------------------- weights and means

def test_certainty_weights_by_hand():
    branching = torch.tensor([[True, False, False, True], [False, True, False, False]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # branching on padding must still give 0
    expected = torch.tensor([[1.0, 0.3, 0.3, 0.0], [0.3, 1.0, 0.0, 0.0]])
    assert torch.allclose(certainty_weights(branching, mask, 0.3), expected)
    assert torch.equal(certainty_weights(branching, mask, 1.0), mask.float())
    assert certainty_weights(branching, mask, 0.0).tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]
    with pytest.raises(ValueError):
        certainty_weights(branching, mask, 1.5)


def test_masked_mean_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    w = torch.tensor([[1.0, 1.0, 0.5, 0.0]])
    assert masked_mean(x, w).item() == pytest.approx((1 + 2 + 1.5) / 2.5)
    assert masked_mean(x, torch.zeros_like(w)).item() == 0.0
    assert masked_mean(x, w, dim=-1).shape == (1,)


# ----------------------------------------------------------------------------- clipped surrogate

def test_clipped_surrogate_by_hand():
    # Sequence 0: A = +1, ratios [1.5, 0.9] -> objective [min(1.5, 1.2), 0.9] = [1.2, 0.9], mean 1.05.
    # Sequence 1: A = −1, ratios [0.5, pad] -> objective [min(−0.5, −0.8)] = [−0.8].
    old = torch.zeros(2, 2)
    logp = torch.log(torch.tensor([[1.5, 0.9], [0.5, 1.0]]))
    adv = torch.tensor([1.0, -1.0])
    weights = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, info = clipped_surrogate_loss(logp, old, adv, weights, aggregation="seq_mean")
    assert loss.item() == pytest.approx(-(1.05 - 0.8) / 2)
    loss, info = clipped_surrogate_loss(logp, old, adv, weights, aggregation="token_mean")
    assert loss.item() == pytest.approx(-(1.2 + 0.9 - 0.8) / 3)
    assert info["clip_frac_high"] == pytest.approx(1 / 3)  # ratio 1.5 with A > 0
    assert info["clip_frac_low"] == pytest.approx(1 / 3)  # ratio 0.5 with A < 0
    k3 = [(r - 1) - math.log(r) for r in (1.5, 0.9, 0.5)]
    assert info["approx_kl"] == pytest.approx(sum(k3) / 3, rel=1e-5)
    assert info["ratio_max"] == pytest.approx(1.5) and info["ratio_min"] == pytest.approx(0.5)
    assert info["ratio_mean"] == pytest.approx((1.5 + 0.9 + 0.5) / 3)
    assert info["sequences"] == 2 and info["tokens"] == 3
    with pytest.raises(ValueError):
        clipped_surrogate_loss(logp, old, adv, weights, aggregation="sum")


def test_clip_active_side_has_zero_gradient_other_side_does_not():
    # loss = −min(ρA, clip(ρ)A); where the unclipped term wins, d loss / d logp = −ρA.
    assert one_token(1.5, +1.0)[1] == 0.0  # above 1 + ε, A > 0: active
    assert one_token(0.5, -1.0)[1] == 0.0  # below 1 − ε, A < 0: active
    assert one_token(1.5, -1.0)[1] == pytest.approx(1.5)  # above, A < 0: not clipped
    assert one_token(0.5, +1.0)[1] == pytest.approx(-0.5)  # below, A > 0: not clipped
    assert one_token(1.1, +1.0)[1] == pytest.approx(-1.1)  # inside the band
    _, _, info = one_token(1.5, -1.0)
    assert info["clip_frac_high"] == 0.0 and info["clip_frac_low"] == 0.0  # the clip does not act there


def test_clip_higher_eps_high():
    assert one_token(1.25, +1.0, eps_high=0.2)[1] == 0.0
    assert one_token(1.25, +1.0, eps_high=0.28)[1] == pytest.approx(-1.25)


def test_first_step_ratio_one_never_clips():
    generator = torch.Generator().manual_seed(0)
    old = -torch.rand(6, 5, generator=generator)
    _, info = clipped_surrogate_loss(old.clone(), old, torch.randn(6, generator=generator), torch.ones(6, 5))
    assert info["ratio_min"] == pytest.approx(1.0) and info["ratio_max"] == pytest.approx(1.0)
    assert info["clip_frac_low"] == info["clip_frac_high"] == info["approx_kl"] == 0.0


@pytest.mark.parametrize("d", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("aggregation", ["seq_mean", "token_mean"])
def test_forced_token_gradient_scaled_by_exactly_d(d, aggregation):
    # Two identical tokens, the first branching and the second forced: gradients differ by the factor d.
    logp = torch.full((1, 3), -0.7, requires_grad=True)
    old = torch.full((1, 3), -0.8)
    weights = certainty_weights(torch.tensor([[True, False, False]]), torch.tensor([[1, 1, 0]]), d)
    loss, _ = clipped_surrogate_loss(logp, old, torch.tensor([1.0]), weights, aggregation=aggregation)
    loss.backward()
    branch_grad, forced_grad, pad_grad = logp.grad[0].tolist()
    assert branch_grad != 0.0
    assert forced_grad == pytest.approx(d * branch_grad, abs=1e-8)
    assert pad_grad == 0.0


def test_more_inner_epochs_move_the_ratio_and_the_clip_acts():
    # μ > 1: several gradient steps on the same rollouts. Step 1 has ρ ≡ 1; later steps clip.
    generator = torch.Generator().manual_seed(0)
    old = -torch.rand(8, 4, generator=generator) - 0.5
    adv = torch.tensor([1.0, -1.0] * 4)
    weights = torch.ones(8, 4)
    logp = old.clone().requires_grad_(True)  # a free-parameter stand-in for the policy's log-probs
    optimizer = torch.optim.SGD([logp], lr=8.0)  # each token's step is |A|·ρ·lr / (N·T) = 0.25·ρ
    infos = []
    for _ in range(3):
        optimizer.zero_grad()
        loss, info = clipped_surrogate_loss(logp, old, adv, weights)
        loss.backward()
        optimizer.step()
        infos.append(info)
    assert infos[0]["ratio_max"] == pytest.approx(1.0) and infos[0]["clip_frac_high"] == 0.0
    assert infos[-1]["ratio_max"] > 1.2 and infos[-1]["ratio_min"] < 0.8
    assert infos[-1]["clip_frac_high"] > 0.0 and infos[-1]["clip_frac_low"] > 0.0
    assert infos[-1]["approx_kl"] > 0.0


def test_all_miss_group_gives_exactly_zero_policy_gradient():
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # P = 2, G = 4
    advantages, _ = group_advantages(rewards)
    generator = torch.Generator().manual_seed(1)
    old = -torch.rand(8, 3, generator=generator)
    logp = (old + 0.1 * torch.randn(8, 3, generator=generator)).requires_grad_(True)  # ratios ≠ 1
    loss, _ = grpo_loss(logp, old, advantages.reshape(-1), torch.ones(8, 3), beta=0.0)
    loss.backward()
    assert torch.all(logp.grad[:4] == 0.0)  # the all-miss group
    assert torch.all(logp.grad[4:].abs().sum(1) > 0)


def test_padding_with_minus_inf_does_not_poison_gradients():
    logp = torch.tensor([[-0.5, -float("inf")]], requires_grad=True)
    old = torch.tensor([[-0.6, -float("inf")]])
    weights = torch.tensor([[1.0, 0.0]])
    loss, info = grpo_loss(logp, old, torch.tensor([1.0]), weights, ref_logp=old, beta=0.1)
    loss.backward()
    assert math.isfinite(loss.item()) and torch.all(torch.isfinite(logp.grad))
    assert logp.grad[0, 1] == 0.0 and math.isfinite(info["kl"])


# ----------------------------------------------------------------------------- KL terms

def test_k3_by_hand_and_zero_when_equal():
    # logp = −1, ref = −2: x = ref − logp = −1, k3 = e^−1 + 1 − 1 = 0.3679.
    kl, info = k3_kl(torch.tensor([[-1.0]]), torch.tensor([[-2.0]]), torch.ones(1, 1))
    assert kl.item() == pytest.approx(math.exp(-1))
    logp = -torch.rand(3, 4)
    kl, info = k3_kl(logp, logp.clone(), torch.ones(3, 4))
    assert kl.item() == 0.0 and info["kl_max"] == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-8, 0), min_size=4, max_size=4), st.lists(st.floats(-8, 0), min_size=4, max_size=4))
def test_k3_is_non_negative(logp, ref):
    kl, info = k3_kl(torch.tensor([logp]), torch.tensor([ref]), torch.ones(1, 4))
    assert kl.item() >= 0.0 and info["kl_max"] >= 0.0


def test_grpo_loss_adds_beta_kl():
    generator = torch.Generator().manual_seed(2)
    old = -torch.rand(4, 3, generator=generator)
    logp, ref = old + 0.1, old - 0.2
    adv, weights = torch.tensor([1.0, -1.0, 0.5, 0.0]), torch.ones(4, 3)
    surrogate, _ = clipped_surrogate_loss(logp, old, adv, weights)
    kl, _ = k3_kl(logp, ref, weights)
    loss, info = grpo_loss(logp, old, adv, weights, ref_logp=ref, beta=0.04)
    assert loss.item() == pytest.approx(surrogate.item() + 0.04 * kl.item())
    assert info["surrogate"] == pytest.approx(surrogate.item()) and info["kl"] == pytest.approx(kl.item())
    with pytest.raises(ValueError):
        grpo_loss(logp, old, adv, weights, beta=0.04)


# ----------------------------------------------------------------------------- pair losses

def test_simpo_by_hand():
    # s_w = (−1 − 3)/2 = −2, s_l = (−2 − 2 − 5)/3 = −3; β(s_w − s_l) − γ = 2 − 0.5 = 1.5.
    chosen, rejected = torch.tensor([[-1.0, -3.0, 7.0]]), torch.tensor([[-2.0, -2.0, -5.0]])
    chosen_w = torch.tensor([[1.0, 1.0, 0.0]])  # the 7.0 is padding
    loss, info = simpo_loss(chosen, chosen_w, rejected, torch.ones(1, 3), beta=2.0, gamma=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1.5)))
    assert info["reward_margin"] == pytest.approx(2.0) and info["accuracy"] == 1.0
    assert info["chosen_score"] == pytest.approx(-2.0) and info["rejected_score"] == pytest.approx(-3.0)
    # weighted score: w = [1, 0.5] gives s_w = (−1 − 1.5)/1.5
    loss, info = simpo_loss(chosen[:, :2], torch.tensor([[1.0, 0.5]]), rejected, torch.ones(1, 3), 2.0, 0.0)
    margin = 2.0 * (-2.5 / 1.5 + 3.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-margin)))


def test_dpo_by_hand():
    # Δ_w = Σ w (logp − ref) = 1·0.5 + 0.5·0.5 = 0.75; Δ_l = −3 + 2 = −1; β = 0.1 -> margin 0.175.
    chosen, chosen_ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.5]])
    rejected, rejected_ref = torch.tensor([[-3.0, 9.0]]), torch.tensor([[-2.0, 0.0]])  # 9.0, 0.0: padding
    chosen_w, rejected_w = torch.tensor([[1.0, 0.5]]), torch.tensor([[1.0, 0.0]])
    loss, info = dpo_loss(chosen, chosen_ref, chosen_w, rejected, rejected_ref, rejected_w, beta=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.175)))
    assert info["reward_margin"] == pytest.approx(0.175) and info["accuracy"] == 1.0
    assert info["chosen_reward"] == pytest.approx(0.075) and info["rejected_reward"] == pytest.approx(-0.1)


def test_simpo_gradient_raises_chosen_lowers_rejected():
    chosen = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    rejected = torch.tensor([[-1.5]], requires_grad=True)
    loss, _ = simpo_loss(chosen, torch.ones(1, 2), rejected, torch.ones(1, 1))
    loss.backward()
    assert torch.all(chosen.grad < 0) and torch.all(rejected.grad > 0)


# ----------------------------------------------------------------------------- empty inputs, RISER

def test_empty_inputs_give_graph_keeping_zeros():
    logp = torch.zeros(0, 5, requires_grad=True)
    loss, info = grpo_loss(logp, torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, 5))
    assert loss.item() == 0.0 and loss.grad_fn is not None and info["sequences"] == 0
    loss.backward()
    logp = torch.zeros(2, 3, requires_grad=True)  # sequences present, but every weight is 0
    for aggregation in ("seq_mean", "token_mean"):
        loss, info = clipped_surrogate_loss(logp, logp.detach(), torch.ones(2), torch.zeros(2, 3),
                                            aggregation=aggregation)
        assert loss.item() == 0.0 and loss.grad_fn is not None and info["tokens"] == 0
    chosen = torch.zeros(0, 4, requires_grad=True)
    loss, info = simpo_loss(chosen, torch.zeros(0, 4), torch.zeros(0, 6), torch.zeros(0, 6))
    assert loss.item() == 0.0 and loss.grad_fn is not None and info["pairs"] == 0
    loss, info = dpo_loss(chosen, torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 6), torch.zeros(0, 6),
                          torch.zeros(0, 6))
    assert loss.item() == 0.0 and loss.grad_fn is not None and info["pairs"] == 0


def test_seq_mean_skips_sequences_without_weight():
    per_token = torch.tensor([[2.0, 4.0], [9.0, 9.0]])
    weights = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert aggregate(per_token, weights, "seq_mean").item() == pytest.approx(3.0)


def test_riser_loss_sums_branches_each_over_its_own_count():
    grpo_value = torch.tensor(0.3, requires_grad=True)
    pair_value = torch.tensor(0.8, requires_grad=True)
    loss, info = riser_loss((grpo_value, {"kl": 0.1}), (pair_value, {"accuracy": 0.5}), 12, 7, lam=0.5)
    assert loss.item() == pytest.approx(0.3 + 0.5 * 0.8)
    assert info["grpo/kl"] == 0.1 and info["pair/accuracy"] == 0.5 and info["pair_count"] == 7
    loss, _ = riser_loss((grpo_value, {}), (torch.tensor(float("nan")), {}), 12, 0)
    assert loss.item() == pytest.approx(0.3)  # a branch with no members is left out
    empty_grpo = grpo_loss(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 3), torch.zeros(0),
                           torch.zeros(0, 3))
    empty_pairs = simpo_loss(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 3), torch.zeros(0, 3),
                             torch.zeros(0, 3))
    loss, info = riser_loss(empty_grpo, empty_pairs, 0, 0)
    assert loss.item() == 0.0 and info["grpo_sequences"] == 0
    loss.backward()
