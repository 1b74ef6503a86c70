"""`riser-lite compare` and `riser-lite demo`: the algorithms side by side over seeds."""

from __future__ import annotations

import sys

from riser_lab.cli.args import checked
from riser_lab.cli.options import add_dataset_options


def add_compare_options(p) -> None:
    """The options of `riser-lite compare` (also those of the lab's learning-rate sweep)."""
    from riser_lab.compare import DEFAULT_VARIANTS, VARIANTS

    p.add_argument("--quick", action="store_true", help="3 variants, 2 seeds, 8 steps, 100 test users")
    add_dataset_options(p)
    p.add_argument("--sft-run", default=None, help="SFT run to start from (trained if absent)")
    p.add_argument("--items", default=None, choices=["title", "sid", "title+sid"],
                   help="items as titles or semantic IDs: a new SFT run's form (default title); an existing "
                        "--sft-run must match it (default: the run's own)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None, metavar="NAME",
                   help=f"variants among {', '.join(VARIANTS)} (default: {' '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="RL seeds")
    p.add_argument("--rl-steps", type=int, default=None, help="RL steps per run")
    p.add_argument("--prompt-users", choices=["all", "heldout"], default=None,
                   help="RL prompts from all training users (default) or only those the SFT run held out "
                        "(heldout: the SFT run must be trained with --rl-holdout)")
    p.add_argument("--rl-lr", type=float, default=None, help="RL learning rate (default 1e-4)")
    p.add_argument("--rl-eval-every", type=int, default=None,
                   help="validate during RL every this many steps (validation curves; default: never)")
    p.add_argument("--rl-eval-examples", type=int, default=None, help="validation examples of those checks")
    p.add_argument("--lambda-pair", type=float, default=None,
                   help="RISER's lambda, the pair-loss weight, for the variants with pairs (default 1)")
    p.add_argument("--beta-kl", type=float, default=None,
                   help="weight of the KL to the SFT reference for every RL variant (default 0)")
    p.add_argument("--eval-split", default="test", choices=["valid", "test"],
                   help="split of the final evaluation: valid to choose settings, test to report once")
    p.add_argument("--out", default="runs/compare", help="output folder (run folders, compare.json)")


def add_compare_command(subparsers) -> None:
    from riser_lab import compare

    p = subparsers.add_parser("compare", help="GRPO / ReRe-style / RISER and ablations over seeds",
                              description=compare.__doc__.splitlines()[0])
    add_compare_options(p)
    p.set_defaults(func=_run_compare)


def compare_config_from_args(args):
    """The CompareConfig of the `compare` options (unset ones keep the defaults, or `--quick`'s)."""
    from riser_lab.compare import CompareConfig

    # Each of these options is named as its CompareConfig field.
    names = ("sft_run", "rl_steps", "rl_lr", "rl_eval_every", "rl_eval_examples", "lambda_pair", "beta_kl",
             "eval_split", "prompt_users", "items")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.variants:
        overrides["variants"] = tuple(dict.fromkeys(args.variants))
    if args.seeds:
        overrides["seeds"] = tuple(dict.fromkeys(args.seeds))
    overrides.update(data=args.data, path=args.path, progress=sys.stderr.isatty())  # bars on a terminal only
    return CompareConfig.quick(**overrides) if args.quick else CompareConfig(**overrides)


def _run_compare(args) -> int:
    from riser_lab.compare import format_table, run_compare

    def log(text):
        print(text, flush=True)

    print(format_table(run_compare(compare_config_from_args(args), args.out, log=log)))
    return 0


def add_demo_command(subparsers) -> None:
    """`riser-lite demo`: the end-to-end comparison on the bundled data (or a real dataset)."""
    p = subparsers.add_parser(
        "demo", help="end to end: data, SFT, GRPO / ReRe-style / RISER, evaluation, HTML report",
        description="SFT, then GRPO, ReRe-style and RISER from the same SFT model under the same rollout "
                    "budget, evaluated on the test split; writes results.json and a self-contained "
                    "report.html to --out.")
    p.add_argument("--quick", action="store_true", help="smaller sizes (about 2 minutes on 2 cores)")
    add_dataset_options(p)
    p.add_argument("--out", default="runs/demo",
                   help="output folder (run folders, results.json, report.html)")
    p.add_argument("--sft-epochs", type=int, default=None)
    p.set_defaults(func=_run_demo)


def demo_config_from_args(args):
    """The demo's CompareConfig (`CompareConfig.demo`) with the `demo` options."""
    from riser_lab.compare import CompareConfig

    overrides = {"sft_epochs": args.sft_epochs} if args.sft_epochs is not None else {}
    overrides.update(data=args.data, path=args.path, progress=sys.stderr.isatty())  # bars on a terminal only
    return CompareConfig.demo(quick=args.quick, **overrides)


def _run_demo(args) -> int:
    from riser_lab.demo import run_demo

    config = demo_config_from_args(args)
    checked(config.validate)  # sizes that do not fit together: one line, before anything runs
    run_demo(config, args.out)
    return 0
