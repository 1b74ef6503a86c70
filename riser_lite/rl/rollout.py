"""The rollout engine: for each prompt, a group of G candidate items drawn from the current policy.

Modes (``RolloutConfig.mode``):

- ``"sample"``: G draws with replacement from the trie-constrained policy. Plain GRPO.
- ``"dedup"``: m >= G draws, then the distinct items in order of first appearance, repeats only when fewer
  than G distinct items were drawn. RISER's oversample-and-de-duplicate **[reported]**. The first
  appearances of i.i.d. draws are a sample *without replacement*, so the group keeps that meaning.
- ``"beam"``: trie-constrained beam search with G beams: G distinct items in beam order (ReRe).
- ``"unconstrained"``: plain sampling with no trie; the text is parsed back to an item (-1 if it names none),
  to show what a free-running model produces.

Why it is faster than ``generate(num_return_sequences=G, prefix_allowed_tokens_fn=...)``
(`benchmarks/bench_rollout.py`; most of the gain is the first point): each prompt is prefilled once and
its KV cache shared by its draws; the trie's valid tokens come for the whole batch at once; a draw stops
as soon as its trie node leads to one item (the rest of the title is forced) and leaves the batch; the
kept rollouts are scored in one teacher-forced pass against the prompt cache
(`model.policy_logp.response_logprobs`, the function the trainer recomputes them with).

Log-prob conventions, per response token:

- ``old_logp``: log π_old(y_t) at temperature 1 under ``RolloutConfig.policy``: the constrained policy
  (softmax renormalised over the tokens the trie allows; forced tokens get 0) or the raw one (the whole
  vocabulary). The trainer recomputes the same quantity as log π_θ, so the PPO ratio starts at 1.
- ``behaviour_logp``: the log-prob under the distribution actually sampled from (trie mask and
  temperature; forced tokens get 0). Beam search draws nothing, so in beam mode it equals ``old_logp``.
- ``item_prob = exp(sum_t behaviour_logp)``: the probability that one draw yields the item (unconstrained
  mode: that token sequence; beam mode: P(item | prompt), the score beam search ranks by).
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from riser_lite.items.prompts import example_prompt
from riser_lite.model.decoding import beam_search, encode_prompts, inference
from riser_lite.model.forward import (
    LOGIT_BUDGET,
    cached_forward,
    check_policy,
    pad_columns,
    policy_log_softmax,
    trie_nodes,
    valid_token_mask,
)
from riser_lite.model.policy_logp import response_logprobs
from riser_lite.rl.rewards import first_appearance

MODES = ("sample", "dedup", "beam", "unconstrained")
_COMPACT_FRACTION = 0.25  # drop finished rows from the batch once this fraction of it is finished


@dataclass
class RolloutConfig:
    mode: str = "dedup"  # "sample" (GRPO) | "dedup" (RISER) | "beam" (ReRe) | "unconstrained" (no trie)
    group_size: int = 8  # G: rollouts kept per prompt
    oversample: int | None = None  # m: draws per prompt in "dedup" mode (>= G); None = 2 G
    temperature: float = 1.0  # sampling temperature (> 0); beam search ignores it
    max_new_tokens: int | None = None  # "unconstrained" only (the trie ends the others); None = longest title
    seed: int = 0  # seeds the torch.Generator of the draws
    max_batch_sequences: int = 1024  # prompts are processed in chunks of at most this many draws (memory)
    expand_cache: bool = True  # False: prefill each prompt once per draw, as `generate` does (benchmarks)
    policy: str = "constrained"  # log-probs recorded as old_logp (and beam ranking): "constrained" | "raw"

    def draws(self) -> int:
        """Samples drawn per prompt: m in dedup mode, G otherwise."""
        if self.mode == "dedup":
            return 2 * self.group_size if self.oversample is None else self.oversample
        return self.group_size

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.mode == "dedup" and self.draws() < self.group_size:
            raise ValueError(f"oversample (m = {self.oversample}) is less than group_size "
                             f"(G = {self.group_size}): dedup keeps G distinct items out of m draws")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (mode='beam' decodes deterministically), "
                             f"got {self.temperature}")
        check_policy(self.policy)
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 or None, got {self.max_new_tokens}")


@dataclass
class Groups:
    """P prompts x G rollouts. Per-rollout rows are prompt-major: row n = p * G + g (N = P G)."""

    prompt_ids: Tensor  # [P, S] long, left-padded
    prompt_mask: Tensor  # [P, S] long, 1 on real tokens
    items: Tensor  # [P, G] long item ids, -1 where the rollout is no catalogue item
    response_ids: Tensor  # [N, T] long, right-padded with the pad id (title, newline, EOS)
    response_mask: Tensor  # [N, T] bool
    old_logp: Tensor  # [N, T] float log π_old(y_t) at temperature 1 under config.policy (0 on padding)
    behaviour_logp: Tensor  # [N, T] float log-prob under the sampling distribution (0 on padding/forced)
    branching: Tensor  # [N, T] bool, True where the trie branches before the token (a real decision)
    duplicate_counts: Tensor  # [P, G] long: how many of the draws of this prompt were this item
    valid: Tensor  # [P, G] bool: the rollout is a catalogue item
    item_prob: Tensor  # [P, G] float: probability of this item in one draw (beam: P(item | prompt))
    num_samples_drawn: int  # draws per prompt (m in dedup mode, G otherwise)
    mode: str  # the RolloutConfig.mode that produced the groups
    texts: list[str] | None = None  # unconstrained mode: the decoded responses, row-major like response_ids

    @property
    def num_prompts(self) -> int:
        return self.items.shape[0]

    @property
    def group_size(self) -> int:
        return self.items.shape[1]

    @property
    def prompt_index(self) -> Tensor:
        """[N] long: the prompt of each rollout row."""
        return torch.arange(self.num_prompts).repeat_interleave(self.group_size)

    def expanded_prompts(self) -> tuple[Tensor, Tensor]:
        """(prompt_ids [N, S], prompt_mask [N, S]): one prompt row per rollout, for teacher forcing."""
        index = self.prompt_index
        return self.prompt_ids[index], self.prompt_mask[index]

    def select(self, prompts: Tensor | list[int]) -> Groups:
        """The groups of some prompts (indices or a [P] bool mask), e.g. learnable vs non-learnable ones."""
        index = torch.as_tensor(prompts)
        index = index.nonzero().squeeze(1) if index.dtype == torch.bool else index.long()
        rows = (index[:, None] * self.group_size + torch.arange(self.group_size)).reshape(-1)
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("prompt_ids", "prompt_mask", "items", "duplicate_counts", "valid", "item_prob"):
                value = value[index]
            elif isinstance(value, Tensor):
                value = value[rows]
            elif f.name == "texts" and value is not None:
                value = [value[int(r)] for r in rows]
            values[f.name] = value
        return Groups(**values)


# Padding of the [N, T] fields of Groups when groups of different response widths are joined.
_ROW_PADDING = {"response_mask": False, "old_logp": 0.0, "behaviour_logp": 0.0, "branching": False}


def concat_groups(parts: list[Groups], pad_id: int) -> Groups:
    """Groups of consecutive prompts joined in order, responses right-padded to the widest part."""
    width = max(part.response_ids.shape[1] for part in parts)
    padding = {**_ROW_PADDING, "response_ids": int(pad_id)}
    merged = {}
    for name in (f.name for f in fields(Groups)):
        values = [getattr(part, name) for part in parts]
        if name in padding:
            merged[name] = torch.cat([pad_columns(v, width, padding[name]) for v in values])
        elif isinstance(values[0], Tensor):
            merged[name] = torch.cat(values)
        elif name == "texts":
            merged[name] = None if values[0] is None else [text for v in values for text in v]
        else:  # num_samples_drawn, mode: the same in every part
            merged[name] = values[0]
    return Groups(**merged)


# ---------------------------------------------------------------------------------------------- helpers

_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class _ItemTables:
    item_ids: Tensor  # [I] sorted item ids
    tokens: Tensor  # [I, L] response ids, right-padded with the pad id
    lengths: Tensor  # [I] response lengths
    sole_item: Tensor  # [num_nodes] the only item below a trie node, -1 if several


def _item_tables(item_space) -> _ItemTables:
    """Per-item tensors and, per trie node, the item it determines (computed once per ItemSpace)."""
    tables = _TABLES.get(item_space)
    if tables is None:
        tokens, mask, _ = item_space.padded_tokens()
        trie, item_ids = item_space.trie, torch.tensor(item_space.item_ids, dtype=torch.long)
        node = torch.zeros(len(item_ids), dtype=torch.long)
        visited, owners = [node.clone()], [item_ids]
        for col in range(tokens.shape[1]):  # walk all items' paths at once, one token column per step
            node = torch.where(mask[:, col], trie.step(node, tokens[:, col]), node)
            visited.append(node[mask[:, col]])
            owners.append(item_ids[mask[:, col]])
        visited, owners = torch.cat(visited), torch.cat(owners)
        passes = torch.bincount(visited, minlength=trie.num_nodes)  # items whose path passes each node
        owner = torch.full((trie.num_nodes,), -1, dtype=torch.long).scatter_(0, visited, owners)
        sole = torch.where(passes == 1, owner, torch.full_like(owner, -1))
        tables = _ItemTables(item_ids, tokens, mask.sum(1), sole)
        _TABLES[item_space] = tables
    return tables


# ---------------------------------------------------------------------------------------------- decoding
def _draw(model, item_space, last_logits, cache, prompt_mask, rows, cfg, generator, constrained):
    """Decode one draw per entry of ``rows`` (the cache row of its prompt), all draws in one batch.

    last_logits: [R, V] logits after each prompt; cache: KV cache with R rows (consumed); prompt_mask [R, S];
    rows: [B] long. Returns (items [B], None) (constrained) or (tokens [B, T_max], lengths [B]).
    """
    device, trie = last_logits.device, item_space.trie
    tokenizer = item_space.tokenizer
    pad, eos = int(tokenizer.pad_token_id), int(tokenizer.eos_token_id)
    sole_item = _item_tables(item_space).sole_item
    num = rows.numel()
    max_steps = item_space.max_response_len
    if not constrained and cfg.max_new_tokens:
        max_steps = cfg.max_new_tokens
    draw = torch.arange(num)  # draw index of each batch row
    node = torch.zeros(num, dtype=torch.long)  # trie node of each batch row
    logit_rows = rows.to(device)  # row of `logits` holding each batch row's next-token logits
    cache_rows = rows.to(device)  # row of `cache` holding each batch row's keys and values
    attn = prompt_mask[rows].to(device)
    pos = prompt_mask.sum(1)[rows].to(device)  # position id of the next token
    live = torch.ones(num, dtype=torch.bool)
    logits = last_logits
    items = sole_item[node].clone() if constrained else None  # a one-item catalogue needs no decision
    if constrained:
        live &= items < 0
    tokens = torch.full((num, max_steps), pad, dtype=torch.long)
    lengths = torch.zeros(num, dtype=torch.long)
    for t in range(max_steps):
        if not live.any():
            break
        idx = live.nonzero().squeeze(1)
        valid = valid_token_mask(trie, node[idx], logits.shape[1]).to(device) if constrained else None
        step_logits = logits[logit_rows[idx.to(device)]]
        step_logp = policy_log_softmax(step_logits, valid, cfg.temperature)  # what is drawn from
        chosen = torch.multinomial(step_logp.exp(), 1, generator=generator)
        chosen = chosen.squeeze(1).cpu()
        if constrained:  # walk the trie; a node below which only one item lies ends the draw
            node[idx] = trie.step(node[idx], chosen)
            determined = sole_item[node[idx]]
            done = determined >= 0
            items[draw[idx[done]]] = determined[done]
        else:
            tokens[draw[idx], t] = chosen
            lengths[draw[idx]] = t + 1
            done = (chosen == eos) | (t + 1 >= max_steps)
        live[idx[done]] = False
        if not live.any():
            break
        step_tokens = torch.full((live.numel(),), pad, dtype=torch.long)
        step_tokens[idx] = chosen
        if t == 0 or (~live).float().mean() >= _COMPACT_FRACTION:
            # Keep only live rows: expands the prompt cache to the draws on the first step, then compacts.
            keep = live.nonzero().squeeze(1)
            cache.batch_select_indices(cache_rows[keep.to(device)])
            draw, node, live, step_tokens = draw[keep], node[keep], live[keep], step_tokens[keep]
            attn, pos = attn[keep.to(device)], pos[keep.to(device)]
            cache_rows = torch.arange(keep.numel(), device=device)
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        logits, cache = cached_forward(model, step_tokens[:, None].to(device), attn, pos[:, None], cache)
        logits = logits[:, -1]
        logit_rows = torch.arange(live.numel(), device=device)
        pos = pos + 1
    return (items, None) if constrained else (tokens, lengths)


def _dedup_order(items: Tensor, group_size: int) -> Tensor:
    """Indices of the kept draws: distinct items in order of first appearance, then repeats in draw order.

    items: [P, n] long. Returns [P, G] long indices into the n draws.
    """
    n = items.shape[1]
    is_first = first_appearance(items)
    key = (~is_first).long() * n + torch.arange(n)
    return key.argsort(dim=1)[:, :group_size]


def _score(model, prompt_cache, last_logits, prompt_mask, rows, responses, response_mask, trie, *,
           temperature, constrained, policy):
    """Teacher-forced per-token log-probs of chosen responses, against the rollouts' prompt prefill.

    rows [N]: cache row of each response; responses [N, T] right-padded; response_mask [N, T] bool;
    policy: "constrained" | "raw", the policy ``old_logp`` is recorded under (see `model.forward`).
    Returns (old_logp, behaviour_logp, branching), each [N, T] (zeros / False on padding).
    """
    num, length = responses.shape
    nodes = trie_nodes(trie, responses)  # trie node before each token, -1 once off the trie
    branching = response_mask & (nodes >= 0) & (trie.num_children[nodes.clamp(min=0)] >= 2)
    old, behaviour = torch.zeros(num, length), torch.zeros(num, length)
    on_trie = trie if constrained else None  # unconstrained rollouts: the raw policy
    # The sampling distribution differs from the recorded policy only at another temperature, or when the
    # raw policy is recorded for draws from the constrained one; then it costs a second pass.
    sampled_differently = temperature != 1.0 or (constrained and policy == "raw")

    def score(part, scored_policy, consume, temperature=1.0):
        cache = prompt_cache if consume else copy.deepcopy(prompt_cache)  # a pass consumes its cache
        return response_logprobs(model, None, prompt_mask, responses[part], response_mask[part], rows[part],
                                 trie=on_trie, policy=scored_policy, temperature=temperature,
                                 prefill=(last_logits, cache))[0]

    chunk = max(1, LOGIT_BUDGET // max(length * last_logits.shape[1], 1))  # bounds the logits in memory
    for start in range(0, num, chunk):
        part, final = slice(start, start + chunk), start + chunk >= num
        old[part] = score(part, policy, consume=final and not sampled_differently)
        if sampled_differently:
            behaviour[part] = score(part, "constrained", final, temperature)
    if not sampled_differently:
        behaviour = old.clone()
    return old, behaviour, branching


# ---------------------------------------------------------------------------------------------- the engine

def rollout(model, item_space, prompt_ids: Tensor, prompt_mask: Tensor,
            config: RolloutConfig | None = None) -> Groups:
    """A group of G rollouts for each of P prompts.

    model: any HF causal LM (peft-wrapped or not) whose vocabulary matches ``item_space.tokenizer``;
    item_space: the catalogue (`riser_lite.items.catalog.ItemSpace`); prompt_ids, prompt_mask: [P, S]
    left-padded; config: defaults to RISER's dedup mode, G = 8. In dedup mode the m draws are exactly those
    of sample mode with G = m and the same seed; de-duplication then selects among them.
    """
    cfg = config or RolloutConfig()
    cfg.validate()
    prompt_ids, prompt_mask = torch.as_tensor(prompt_ids).long(), torch.as_tensor(prompt_mask).long()
    if prompt_ids.dim() != 2 or prompt_ids.shape != prompt_mask.shape:
        raise ValueError(f"expected prompt_ids and prompt_mask of one shape [P, S], got "
                         f"{tuple(prompt_ids.shape)} and {tuple(prompt_mask.shape)}")
    if (prompt_mask.sum(1) == 0).any():
        raise ValueError("every prompt needs at least one real token (a row of prompt_mask is all zero)")
    if prompt_ids.shape[1] and (prompt_mask[:, -1] == 0).any():
        raise ValueError("prompts must be left-padded: the last column of prompt_mask must be all ones")
    if cfg.mode == "beam":
        return _beam_groups(model, item_space, prompt_ids, prompt_mask, cfg)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg.seed)
    per_chunk = max(1, cfg.max_batch_sequences // cfg.draws())
    parts = [slice(start, start + per_chunk) for start in range(0, prompt_ids.shape[0], per_chunk)]
    with inference(model):  # no dropout in the draws
        chunks = [_rollout_chunk(model, item_space, prompt_ids[part], prompt_mask[part], cfg, generator)
                  for part in parts]
    return concat_groups(chunks, item_space.tokenizer.pad_token_id)


def _rollout_chunk(model, item_space, ids, mask, cfg, generator) -> Groups:
    """Draw, select and score the groups of a chunk of prompts (ids, mask: [p, S] left-padded)."""
    device = next(model.parameters()).device
    keep_from = int(mask.bool().any(0).float().argmax())  # drop columns that are padding in every row
    p_ids, p_mask = ids[:, keep_from:].to(device), mask[:, keep_from:].to(device)
    num_prompts, draws, group = ids.shape[0], cfg.draws(), cfg.group_size
    if cfg.expand_cache:  # prefill once per prompt; the draws share its cache rows
        rows = torch.arange(num_prompts).repeat_interleave(draws)
    else:  # prefill every draw's copy of the prompt, as `generate(num_return_sequences=...)` does
        p_ids, p_mask = p_ids.repeat_interleave(draws, 0), p_mask.repeat_interleave(draws, 0)
        rows = torch.arange(num_prompts * draws)
    last_logits, cache = cached_forward(model, p_ids, p_mask, last_only=True)
    last_logits = last_logits[:, -1]
    prompt_cache = copy.deepcopy(cache)  # the draws extend `cache`; scoring needs the prompts alone
    constrained = cfg.mode != "unconstrained"
    out, lengths = _draw(model, item_space, last_logits, cache, p_mask, rows, cfg, generator,
                                   constrained)
    texts = None
    if constrained:
        raw_items = out.view(num_prompts, draws)
        keep = (_dedup_order(raw_items, group) if cfg.mode == "dedup"
                else torch.arange(group).expand(num_prompts, -1))
        kept_draws = (torch.arange(num_prompts)[:, None] * draws + keep).reshape(-1)
        items = raw_items.gather(1, keep)
        tables = _item_tables(item_space)
        row_of_item = torch.searchsorted(tables.item_ids, items.reshape(-1))
        lengths = tables.lengths[row_of_item]
        responses = tables.tokens[row_of_item, : int(lengths.max())]
        counts = (raw_items[:, :, None] == items[:, None, :]).sum(1)
    else:
        tokenizer = item_space.tokenizer
        texts = [tokenizer.decode(out[i, : lengths[i]].tolist(), skip_special_tokens=True)
                 for i in range(out.shape[0])]
        raw_items = torch.tensor([item_space.parse(text) for text in texts], dtype=torch.long)
        items = raw_items = raw_items.view(num_prompts, draws)
        kept_draws = torch.arange(num_prompts * draws)
        responses = out[:, : int(lengths.max())]
        # Repeats: the same item, or for invalid rollouts the same text.
        keys = [i if i >= 0 else text for i, text in zip(raw_items.reshape(-1).tolist(), texts, strict=True)]
        rows_of_keys = [keys[p * draws: (p + 1) * draws] for p in range(num_prompts)]
        counts = torch.tensor([[row.count(key) for key in row] for row in rows_of_keys], dtype=torch.long)
    response_mask = torch.arange(responses.shape[1]) < lengths[:, None]
    responses = responses.masked_fill(~response_mask, int(item_space.tokenizer.pad_token_id))
    old, behaviour, branching = _score(
        model, prompt_cache, last_logits, p_mask, rows[kept_draws], responses, response_mask, item_space.trie,
        temperature=cfg.temperature, constrained=constrained, policy=cfg.policy)
    return Groups(prompt_ids=ids, prompt_mask=mask, items=items, response_ids=responses,
                  response_mask=response_mask, old_logp=old, behaviour_logp=behaviour, branching=branching,
                  duplicate_counts=counts, valid=items >= 0, num_samples_drawn=draws, mode=cfg.mode,
                  item_prob=behaviour.sum(1).exp().view(items.shape), texts=texts)


def _beam_groups(model, item_space, prompt_ids, prompt_mask, cfg) -> Groups:
    """ReRe-style groups: the G best items of trie-constrained beam search (`model.decoding`), in beam
    order. Beam search already returns each token's raw log-prob, so no further forward pass is needed."""
    group = cfg.group_size
    result = beam_search(model, item_space, prompt_ids, prompt_mask, num_beams=group, policy=cfg.policy)
    items = result.items[:, :group]  # -1 where the catalogue has fewer than G items
    num, width = items.numel(), result.tokens.shape[2]
    response_mask = result.token_mask[:, :group].reshape(num, width)
    length = max(int(response_mask.sum(1).max()), 1)
    response_ids = result.tokens[:, :group].reshape(num, width)[:, :length]
    response_mask = response_mask[:, :length]
    old_logp = result.token_logprobs[:, :group].reshape(num, width)[:, :length].float()
    branching = torch.zeros_like(response_mask)
    for n, item in enumerate(items.reshape(-1).tolist()):
        if item >= 0:
            flags = item_space.branching[item]
            branching[n, : len(flags)] = torch.tensor(flags)
    valid = items >= 0
    return Groups(prompt_ids=prompt_ids, prompt_mask=prompt_mask, items=items, response_ids=response_ids,
                  response_mask=response_mask, old_logp=old_logp, behaviour_logp=old_logp.clone(),
                  branching=branching, duplicate_counts=valid.long(), valid=valid,
                  item_prob=torch.where(valid, result.scores[:, :group].float().exp(), torch.zeros(())),
                  num_samples_drawn=group, mode="beam")


def encode_example_prompts(tokenizer, examples, catalog, max_history: int) -> tuple:
    """(prompt texts, prompt_ids [P, S], prompt_mask [P, S], targets [P] long) of dataset examples, with
    the one prompt template of SFT and evaluation (catalog: item id -> title)."""
    prompts = [example_prompt(ex, catalog, max_history) for ex in examples]
    ids, mask = encode_prompts(tokenizer, prompts)
    return prompts, ids, mask, torch.tensor([ex.target for ex in examples], dtype=torch.long)


def rollout_examples(model, item_space, examples, catalog, config: RolloutConfig | None = None,
                     max_history: int = 10) -> tuple[Groups, Tensor]:
    """Groups for dataset examples (prompts from their histories). Returns (groups, targets [P] long)."""
    _, ids, mask, targets = encode_example_prompts(item_space.tokenizer, examples, catalog, max_history)
    return rollout(model, item_space, ids, mask, config), targets
