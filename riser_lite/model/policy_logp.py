"""Teacher-forced log-probabilities of responses given prompts: log π(y_t | x, y_<t), one function for all.

`response_logprobs` serves the rollouts' ``old_logp``, the RL losses (policy and reference) and the
20-candidate protocol's item scores. Each distinct prompt runs once (with gradients when enabled), its KV
cache is indexed out to the rows that share it, and only the response tokens run per row: several times
less work than one forward of ``[prompt | response]`` per row (`tests/naive.py`), since prompts are ~10x
longer than titles. Position ids count real tokens only, as ``generate`` numbers them, so these log-probs
equal the ones recorded at rollout time. The policies ("constrained", "raw") are `model.forward`'s.
`sft.response_loss` and `decoding.score_all_items` (every item at once) are other algorithms, not copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from riser_lite.model.forward import (
    cached_forward,
    pad_columns,
    policy_log_softmax,
    trie_nodes,
    valid_token_mask,
)


@dataclass
class TokenDiagnostics:
    """Per-token diagnostics of the policy on the responses (no gradient); 0 on padding."""

    entropy: Tensor  # [B, T] entropy of the policy (over the valid tokens for the constrained policy)
    valid_mass: Tensor  # [B, T] raw probability on trie-valid tokens (1 without a trie)


def _token_scores(logits: Tensor, r_ids: Tensor, r_mask: Tensor, full_t: int, trie, policy: str,
                  with_entropy: bool, temperature: float = 1.0):
    """Log-probs of the response tokens from the logits that predict them.

    logits: [B, t, V] (position j predicts r_ids[:, j]); r_ids, r_mask: [B, t]; full_t >= t: output width;
    trie: the ItemTrie (None: raw policy, no valid mass); policy: "constrained" | "raw"; temperature
    as in `policy_log_softmax`. Returns (logp [B, full_t] with gradient, TokenDiagnostics or None), 0 on
    padding.
    """
    device = logits.device
    valid = None
    if trie is not None and (policy == "constrained" or with_entropy):  # raw log-probs alone need no mask
        nodes = trie_nodes(trie, r_ids).clamp(min=0)  # padding walks off the trie; it is masked below
        valid = valid_token_mask(trie, nodes.reshape(-1), logits.shape[-1]).view(logits.shape).to(device)
    logprobs = policy_log_softmax(logits.float(), valid if policy == "constrained" else None,
                                  temperature)  # [B, t, V]
    token_logp = logprobs.gather(-1, r_ids.to(device)[..., None]).squeeze(-1).cpu().masked_fill(~r_mask, 0.0)
    logp = pad_columns(token_logp, full_t, 0.0)
    if not with_entropy:
        return logp, None
    with torch.no_grad():
        finite = logprobs.masked_fill(torch.isinf(logprobs), 0.0)  # tokens outside the trie: 0·(-inf) -> 0
        entropy = -(logprobs.exp() * finite).sum(-1).cpu()
        if valid is None:
            mass = torch.ones_like(entropy)
        else:
            raw = logits.float()
            mass = (raw.masked_fill(~valid, float("-inf")).logsumexp(-1) - raw.logsumexp(-1)).exp().cpu()
        zero = torch.zeros(())
        entropy, mass = torch.where(r_mask, entropy, zero), torch.where(r_mask, mass, zero)
    return logp, TokenDiagnostics(entropy=pad_columns(entropy, full_t, 0.0),
                                  valid_mass=pad_columns(mass, full_t, 0.0))


def trim_prompts(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop the left columns that are padding in every prompt ([P, S] -> [P, S']): saves compute when a
    minibatch has shorter prompts than the whole batch."""
    keep_from = int(prompt_mask.bool().any(dim=0).float().argmax()) if prompt_mask.numel() else 0
    return prompt_ids[:, keep_from:], prompt_mask[:, keep_from:]


def response_logprobs(
    model, prompt_ids: Tensor | None, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor,
    row_prompt: Tensor | None = None, *, trie=None, policy: str = "constrained", with_entropy: bool = False,
    temperature: float = 1.0, prefill: tuple | None = None,
) -> tuple[Tensor, TokenDiagnostics | None]:
    """Per-token log π(y_t | x, y_<t) of each response under ``model``, each prompt run once.

    prompt_ids, prompt_mask: [P, S] left-padded prompts; row_prompt: [B] long, the prompt of each response
    (None: P = B, one each); response_ids, response_mask: [B, T] right-padded; trie: the ``ItemTrie``
    (None: raw policy, no valid mass); policy: "constrained" or "raw"; temperature: score under the
    distribution rollouts sample from (`policy_log_softmax`); prefill: (last logits [P, V], KV cache) of
    ``cached_forward(model, prompt_ids, prompt_mask)`` already run by the rollouts (the cache is consumed;
    ``prompt_ids`` may then be None). Returns (logp [B, T] float32, `TokenDiagnostics` if ``with_entropy``
    else None), 0 on padding; gradients flow when grad is enabled.
    """
    batch, full_t = response_ids.shape
    if row_prompt is None:
        if prompt_mask.shape[0] != batch:
            raise ValueError(f"need one prompt row per response, got {prompt_mask.shape[0]} prompts and "
                             f"{batch} responses (or pass row_prompt)")
        row_prompt = torch.arange(batch)
    keep_to = int(response_mask.bool().sum(1).max()) if batch else 0  # drop columns padding in every row
    if keep_to == 0:
        return _empty(batch, full_t, with_entropy)
    device = next(model.parameters()).device
    r_mask = response_mask[:, :keep_to].bool()
    r_ids = response_ids[:, :keep_to].masked_fill(~r_mask, 0)  # any in-vocabulary id; padding is masked
    if prefill is None:
        used, row_of = torch.unique(row_prompt, return_inverse=True)  # only the prompts some row needs
        p_ids, p_mask = trim_prompts(prompt_ids[used], prompt_mask[used])
        if p_ids.shape[1] == 0:
            raise ValueError("every prompt is empty; the first response token needs a prompt to condition on")
        p_mask = p_mask.long().to(device)
        last, cache = cached_forward(model, p_ids.to(device), p_mask)
        last = last[:, -1]
    else:
        (last, cache), row_of, p_mask = prefill, row_prompt, prompt_mask.long().to(device)
    row_of = row_of.to(device)
    logits = last[row_of][:, None]  # the prompt's last logits predict the first response token
    if keep_to > 1:
        cache.batch_select_indices(row_of)  # a differentiable gather of every layer's keys/values
        attention = torch.cat([p_mask[row_of], r_mask[:, :-1].long().to(device)], dim=1)
        positions = p_mask.sum(1)[row_of][:, None] + torch.arange(keep_to - 1, device=device)
        rest, _ = cached_forward(model, r_ids[:, :-1].to(device), attention, positions, cache)
        logits = torch.cat([logits, rest], dim=1)  # [B, t, V]
    return _token_scores(logits, r_ids, r_mask, full_t, trie, policy, with_entropy, temperature)


def _empty(batch: int, width: int, with_entropy: bool):
    logp = torch.zeros(batch, width).requires_grad_(torch.is_grad_enabled())
    zeros = torch.zeros(batch, width)
    return logp, (TokenDiagnostics(entropy=zeros, valid_mass=zeros.clone()) if with_entropy else None)
