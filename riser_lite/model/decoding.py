"""Trie-constrained decoding for evaluation: beam search over catalogue items, exact item scores, greedy.

- `beam_search`: the protocol of the generative recommenders (D3, ReRe, MiniOneRec). K beams walk the item
  trie; a beam that consumes EOS is a finished item. With ``policy="raw"`` it returns what ``generate(
  num_beams=K, num_return_sequences=K, prefix_allowed_tokens_fn=..., length_penalty=0.0, do_sample=False)``
  returns (`tests/test_decoding.py` checks it), prefilling each prompt once instead of K times.
- `score_all_items`: log P(item | prompt) of every catalogue item, the exact ranking beam search
  approximates. The trie is fed as one "tree" sequence per chunk of items: each node attends to the prompt
  (KV cache, computed once) and to its own ancestors (a 4D attention mask), so a shared prefix runs once.
- `greedy_decode`: unconstrained greedy answers (the free answers, and latency timing).

Items are scored under the trie-constrained policy by default (what rollouts sample from, `model.forward`)
or with ``policy="raw"`` under the whole-vocabulary softmax. A beam's score is the number `score_all_items`
gives: log P(item | prompt), with no length penalty (the evaluation protocol).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from riser_lite.items.prompts import encode_prompt
from riser_lite.model.forward import (
    LOGIT_BUDGET,
    base_model,
    cached_forward,
    check_policy,
    left_pad,
    policy_log_softmax,
    trie_nodes,
    valid_token_mask,
)


def encode_prompts(tokenizer, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Left-padded prompt ids and mask for prompt texts (each encoded by `prompts.encode_prompt`).

    Returns (input_ids [B, S] long, attention_mask [B, S] long, 1 on real tokens).
    """
    if isinstance(prompts, str):
        raise TypeError("encode_prompts expects a list of prompt texts, got one string")
    encoded = [encode_prompt(tokenizer, text) for text in prompts]
    if any(not ids for ids in encoded):
        raise ValueError("a prompt encodes to no tokens; every prompt needs at least one")
    return left_pad(encoded, tokenizer.pad_token_id)


@contextlib.contextmanager
def inference(model):
    """Eval mode (no dropout) and no autograd, restoring the model's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _sdpa_decoding(model):
    """Run the block with SDPA attention when the model uses eager attention, then switch back.

    For cached decoding eager attention copies every cached key and value once per query head sharing it
    (grouped-query attention); SDPA does not, which makes beam steps ~1.5-2x faster on CPU (same outputs up
    to float rounding). Models that cannot switch are left as they are.
    """
    base = base_model(model)
    config = getattr(base, "config", None)
    switched = False
    if getattr(config, "_attn_implementation", None) == "eager" and hasattr(base, "set_attn_implementation"):
        try:
            base.set_attn_implementation("sdpa")
        except (ImportError, KeyError, ValueError):  # no SDPA path for this architecture
            pass
        switched = config._attn_implementation == "sdpa"
    try:
        yield
    finally:
        if switched:
            base.set_attn_implementation("eager")


def _device(model) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------- beam search


@dataclass
class BeamResult:
    """The finished beams of `beam_search`, best first. K = num_beams, L = max_new_tokens."""

    items: Tensor  # [B, K] long item ids in rank order; -1 where fewer than K items finished
    scores: Tensor  # [B, K] float: log P(item | prompt), the sum of token_logprobs; -inf where no item
    tokens: Tensor  # [B, K, L] long response ids (title, newline, EOS), pad id after the end
    token_mask: Tensor  # [B, K, L] bool: True on response tokens
    token_logprobs: Tensor  # [B, K, L] float: log-prob of each response token, 0 on padding

    def item_lists(self) -> list[list[int]]:
        """Per prompt, the finished items in rank order (no -1 placeholders)."""
        return [[int(i) for i in row if i >= 0] for row in self.items.tolist()]


def _check_prompts(input_ids: Tensor, attention_mask: Tensor) -> None:
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(f"expected input_ids and attention_mask of one shape [B, S], got "
                         f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")


def beam_search(model, item_space, input_ids: Tensor, attention_mask: Tensor, num_beams: int,
                max_new_tokens: int | None = None, policy: str = "constrained") -> BeamResult:
    """Trie-constrained beam search: the `num_beams` (K) best catalogue items per prompt, as `generate` does.

    Each step keeps the 2K best (beam, token) candidates; those among the first K that consume EOS join the
    finished set (K best kept), the K best unfinished continue. A prompt is done when K items are finished
    and its best live beam cannot beat the worst finished one (a score never rises as tokens are added).

    input_ids, attention_mask: left-padded prompts [B, S] (`encode_prompts`). K >= the catalogue size is
    exhaustive (the exact ranking). max_new_tokens: step limit (None: the longest response; longer items
    are never returned). policy: "constrained" (the trie-constrained policy) or "raw" (as generate).
    Returns a `BeamResult` with [B, K] items and scores and [B, K, L] response tokens.
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    check_policy(policy)
    _check_prompts(input_ids, attention_mask)
    trie, device = item_space.trie, _device(model)
    max_len = item_space.max_response_len if max_new_tokens is None else int(max_new_tokens)
    if max_len < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    pad_id = int(item_space.tokenizer.pad_token_id)
    batch, k = input_ids.shape[0], int(num_beams)
    mask = attention_mask.to(device).long()
    rows = torch.arange(batch)

    # Bookkeeping runs on the CPU, where the trie lives; only forward passes run on the model's device.
    # Live beams: one per prompt at the start (K copies of it would only produce duplicate candidates).
    run_scores = torch.zeros(batch, 1)
    run_nodes = torch.zeros(batch, 1, dtype=torch.long)
    run_tokens = torch.zeros(batch, 1, 0, dtype=torch.long)
    run_logps = torch.zeros(batch, 1, 0)
    fin = _Finished.empty(batch, k, max_len, pad_id)  # finished items, best first
    done = torch.zeros(batch, dtype=torch.bool)

    with inference(model), _sdpa_decoding(model):
        logits, cache = cached_forward(model, input_ids.to(device), mask)
        logits = logits[:, -1].cpu()
        prompt_len = mask.sum(-1).cpu()
        for step in range(max_len):
            live = run_scores.shape[1]
            width = logits.shape[-1]
            valid = valid_token_mask(trie, run_nodes.clamp(min=0).reshape(-1), width)
            logp = policy_log_softmax(logits, valid if policy == "constrained" else None)
            logp = logp.masked_fill(~valid, float("-inf")).view(batch, live * width)
            total = (run_scores[:, :, None] + logp.view(batch, live, width)).view(batch, live * width)
            top_scores, top_index = total.topk(min(2 * k, live * width), dim=1)  # sorted, best first
            beam, token = top_index // width, top_index % width
            child = trie.step(run_nodes.gather(1, beam).reshape(-1), token.reshape(-1)).view_as(token)
            alive = torch.isfinite(top_scores) & (child >= 0)
            item = torch.where(child >= 0, trie.node_item[child.clamp(min=0)], -1)
            finished = alive & (item >= 0)
            seq = torch.cat([run_tokens[rows[:, None], beam], token[..., None]], dim=2)
            token_logp = logp.gather(1, top_index)
            seq_logp = torch.cat([run_logps[rows[:, None], beam], token_logp[..., None]], dim=2)

            # Candidates ranked among the first K that finish join the finished set (as in generate).
            accept = finished & (torch.arange(top_scores.shape[1]) < k) & ~done[:, None]
            if accept.any():
                fin.merge(torch.where(accept, top_scores, float("-inf")), item, seq, seq_logp, pad_id)

            # The K best unfinished candidates continue.
            run_scores, keep_index = torch.where(alive & ~finished, top_scores, float("-inf")).topk(k, dim=1)
            dead = ~torch.isfinite(run_scores)
            run_nodes = child.gather(1, keep_index).masked_fill(dead, -1)
            run_tokens = seq[rows[:, None], keep_index]
            run_logps = seq_logp[rows[:, None], keep_index]
            origin = (beam.gather(1, keep_index) + rows[:, None] * live).reshape(-1)

            done |= dead[:, 0] | (fin.full() & (run_scores[:, 0] <= fin.scores[:, -1]))
            if bool(done.all()) or step + 1 == max_len:
                break

            cache.reorder_cache(origin.to(device))  # [B * live] -> [B * K]: at step 0 it expands the prompts
            step_mask = torch.cat([mask.repeat_interleave(k, 0),
                                   torch.ones(batch * k, step + 1, dtype=mask.dtype, device=device)], 1)
            step_positions = (prompt_len.repeat_interleave(k) + step)[:, None]
            next_tokens = run_tokens[:, :, -1].reshape(-1, 1)
            logits, cache = cached_forward(model, next_tokens.to(device), step_mask,
                                           step_positions.to(device), cache)
            logits = logits[:, -1].cpu()

    return fin.result()


@dataclass
class _Finished:
    """beam_search's finished items, best first: [B, K] scores, items, lengths; [B, K, L] tokens and
    log-probs."""

    scores: Tensor
    items: Tensor
    lengths: Tensor
    tokens: Tensor
    logps: Tensor

    @classmethod
    def empty(cls, batch: int, k: int, max_len: int, pad_id: int) -> _Finished:
        return cls(scores=torch.full((batch, k), float("-inf")),
                   items=torch.full((batch, k), -1, dtype=torch.long),
                   lengths=torch.zeros(batch, k, dtype=torch.long),
                   tokens=torch.full((batch, k, max_len), pad_id, dtype=torch.long),
                   logps=torch.zeros(batch, k, max_len))

    def full(self) -> Tensor:
        """[B] bool: K items finished."""
        return (self.items >= 0).all(1)

    def merge(self, scores: Tensor, items: Tensor, seq: Tensor, seq_logp: Tensor, pad_id: int) -> None:
        """Keep the K best of the finished set and the new candidates (score -inf: not a candidate).
        scores, items: [B, C]; seq, seq_logp: [B, C, t] tokens and log-probs of the t steps so far."""
        k, rows = self.items.shape[1], torch.arange(self.items.shape[0])[:, None]
        self.scores, pick = torch.cat([self.scores, scores], 1).topk(k, dim=1)
        finished = torch.isfinite(self.scores)
        self.items = torch.cat([self.items, items], 1).gather(1, pick).masked_fill(~finished, -1)
        pad_cols = self.tokens.shape[2] - seq.shape[2]
        new_tokens = torch.nn.functional.pad(seq, (0, pad_cols), value=pad_id)
        self.tokens = torch.cat([self.tokens, new_tokens], 1)[rows, pick]
        self.logps = torch.cat([self.logps, torch.nn.functional.pad(seq_logp, (0, pad_cols))], 1)[rows, pick]
        self.lengths = torch.cat([self.lengths, torch.full_like(items, seq.shape[2])], 1).gather(1, pick)

    def result(self) -> BeamResult:
        lengths = self.lengths.masked_fill(self.items < 0, 0)
        token_mask = torch.arange(self.tokens.shape[2]) < lengths[:, :, None]
        return BeamResult(items=self.items, scores=self.scores, tokens=self.tokens,
                          token_mask=token_mask, token_logprobs=self.logps.masked_fill(~token_mask, 0.0))


def prefix_allowed_tokens_fn(item_space, prompt_length: int) -> Callable[[int, Tensor], list[int]]:
    """The trie as a `generate(prefix_allowed_tokens_fn=...)` callback, for prompts padded to `prompt_length`.

    A sequence off the trie or past an item's EOS (generate keeps such beams alive at a score of about -1e9
    when too few real candidates exist) is offered EOS only, since generate rejects an empty list.
    """
    trie = item_space.trie
    eos = int(item_space.tokenizer.eos_token_id)
    memo: dict[tuple[int, ...], list[int]] = {}

    def allowed(batch_id: int, sequence: Tensor) -> list[int]:
        key = tuple(sequence[prompt_length:].tolist())
        if key not in memo:
            node = torch.zeros(1, dtype=torch.long)
            for token in key:
                node = trie.step(node, torch.tensor([token]))
            n = int(node)
            start, end = (int(trie.child_start[n]), int(trie.child_start[n + 1])) if n >= 0 else (0, 0)
            memo[key] = trie.child_token[start:end].tolist() or [eos]
        return memo[key]

    return allowed


# ---------------------------------------------------------------------------------------------- exact scores


@dataclass
class _TreeChunk:
    """Part of the trie fed to the model as one tree-shaped sequence. N nodes, I items, P = longest path."""

    tokens: Tensor  # [N] long: the token leading into each node
    trie_nodes: Tensor  # [N] long: each node's id in `item_space.trie` (its valid next tokens)
    depth: Tensor  # [N] long: response tokens up to and including that token (1 = first token)
    ancestors: Tensor  # [N, N] bool: node i may attend to node j (j is i or an ancestor of i)
    rows: Tensor  # [I] long: rows of the chunk's items in `item_space.item_ids`
    first: Tensor  # [I] long: each item's first response token (scored from the prompt's last logits)
    path: Tensor  # [I, P] long: node whose logits score the next token of the item
    next_tokens: Tensor  # [I, P] long: that next token
    path_mask: Tensor  # [I, P] bool


_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tree_chunks(item_space, chunk_nodes: int) -> list[_TreeChunk]:
    """Split the trie into chunks of at most ~chunk_nodes internal nodes (cached per item space)."""
    per_space = _plans.setdefault(item_space, {})
    if chunk_nodes not in per_space:
        tokens, mask, _ = item_space.padded_tokens()
        # nodes[i, j]: the trie node after tokens[i, : j + 1] (-1 past the item's end)
        nodes = trie_nodes(item_space.trie, tokens)[:, 1:]
        groups = _item_groups([tuple(item_space.response_ids[item]) for item in item_space.item_ids],
                              chunk_nodes)
        per_space[chunk_nodes] = [_chunk(torch.tensor(group), tokens, mask.sum(1), nodes) for group in groups]
    return per_space[chunk_nodes]


def _item_groups(sequences: list[tuple[int, ...]], chunk_nodes: int) -> list[list[int]]:
    """Rows of the items in trie (lexicographic) order, cut into groups adding <= chunk_nodes internal nodes
    each, so consecutive items share their longest prefixes."""
    groups, group, group_nodes, previous = [], [], 0, ()
    for row in sorted(range(len(sequences)), key=sequences.__getitem__):
        seq = sequences[row]
        shared = 0
        while shared < min(len(seq), len(previous)) and seq[shared] == previous[shared]:
            shared += 1
        new = max(len(seq) - 1 - shared, 0) if group else len(seq) - 1  # internal nodes this item adds
        if group and group_nodes + new > chunk_nodes:
            groups.append(group)
            group, group_nodes, new = [], 0, len(seq) - 1
        group.append(row)
        group_nodes += new
        previous = seq
    return groups + [group] if group else groups


def _chunk(rows: Tensor, tokens: Tensor, lengths: Tensor, nodes: Tensor) -> _TreeChunk:
    """The tree-shaped sequence of the items in `rows`: tokens [I, L], lengths [I], nodes [I, L - 1]."""
    width = int(lengths[rows].max()) - 1  # internal nodes on the longest path (no logits after EOS)
    path_mask = torch.arange(width)[None, :] < (lengths[rows] - 1)[:, None]
    unique, local = torch.unique(nodes[rows, :width][path_mask], return_inverse=True)
    path = torch.zeros(len(rows), width, dtype=torch.long)
    path[path_mask] = local
    depth_of = torch.arange(1, width + 1).expand(len(rows), width)[path_mask]
    n = unique.numel()
    node_tokens = torch.zeros(n, dtype=torch.long).scatter_(0, local, tokens[rows, :width][path_mask])
    node_depth = torch.zeros(n, dtype=torch.long).scatter_(0, local, depth_of)
    # Node path[i, j] attends to path[i, 0..j]: itself and its ancestors.
    lower = torch.tril(torch.ones(width, width, dtype=torch.bool))
    pair = path_mask[:, :, None] & path_mask[:, None, :] & lower
    ancestors = torch.zeros(n, n, dtype=torch.bool)
    ancestors[path[:, :, None].expand_as(pair)[pair], path[:, None, :].expand_as(pair)[pair]] = True
    return _TreeChunk(tokens=node_tokens, trie_nodes=unique, depth=node_depth, ancestors=ancestors, rows=rows,
                      first=tokens[rows, 0], path=path, path_mask=path_mask,
                      next_tokens=tokens[rows, 1: width + 1].masked_fill(~path_mask, 0))


def score_all_items(model, item_space, input_ids: Tensor, attention_mask: Tensor,
                    chunk_nodes: int = 64, policy: str = "constrained") -> Tensor:  # 64: fastest on CPU
    """log P(item | prompt) of every catalogue item under `policy`: [B, S] prompts -> [B, I] float32 scores
    (columns in `item_space.item_ids` order; under "constrained" their exp sums to 1 over items).

    Each prompt runs once and its KV cache serves every chunk of ~chunk_nodes trie nodes (memory ~ B x
    chunk_nodes x vocabulary logits). Positions follow the prompt's real length, so scores equal a plain
    forward of prompt + title (`tests/naive.py`).
    """
    check_policy(policy)
    _check_prompts(input_ids, attention_mask)
    attention = getattr(model.config, "_attn_implementation", None) or "eager"
    if attention not in ("eager", "sdpa"):
        raise ValueError(f"score_all_items needs attention 'eager' or 'sdpa' (it passes a tree-shaped 4D "
                         f"attention mask), but the model uses {attention!r}")
    vocab = int(getattr(model.config, "vocab_size", None) or len(item_space.tokenizer))
    # Cap the chunk so one chunk's logits for one prompt fit the budget, then batch prompts up to it.
    chunk_nodes = max(8, min(int(chunk_nodes), LOGIT_BUDGET // vocab))
    chunks = _tree_chunks(item_space, chunk_nodes)
    per_batch = max(1, LOGIT_BUDGET // (chunk_nodes * vocab))
    parts = [_score_prompts(model, item_space, chunks, input_ids[start: start + per_batch],
                            attention_mask[start: start + per_batch], policy)
             for start in range(0, input_ids.shape[0], per_batch)]
    return torch.cat(parts) if parts else torch.zeros(0, len(item_space))


def _score_prompts(model, item_space, chunks: list[_TreeChunk], input_ids, attention_mask,
                   policy: str) -> Tensor:
    device, trie = _device(model), item_space.trie
    dtype = next(model.parameters()).dtype
    mask = attention_mask.to(device).long()
    batch, prompt_width = mask.shape
    scores = torch.zeros(batch, len(item_space))
    blocked = torch.finfo(dtype).min  # additive mask value understood by both eager and SDPA attention

    def valid_at(nodes: Tensor, width: int) -> Tensor | None:  # [N] trie nodes -> [N, width], None if raw
        return valid_token_mask(trie, nodes, width).to(device) if policy == "constrained" else None

    with inference(model):
        logits, cache = cached_forward(model, input_ids.to(device), mask)
        root = policy_log_softmax(logits[:, -1], valid_at(torch.zeros(1, dtype=torch.long), logits.shape[-1]))
        root = root.cpu()  # [B, V]
        prompt_len = mask.sum(-1)
        for chunk in chunks:
            n = chunk.tokens.numel()
            allowed = torch.cat([mask.bool()[:, None, None, :].expand(batch, 1, n, prompt_width),
                                 chunk.ancestors.to(device)[None, None].expand(batch, 1, n, n)], dim=-1)
            tree_mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, blocked)
            positions = prompt_len[:, None] + chunk.depth.to(device)[None, :] - 1
            node_ids = chunk.tokens.to(device)[None, :].expand(batch, n)
            logits, cache = cached_forward(model, node_ids, tree_mask, positions, cache)
            cache.crop(-n)  # back to the prompt alone for the next chunk
            valid = valid_at(chunk.trie_nodes, logits.shape[-1])
            if valid is not None:
                logits = logits.masked_fill(~valid, float("-inf"))
            normaliser = torch.logsumexp(logits, dim=-1)  # [B, N]
            picked = logits[:, chunk.path.to(device), chunk.next_tokens.to(device)]  # [B, I, P]
            token_logp = (picked - normaliser[:, chunk.path.to(device)]).cpu()
            total = token_logp.masked_fill(~chunk.path_mask, 0.0).sum(-1) + root[:, chunk.first]
            scores[:, chunk.rows] = total
    return scores


def greedy_decode(model, input_ids: Tensor, attention_mask: Tensor, new_tokens: int,
                  eos_token_id: int | None = None, pad_token_id: int = 0) -> Tensor:
    """Unconstrained (no trie) KV-cached greedy decoding of at most `new_tokens` tokens per row.

    input_ids, attention_mask: [B, S] left-padded prompts. With `eos_token_id` a row stops at its EOS (later
    slots hold `pad_token_id`); without it every row gets exactly `new_tokens` (what latency timing needs).
    Returns [B, n] ids on the CPU, n <= new_tokens.
    """
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
    device = _device(model)
    mask = attention_mask.to(device).long()
    generated = torch.full((input_ids.shape[0], new_tokens), pad_token_id, dtype=torch.long)
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool)
    with inference(model):
        logits, cache = cached_forward(model, input_ids.to(device), mask, last_only=True)
        next_position = mask.sum(-1, keepdim=True)  # [B, 1]
        for step in range(new_tokens):
            token = logits[:, -1].argmax(-1).cpu().masked_fill(finished, pad_token_id)  # [B]
            generated[:, step] = token
            if eos_token_id is not None:
                finished |= token == eos_token_id
            if step + 1 == new_tokens or bool(finished.all()):
                return generated[:, : step + 1]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            logits, cache = cached_forward(model, token[:, None].to(device), mask, next_position + step,
                                           cache)
    return generated


def greedy_texts(model, tokenizer, input_ids: Tensor, attention_mask: Tensor, new_tokens: int) -> list[str]:
    """The unconstrained greedy answers (`greedy_decode`, stopped at EOS) of prompts [B, S] as B texts."""
    out = greedy_decode(model, input_ids, attention_mask, new_tokens,
                        eos_token_id=int(tokenizer.eos_token_id), pad_token_id=int(tokenizer.pad_token_id))
    return tokenizer.batch_decode(out.tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=False)
