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

Log-probs are those of the raw policy at temperature 1 over the whole vocabulary (not renormalised over the
trie's valid tokens): the same quantity rollouts record as ``old_logp`` and SFT maximises.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from riser_lite.model.backbone import position_ids_from_mask


def _takes_position_ids(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "position_ids" in inspect.signature(base.forward).parameters


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
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Per-token log π(y_t | x, y_<t) of each response under ``model``.

    prompt_ids, prompt_mask: [B, S] left-padded (one prompt row per response: expand groups beforehand);
    response_ids, response_mask: [B, T] right-padded. Returns (logp [B, T] float32, entropy [B, T] float32
    or None). Padding positions hold 0 in both outputs. Gradients flow when grad is enabled.
    """
    if prompt_ids.shape[0] != response_ids.shape[0]:
        raise ValueError(f"need one prompt row per response, got {prompt_ids.shape[0]} prompts and "
                         f"{response_ids.shape[0]} responses")
    batch, full_t = response_ids.shape
    out_logp = torch.zeros(batch, full_t)
    out_entropy = torch.zeros(batch, full_t) if with_entropy else None
    if batch == 0 or full_t == 0:
        return out_logp.requires_grad_(torch.is_grad_enabled()), out_entropy
    p_ids, p_mask, r_ids, r_mask = trim_padding(prompt_ids, prompt_mask, response_ids, response_mask)
    s, t = p_ids.shape[1], r_ids.shape[1]
    if s == 0:
        raise ValueError("every prompt is empty; the first response token needs a prompt to condition on")
    device = next(model.parameters()).device
    r_mask = r_mask.bool()
    r_ids = r_ids.masked_fill(~r_mask, 0)  # any in-vocabulary id; padding is masked out below
    input_ids = torch.cat([p_ids, r_ids], dim=1).to(device)
    attention = torch.cat([p_mask.bool(), r_mask], dim=1).long().to(device)
    kwargs = {"input_ids": input_ids[:, :-1], "attention_mask": attention[:, :-1]}
    if _takes_position_ids(model):  # left padding: positions count real tokens only
        kwargs["position_ids"] = position_ids_from_mask(attention)[:, :-1]
    # Only the inputs at columns S-1 .. S+T-2 predict response tokens; the last column predicts nothing.
    logits = model(**kwargs).logits[:, s - 1:]
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # [B, t, V]
    token_logp = logprobs.gather(-1, r_ids.to(device)[..., None]).squeeze(-1).cpu()
    token_logp = token_logp.masked_fill(~r_mask, 0.0)
    logp = torch.cat([token_logp, torch.zeros(batch, full_t - t)], dim=1) if t < full_t else token_logp
    entropy = None
    if with_entropy:
        with torch.no_grad():
            ent = -(logprobs.exp() * logprobs).sum(-1).cpu().masked_fill(~r_mask, 0.0)
            entropy = torch.zeros(batch, full_t)
            entropy[:, :t] = ent
    return logp, entropy


def _forward(model, kwargs: dict, cache=None):
    """Forward with a KV cache (the cache argument was renamed in recent transformers). -> (logits, cache)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    kwargs = {**kwargs, "use_cache": True}
    if "position_ids" not in params:
        kwargs.pop("position_ids", None)
    if cache is not None:
        kwargs["cache" if "cache" in params else "past_key_values"] = cache
    out = model(**kwargs)
    new_cache = getattr(out, "cache", None)
    return out.logits, (new_cache if new_cache is not None else out.past_key_values)


def shared_prompt_logprobs(
    model, prompt_ids: Tensor, prompt_mask: Tensor, row_prompt: Tensor, response_ids: Tensor,
    response_mask: Tensor, with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """``response_logprobs`` for rows that share prompts, running each prompt once.

    prompt_ids, prompt_mask: [P, S] left-padded distinct prompts; row_prompt: [B] long, the prompt of each
    row; response_ids, response_mask: [B, T] right-padded. Returns (logp [B, T], entropy [B, T] or None)
    as ``response_logprobs`` does for ``prompt_ids[row_prompt]``.
    """
    batch, full_t = response_ids.shape
    if batch == 0 or full_t == 0:
        return response_logprobs(model, prompt_ids[row_prompt], prompt_mask[row_prompt], response_ids,
                                 response_mask, with_entropy)
    used, row_of = torch.unique(row_prompt, return_inverse=True)  # only the prompts some row needs
    p_ids, p_mask, r_ids, r_mask = trim_padding(prompt_ids[used], prompt_mask[used], response_ids,
                                                response_mask)
    t = r_ids.shape[1]
    device = next(model.parameters()).device
    r_mask = r_mask.bool()
    r_ids = r_ids.masked_fill(~r_mask, 0)
    p_mask = p_mask.long().to(device)
    logits, cache = _forward(model, {"input_ids": p_ids.to(device), "attention_mask": p_mask,
                                     "position_ids": position_ids_from_mask(p_mask)})
    first = logits[:, -1][row_of.to(device)][:, None]  # the prompt's last logits predict the first token
    if t > 1:
        cache.batch_select_indices(row_of.to(device))  # a differentiable gather of every layer's keys/values
        attention = torch.cat([p_mask[row_of.to(device)], r_mask[:, :-1].long().to(device)], dim=1)
        positions = p_mask.sum(1)[row_of.to(device)][:, None] + torch.arange(t - 1, device=device)
        rest, _ = _forward(model, {"input_ids": r_ids[:, :-1].to(device), "attention_mask": attention,
                                   "position_ids": positions}, cache)
        logits = torch.cat([first, rest], dim=1)  # [B, t, V]
    else:
        logits = first
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    token_logp = logprobs.gather(-1, r_ids.to(device)[..., None]).squeeze(-1).cpu().masked_fill(~r_mask, 0.0)
    logp = torch.cat([token_logp, torch.zeros(batch, full_t - t)], dim=1) if t < full_t else token_logp
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = torch.zeros(batch, full_t)
            entropy[:, :t] = -(logprobs.exp() * logprobs).sum(-1).cpu().masked_fill(~r_mask, 0.0)
    return logp, entropy


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
