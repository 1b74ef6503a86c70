"""Rollout speed: riser_lite's engine against `transformers` `generate` with `prefix_allowed_tokens_fn`.

The baseline is how public recommendation codes draw trie-constrained rollouts:
`generate(do_sample=True, num_return_sequences=G)` for sampling and
`generate(num_beams=G, num_return_sequences=G)` for beam search, each with a python
`prefix_allowed_tokens_fn` that looks the generated prefix up in a dict of allowed next tokens
(`model.decoding.prefix_allowed_tokens_fn`). Both run in this process on the same model, prompts and
G, their calls alternating; the table gives rollouts per second (P prompts x G items per call, median of
the repeats), the ratio ours / generate, the fraction of rollouts that are catalogue items and, for beam
search, the fraction of prompts where both return the same items in the same order.

The engine's time includes the per-token log-probs it returns (old_logp, behaviour_logp); the baseline's
does not (it would need one more forward pass for them), which favours the baseline. Two more rows show
the engine's other options against the same sampling baseline: dedup (m = 2G draws, G kept) and sampling
with the prompt prefilled once per draw instead of once per prompt (what the shared prompt cache saves).

Usage:
    python benchmarks/bench_rollout.py            # tiny preset and the larger (hidden 512, 8 layers) model
    python benchmarks/bench_rollout.py --quick    # a short run
    python benchmarks/bench_rollout.py --prompts 16 --group-size 8 --repeats 3
    python benchmarks/bench_rollout.py --models smollm2 --prompts 8 --threads 1   # the real model
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from riser_lite.items.catalog import ItemSpace  # noqa: E402
from riser_lite.items.prompts import format_prompt  # noqa: E402
from riser_lite.model.backbone import (  # noqa: E402
    build_backbone,
    get_preset,
    load_pretrained,  # noqa: E402
)
from riser_lite.model.decoding import encode_prompts, prefix_allowed_tokens_fn  # noqa: E402
from riser_lite.model.pretrained import NAMED_BACKBONES  # noqa: E402
from riser_lite.rl.rollout import RolloutConfig, rollout  # noqa: E402

LASTFM_TITLES = ROOT.parent / "shared" / "data" / "lastfm" / "id2name.txt"
SYLLABLES = ["ka", "lo", "mi", "ren", "tas", "vo", "zu", "bel", "dor", "fin", "gar", "hul", "ist", "jon"]
WORDS = ["The", "Night", "Blue", "Orchestra", "Band", "Quartet", "Sound", "System", "Club", "Project"]


def catalogue(num_items: int, seed: int) -> dict[int, str]:
    """LastFM artist names when the shared data is present, else synthetic band names."""
    if LASTFM_TITLES.is_file():
        titles = {}
        for line in LASTFM_TITLES.read_text(encoding="utf-8").splitlines():
            key, _, name = line.partition("::")
            if name.strip():
                titles[int(key)] = name.strip()
        items = sorted(titles)[:num_items]
        return {i: titles[i] for i in items}
    rng = random.Random(seed)
    titles: dict[int, str] = {}
    while len(titles) < num_items:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()
        if rng.random() < 0.5:
            name = f"{name} {rng.choice(WORDS)}"
        titles[len(titles)] = name
    return titles


def make_prompts(titles: dict[int, str], num_prompts: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names = [titles[i] for i in sorted(titles)]
    return [format_prompt(rng.sample(names, 10)) for _ in range(num_prompts)]


def generate_rollouts(model, space, ids, mask, group: int, beam: bool, seed: int, allowed):
    """Items [P, G] from `generate` (-1 where the sequence is no catalogue item)."""
    torch.manual_seed(seed)
    max_len = space.max_response_len
    if beam:  # the settings of riser_lite.model.decoding.beam_search (and of the evaluation protocol)
        kwargs = dict(num_beams=group, do_sample=False, length_penalty=0.0, early_stopping=False)
    else:  # plain sampling at temperature 1 (generate's default top_k=50 would change the distribution)
        kwargs = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=max_len, num_return_sequences=group,
        prefix_allowed_tokens_fn=allowed,
        pad_token_id=space.tokenizer.pad_token_id, eos_token_id=space.tokenizer.eos_token_id, **kwargs)
    items = []
    for row in out[:, ids.shape[1]:].tolist():
        item, _ = space.trie.walk(row[: row.index(space.tokenizer.eos_token_id) + 1]
                                  if space.tokenizer.eos_token_id in row else row)
        items.append(item)
    return torch.tensor(items).view(ids.shape[0], group)


def timed(fns, repeats: int) -> list[tuple[float, object]]:
    """Median wall time and last result of each function. Calls alternate between the functions, so a
    change in machine load during the run affects all of them alike."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    results: list[object] = [None] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            results[k] = fn()
            times[k].append(time.perf_counter() - start)
    return [(statistics.median(t), r) for t, r in zip(times, results, strict=True)]


def bench_model(name, preset, num_items, args) -> list[dict]:
    titles = catalogue(num_items, args.seed)
    if preset in NAMED_BACKBONES:  # a real pretrained model and its own tokenizer
        model, tokenizer = load_pretrained(preset)
    else:
        model, tokenizer = build_backbone(titles, preset=preset, seed=args.seed)
    model.eval()
    space = ItemSpace(titles, tokenizer)
    ids, mask = encode_prompts(tokenizer, make_prompts(titles, args.prompts, args.seed))
    group, num = args.group_size, args.prompts * args.group_size
    params = sum(p.numel() for p in model.parameters())
    print(f"\n{name}: {params / 1e6:.1f}M parameters, {len(space)} items, vocab {len(tokenizer)}, "
          f"prompt length {ids.shape[1]}, longest title {space.max_response_len} tokens, "
          f"P={args.prompts}, G={group}", flush=True)
    allowed = prefix_allowed_tokens_fn(space, ids.shape[1])  # built once, its memo shared by all calls
    rows = []
    modes = [("sample", False), ("beam", True)]
    try:
        import riser_lite.model.decoding  # noqa: F401  (beam mode calls its beam search)
    except ModuleNotFoundError:
        print("riser_lite.model.decoding is not available: beam search is skipped")
        modes = modes[:1]
    for mode, beam in modes:
        # Beams ranked as generate ranks them (raw log-probs), so that "same beams" compares like with like.
        policy = "raw" if beam else "constrained"
        cfg = RolloutConfig(mode=mode, group_size=group, seed=args.seed, policy=policy)
        with torch.inference_mode():
            (ours_t, ours), (base_t, base) = timed([
                lambda cfg=cfg: rollout(model, space, ids, mask, cfg),
                lambda beam=beam: generate_rollouts(model, space, ids, mask, group, beam, args.seed,
                                                    allowed)], args.repeats)
        rows.append(dict(model=name, mode=mode, ours=num / ours_t, generate=num / base_t,
                         ratio=base_t / ours_t,
                         ours_valid=ours.valid.float().mean().item(),
                         generate_valid=(base >= 0).float().mean().item(),
                         same_items=(ours.items == base).all(1).float().mean().item() if beam else None))
        print_row(rows[-1])
    # The engine's other options, against the same sampling baseline.
    sample_base = rows[0]["generate"]
    for label, cfg in (
        ("dedup m=2G", RolloutConfig(mode="dedup", group_size=group, seed=args.seed)),
        ("sample, prompt prefilled per draw", RolloutConfig(mode="sample", group_size=group, seed=args.seed,
                                                            expand_cache=False)),
    ):
        with torch.inference_mode():
            [(ours_t, ours)] = timed([lambda cfg=cfg: rollout(model, space, ids, mask, cfg)], args.repeats)
        rows.append(dict(model=name, mode=label, ours=num / ours_t, generate=sample_base,
                         ratio=(num / ours_t) / sample_base, ours_valid=ours.valid.float().mean().item(),
                         generate_valid=rows[0]["generate_valid"]))
        print_row(rows[-1])
    return rows


def print_header():
    print(f"{'model':<8} {'mode':<36} {'ours/s':>9} {'generate/s':>11} {'ratio':>7} {'valid ours':>11} "
          f"{'valid gen':>10} {'same beams':>11}")


def print_row(r):
    same = "" if r.get("same_items") is None else f"{100 * r['same_items']:>10.1f}%"
    print(f"{r['model']:<8} {r['mode']:<36} {r['ours']:>9.1f} {r['generate']:>11.1f} {r['ratio']:>6.2f}x "
          f"{100 * r['ours_valid']:>10.1f}% {100 * r['generate_valid']:>9.1f}% {same:>11}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer prompts, one repeat, smaller catalogue")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per call (default 16; quick 4)")
    parser.add_argument("--group-size", type=int, default=8, help="G, rollouts per prompt")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (median)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; 1 is steadier on a busy machine)")
    parser.add_argument("--models", nargs="+", default=["tiny", "large"],
                        choices=["tiny", "large", "smollm2"],
                        help="smollm2: the real SmolLM2-135M-Instruct with its own tokenizer (offline cache)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.prompts = args.prompts or (4 if args.quick else 16)
    args.repeats = args.repeats or (1 if args.quick else 3)
    torch.manual_seed(args.seed)
    large = get_preset("small")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; titles from "
          f"{'LastFM' if LASTFM_TITLES.is_file() else 'a synthetic generator'}")
    models = {"tiny": ("tiny", 1000 if args.quick else 2000), "large": (large, 2000 if args.quick else 5000),
              "smollm2": ("smollm2-135m", 1000 if args.quick else 4606)}
    rows = [row for name in args.models for row in bench_model(name, *models[name], args)]
    print("\nSummary (rollouts per second; ratio = ours / generate):")
    print_header()
    for r in rows:
        print_row(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
