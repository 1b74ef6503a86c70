"""The paper's latency argument, measured: direct title generation vs a chain of thought first.

RISER answers with the item title directly. A reasoning recommender would first write a chain of thought
(CoT) of a few hundred tokens. This script times both on the same backbone, prompts and decoding loop
(`riser_lab.latency.measure_latency`: KV-cached greedy decoding of a fixed number of tokens; what the
CoT says does not matter for its cost, only its length, so an untrained model times like a trained one).

For each model (the `tiny` preset and the `small` one, hidden 512 / 8 layers) and batch size (1 and 16) it
prints tokens per recommendation, ms per recommendation and the ratio to direct answering. Direct answers
are `response_tokens` long: the catalogue's mean title length in tokens, plus newline and EOS.

Usage:
    python benchmarks/bench_latency.py                       # tiny and small, CoT 128/256/512, batch 1 and 16
    python benchmarks/bench_latency.py --quick               # a short run (tiny only, short CoTs)
    python benchmarks/bench_latency.py --cot 256 1024 --batch-sizes 1 --presets small --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from riser_lab.latency import format_latency_table, measure_latency  # noqa: E402
from riser_lite.data import load_dataset  # noqa: E402
from riser_lite.items.prompts import encode_response, example_prompt  # noqa: E402
from riser_lite.model.backbone import build_backbone, get_preset  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny model, CoT 64/128, batch 1 and 4, 1 repeat")
    p.add_argument("--presets", nargs="+", default=["tiny", "small"], help="backbone presets to time")
    p.add_argument("--cot", nargs="+", type=int, default=[128, 256, 512], help="CoT lengths in tokens")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16])
    p.add_argument("--repeats", type=int, default=3, help="timed batches per setting (median reported)")
    p.add_argument("--data", default="synthetic", help="dataset source whose titles and prompts are used")
    p.add_argument("--path", default=None, help="dataset folder (default: the source's default)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, help="also write all rows to this JSON file")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.presets, args.cot, args.batch_sizes, args.repeats = ["tiny"], [64, 128], [1, 4], 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dataset = load_dataset(args.data, args.path, seed=args.seed)
    examples = dataset.splits["test"][:64]
    prompts = [example_prompt(ex, dataset.catalog, dataset.max_history) for ex in examples]
    print(f"data {dataset.name}: {dataset.num_items} items, {len(prompts)} test prompts; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    all_rows = []
    for preset in args.presets:
        # Room for prompt + the longest CoT + answer (rotary positions; the preset's 512 may be too few).
        config = get_preset(preset, max_positions=max(1024, 2 * (max(args.cot) + 256)))
        model, tokenizer = build_backbone(dataset, config, seed=args.seed)
        lengths = [len(encode_response(tokenizer, title)) for title in dataset.catalog.values()]
        response_tokens = round(statistics.mean(lengths))
        params = sum(p.numel() for p in model.parameters())
        print(f"\n{preset}: {params / 1e6:.1f}M parameters, hidden {config.hidden_size}, {config.num_layers} "
              f"layers; answer = {response_tokens} tokens (mean title + newline + EOS; max {max(lengths)})",
              flush=True)
        for batch_size in args.batch_sizes:
            start = time.perf_counter()
            rows = measure_latency(model, tokenizer, prompts, response_tokens, args.cot,
                                   batch_size=batch_size, repeats=args.repeats)
            print(format_latency_table(rows))
            print(f"  (prompt {rows[0]['prompt_tokens']:.0f} tokens on average; "
                  f"{time.perf_counter() - start:.0f} s)", flush=True)
            all_rows += [{"preset": preset, "parameters": params, **row} for row in rows]
    if args.json:
        Path(args.json).write_text(json.dumps(all_rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
