"""Speed of the evaluation decoders, each against its baseline in the same process.

1. Exact scoring of the whole catalogue (log P(item | prompt) for every item):
   - naive: one forward of prompt + response per (prompt, item) pair (`score_items_naive` in tests/naive.py);
   - shared cache: each prompt run once, its KV cache copied to every item of a batch, the responses
     (padded, sorted by length) run against it; every item token is computed;
   - tree (`score_all_items`, the library's choice): each prompt run once, the trie fed as tree-shaped
     sequences against the prompt cache; every shared prefix computed once, nothing copied per item.
2. Trie-constrained beam search (`beam_search`) against `model.generate(num_beams=K,
   prefix_allowed_tokens_fn=...)`, which prefills every prompt K times and calls python once per beam per
   step; the items returned are checked to be identical.

Run: ``python benchmarks/bench_eval.py [--preset tiny] [--dataset synthetic|lastfm] [--prompts 16]``.
On a busy machine, ``--threads 1`` gives steadier ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from riser_lite.data import load_dataset
from riser_lite.items.catalog import ItemSpace
from riser_lite.items.prompts import example_prompt
from riser_lite.model.backbone import build_backbone
from riser_lite.model.decoding import (
    beam_search,
    encode_prompts,
    prefix_allowed_tokens_fn,
    score_all_items,
)
from riser_lite.model.forward import cached_forward

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the naive reference
from naive import score_items_naive  # noqa: E402


def score_shared_cache(model, item_space, input_ids, attention_mask, token_budget: int = 8192):
    """The alternative design: prompt cache expanded over item batches (every item token computed)."""
    from transformers import DynamicCache

    tokens, mask, _ = item_space.padded_tokens()
    lengths = mask.sum(1)
    order = torch.argsort(lengths, stable=True)  # similar lengths together: little padding
    batch = input_ids.shape[0]
    scores = torch.zeros(batch, len(item_space))
    with torch.inference_mode():
        logits, cache = cached_forward(model, input_ids, attention_mask)
        root = torch.log_softmax(logits[:, -1], -1)
        saved = [(layer.keys, layer.values) for layer in cache.layers]
        prompt_len = attention_mask.sum(-1)
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and batch * (end - start + 1) * int(lengths[order[end]]) <= token_budget:
                end += 1
            rows = order[start:end]
            n, width = len(rows), int(lengths[rows].max())
            expanded = DynamicCache(ddp_cache_data=[(k.repeat_interleave(n, 0), v.repeat_interleave(n, 0))
                                                    for k, v in saved])
            ids = tokens[rows, : width - 1].repeat(batch, 1)  # [batch * n, width - 1]: no logits after EOS
            step_mask = torch.cat([attention_mask.repeat_interleave(n, 0),
                                   torch.ones(batch * n, width - 1, dtype=attention_mask.dtype)], 1)
            positions = prompt_len.repeat_interleave(n)[:, None] + torch.arange(width - 1)[None]
            logp = torch.log_softmax(cached_forward(model, ids, step_mask, positions, expanded)[0], -1)
            logp = logp.view(batch, n, width - 1, -1)
            targets = tokens[rows, 1:width]
            picked = logp.gather(-1, targets[None, :, :, None].expand(batch, -1, -1, 1)).squeeze(-1)
            picked = picked.masked_fill(~mask[rows, 1:width][None], 0.0)
            scores[:, rows] = picked.sum(-1) + root[:, tokens[rows, 0]]
            start = end
    return scores


def timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--dataset", default="synthetic", help="synthetic | lastfm (path: --data-path)")
    parser.add_argument("--data-path", default=None)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of the fast methods (best kept)")
    parser.add_argument("--naive-items", type=int, default=None,
                        help="time the naive scorer on this many items only and extrapolate (default: all)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dataset = load_dataset(args.dataset, args.data_path, seed=args.seed)
    model, tokenizer = build_backbone(dataset, args.preset, seed=args.seed)
    model.eval()
    space = ItemSpace(dataset.catalog, tokenizer)
    examples = dataset.splits["test"][: args.prompts]
    ids, mask = encode_prompts(tokenizer, [example_prompt(ex, dataset.catalog, dataset.max_history)
                                           for ex in examples])
    profile = space.branching_profile()
    internal = space.trie.num_nodes - 1 - len(space)
    print(f"{args.dataset}: {len(space)} items, {profile['tokens_per_item']:.1f} tokens/item, "
          f"{internal} internal trie nodes vs {int(sum(len(r) - 1 for r in space.response_ids.values()))} "
          f"item tokens needing logits; preset {args.preset}; {len(examples)} prompts "
          f"(mean {float(mask.sum(1).float().mean()):.0f} tokens); {torch.get_num_threads()} threads")

    # 1. Exact scoring.
    score_all_items(model, space, ids[:1], mask[:1], policy="raw")  # builds (and caches) the trie chunks
    t_tree, tree = timed(lambda: score_all_items(model, space, ids, mask, policy="raw"), args.repeats)
    t_shared, shared = timed(lambda: score_shared_cache(model, space, ids, mask), args.repeats)
    if args.naive_items and args.naive_items < len(space):
        sub = ItemSpace({i: dataset.catalog[i] for i in space.item_ids[: args.naive_items]}, tokenizer)
        t_naive, naive = timed(lambda: score_items_naive(model, sub, ids, mask, policy="raw"))
        t_naive *= len(space) / len(sub)
        reference = tree[:, : len(sub)]
        note = f" (extrapolated from {len(sub)} items)"
    else:
        t_naive, naive = timed(lambda: score_items_naive(model, space, ids, mask, policy="raw"))
        reference, note = tree, ""
    err = max(float((tree - shared).abs().max()), float((reference - naive).abs().max()))
    print("\nexact scoring of the whole catalogue")
    print(f"  naive forward per item : {t_naive:8.2f} s{note}")
    print(f"  shared prompt cache    : {t_shared:8.2f} s   {t_naive / t_shared:6.1f}x faster than naive")
    print(f"  trie tree (library)    : {t_tree:8.2f} s   {t_naive / t_tree:6.1f}x faster than naive, "
          f"{t_shared / t_tree:.2f}x faster than shared cache")
    print(f"  max |difference| of log-probs: {err:.2e}; exp-sum over items (prompt 0): "
          f"{float(tree[0].exp().sum()):.3g}")

    # 2. Beam search.
    k = args.beams
    t_beam, ours = timed(lambda: beam_search(model, space, ids, mask, num_beams=k, policy="raw"),
                          args.repeats)

    def generate():
        with torch.inference_mode():
            return model.generate(
                input_ids=ids, attention_mask=mask, num_beams=k, num_return_sequences=k, do_sample=False,
                length_penalty=0.0, early_stopping=False, max_new_tokens=space.max_response_len,
                prefix_allowed_tokens_fn=prefix_allowed_tokens_fn(space, ids.shape[1]),
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)

    t_gen, out = timed(generate)
    generated = out[:, ids.shape[1]:].reshape(len(examples), k, -1).tolist()
    same = 0
    for b, rows in enumerate(generated):
        theirs = []
        for row in rows:
            end = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
            theirs.append(space.trie.walk(row[:end])[0])
        same += theirs == ours.items[b].tolist()
    print(f"\ntrie-constrained beam search, K = {k}")
    print(f"  generate + prefix_allowed_tokens_fn : {t_gen:8.2f} s")
    print(f"  beam_search (library)               : {t_beam:8.2f} s   {t_gen / t_beam:6.1f}x faster")
    print(f"  identical ranked items on {same}/{len(examples)} prompts")


if __name__ == "__main__":
    main()
