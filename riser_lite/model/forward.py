r"""The one forward pass: a cached causal-LM step, positions, padding, unwrapping, and the policy over tokens.

Every stage that runs the model calls `cached_forward`, so left padding, position ids and the KV-cache
argument are handled in one place.

**The policy.** At a response position whose trie node is n, the *constrained* policy is the model's
softmax renormalised over the tokens the item trie allows at n,
$\log \pi_c(y_t \mid x, y_{<t}) = z_{y_t} - \log \sum_{v \in \mathcal{V}(n_t)} e^{z_v}$ ($z$ the logits,
$\mathcal{V}(n_t)$ the valid tokens): what rollouts, beam search and evaluation sample or rank under; a
token the trie forces costs nothing. The *raw* policy is the log-softmax over the whole vocabulary.
`policy_log_softmax` is the only place either is computed from logits.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence

import torch
from torch import Tensor

POLICIES = ("constrained", "raw")
# Logits (rows x positions x vocab) materialised at once when scoring items or rollouts: bounds memory;
# callers split their work into chunks of at most this many.
LOGIT_BUDGET = 2 ** 24


def base_model(model):
    """The model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@functools.cache
def _forward_arguments(model_class) -> tuple[str, bool, bool]:
    """(name of the cache argument, accepts position_ids, accepts logits_to_keep) of a causal LM class."""
    params = inspect.signature(model_class.forward).parameters
    cache_name = "cache" if "cache" in params else "past_key_values"  # renamed in recent transformers
    return cache_name, "position_ids" in params, "logits_to_keep" in params


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only. attention_mask: [B, T] (1 = token) -> [B, T] long.

    Padding positions get 0 (they are masked anyway). This is how `generate` numbers left-padded prompts,
    so log-probs recorded at rollout time and recomputed in training agree.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def cached_forward(model, input_ids: Tensor, attention_mask: Tensor, positions: Tensor | None = None,
                   cache=None, *, last_only: bool = False):
    """One forward of any HF causal LM (peft or not) with a KV cache. Returns (logits [B, t, V] float, cache).

    input_ids: [B, t] new tokens; attention_mask: [B, past + t] over the cache and the new tokens;
    positions: [B, t] position ids of the new tokens (None: from the mask, for a prefill without cache);
    last_only: compute the logits of the last position only, where the model supports it.
    """
    cache_name, takes_positions, takes_keep = _forward_arguments(type(base_model(model)))
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": True}
    if cache is not None:
        kwargs[cache_name] = cache
    if takes_positions:  # left padding: positions count real tokens only
        kwargs["position_ids"] = position_ids_from_mask(attention_mask) if positions is None else positions
    if last_only and takes_keep:
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs)
    new_cache = getattr(out, "cache", None)
    if new_cache is None:
        new_cache = out.past_key_values
    if isinstance(new_cache, tuple):  # older transformers return the legacy tuple format
        from transformers import DynamicCache

        new_cache = DynamicCache.from_legacy_cache(new_cache)
    return out.logits.float(), new_cache


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token id lists -> (ids [B, S] long, mask [B, S] long), left-padded to the longest row."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            ids[i, width - len(row):] = torch.as_tensor(list(row), dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids, mask


def pad_columns(x: Tensor, width: int, value) -> Tensor:
    """Right-pad a [B, T] tensor with ``value`` to [B, width] (unchanged if already as wide)."""
    if x.shape[1] >= width:
        return x
    return torch.cat([x, torch.full((x.shape[0], width - x.shape[1]), value, dtype=x.dtype)], dim=1)


def valid_token_mask(trie, nodes: Tensor, width: int) -> Tensor:
    """Tokens the trie allows at each node, widened to the model's logits: nodes [N] (>= 0) -> [N, width].

    The mask is built once per distinct node (draws and beams share nodes). Models often pad their
    vocabulary beyond the tokenizer's; those extra ids are never valid.
    """
    distinct, inverse = torch.unique(nodes, return_inverse=True)
    valid = trie.valid_mask(distinct)
    if width < valid.shape[1]:
        raise ValueError(f"the model has {width} output logits but the tokenizer {valid.shape[1]} tokens")
    return torch.nn.functional.pad(valid, (0, width - valid.shape[1]))[inverse]


def policy_log_softmax(logits: Tensor, valid: Tensor | None, temperature: float = 1.0) -> Tensor:
    """log π over the vocabulary: [..., V] logits -> [..., V] log-probs.

    valid: [..., V] bool for the constrained policy (tokens outside get -inf, the rest renormalised), or
    None for the raw policy (plain log-softmax). Rows with no valid token (off the trie) fall back to raw.
    temperature: the distribution rollouts sample from (logits / temperature); the policy itself is at
    temperature 1.
    """
    scores = logits / temperature if temperature != 1.0 else logits  # no copy for the policy itself
    if valid is not None:
        valid = valid | ~valid.any(dim=-1, keepdim=True)
        scores = scores.masked_fill(~valid, float("-inf"))
    return torch.log_softmax(scores, dim=-1)


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")


def trie_nodes(trie, responses: Tensor) -> Tensor:
    """The trie node before each response token: responses [N, T] long -> nodes [N, T] long (-1 off the trie).

    Padding after a title's EOS walks off the trie (-1); callers mask those positions out.
    """
    num, length = responses.shape
    nodes = torch.zeros(num, length, dtype=torch.long)
    node = torch.zeros(num, dtype=torch.long)
    for t in range(length):
        nodes[:, t] = node
        node = trie.step(node, responses[:, t])
    return nodes
