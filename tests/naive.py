"""Naive references the tests compare the package's scorers with: slow on purpose, simple to check by eye.

- `naive_response_logprobs`: one forward of ``[prompt | response]`` per row, the reference for
  `riser_lite.model.policy_logp.response_logprobs` (which runs each prompt once and shares its cache).
- `score_items_naive`: one full forward of prompt + title per (prompt, item) pair, the reference for
  `riser_lite.model.decoding.score_all_items` (which feeds the trie as a tree).

Benchmarks time them as the baselines (``benchmarks/bench_eval.py``, ``benchmarks/bench_rl.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from riser_lite.model.decoding import inference
from riser_lite.model.forward import (
    cached_forward,
    check_policy,
    left_pad,
    policy_log_softmax,
    position_ids_from_mask,
    trie_nodes,
    valid_token_mask,
)
from riser_lite.model.policy_logp import _empty, _token_scores, trim_prompts


def naive_response_logprobs(model, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor,
                            response_mask: Tensor, with_entropy: bool = False, trie=None,
                            policy: str = "constrained"):
    """`response_logprobs` with one full forward of ``[prompt | response]`` per row.

    prompt_ids, prompt_mask: [B, S] left-padded, one prompt row per response; response_ids, response_mask:
    [B, T] right-padded. Returns (logp [B, T], TokenDiagnostics or None), 0 on padding.
    """
    batch, full_t = response_ids.shape
    keep_to = int(response_mask.bool().sum(1).max()) if batch else 0
    if keep_to == 0:
        return _empty(batch, full_t, with_entropy)
    p_ids, p_mask = trim_prompts(prompt_ids, prompt_mask)
    r_mask = response_mask[:, :keep_to].bool()
    r_ids = response_ids[:, :keep_to].masked_fill(~r_mask, 0)
    s = p_ids.shape[1]
    input_ids = torch.cat([p_ids, r_ids], dim=1)
    attention = torch.cat([p_mask.bool(), r_mask], dim=1).long()
    # Left padding: positions count real tokens only. Inputs S-1 .. S+T-2 predict the response tokens.
    logits = model(input_ids=input_ids[:, :-1], attention_mask=attention[:, :-1],
                   position_ids=position_ids_from_mask(attention)[:, :-1]).logits[:, s - 1:]
    return _token_scores(logits, r_ids, r_mask, full_t, trie, policy, with_entropy)


def score_items_naive(model, item_space, input_ids: Tensor, attention_mask: Tensor,
                      item_batch: int = 64, policy: str = "constrained") -> Tensor:
    """log P(item | prompt) of every catalogue item, the prompt recomputed for every item: [B, I] float32."""
    check_policy(policy)
    device = next(model.parameters()).device
    pad_id = int(item_space.tokenizer.pad_token_id)
    scores = torch.zeros(input_ids.shape[0], len(item_space))
    with inference(model):
        for b in range(input_ids.shape[0]):
            prompt = input_ids[b][attention_mask[b].bool()].tolist()
            for start in range(0, len(item_space), item_batch):
                items = item_space.item_ids[start: start + item_batch]
                responses = [item_space.response_ids[item] for item in items]
                ids, mask = left_pad([prompt + r for r in responses], pad_id)
                logits = cached_forward(model, ids.to(device), mask.to(device))[0]
                width = ids.shape[1]
                for j, response in enumerate(responses):
                    span = logits[j, width - len(response) - 1: width - 1].cpu()  # [L, V]
                    valid = None
                    if policy == "constrained":
                        nodes = trie_nodes(item_space.trie, torch.tensor([response]))[0]
                        valid = valid_token_mask(item_space.trie, nodes, span.shape[-1])
                    logp = policy_log_softmax(span, valid)
                    scores[b, start + j] = logp.gather(1, torch.tensor(response)[:, None]).sum()
    return scores
