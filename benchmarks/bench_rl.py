"""RL trainer benchmark: speed per step, and GRPO vs ReRe vs RISER under one rollout budget.

Speed (default): a few RL steps of each algorithm from the same start, seconds per step and the ratio to
GRPO measured in this process. Also times the two teacher-forcing implementations (shared prompt cache vs
one forward per row) on one step's table.

    python benchmarks/bench_rl.py --sft runs/sft            # speed, from an SFT run (else a fresh tiny model)
    python benchmarks/bench_rl.py --sft runs/sft --compare --seeds 0 1 2 --steps 40 --out runs/bench_rl

Compare: for each seed and algorithm, RL from the SFT run (every preset draws 16 candidates per prompt, so
equal steps = equal rollout budget), then HR@K / NDCG@K on the whole test split (beam protocol, 20 beams)
with bootstrap intervals, and a paired bootstrap of each algorithm's per-example difference to GRPO.
Results are printed as a table and written to ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from riser_lite.eval.baselines import expected_columns
from riser_lite.eval.evaluate import EvalConfig, evaluate
from riser_lite.eval.metrics import bootstrap_ci, hits_at_k, ndcg_values_at_k
from riser_lite.items.catalog import ItemSpace
from riser_lite.rl.config import ALGOS, RLConfig
from riser_lite.rl.trainer import train_rl


def load_start(sft: str | None):
    from riser_lite.data import load_dataset
    from riser_lite.model.backbone import build_backbone
    from riser_lite.runs import load_run, load_run_dataset

    if sft:
        run = load_run(sft)
        return run.model, run.tokenizer, load_run_dataset(run)
    dataset = load_dataset("synthetic")
    model, tokenizer = build_backbone(dataset, "tiny", seed=0)
    return model, tokenizer, dataset


def clone(start):
    import copy

    model, tokenizer, dataset = start
    return copy.deepcopy(model), tokenizer, dataset


def speed(start, steps: int, algos) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the naive reference
    from naive import naive_response_logprobs

    from riser_lite.rl.batch import sequence_logprobs
    from riser_lite.rl.trainer import collect_step

    per_step = {}
    for algo in algos:
        result = train_rl(clone(start), RLConfig(algo=algo, steps=steps, eval_every=0))
        times = [r["step_time_s"] for r in result.records[1:]] or [result.records[0]["step_time_s"]]
        per_step[algo] = statistics.median(times)
    base = per_step.get("grpo", next(iter(per_step.values())))
    print(f"{'algo':8s} {'s/step':>8s} {'x grpo':>8s}")
    for algo, seconds in per_step.items():
        print(f"{algo:8s} {seconds:8.2f} {seconds / base:8.2f}")

    model, tokenizer, dataset = clone(start)
    space = ItemSpace(dataset.catalog, tokenizer)
    config = RLConfig(algo="riser")
    data = collect_step(model, space, dataset.splits["train"][:16], dataset.catalog, dataset.max_history,
                        config, seed=0)
    batch = data.batch

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(3):
            tic = time.perf_counter()
            logp, _ = fn()
            logp.sum().backward()
            best = min(best, time.perf_counter() - tic)
            model.zero_grad(set_to_none=True)
        return best

    shared = timed(lambda: sequence_logprobs(model, batch))
    rows = batch.row_prompt
    plain = timed(lambda: naive_response_logprobs(model, batch.prompt_ids[rows], batch.prompt_mask[rows],
                                                  batch.tokens, batch.mask))
    print(f"teacher forcing of one RISER step ({rows.numel()} rows), forward + backward: shared prompt "
          f"{shared:.2f} s, one forward per row {plain:.2f} s ({plain / shared:.1f}x)")


def test_metrics(model, tokenizer, dataset, space, ks=(1, 5, 10, 20), max_examples=None) -> dict:
    config = EvalConfig(split="test", protocol="beam", num_beams=max(ks), ks=ks, max_examples=max_examples,
                        baselines=False)
    result = evaluate(model, tokenizer, dataset, space, config)
    out = {"summaries": result.summaries, "ranks": result.ranks, "expected": result.expected}
    if dataset.oracle:  # per-example expected values, for paired comparisons
        columns = expected_columns(result.top_items, dataset.oracle["test"][:len(result.ranks)], ks)
        out["expected_columns"] = {k: v.tolist() for k, v in columns.items() if k.endswith("@10")}
    return out


def compare(start, args) -> dict:
    model0, tokenizer, dataset = start
    space = ItemSpace(dataset.catalog, tokenizer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"sft": test_metrics(model0, tokenizer, dataset, space, max_examples=args.test_examples),
               "runs": {}}
    for seed in args.seeds:
        for algo in args.algos:
            config = RLConfig(algo=algo, steps=args.steps, seed=seed, eval_every=args.eval_every,
                              **json.loads(args.overrides))
            tic = time.perf_counter()
            result = train_rl(clone(start), config, out=out / f"{algo}_s{seed}", resume=False)
            seconds = time.perf_counter() - tic
            records = result.records
            metrics = test_metrics(result.model, tokenizer, dataset, space, max_examples=args.test_examples)
            summary["runs"][f"{algo}_s{seed}"] = {
                "algo": algo, "seed": seed, "seconds": seconds, "config": asdict(config),
                "rollouts_used": records[-1]["rollouts_used"],
                "gradient_prompt_fraction": float(np.mean([r["gradient_prompt_fraction"] for r in records])),
                "learnable_fraction": float(np.mean([r["learnable_fraction"] for r in records])),
                "hit_rate": float(np.mean([r["hit_rate"] for r in records])),
                "unique_items_per_group": float(np.mean([r["unique_items_per_group"] for r in records])),
                **metrics}
            run = summary["runs"][f"{algo}_s{seed}"]
            print(f"{algo:6s} seed {seed}: {seconds:6.0f} s, "
                  f"grad-prompts {run['gradient_prompt_fraction']:.2f}, "
                  f"test HR@10 {_fmt(run['summaries']['hr@10'])} NDCG@10 {_fmt(run['summaries']['ndcg@10'])}",
                  flush=True)
    summary["paired_vs_grpo"] = paired(summary, args)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print_table(summary, args)
    return summary


def _fmt(s: dict) -> str:
    return f"{s['value']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"


def _values(ranks, metric: str, k: int) -> np.ndarray:
    return hits_at_k(ranks, k) if metric == "hr" else ndcg_values_at_k(ranks, k)


def paired(summary: dict, args) -> dict:
    """Per seed: bootstrap interval of mean(metric(algo) - metric(baseline)) over the same test examples,
    for baseline = GRPO (same seed) and baseline = the SFT start."""
    out = {}
    for seed in args.seeds:
        for base_name in ("grpo", "sft"):
            base = summary["sft"] if base_name == "sft" else summary["runs"].get(f"grpo_s{seed}")
            if base is None:
                continue
            for algo in args.algos:
                if algo != base_name:
                    run = summary["runs"][f"{algo}_s{seed}"]
                    out.update(_paired_one(run, base, f"{algo}_s{seed}-{base_name}", seed))
    return out


def _paired_one(run: dict, base: dict, name: str, seed: int) -> dict:
    out = {}
    for metric in ("hr", "ndcg"):
        diff = _values(run["ranks"], metric, 10) - _values(base["ranks"], metric, 10)
        lo, hi = bootstrap_ci(diff, seed=seed)
        out[f"{name} {metric}@10"] = {"value": float(diff.mean()), "lo": lo, "hi": hi}
        if "expected_columns" in run:  # the same lists under the oracle: far less noise
            diff = (np.asarray(run["expected_columns"][f"{metric}@10"])
                    - np.asarray(base["expected_columns"][f"{metric}@10"]))
            lo, hi = bootstrap_ci(diff, seed=seed)
            out[f"{name} expected {metric}@10"] = {"value": float(diff.mean()), "lo": lo, "hi": hi}
    return out


def print_table(summary: dict, args) -> None:
    sft = summary["sft"]
    print(f"\nSFT start: HR@10 {_fmt(sft['summaries']['hr@10'])}  NDCG@10 {_fmt(sft['summaries']['ndcg@10'])}"
          + (f"  expected HR@10 {_fmt(sft['expected']['hr@10'])}" if sft.get("expected") else ""))
    print(f"{'algo':6s} {'grad-prompts':>12s} {'learnable':>9s} {'HR@10 (mean over seeds)':>24s} "
          f"{'NDCG@10':>8s} {'s/run':>6s}")
    for algo in args.algos:
        runs = [summary["runs"][f"{algo}_s{s}"] for s in args.seeds]
        hr = [r["summaries"]["hr@10"]["value"] for r in runs]
        nd = [r["summaries"]["ndcg@10"]["value"] for r in runs]
        ex = [r["expected"]["hr@10"]["value"] for r in runs if r.get("expected")]
        print(f"{algo:6s} {np.mean([r['gradient_prompt_fraction'] for r in runs]):12.3f} "
              f"{np.mean([r['learnable_fraction'] for r in runs]):9.3f} "
              f"{np.mean(hr):12.3f} ± {np.std(hr):.3f} (sd) {np.mean(nd):8.3f} "
              f"{np.mean([r['seconds'] for r in runs]):6.0f}"
              + (f"   expected HR@10 {np.mean(ex):.3f} ± {np.std(ex):.3f}" if ex else ""))
    for key, d in summary["paired_vs_grpo"].items():
        print(f"  {key}: {d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", default=None, help="SFT run folder (default: a fresh tiny model)")
    parser.add_argument("--compare", action="store_true", help="train and evaluate every algorithm and seed")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=None, help="RL steps (speed: 3; compare: the default)")
    parser.add_argument("--eval-every", type=int, default=0, help="validation during training (0: none)")
    parser.add_argument("--test-examples", type=int, default=None, help="first N test examples (default all)")
    parser.add_argument("--overrides", default="{}", help="JSON of further RLConfig fields for every run")
    parser.add_argument("--out", default="runs/bench_rl")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = load_start(args.sft)
    if args.compare:
        args.steps = args.steps or RLConfig().steps
        compare(start, args)
    else:
        speed(start, args.steps or 3, args.algos)


if __name__ == "__main__":
    main()
