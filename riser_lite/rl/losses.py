"""The losses of RISER and its baselines, written out on per-token log-prob tensors.

Shapes: rollouts are flattened to N = P·G sequences of T response tokens. ``logp`` / ``old_logp`` /
``ref_logp`` are [N, T] log-probs of the sampled tokens under the current, rollout-time and reference
(SFT) policy; ``weights`` [N, T] are 0 on padding and the token weights elsewhere; ``advantages`` are [N],
one per sequence. Preference pairs use [M, T1] (chosen) and [M, T2] (rejected) tensors.

Every loss returns ``(loss, info)``: a scalar tensor to minimise and a dict of python floats to log.
Padding positions may hold any value (even -inf): each loss zeroes them first so NaN cannot leak into
gradients. With nothing to average (no sequences, no pairs, all weights 0) a loss returns a zero that
keeps the autograd graph, so ``loss.backward()`` is always safe and the count in ``info`` is 0.

- ``certainty_weights``: w = 1 where the item trie branches, d where it forces the token. **[reported]**
- ``clipped_surrogate_loss``: PPO/GRPO token-level ratio clipping. **[choice, standard PPO/GRPO]**
  ε_low = ε_high = 0.2 by default (PPO); DAPO's "clip-higher" uses ε_high = 0.28.
- ``k3_kl``: k3 estimator of KL(π_θ ‖ π_ref), weighted by β in ``grpo_loss``. **[choice]**
- ``grpo_loss``: clipped surrogate + β·KL. **[paper]** (GRPO branch of RISER)
- ``simpo_loss``: SimPO on converted preference pairs. **[reported]**
- ``dpo_loss``: DPO with the SFT model as reference. **[choice]**
- ``riser_loss``: L_GRPO(learnable groups) + λ·L_pair(converted groups), λ = 1. **[paper]** / λ **[choice]**

Aggregation **[choice]**: ``"seq_mean"`` (default, as in the GRPO paper) averages each sequence over its
weighted tokens, then averages sequences, so every rollout counts once whatever its title length, exactly
like the per-sequence score s(y) of the pair branch. ``"token_mean"`` (DAPO) averages all weighted tokens
of the batch, so every (weighted) decision counts once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

AGGREGATIONS = ("seq_mean", "token_mean")


# ----------------------------------------------------------------------------- helpers

def _zero_padding(x: Tensor, weights: Tensor) -> Tensor:
    """x with every zero-weight position set to 0 (padding may hold -inf, which would poison gradients)."""
    return x.masked_fill(weights == 0, 0.0)


def masked_mean(x: Tensor, weights: Tensor, dim: int | None = None) -> Tensor:
    """Weighted mean Σ w·x / Σ w over ``dim`` (all positions if None); 0 where Σ w = 0.

    x, weights: same shape (e.g. [N, T]); weights ≥ 0.
    """
    total = weights.sum(dim=dim)
    numerator = (_zero_padding(x, weights) * weights).sum(dim=dim)
    return numerator / torch.where(total > 0, total, torch.ones_like(total))


def aggregate(per_token: Tensor, weights: Tensor, aggregation: str = "seq_mean") -> Tensor:
    """Reduce a per-token quantity [N, T] to a scalar. See the module docstring for the two modes.

    ``seq_mean`` skips sequences whose weights are all 0 (nothing to average); 0 if there is none.
    """
    if aggregation == "token_mean":
        return masked_mean(per_token, weights)
    if aggregation == "seq_mean":
        per_sequence = masked_mean(per_token, weights, dim=-1)  # [N]
        has_tokens = (weights.sum(dim=-1) > 0).to(per_sequence.dtype)
        return (per_sequence * has_tokens).sum() / has_tokens.sum().clamp_min(1.0)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


# ----------------------------------------------------------------------------- token weights

def certainty_weights(branching: Tensor, mask: Tensor, d: float) -> Tensor:
    """Certainty-aware token weights: 1 where the trie branched, ``d`` where it forced the token.

    branching: [N, T] bool, True where the item trie offered ≥ 2 valid continuations.
    mask: [N, T] bool/float, 1 on real response tokens. d: weight of forced tokens, 0 ≤ d ≤ 1.
    Returns [N, T] float: 1 (branching), d (forced), 0 (padding). d = 1 gives the plain mask.
    """
    if not 0.0 <= d <= 1.0:
        raise ValueError(f"d must be in [0, 1], got {d}")
    real = mask.bool()
    forced_weight = torch.full(real.shape, float(d), device=real.device)
    return torch.where(branching.bool(), torch.ones_like(forced_weight), forced_weight) * real


# ----------------------------------------------------------------------------- GRPO branch

def clip_active(ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float) -> tuple[Tensor, Tensor]:
    """Where the clip of the surrogate is active: (below [N, T] bool, above [N, T] bool).

    ratio: [N, T]; advantages: [N, 1] (broadcast over tokens). Active below: ρ < 1 − eps_low with A < 0;
    above: ρ > 1 + eps_high with A > 0. There the min picks the clipped term and the token gets no gradient.
    """
    return (ratio < 1.0 - eps_low) & (advantages < 0), (ratio > 1.0 + eps_high) & (advantages > 0)


def clipped_surrogate_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, weights: Tensor,
    eps_low: float = 0.2, eps_high: float = 0.2, aggregation: str = "seq_mean", clip: bool = True,
) -> tuple[Tensor, dict]:
    """PPO/GRPO clipped surrogate, per token.

    logp, old_logp, weights: [N, T]; advantages: [N] (one per sequence, shared by its tokens).
    ρ_t = exp(logp − old_logp); objective_t = min(ρ_t·A, clip(ρ_t, 1 − eps_low, 1 + eps_high)·A);
    loss = −aggregate(objective, weights). ``clip=False`` gives the plain ratio·A surrogate (ε = ∞).
    On fresh rollouts ρ ≡ 1, so the clip acts only from the second inner epoch on; where it is active
    (`clip_active`) the update has already moved the token far enough in the direction A asks for.

    info: loss, clip_frac_low / clip_frac_high (weighted fraction of tokens where the clip is active,
    below / above), approx_kl (mean of (ρ − 1) − log ρ, a k3 estimate of KL(π_old ‖ π_θ)), ratio_mean,
    ratio_min, ratio_max (over real tokens), sequences and tokens (counts with weight > 0).
    """
    if not clip:
        eps_low = eps_high = float("inf")
    logp, old_logp = _zero_padding(logp, weights), _zero_padding(old_logp.detach(), weights)
    adv = advantages.detach()[:, None]  # [N, 1], broadcast over tokens
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)

    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    objective = torch.minimum(unclipped, clipped)
    loss = -aggregate(objective, weights, aggregation)

    with torch.no_grad():
        active_low, active_high = clip_active(ratio, adv, eps_low, eps_high)
        real = weights > 0
        real_ratios = ratio[real]
        info = {
            "loss": loss.item(),
            "clip_frac_low": masked_mean(active_low.float(), weights).item(),
            "clip_frac_high": masked_mean(active_high.float(), weights).item(),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, weights).item(),
            "ratio_mean": real_ratios.mean().item() if real_ratios.numel() else 1.0,
            "ratio_min": real_ratios.min().item() if real_ratios.numel() else 1.0,
            "ratio_max": real_ratios.max().item() if real_ratios.numel() else 1.0,
            "sequences": float(real.any(dim=-1).sum()),
            "tokens": float(real.sum()),
        }
    return loss, info


def k3_kl(
    logp: Tensor, ref_logp: Tensor, weights: Tensor, aggregation: str = "seq_mean",
) -> tuple[Tensor, dict]:
    """k3 estimate of KL(π_θ ‖ π_ref) on tokens sampled from π_θ.

    logp, ref_logp, weights: [N, T]. Per token k3 = exp(ref − logp) − (ref − logp) − 1, which is ≥ 0
    (e^x ≥ 1 + x), exactly 0 where the two policies agree, and unbiased for the KL.
    info: kl (aggregated), kl_max (largest per-token value on a real token).
    """
    logp, ref_logp = _zero_padding(logp, weights), _zero_padding(ref_logp.detach(), weights)
    log_ratio = ref_logp - logp
    per_token = torch.exp(log_ratio) - log_ratio - 1.0
    kl = aggregate(per_token, weights, aggregation)
    real_values = per_token.detach()[weights > 0]
    info = {"kl": kl.item(), "kl_max": real_values.max().item() if real_values.numel() else 0.0}
    return kl, info


def grpo_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, weights: Tensor,
    ref_logp: Tensor | None = None, beta: float = 0.0,
    eps_low: float = 0.2, eps_high: float = 0.2, aggregation: str = "seq_mean", clip: bool = True,
) -> tuple[Tensor, dict]:
    """GRPO: clipped surrogate + β · k3 KL to the reference. Shapes as in ``clipped_surrogate_loss``.

    beta = 0 drops the KL term (it is still logged when ``ref_logp`` is given).
    info: the surrogate's info with the surrogate loss as ``surrogate``, plus ``kl`` and the total ``loss``.
    """
    surrogate, info = clipped_surrogate_loss(
        logp, old_logp, advantages, weights, eps_low, eps_high, aggregation, clip)
    info["surrogate"] = info.pop("loss")
    loss = surrogate
    if ref_logp is not None:
        kl, kl_info = k3_kl(logp, ref_logp, weights, aggregation)
        info.update(kl_info)
        if beta != 0.0:
            loss = loss + beta * kl
    elif beta != 0.0:
        raise ValueError("beta > 0 needs ref_logp (the reference policy's log-probs)")
    info["loss"] = loss.item()
    return loss, info


# ----------------------------------------------------------------------------- pair branch

def sequence_scores(logp: Tensor, weights: Tensor) -> Tensor:
    """Length-normalised weighted log-likelihood s(y) = Σ_t w_t·logp_t / Σ_t w_t. [M, T] -> [M]."""
    return masked_mean(logp, weights, dim=-1)


def simpo_loss(
    chosen_logp: Tensor, chosen_weights: Tensor, rejected_logp: Tensor, rejected_weights: Tensor,
    beta: float = 2.0, gamma: float = 0.5,
) -> tuple[Tensor, dict]:
    """SimPO, reference-free: L = −log σ(β·(s(y_w) − s(y_l)) − γ), averaged over the M pairs.

    chosen_logp, chosen_weights: [M, T1]; rejected_logp, rejected_weights: [M, T2] (policy log-probs).
    beta = 2.0 and gamma = 0.5 are in the range the SimPO paper tunes over (β 2–2.5) and TRL's default
    margin; γ asks the chosen title to win by a margin, not just to win.
    info: loss, reward_margin (mean β·(s_w − s_l)), accuracy (fraction with s_w > s_l),
    chosen_score, rejected_score (mean s), pairs (M).
    """
    chosen_score = sequence_scores(chosen_logp, chosen_weights)  # [M]
    rejected_score = sequence_scores(rejected_logp, rejected_weights)  # [M]
    num_pairs = chosen_score.shape[0]
    if num_pairs == 0:
        zero = (chosen_score.sum() + rejected_score.sum()) * 0.0
        return zero, dict.fromkeys(("loss", "reward_margin", "accuracy", "chosen_score", "rejected_score",
                                    "pairs"), 0.0)
    margin = beta * (chosen_score - rejected_score)
    loss = -F.logsigmoid(margin - gamma).mean()
    info = {
        "loss": loss.item(),
        "reward_margin": margin.mean().item(),
        "accuracy": (chosen_score > rejected_score).float().mean().item(),
        "chosen_score": chosen_score.mean().item(),
        "rejected_score": rejected_score.mean().item(),
        "pairs": float(num_pairs),
    }
    return loss, info


def dpo_loss(
    chosen_logp: Tensor, chosen_ref_logp: Tensor, chosen_weights: Tensor,
    rejected_logp: Tensor, rejected_ref_logp: Tensor, rejected_weights: Tensor, beta: float = 0.1,
) -> tuple[Tensor, dict]:
    """DPO with the SFT model as reference: L = −log σ(β·(Δ_w − Δ_l)), averaged over the M pairs.

    Δ(y) = Σ_t w_t·(logp_t − ref_logp_t), a weighted *sum* (DPO compares whole-sequence likelihood ratios;
    the reference cancels the length bias that SimPO's normalisation removes).
    Shapes: chosen_* [M, T1], rejected_* [M, T2].
    info: loss, reward_margin (mean β·(Δ_w − Δ_l)), accuracy (fraction with Δ_w > Δ_l),
    chosen_reward, rejected_reward (mean β·Δ), pairs (M).
    """
    def weighted_log_ratio(logp: Tensor, ref_logp: Tensor, weights: Tensor) -> Tensor:
        return ((_zero_padding(logp, weights) - _zero_padding(ref_logp.detach(), weights)) * weights).sum(-1)

    chosen_reward = beta * weighted_log_ratio(chosen_logp, chosen_ref_logp, chosen_weights)  # [M]
    rejected_reward = beta * weighted_log_ratio(rejected_logp, rejected_ref_logp, rejected_weights)  # [M]
    num_pairs = chosen_reward.shape[0]
    if num_pairs == 0:
        zero = (chosen_reward.sum() + rejected_reward.sum()) * 0.0
        return zero, dict.fromkeys(("loss", "reward_margin", "accuracy", "chosen_reward", "rejected_reward",
                                    "pairs"), 0.0)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    info = {
        "loss": loss.item(),
        "reward_margin": margin.mean().item(),
        "accuracy": (margin > 0).float().mean().item(),
        "chosen_reward": chosen_reward.mean().item(),
        "rejected_reward": rejected_reward.mean().item(),
        "pairs": float(num_pairs),
    }
    return loss, info


# ----------------------------------------------------------------------------- RISER

def riser_loss(
    grpo: tuple[Tensor, dict], pair: tuple[Tensor, dict], num_grpo_sequences: int, num_pairs: int,
    lam: float = 1.0,
) -> tuple[Tensor, dict]:
    """L = L_GRPO(learnable groups) + λ · L_pair(converted groups).

    ``grpo`` and ``pair`` are the (loss, info) results of ``grpo_loss`` and of ``simpo_loss`` /
    ``dpo_loss``, each averaged over its own count, so neither branch is diluted by the size of the other.
    A branch with count 0 is left out; with both 0 the loss is the sum of the two graph-keeping zeros.
    info: loss, lam, grpo_sequences, pair_count, and each branch's info prefixed ``grpo/`` and ``pair/``.
    """
    (grpo_value, grpo_info), (pair_value, pair_info) = grpo, pair
    if num_grpo_sequences > 0 and num_pairs > 0:
        loss = grpo_value + lam * pair_value
    elif num_grpo_sequences > 0:
        loss = grpo_value
    elif num_pairs > 0:
        loss = lam * pair_value
    else:
        loss = grpo_value + pair_value  # both are zeros; keep whatever graph they have
    info = {"loss": loss.item(), "lam": float(lam), "grpo_sequences": float(num_grpo_sequences),
            "pair_count": float(num_pairs)}
    info.update({f"grpo/{k}": v for k, v in grpo_info.items()})
    info.update({f"pair/{k}": v for k, v in pair_info.items()})
    return loss, info
