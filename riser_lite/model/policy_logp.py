"""Teacher-forced log-probabilities of responses given prompts: the one forward pass every RL loss needs.

Two implementations of the same numbers:

- ``response_logprobs``: one forward of ``[prompt | response]`` per row. Simple; the reference.
- ``shared_prompt_logprobs``: each distinct prompt is run once (with gradients), its key/value cache is
  indexed out to the rows that share it, and only the response tokens are run per row. An RL step scores
  G rollouts (plus pair targets) per prompt and prompts are ~10x longer than titles, so this does several
  times less work, forward and backward. Tests check both give the same log-probs and gradients.

Prompts are left-padded (as the tokenizer and the rollout engine pad them) and responses right-padded, so
``[prompt | response]`` puts every prompt's last token in the same column ``S - 1`` and the response
tokens in columns ``S .. S + T - 1``. Position ids count real tokens only (``cumsum(mask) - 1``), exactly
as Hugging Face ``generate`` numbers them, so these log-probs agree with the ones recorded at rollout time
(up to float rounding) and the PPO ratio starts at 1.

Both compute the log-probs of either policy (see `model.forward`): with the ``ItemTrie``, ``policy=
"constrained"`` renormalises over the tokens the trie allows at each position (the policy rollouts sample
from and evaluation ranks by) and ``"raw"`` is the log-softmax over the whole vocabulary; ``trie=None`` is
the raw policy too, without the valid-mass diagnostic.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from riser_lite.model.forward import (
    base_model,
    cached_forward,
    pad_columns,
    policy_log_softmax,
    position_ids_from_mask,
    trie_nodes,
    valid_token_mask,
)


@dataclass
class TokenDiagnostics:
    """Per-token diagnostics of the policy on the responses (no gradient); 0 on padding."""

    entropy: Tensor  # [B, T] entropy of the policy (over the valid tokens for the constrained policy)
    valid_mass: Tensor  # [B, T] raw probability on trie-valid tokens (1 without a trie)


def _token_scores(logits: Tensor, r_ids: Tensor, r_mask: Tensor, full_t: int, trie, policy: str,
                  with_entropy: bool):
    """Log-probs of the response tokens from the logits that predict them.

    logits: [B, t, V] (position j predicts r_ids[:, j]); r_ids, r_mask: [B, t]; full_t >= t: output width;
    trie: the ItemTrie (None: raw policy, no valid mass); policy: "constrained" | "raw".
    Returns (logp [B, full_t] with gradient, TokenDiagnostics or None), 0 on padding.
    """
    device = logits.device
    valid = None
    if trie is not None and (policy == "constrained" or with_entropy):  # raw log-probs alone need no mask
        nodes = trie_nodes(trie, r_ids).clamp(min=0)  # padding walks off the trie; it is masked below
        valid = valid_token_mask(trie, nodes.reshape(-1), logits.shape[-1]).view(logits.shape).to(device)
    logprobs = policy_log_softmax(logits.float(), valid if policy == "constrained" else None)  # [B, t, V]
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


def trim_padding(prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor):
    """Drop prompt columns that are padding in every row (left) and response columns padding in every row
    (right). Saves compute when a minibatch has shorter prompts / titles than the whole batch."""
    keep_from = int(prompt_mask.bool().any(dim=0).float().argmax()) if prompt_mask.numel() else 0
    lengths = response_mask.bool().sum(dim=1)
    keep_to = int(lengths.max()) if lengths.numel() else 0
    return (prompt_ids[:, keep_from:], prompt_mask[:, keep_from:],
            response_ids[:, :keep_to], response_mask[:, :keep_to])


def response_logprobs(
    model, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor,
    with_entropy: bool = False, trie=None, policy: str = "constrained",
) -> tuple[Tensor, TokenDiagnostics | None]:
    """Per-token log π(y_t | x, y_<t) of each response under ``model``.

    prompt_ids, prompt_mask: [B, S] left-padded (one prompt row per response: expand groups beforehand);
    response_ids, response_mask: [B, T] right-padded; trie: the ``ItemTrie`` (None: the raw policy, and no
    valid mass); policy: "constrained" (renormalised over the trie's valid tokens) or "raw".
    Returns (logp [B, T] float32, `TokenDiagnostics` when ``with_entropy`` else None).
    Padding positions hold 0. Gradients flow when grad is enabled.
    """
    if prompt_ids.shape[0] != response_ids.shape[0]:
        raise ValueError(f"need one prompt row per response, got {prompt_ids.shape[0]} prompts and "
                         f"{response_ids.shape[0]} responses")
    batch, full_t = response_ids.shape
    if batch == 0 or full_t == 0:
        return _empty(batch, full_t, with_entropy)
    p_ids, p_mask, r_ids, r_mask = trim_padding(prompt_ids, prompt_mask, response_ids, response_mask)
    s = p_ids.shape[1]
    if s == 0:
        raise ValueError("every prompt is empty; the first response token needs a prompt to condition on")
    device = next(model.parameters()).device
    r_mask = r_mask.bool()
    r_ids = r_ids.masked_fill(~r_mask, 0)  # any in-vocabulary id; padding is masked out below
    input_ids = torch.cat([p_ids, r_ids], dim=1).to(device)
    attention = torch.cat([p_mask.bool(), r_mask], dim=1).long().to(device)
    kwargs = {"input_ids": input_ids[:, :-1], "attention_mask": attention[:, :-1]}
    if "position_ids" in inspect.signature(base_model(model).forward).parameters:
        kwargs["position_ids"] = position_ids_from_mask(attention)[:, :-1]  # left padding: real tokens only
    # Only the inputs at columns S-1 .. S+T-2 predict response tokens; the last column predicts nothing.
    logits = model(**kwargs).logits[:, s - 1:]
    return _token_scores(logits, r_ids, r_mask, full_t, trie, policy, with_entropy)


def _empty(batch: int, width: int, with_entropy: bool):
    logp = torch.zeros(batch, width).requires_grad_(torch.is_grad_enabled())
    zeros = torch.zeros(batch, width)
    return logp, (TokenDiagnostics(entropy=zeros, valid_mass=zeros.clone()) if with_entropy else None)


def shared_prompt_logprobs(
    model, prompt_ids: Tensor, prompt_mask: Tensor, row_prompt: Tensor, response_ids: Tensor,
    response_mask: Tensor, with_entropy: bool = False, trie=None, policy: str = "constrained",
) -> tuple[Tensor, TokenDiagnostics | None]:
    """``response_logprobs`` for rows that share prompts, running each prompt once.

    prompt_ids, prompt_mask: [P, S] left-padded distinct prompts; row_prompt: [B] long, the prompt of each
    row; response_ids, response_mask: [B, T] right-padded; trie, policy as in ``response_logprobs``.
    Returns what ``response_logprobs`` returns for ``prompt_ids[row_prompt]``.
    """
    batch, full_t = response_ids.shape
    if batch == 0 or full_t == 0:
        return _empty(batch, full_t, with_entropy)
    used, row_of = torch.unique(row_prompt, return_inverse=True)  # only the prompts some row needs
    p_ids, p_mask, r_ids, r_mask = trim_padding(prompt_ids[used], prompt_mask[used], response_ids,
                                                response_mask)
    t = r_ids.shape[1]
    device = next(model.parameters()).device
    r_mask = r_mask.bool()
    r_ids = r_ids.masked_fill(~r_mask, 0)
    p_mask = p_mask.long().to(device)
    row_of = row_of.to(device)
    logits, cache = cached_forward(model, p_ids.to(device), p_mask)
    logits = logits[:, -1][row_of][:, None]  # the prompt's last logits predict the first response token
    if t > 1:
        cache.batch_select_indices(row_of)  # a differentiable gather of every layer's keys/values
        attention = torch.cat([p_mask[row_of], r_mask[:, :-1].long().to(device)], dim=1)
        positions = p_mask.sum(1)[row_of][:, None] + torch.arange(t - 1, device=device)
        rest, _ = cached_forward(model, r_ids[:, :-1].to(device), attention, positions, cache)
        logits = torch.cat([logits, rest], dim=1)  # [B, t, V]
    return _token_scores(logits, r_ids, r_mask, full_t, trie, policy, with_entropy)


def item_response_batch(
    items: Sequence[int], response_ids: Mapping[int, Sequence[int]], branching: Mapping[int, Sequence[bool]],
    pad_id: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded response ids of catalogue items (e.g. the ground-truth titles of preference pairs).

    items: M item ids; response_ids / branching: as ``ItemSpace.response_ids`` / ``ItemSpace.branching``.
    Returns (ids [M, L] long, mask [M, L] bool, branching [M, L] bool), L the longest of the M responses.
    """
    missing = [item for item in items if item not in response_ids]
    if missing:
        raise KeyError(f"items {missing[:5]} are not in the item space ({len(response_ids)} items)")
    length = max((len(response_ids[item]) for item in items), default=0)
    ids = torch.full((len(items), length), int(pad_id), dtype=torch.long)
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    flags = torch.zeros(len(items), length, dtype=torch.bool)
    for row, item in enumerate(items):
        n = len(response_ids[item])
        ids[row, :n] = torch.tensor(list(response_ids[item]), dtype=torch.long)
        mask[row, :n] = True
        flags[row, :n] = torch.tensor(list(branching[item]), dtype=torch.bool)
    return ids, mask, flags
