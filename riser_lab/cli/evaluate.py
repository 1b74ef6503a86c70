"""`riser-lite evaluate`, `sasrec`, `candidates` and `rollout`: measure a run's model or a baseline."""

from __future__ import annotations

from riser_lab.cli.args import UsageError, checked
from riser_lab.cli.options import add_dataset_options, add_seed_option


def add_evaluate_command(subparsers) -> None:
    from riser_lite.data.types import SPLITS
    from riser_lite.eval.evaluate import PROTOCOLS
    from riser_lite.model.forward import POLICIES

    p = subparsers.add_parser("evaluate", help="HR@K / NDCG@K of a run's model, with intervals and baselines")
    p.add_argument("--run", required=True, help="run folder (written by `riser-lite sft` or `riser-lite rl`)")
    p.add_argument("--split", default="test", choices=list(SPLITS))
    p.add_argument("--protocol", default="beam", choices=list(PROTOCOLS))
    p.add_argument("--policy", default="constrained", choices=list(POLICIES),
                   help="scores of the ranked lists: the trie-constrained policy (default) or the raw "
                        "log P(item) over the whole vocabulary (writes eval_<split>_<protocol>_raw.json)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-examples", type=int, default=None, help="evaluate the first N examples only")
    p.add_argument("--no-acceptance", action="store_true",
                   help="skip sampled_hit / greedy_hit, which score every catalogue item per user exactly "
                        "(cheap for the tiny model; about 45 s per user for SmolLM2 on LastFM's 4,606 "
                        "artists on 2 CPU cores, against about 2 s for its 20 beams)")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from riser_lite import distributed
    from riser_lite.eval.evaluate import EvalConfig, evaluate_run

    checked(EvalConfig(split=args.split, protocol=args.protocol, max_examples=args.max_examples,
                       batch_size=args.batch_size, policy=args.policy).validate)  # before any loading
    result = evaluate_run(args.run, split=args.split, protocol=args.protocol, max_examples=args.max_examples,
                          batch_size=args.batch_size, policy=args.policy, acceptance=not args.no_acceptance)
    if distributed.is_main():  # several processes: one report (the whole result is in the run folder)
        print(format_result(result))
    return 0


def add_sasrec_command(subparsers) -> None:
    """`riser-lite sasrec`: train the SASRec baseline and print (or save) its test metrics."""
    p = subparsers.add_parser("sasrec", help="train and evaluate the SASRec item-id baseline")
    add_dataset_options(p)
    add_seed_option(p)
    p.add_argument("--out", default=None, help="folder for the model and eval_test.json")
    p.set_defaults(func=_run_sasrec)


def _run_sasrec(args) -> int:
    import json
    from pathlib import Path

    from riser_lab import sasrec
    from riser_lite.data import load_dataset

    dataset = load_dataset(args.data, args.path, seed=args.seed)
    config = sasrec.SASRecConfig(max_len=dataset.max_history, seed=args.seed)
    data = {"source": args.data, "path": None if args.path is None else str(Path(args.path).resolve()),
            "seed": args.seed, "max_history": dataset.max_history}
    split = "test"
    eval_name = f"eval_{split}.json"
    if args.out:  # before training: a refused folder costs nothing
        sasrec.check_sasrec_out(args.out, config, data, [sasrec.WEIGHTS_FILE, sasrec.CONFIG_FILE, eval_name])
    model = sasrec.train_sasrec(dataset, config)
    result = sasrec.evaluate_sasrec(model, dataset, split, seed=args.seed)
    history = model.train_history
    if args.out:
        from riser_lite.runs import own_entry

        sasrec.save_sasrec(model, args.out, data)
        own_entry(args.out, eval_name, "sasrec").write_text(json.dumps(result, indent=1))
    train = len(dataset.splits["train"])
    print(f"SASRec on {dataset.name} ({dataset.num_items} items, {train} train examples): "
          f"{history.epochs_run} epochs (best {history.best_epoch}), {history.train_seconds:.0f} s training")
    for name, s in result["summaries"].items():
        print(f"  {split} {name:<8} {s['value']:.4f}  [{s['lo']:.4f}, {s['hi']:.4f}]  n={s['n']}")
    return 0


def add_candidates_command(subparsers) -> None:
    """`riser-lite candidates`: the LLaRA / S-DPO 20-candidate protocol on LastFM."""
    from riser_lab.candidates import SPLIT_FILES

    p = subparsers.add_parser("candidates", help="HitRatio@1 among 20 candidates (LLaRA / S-DPO protocol)")
    p.add_argument("--run", default=None, help="run folder trained on LastFM (title or semantic-ID items)")
    p.add_argument("--sasrec", default=None, help="a folder written by `riser-lite sasrec --out`")
    p.add_argument("--split", default="test", choices=list(SPLIT_FILES))
    p.add_argument("--max-windows", type=int, default=None, help="the first N windows only")
    p.set_defaults(func=_run_candidates)


def _run_candidates(args) -> int:
    from riser_lab.candidates import format_candidates, run_candidates

    if args.run is None and args.sasrec is None:
        raise UsageError("candidates: give --run and/or --sasrec")
    result = run_candidates(args.run, args.split, sasrec=args.sasrec, max_windows=args.max_windows)
    print(format_candidates(result))
    return 0


def add_rollout_command(subparsers) -> None:
    """`riser-lite rollout`: draw groups from a run's model on a data split and print group statistics."""
    from riser_lite.rl.rollout import MODES

    p = subparsers.add_parser("rollout", help="draw rollout groups from a run's model and print statistics")
    p.add_argument("--run", required=True, help="run folder (written by `riser-lite sft` or `rl`)")
    p.add_argument("--mode", choices=MODES, default="dedup")
    p.add_argument("--group-size", type=int, default=8, help="G, rollouts per prompt")
    p.add_argument("--num-prompts", type=int, default=64, help="training examples drawn at random")
    p.set_defaults(func=_run_rollout)


def _run_rollout(args) -> int:
    import random

    from riser_lite.items.catalog import ItemSpace
    from riser_lite.rl.rewards import rollout_stats
    from riser_lite.rl.rollout import RolloutConfig, rollout_examples
    from riser_lite.runs import load_run, load_run_dataset

    run = load_run(args.run)
    dataset = load_run_dataset(run)
    space = ItemSpace(dataset.catalog, run.tokenizer)
    pool = dataset.splits["train"]
    examples = random.Random(0).sample(pool, min(args.num_prompts, len(pool)))
    config = RolloutConfig(mode=args.mode, group_size=args.group_size)
    groups, targets = rollout_examples(run.model, space, examples, dataset.catalog, config,
                                       dataset.max_history)
    print(f"{args.mode} rollouts, G={args.group_size}, {groups.num_samples_drawn} draws per prompt, "
          f"{len(examples)} train prompts")
    for key, value in rollout_stats(groups, targets).items():
        print(f"  {key:<24} {value:.4f}")
    for p in range(min(2, groups.num_prompts)):  # two groups with their titles
        print(f"\ntarget: {space.titles[int(targets[p])]}")
        for g, item in enumerate(groups.items[p].tolist()):
            text = groups.texts[p * groups.group_size + g] if groups.texts else ""
            title = space.titles[item] if item >= 0 else f"(no catalogue item) {text!r}"
            print(f"  {'*' if item == int(targets[p]) else ' '} p={float(groups.item_prob[p, g]):.4f}  "
                  f"x{int(groups.duplicate_counts[p, g])}  {title}")
    return 0


# ---------------------------------------------------------------------------------------------- tables


def _cell(summary: dict | None) -> str:
    return "-" if summary is None else f"{summary['value']:.4f}"


REFERENCE_LABELS = {"popularity": "popularity", "popularity_all": "popularity_all", "oracle": "oracle",
                    "prompt_oracle": "prompt oracle"}  # column names of the reference rankers in tables


def format_result(result: dict) -> str:
    """A plain-text table of an evaluation dict (from `EvalResult.to_dict()` or `evaluate_run`)."""
    level = round(100 * (1 - result["config"].get("alpha", 0.05)))
    base = result.get("baselines") or {}
    columns = [("popularity", "summaries"), ("popularity_all", "summaries")]
    for name in ("oracle", "prompt_oracle"):
        if name in base:
            columns += [(name, "summaries"), (name, "expected")]
    header = f"{'metric':<12} {'value':>8}  {f'{level}% CI':<19}" + "".join(
        f" {REFERENCE_LABELS[name] + ('(exp)' if part == 'expected' else ''):>18}" for name, part in columns)
    if result.get("expected"):
        header += f" {'model(exp)':>18}"
    lines = [f"{result['protocol']} protocol, split {result['split']}, {result['num_examples']} examples "
             f"({result['seconds']:.1f} s)", header, "-" * len(header)]
    for name, s in result["summaries"].items():
        row = f"{name:<12} {s['value']:>8.4f}  [{s['lo']:.4f}, {s['hi']:.4f}]"
        row += "".join(f" {_cell((base[b].get(part) or {}).get(name)):>18}" for b, part in columns)
        if result.get("expected"):
            row += f" {_cell(result['expected'].get(name)):>18}"
        lines.append(row)
    lines += _acceptance_lines(result)
    lines.append("")
    for key, value in result["coverage"].items():
        lines.append(f"{key:<28} {value:.4f}")
    for key in ("valid_rate", "unconstrained_valid_rate"):
        if result.get(key) is not None:
            lines.append(f"{key:<28} {result[key]:.4f}")
    return "\n".join(lines)


def _acceptance_lines(result: dict) -> list[str]:
    """The constrained policy's one recommendation: realised hit and interval, and the exact acceptance."""
    acceptance = result.get("acceptance")
    if not acceptance:
        return []
    expected = result.get("expected_acceptance") or {}
    lines = ["", "one recommendation of the constrained policy (what a hit reward scores):"]
    for name, s in acceptance.items():
        line = f"{name:<12} {s['value']:>8.4f}  [{s['lo']:.4f}, {s['hi']:.4f}]"
        if name in expected:
            line += f"   acceptance (expected) {_cell(expected[name])}"
        lines.append(line)
    for name, base in (result.get("baselines") or {}).items():
        if base.get("expected_acceptance"):  # the oracles: their sampled item, their top item
            lines.append(f"{REFERENCE_LABELS[name]} acceptance (expected): " + ", ".join(
                f"{key} {_cell(s)}" for key, s in base["expected_acceptance"].items()))
    return lines
