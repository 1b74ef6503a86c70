"""Which items does GRPO push down? Their true probability, on the synthetic data's training prompts.

    python tools/probe_grpo_negatives.py --run runs/syn_sft --prompts 256 --group-size 16 --seed 0

Samples GRPO groups (with replacement, temperature 1) from an SFT run on synthetic data for random training
prompts. In groups that contain the logged target (the only groups that give GRPO a gradient with a hit
reward), every other sampled item gets a negative advantage. The synthetic generator knows each example's
true next-item distribution, so this prints how likely those pushed-down items really are, next to the
logged target: if they were as likely as the target, GRPO would be penalising equally good answers.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from riser_lite.items.catalog import ItemSpace
from riser_lite.rl.rollout import RolloutConfig, rollout_examples
from riser_lite.runs import load_run, load_run_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/sft", help="SFT run folder trained on synthetic data")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    run = load_run(args.run)
    dataset = load_run_dataset(run)
    if not dataset.oracle:
        raise SystemExit(f"{args.run} was not trained on synthetic data: no true distribution to use")
    space = ItemSpace(dataset.catalog, run.tokenizer)
    train = dataset.splits["train"]
    chosen = np.random.default_rng(args.seed).choice(len(train), args.prompts, replace=False)
    config = RolloutConfig(mode="sample", group_size=args.group_size, seed=args.seed)
    groups, targets = rollout_examples(run.model, space, [train[i] for i in chosen], dataset.catalog, config,
                                       dataset.max_history)

    target_prob, pushed_prob, pushed_rank = [], [], []
    for row, index in enumerate(chosen):
        items, target = set(groups.items[row].tolist()), int(targets[row])
        if target not in items:
            continue
        truth = dataset.oracle["train"][index]  # {item: true probability}
        ranked = sorted(truth, key=truth.get, reverse=True)
        target_prob.append(truth.get(target, 0.0))
        for item in items - {target}:
            pushed_prob.append(truth.get(item, 0.0))
            pushed_rank.append(ranked.index(item) if item in truth else len(dataset.catalog))
    pushed_prob, pushed_rank = np.array(pushed_prob), np.array(pushed_rank)
    print(f"groups with a hit: {len(target_prob)} of {args.prompts}")
    print(f"true probability of the logged target: mean {np.mean(target_prob):.3f}")
    print(f"true probability of the {len(pushed_prob)} pushed-down items: mean {pushed_prob.mean():.3f}; "
          f"share >= 0.05: {(pushed_prob >= 0.05).mean():.2f}; share in the true top 10: "
          f"{(pushed_rank < 10).mean():.2f}")


if __name__ == "__main__":
    main()
