"""What one RL step trains on, and the loss of one minibatch of it.

After the rollouts of a step are rewarded, every prompt's group goes to one of two branches:

- **GRPO branch**: the group's rollouts with their group-relative advantages. For plain GRPO (and ReRe)
  every group is here (a non-learnable group has A = 0: it adds only to the KL term and the average).
  For RISER only the *learnable* groups are (reward variance > 0). **[paper]**
- **Pair branch** (RISER, ``use_pairs``): a non-learnable group with no hit becomes preference pairs,
  chosen = the target title, rejected = each distinct rolled-out item. **[paper]** / **[reported]**

Both branches need the same thing from the model: teacher-forced log-probs of a response after a prompt.
So the step is laid out as one *table of sequences*: rows ``0 .. P·G-1`` are the rollouts (prompt-major),
rows ``P·G ..`` the target titles of the converted groups (one per group, shared by its pairs). A minibatch
is a subset of prompts; its loss needs one forward pass over the table rows those prompts use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from riser_lite.items.prompts import example_prompt
from riser_lite.model.policy_logp import item_response_batch, shared_prompt_logprobs
from riser_lite.rl.advantages import group_advantages, learnable_groups
from riser_lite.rl.losses import (
    certainty_weights,
    dpo_loss,
    grpo_loss,
    kl_cov_penalty,
    masked_mean,
    riser_loss,
    simpo_loss,
)
from riser_lite.rl.pairs import PreferencePair, convert_groups_to_pairs
from riser_lite.rl.rollout import Groups, compute_rewards, encode_prompts, rollout


@dataclass
class StepBatch:
    """The sequence table of one RL step (R rows) and how the two branches index it."""

    prompt_ids: Tensor  # [P, S] long, left-padded
    prompt_mask: Tensor  # [P, S] long/bool
    row_prompt: Tensor  # [R] long: the prompt of each row
    tokens: Tensor  # [R, T] long response ids, right-padded
    mask: Tensor  # [R, T] bool, True on real response tokens
    weights: Tensor  # [R, T] float token weights (certainty weights or the plain mask), 0 on padding
    old_logp: Tensor  # [R, T] float log π_old (rollout rows; 0 on target rows, which need none)
    is_rollout: Tensor  # [R] bool: True on rollout rows, False on target-title rows
    grpo_rows: Tensor  # [Ng] long rows of the GRPO branch
    advantages: Tensor  # [Ng] float, aligned with grpo_rows
    chosen_rows: Tensor  # [M] long row of each pair's chosen (target) response
    rejected_rows: Tensor  # [M] long row of each pair's rejected (rolled-out) response
    pairs: list[PreferencePair]  # the M pairs, in the order of chosen_rows / rejected_rows
    ref_logp: Tensor | None = None  # [R, T] log π_ref, filled by `add_reference` when a reference is used

    @property
    def num_prompts(self) -> int:
        return self.prompt_ids.shape[0]

    def used_rows(self) -> Tensor:
        """[R] bool: rows some loss reads (rollouts of all-hit RISER groups, e.g., are not)."""
        used = torch.zeros(self.row_prompt.numel(), dtype=torch.bool)
        used[self.grpo_rows] = True
        used[self.chosen_rows] = True
        used[self.rejected_rows] = True
        return used

    def subset(self, prompts: Tensor) -> StepBatch:
        """The rows and branch entries of some prompts ([k] long indices), re-indexed to a smaller table."""
        in_subset = torch.zeros(self.num_prompts, dtype=torch.bool)
        in_subset[prompts] = True
        keep = (in_subset[self.row_prompt] & self.used_rows()).nonzero().squeeze(1)
        new_index = torch.full((self.row_prompt.numel(),), -1, dtype=torch.long)
        new_index[keep] = torch.arange(keep.numel())
        g = in_subset[self.row_prompt[self.grpo_rows]]
        p = in_subset[self.row_prompt[self.chosen_rows]]
        return StepBatch(
            prompt_ids=self.prompt_ids, prompt_mask=self.prompt_mask, row_prompt=self.row_prompt[keep],
            tokens=self.tokens[keep], mask=self.mask[keep], weights=self.weights[keep],
            old_logp=self.old_logp[keep], is_rollout=self.is_rollout[keep],
            grpo_rows=new_index[self.grpo_rows[g]], advantages=self.advantages[g],
            chosen_rows=new_index[self.chosen_rows[p]], rejected_rows=new_index[self.rejected_rows[p]],
            pairs=[pair for pair, k in zip(self.pairs, p.tolist(), strict=True) if k],
            ref_logp=None if self.ref_logp is None else self.ref_logp[keep],
        )


def build_step_batch(groups, advantages: Tensor, learnable: Tensor, pairs: list[PreferencePair],
                     item_space, *, use_pairs: bool, certainty_d: float | None) -> StepBatch:
    """Lay out one step's sequence table.

    groups: a ``rl.rollout.Groups`` (P prompts × G rollouts); advantages: [P, G]; learnable: [P] bool;
    pairs: from ``convert_groups_to_pairs`` (ignored unless use_pairs); certainty_d: weight of trie-forced
    tokens (None = no certainty weights: every real token weighs 1).
    """
    num_prompts, group_size = groups.items.shape
    num_rollouts = num_prompts * group_size
    row_prompt = groups.prompt_index
    pad = int(item_space.tokenizer.pad_token_id)
    items = groups.items

    if use_pairs:
        grpo_prompts = learnable
    else:
        grpo_prompts, pairs = torch.ones(num_prompts, dtype=torch.bool), []
    grpo_rows = (grpo_prompts[row_prompt]).nonzero().squeeze(1)

    # Target rows: one per converted group, shared by its pairs; rejected rows: the first rollout of the item.
    converted = list(dict.fromkeys(pair.prompt_index for pair in pairs))
    target_row = {p: num_rollouts + k for k, p in enumerate(converted)}
    chosen_rows, rejected_rows = [], []
    for pair in pairs:
        group = items[pair.prompt_index].tolist()
        chosen_rows.append(target_row[pair.prompt_index])
        rejected_rows.append(pair.prompt_index * group_size + group.index(pair.rejected_item))
    targets = _targets_of(pairs, converted)
    t_ids, t_mask, t_branch = item_response_batch(targets, item_space.response_ids, item_space.branching, pad)

    width = max(groups.response_ids.shape[1], t_ids.shape[1])
    tokens = torch.cat([_pad(groups.response_ids, width, pad), _pad(t_ids, width, pad)])
    mask = torch.cat([_pad(groups.response_mask.bool(), width, False), _pad(t_mask, width, False)])
    branching = torch.cat([_pad(groups.branching.bool(), width, False), _pad(t_branch, width, False)])
    old_logp = torch.cat([_pad(groups.old_logp.float(), width, 0.0), torch.zeros(len(targets), width)])
    weights = certainty_weights(branching, mask, 1.0 if certainty_d is None else certainty_d)
    return StepBatch(
        prompt_ids=groups.prompt_ids, prompt_mask=groups.prompt_mask,
        row_prompt=torch.cat([row_prompt, torch.tensor(converted, dtype=torch.long)]),
        tokens=tokens, mask=mask, weights=weights, old_logp=old_logp,
        is_rollout=torch.arange(num_rollouts + len(targets)) < num_rollouts,
        grpo_rows=grpo_rows, advantages=advantages.reshape(-1)[grpo_rows].float(),
        chosen_rows=torch.tensor(chosen_rows, dtype=torch.long),
        rejected_rows=torch.tensor(rejected_rows, dtype=torch.long), pairs=list(pairs),
    )


@dataclass
class StepData:
    """Everything one RL step collected before its updates (also what the pair notebook inspects)."""

    examples: list  # the P training examples (riser_lite.data.types.Example)
    prompts: list[str]  # their prompt texts
    targets: Tensor  # [P] long target item ids
    groups: Groups  # the rollouts
    rewards: Tensor  # [P, G] float
    advantages: Tensor  # [P, G] float group-relative advantages (0 in non-learnable groups)
    learnable: Tensor  # [P] bool: reward variance > 0
    pairs: list[PreferencePair]  # preference pairs from non-learnable no-hit groups (empty without use_pairs)
    pair_info: dict  # counts from convert_groups_to_pairs (groups_converted = 0 without use_pairs)
    batch: StepBatch  # the sequence table the losses read


def collect_step(model, item_space, examples, catalog, max_history: int, config, seed: int) -> StepData:
    """Prompts, rollouts with the current policy (no grad), rewards, advantages, the learnable / pair split.

    catalog: item id -> title used in prompts (the dataset's, as SFT and evaluation use it);
    config: an ``RLConfig`` (rollout settings, reward, use_pairs, certainty weights); seed: rollout seed.
    """
    prompts = [example_prompt(ex, catalog, max_history) for ex in examples]
    prompt_ids, prompt_mask = encode_prompts(item_space.tokenizer, prompts)
    targets = torch.tensor([ex.target for ex in examples], dtype=torch.long)
    groups = rollout(model, item_space, prompt_ids, prompt_mask, config.rollout_config(seed))
    rewards = compute_rewards(groups, targets, config.reward)
    advantages, _ = group_advantages(rewards)
    learnable = learnable_groups(rewards)
    pairs, pair_info = convert_groups_to_pairs(groups.items, targets, rewards)
    if not config.use_pairs:
        pairs, pair_info = [], {**pair_info, "groups_converted": 0, "pairs": 0}
    batch = build_step_batch(groups, advantages, learnable, pairs, item_space, use_pairs=config.use_pairs,
                             certainty_d=config.certainty_d if config.use_certainty_weights else None)
    return StepData(examples=list(examples), prompts=prompts, targets=targets, groups=groups, rewards=rewards,
                    advantages=advantages, learnable=learnable, pairs=pairs, pair_info=pair_info, batch=batch)


def _targets_of(pairs: list[PreferencePair], converted: list[int]) -> list[int]:
    chosen = {pair.prompt_index: pair.chosen_item for pair in pairs}
    return [chosen[p] for p in converted]


def _pad(x: Tensor, width: int, value) -> Tensor:
    if x.shape[1] >= width:
        return x
    return torch.cat([x, torch.full((x.shape[0], width - x.shape[1]), value, dtype=x.dtype)], dim=1)


def sequence_logprobs(model, batch: StepBatch, with_entropy: bool = False):
    """Teacher-forced (logp [R, T], entropy [R, T] or None) of every row of the table."""
    return shared_prompt_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.row_prompt, batch.tokens,
                                  batch.mask, with_entropy=with_entropy)


@torch.no_grad()
def add_reference(batch: StepBatch, reference) -> None:
    """Fill ``batch.ref_logp`` with the frozen reference model's log-probs (one pass per step)."""
    batch.ref_logp, _ = sequence_logprobs(reference, batch)


def minibatch_loss(model, batch: StepBatch, config, with_entropy: bool = False) -> tuple[Tensor, dict]:
    """L = L_GRPO(GRPO rows) + λ·L_pair(pairs) (+ KL-Cov) on one minibatch. See ``riser_lite.rl.losses``.

    config: an ``RLConfig`` (eps, β, pair loss settings, λ, KL-Cov, aggregation).
    info: loss, loss_grpo, loss_pair, clip_frac_low/high, approx_kl_old, kl_ref (None without a reference),
    pair margin/accuracy, entropy (when asked), and the counts of sequences and pairs.
    """
    logp, entropy = sequence_logprobs(model, batch, with_entropy=with_entropy)
    g, c, r = batch.grpo_rows, batch.chosen_rows, batch.rejected_rows
    ref = batch.ref_logp
    eps_low, eps_high = (config.eps_low, config.eps_high) if config.use_clipping else (float("inf"),) * 2
    grpo = grpo_loss(logp[g], batch.old_logp[g], batch.advantages, batch.weights[g],
                     ref_logp=None if ref is None else ref[g], beta=config.beta_kl,
                     eps_low=eps_low, eps_high=eps_high, aggregation=config.aggregation)
    if config.pair_loss == "dpo" and c.numel():
        if ref is None:
            raise ValueError("the DPO pair loss needs the reference model's log-probs")
        pair = dpo_loss(logp[c], ref[c], batch.weights[c], logp[r], ref[r], batch.weights[r],
                        beta=config.dpo_beta)
    else:
        pair = simpo_loss(logp[c], batch.weights[c], logp[r], batch.weights[r],
                          beta=config.simpo_beta, gamma=config.simpo_gamma)
    loss, combined = riser_loss(grpo, pair, g.numel(), c.numel(), lam=config.lambda_pair)
    grpo_info, pair_info = grpo[1], pair[1]
    info = {
        "loss_grpo": grpo_info["loss"] if g.numel() else 0.0,
        "loss_pair": pair_info["loss"] if c.numel() else 0.0,
        "clip_frac_low": grpo_info["clip_frac_low"], "clip_frac_high": grpo_info["clip_frac_high"],
        "approx_kl_old": grpo_info["approx_kl"],
        "kl_ref": grpo_info.get("kl") if ref is not None else None,
        "pair_margin": pair_info["reward_margin"], "pair_accuracy": pair_info["accuracy"],
        "grpo_sequences": float(g.numel()), "pair_count": float(c.numel()),
    }
    if config.kl_cov and g.numel():
        penalty, cov_info = kl_cov_penalty(logp[g], batch.old_logp[g], batch.advantages, batch.weights[g],
                                           frac=config.kl_cov_frac, coef=config.kl_cov_coef)
        loss = loss + penalty
        info["kl_cov_penalty"] = cov_info["kl_cov_penalty"]
    if entropy is not None:
        # Entropy of the policy on its own rollouts (target rows are not samples of the policy).
        info["entropy"] = masked_mean(entropy, (batch.mask & batch.is_rollout[:, None]).float()).item()
    info["loss"] = loss.item()
    return loss, info


def pairs_only(batch: StepBatch) -> StepBatch:
    """The same table with the GRPO branch emptied: only the preference pairs train (pair notebooks)."""
    empty = torch.zeros(0, dtype=torch.long)
    return StepBatch(**{**batch.__dict__, "grpo_rows": empty, "advantages": torch.zeros(0)})


def update_on_batch(model, batch: StepBatch, config, updates: int, optimizer=None) -> list[dict]:
    """``updates`` full-batch AdamW steps on one fixed step table; returns each update's loss info.

    The inner loop of the trainer without the rollouts: with ``updates`` > 1 the later updates reuse
    the same rollouts, so the ratio moves away from 1 and clipping starts to act. ``config`` is an
    ``RLConfig`` (lr, max_grad_norm and the loss settings); a reference must be in ``batch.ref_logp``
    already for DPO or β > 0 (``add_reference``).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer or torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    infos = []
    for update in range(updates):
        loss, info = minibatch_loss(model, batch, config, with_entropy=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        info["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
        optimizer.step()
        infos.append({"update": update + 1, **info})
    return infos


@torch.no_grad()
def pair_scores(model, batch: StepBatch) -> tuple[Tensor, Tensor]:
    """SimPO's scores s(y) = Σ w·log π / Σ w of each pair's chosen and rejected response: ([M], [M])."""
    logp, _ = sequence_logprobs(model, batch)
    chosen = masked_mean(logp[batch.chosen_rows], batch.weights[batch.chosen_rows], dim=-1)
    rejected = masked_mean(logp[batch.rejected_rows], batch.weights[batch.rejected_rows], dim=-1)
    return chosen, rejected


@torch.no_grad()
def token_ratios(model, batch: StepBatch, config) -> tuple[Tensor, Tensor]:
    """Per-token ratio π_θ / π_old of the GRPO rows, and where the clip is active: ([Ng, T], [Ng, T] bool).

    Active = the min of the clipped surrogate picks the clipped term (the token gets no gradient):
    ρ > 1 + eps_high with A > 0, or ρ < 1 − eps_low with A < 0. Padding has ratio 1 and is never active.
    """
    logp, _ = sequence_logprobs(model, batch)
    g = batch.grpo_rows
    mask = batch.mask[g]
    ratio = torch.exp(logp[g] - batch.old_logp[g]).masked_fill(~mask, 1.0)
    adv = batch.advantages[:, None]
    active = ((ratio > 1 + config.eps_high) & (adv > 0)) | ((ratio < 1 - config.eps_low) & (adv < 0))
    return ratio, active & mask
