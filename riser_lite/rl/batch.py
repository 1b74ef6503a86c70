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
is a subset of prompts; its loss needs one forward pass over the table rows those prompts use. Every
log-prob of the table (policy, ``old_logp``, reference) is of its ``policy``, constrained or raw.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from riser_lite.model.forward import pad_columns
from riser_lite.model.policy_logp import response_logprobs
from riser_lite.rl.config import DPO_BETA, MAX_GRAD_NORM
from riser_lite.rl.losses import (
    certainty_weights,
    clip_active,
    dpo_loss,
    grpo_loss,
    masked_mean,
    riser_loss,
    sequence_scores,
    simpo_loss,
)
from riser_lite.rl.pairs import GroupRoute, PreferencePair


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
    trie: object | None = None  # the ItemTrie (the constrained policy's valid tokens, the valid-mass check)
    policy: str = "constrained"  # the policy the losses train: "constrained" | "raw"
    ref_logp: Tensor | None = None  # [R, T] log π_ref, filled by `add_reference` when a reference is used

    @property
    def num_prompts(self) -> int:
        return self.prompt_ids.shape[0]

    def subset(self, prompts: Tensor) -> StepBatch:
        """The rows and branch entries of some prompts ([k] long indices), re-indexed to a smaller table
        that keeps only the rows some loss reads (rollouts of all-hit RISER groups, e.g., are not)."""
        in_subset = torch.zeros(self.num_prompts, dtype=torch.bool)
        in_subset[prompts] = True
        used = torch.zeros(self.row_prompt.numel(), dtype=torch.bool)
        used[torch.cat([self.grpo_rows, self.chosen_rows, self.rejected_rows])] = True
        keep = (in_subset[self.row_prompt] & used).nonzero().squeeze(1)
        new_index = torch.full((self.row_prompt.numel(),), -1, dtype=torch.long)
        new_index[keep] = torch.arange(keep.numel())
        g = in_subset[self.row_prompt[self.grpo_rows]]
        p = in_subset[self.row_prompt[self.chosen_rows]]
        return replace(
            self, row_prompt=self.row_prompt[keep], tokens=self.tokens[keep], mask=self.mask[keep],
            weights=self.weights[keep], old_logp=self.old_logp[keep], is_rollout=self.is_rollout[keep],
            grpo_rows=new_index[self.grpo_rows[g]], advantages=self.advantages[g],
            chosen_rows=new_index[self.chosen_rows[p]], rejected_rows=new_index[self.rejected_rows[p]],
            pairs=[pair for pair, k in zip(self.pairs, p.tolist(), strict=True) if k],
            ref_logp=None if self.ref_logp is None else self.ref_logp[keep],
        )


def build_step_batch(groups, advantages: Tensor, route: GroupRoute, item_space, *,
                     certainty_d: float | None, policy: str = "constrained") -> StepBatch:
    """Lay out one step's sequence table.

    groups: ``rl.rollout.Groups`` (P × G) whose ``old_logp`` is of ``policy``; advantages: [P, G];
    route: ``rl.pairs.route_groups``'s split; certainty_d: weight of trie-forced tokens (None: all 1).
    """
    num_prompts, group_size = groups.items.shape
    num_rollouts = num_prompts * group_size
    row_prompt = groups.prompt_index
    pad = int(item_space.tokenizer.pad_token_id)
    items, pairs = groups.items.tolist(), route.pairs
    grpo_rows = route.grpo_prompts[row_prompt].nonzero().squeeze(1)

    # Target rows: one per converted group, shared by its pairs; rejected rows: the first rollout of the item.
    converted = list(dict.fromkeys(pair.prompt_index for pair in pairs))
    target_row = {p: num_rollouts + k for k, p in enumerate(converted)}
    chosen_rows = [target_row[pair.prompt_index] for pair in pairs]
    rejected_rows = [pair.prompt_index * group_size + items[pair.prompt_index].index(pair.rejected_item)
                     for pair in pairs]
    chosen_of = {pair.prompt_index: pair.chosen_item for pair in pairs}
    targets = [chosen_of[p] for p in converted]
    t_ids, t_mask, t_branch = item_space.response_batch(targets)

    width = max(groups.response_ids.shape[1], t_ids.shape[1])
    tokens = torch.cat([pad_columns(groups.response_ids, width, pad), pad_columns(t_ids, width, pad)])
    mask = torch.cat([pad_columns(groups.response_mask.bool(), width, False),
                      pad_columns(t_mask, width, False)])
    branching = torch.cat([pad_columns(groups.branching.bool(), width, False),
                           pad_columns(t_branch, width, False)])
    old_logp = torch.cat([pad_columns(groups.old_logp.float(), width, 0.0), torch.zeros(len(targets), width)])
    weights = certainty_weights(branching, mask, 1.0 if certainty_d is None else certainty_d)
    return StepBatch(
        prompt_ids=groups.prompt_ids, prompt_mask=groups.prompt_mask,
        row_prompt=torch.cat([row_prompt, torch.tensor(converted, dtype=torch.long)]),
        tokens=tokens, mask=mask, weights=weights, old_logp=old_logp,
        is_rollout=torch.arange(num_rollouts + len(targets)) < num_rollouts,
        grpo_rows=grpo_rows, advantages=advantages.reshape(-1)[grpo_rows].float(),
        chosen_rows=torch.tensor(chosen_rows, dtype=torch.long),
        rejected_rows=torch.tensor(rejected_rows, dtype=torch.long), pairs=list(pairs),
        trie=item_space.trie, policy=policy,
    )


def sequence_logprobs(model, batch: StepBatch, with_entropy: bool = False):
    """Teacher-forced (logp [R, T], `TokenDiagnostics` or None) of every row under the batch's policy."""
    return response_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.tokens, batch.mask,
                             batch.row_prompt, trie=batch.trie, policy=batch.policy,
                             with_entropy=with_entropy)


@torch.no_grad()
def add_reference(batch: StepBatch, reference) -> None:
    """Fill ``batch.ref_logp`` with the frozen reference model's log-probs (one pass per step)."""
    batch.ref_logp, _ = sequence_logprobs(reference, batch)


def minibatch_loss(model, batch: StepBatch, config, with_entropy: bool = False) -> tuple[Tensor, dict]:
    """L = L_GRPO(GRPO rows) + λ·L_pair(pairs) on one minibatch (config: an ``RLConfig``).

    info: ``riser_loss``'s info, plus, when asked, entropy and valid_mass on the rollout tokens.
    """
    logp, diagnostics = sequence_logprobs(model, batch, with_entropy=with_entropy)
    g, c, r = batch.grpo_rows, batch.chosen_rows, batch.rejected_rows
    ref = batch.ref_logp
    grpo = grpo_loss(logp[g], batch.old_logp[g], batch.advantages, batch.weights[g],
                     ref_logp=None if ref is None else ref[g], beta=config.beta_kl,
                     eps_low=config.eps_low, eps_high=config.eps_high, clip=config.use_clipping)
    if config.pair_loss == "dpo" and c.numel():
        if ref is None:
            raise ValueError("the DPO pair loss needs the reference model's log-probs")
        pair = dpo_loss(logp[c], ref[c], batch.weights[c], logp[r], ref[r], batch.weights[r],
                        beta=DPO_BETA)
    else:
        pair = simpo_loss(logp[c], batch.weights[c], logp[r], batch.weights[r],
                          beta=config.simpo_beta, gamma=config.simpo_gamma)
    loss, info = riser_loss(grpo, pair, g.numel(), c.numel(), lam=config.lambda_pair)
    if diagnostics is not None:
        # On the policy's own rollouts (target rows are not samples of the policy).
        rollout_tokens = (batch.mask & batch.is_rollout[:, None]).float()
        info["entropy"] = masked_mean(diagnostics.entropy, rollout_tokens).item()
        info["valid_mass"] = masked_mean(diagnostics.valid_mass, rollout_tokens).item()
    return loss, info


def pairs_only(batch: StepBatch) -> StepBatch:
    """The same table with the GRPO branch emptied: only the preference pairs train (pair notebooks)."""
    return replace(batch, grpo_rows=torch.zeros(0, dtype=torch.long), advantages=torch.zeros(0))


def update_on_batch(model, batch: StepBatch, config, updates: int) -> list[dict]:
    """``updates`` full-batch AdamW steps on one fixed step table (the trainer's inner loop without the
    rollouts: from the second update on the ratio moves away from 1 and clipping acts); each update's loss
    info. config: an ``RLConfig``; DPO or β > 0 need ``batch.ref_logp`` (``add_reference``) first.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    return [{"update": update + 1, **optimizer_step(model, optimizer, params, batch, config, True)}
            for update in range(updates)]


def optimizer_step(model, optimizer, params, batch: StepBatch, config, with_entropy: bool) -> dict:
    """One AdamW step on a minibatch's loss (gradients clipped by global norm). Returns the loss info
    with ``grad_norm``, the norm before clipping."""
    loss, info = minibatch_loss(model, batch, config, with_entropy=with_entropy)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    info["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM))
    optimizer.step()
    return info


@torch.no_grad()
def pair_scores(model, batch: StepBatch) -> tuple[Tensor, Tensor]:
    """SimPO's scores s(y) = Σ w·log π / Σ w of each pair's chosen and rejected response: ([M], [M])."""
    logp, _ = sequence_logprobs(model, batch)
    c, r = batch.chosen_rows, batch.rejected_rows
    return sequence_scores(logp[c], batch.weights[c]), sequence_scores(logp[r], batch.weights[r])


@torch.no_grad()
def token_ratios(model, batch: StepBatch, config) -> tuple[Tensor, Tensor]:
    """Per-token ratio π_θ / π_old of the GRPO rows, and where the clip is active (``rl.losses.clip_active``):
    ([Ng, T], [Ng, T] bool); padding has ratio 1 and is never active."""
    logp, _ = sequence_logprobs(model, batch)
    g = batch.grpo_rows
    mask = batch.mask[g]
    ratio = torch.exp(logp[g] - batch.old_logp[g]).masked_fill(~mask, 1.0)
    low, high = clip_active(ratio, batch.advantages[:, None], config.eps_low, config.eps_high)
    return ratio, (low | high) & mask
