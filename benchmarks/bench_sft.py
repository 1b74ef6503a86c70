"""SFT speed on the bundled synthetic data: padded vs length-bucketed batches, then a full timed run.

    python benchmarks/bench_sft.py                      # tiny preset: comparison + full SFT + evaluation
    python benchmarks/bench_sft.py --steps 20 --no-full # only the batching comparison

Part 1 trains the same initial model for `--steps` steps on plain shuffled batches and on length-bucketed
batches, alternating rounds in this process so machine load hits both alike, and prints tokens/s, the
share of padding and the ratio of the estimated epoch times. Part 2 runs `train_sft` with the default
config (or `--epochs`), printing each epoch's training time, tokens/s and validation loss, the total wall
time, and (if `riser_lite.eval.evaluate` is available) HR@10 / NDCG@10 on the test split next to popularity.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from riser_lite.data import load_dataset
from riser_lite.model.backbone import build_backbone, count_parameters
from riser_lite.sft import SFTConfig, collate, encode_examples, plan_batches, response_loss, train_sft


def time_batches(model, train, plan, pad_id, lr=1e-3) -> dict:
    """Train on the batches of `plan`; return seconds, real tokens and padded cells."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    seconds, tokens, cells = 0.0, 0, 0
    for indices in plan:
        batch = collate([train[i] for i in indices], pad_id)
        tic = time.perf_counter()
        loss, _ = response_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds += time.perf_counter() - tic
        tokens += int(batch["attention_mask"].sum())
        cells += batch["attention_mask"].numel()
    return {"seconds": seconds, "tokens": tokens, "cells": cells, "steps": len(plan)}


def compare_batching(dataset, preset: str, steps: int, rounds: int, config: SFTConfig) -> dict:
    model, tok = build_backbone(dataset, preset, seed=0)
    train = encode_examples(dataset.splits["train"], dataset.catalog, tok, dataset.max_history)
    lengths = [len(p) + len(r) for p, r in train]
    order = np.random.default_rng([0, 0]).permutation(len(lengths))  # plain shuffled batches
    size = config.batch_size
    plans = {"padded": [order[i:i + size].tolist() for i in range(0, len(order), size)],
             "bucketed": plan_batches(lengths, size, 0, 0)}
    epoch_steps = len(plans["padded"])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    totals = {mode: {"seconds": 0.0, "tokens": 0, "cells": 0, "steps": 0} for mode in plans}
    time_batches(model, train, plans["padded"][:3], tok.pad_token_id)  # warm-up (allocator, kernels)
    for r in range(rounds):
        for mode, plan in plans.items():
            model.load_state_dict(state)
            part = plan[r * steps:(r + 1) * steps]
            for key, value in time_batches(model, train, part, tok.pad_token_id).items():
                totals[mode][key] += value
    report = {}
    for mode, t in totals.items():
        all_cells = sum(len(b) * max(lengths[i] for i in b) for b in plans[mode])
        report[mode] = {"tokens_per_s": t["tokens"] / t["seconds"],
                        "padding_share": 1 - sum(lengths) / all_cells,
                        "epoch_seconds_est": t["seconds"] / t["steps"] * epoch_steps}
    report["epoch_time_ratio_padded_over_bucketed"] = (report["padded"]["epoch_seconds_est"]
                                                       / report["bucketed"]["epoch_seconds_est"])
    return report


def full_run(dataset, preset: str, config: SFTConfig, evaluate_after: bool, seed: int) -> dict:
    start = time.perf_counter()
    model, tok = build_backbone(dataset, preset, seed=seed)
    build_seconds = time.perf_counter() - start
    records: list[dict] = []
    result = train_sft(dataset, model, tok, config, on_step=records.append, seed=seed)
    wall = time.perf_counter() - start
    epochs, last_time, last_tokens = [], 0.0, 0
    tokens_so_far = 0
    for r in records:
        if r["event"] == "train":
            tokens_so_far += r["tokens"]
            epoch_time = r["time"]
        elif r["event"] == "valid":
            seconds = epoch_time - last_time
            epochs.append({"epoch": r["epoch"], "train_seconds": round(seconds, 1),
                           "tokens_per_s": round((tokens_so_far - last_tokens) / seconds),
                           "valid_loss": round(r["valid_loss"], 4)})
            last_time, last_tokens = epoch_time, tokens_so_far
    out = {"parameters": count_parameters(model), "build_seconds": round(build_seconds, 1),
           "wall_seconds": round(wall, 1), "epochs": epochs, **result.summary}
    if evaluate_after:
        try:
            from riser_lite.eval.evaluate import EvalConfig, evaluate
        except ImportError:
            return out
        model.eval()
        tic = time.perf_counter()
        ev = evaluate(model, tok, dataset, config=EvalConfig(split="test", protocol="beam", num_beams=20))
        def pick(summaries):
            return {k: round(summaries[k]["value"], 4) for k in ("hr@10", "ndcg@10")} if summaries else None

        # "realised": against the logged targets; "expected": under the synthetic oracle's distributions.
        out["test"] = {"model": {"realised": pick(ev.summaries), "expected": pick(ev.expected)},
                       **{name: {"realised": pick(b["summaries"]), "expected": pick(b.get("expected"))}
                          for name, b in ev.baselines.items()},
                       "valid_rate": ev.valid_rate, "seconds": round(time.perf_counter() - tic, 1)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--steps", type=int, default=15, help="steps per round in the batching comparison")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-compare", action="store_true")
    parser.add_argument("--no-full", action="store_true")
    parser.add_argument("--no-eval", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dataset = load_dataset("synthetic")
    config = replace(SFTConfig(progress=False),
                     **{k: v for k, v in {"epochs": args.epochs, "lr": args.lr}.items() if v is not None})
    n_train, n_valid = len(dataset.splits["train"]), len(dataset.splits["valid"])
    print(f"data: {dataset.name}, {n_train} train / {n_valid} valid "
          f"examples, {dataset.num_items} items; torch threads {torch.get_num_threads()}")
    if not args.no_compare:
        report = compare_batching(dataset, args.preset, args.steps, args.rounds, config)
        for mode in ("padded", "bucketed"):
            r = report[mode]
            print(f"{mode:>9}: {r['tokens_per_s']:8.0f} real tokens/s, "
                  f"padding {100 * r['padding_share']:4.1f} %, "
                  f"epoch ~{r['epoch_seconds_est']:.1f} s")
        print(f"epoch time ratio padded / bucketed: {report['epoch_time_ratio_padded_over_bucketed']:.2f}")
    if not args.no_full:
        out = full_run(dataset, args.preset, config, evaluate_after=not args.no_eval, seed=args.seed)
        for e in out["epochs"]:
            print(f"epoch {e['epoch']:5.2f}: train {e['train_seconds']:6.1f} s, "
                  f"{e['tokens_per_s']:6d} tokens/s, "
                  f"valid loss {e['valid_loss']:.4f}")
        print(json.dumps({k: v for k, v in out.items() if k != "epochs"}, indent=1))


if __name__ == "__main__":
    main()
