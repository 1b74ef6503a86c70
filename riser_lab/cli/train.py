"""`riser-lite sft` and `riser-lite rl`: train a run folder (each resumes from its last checkpoint)."""

from __future__ import annotations

import sys

from riser_lab.cli.args import checked
from riser_lab.cli.options import add_dataset_options, add_seed_option


def add_sft_command(subparsers) -> None:
    """`riser-lite sft`: fine-tune a backbone and write a run folder."""
    from riser_lite import distributed
    from riser_lite.model.backbone import PRESETS
    from riser_lite.sft import LOSS_POLICIES, PRETRAINED_LR, TARGETS, SFTConfig

    p = subparsers.add_parser("sft", help="supervised fine-tuning: (history prompt -> next title)")
    add_dataset_options(p)
    p.add_argument("--model", default="tiny",
                   help=f"backbone: a fresh preset ({', '.join(sorted(PRESETS))}) or a pretrained model "
                        "(smollm2-135m, a HF folder or a hub id)")
    p.add_argument("--lora", action="store_true",
                   help="train LoRA adapters only (the run stores the adapter and the base model's identity)")
    p.add_argument("--out", default="runs/sft", help="run folder (resumed if interrupted)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default {SFTConfig.lr}; with --model {PRETRAINED_LR['full']}, "
                        f"with --model --lora {PRETRAINED_LR['lora']})")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--items", default="title", choices=["title", "sid", "title+sid"],
                   help="write items by title, semantic ID, or both (codes built from the training split)")
    p.add_argument("--sid-levels", type=int, default=None, help="semantic-ID codebook levels")
    p.add_argument("--sid-codebook", type=int, default=None, help="codes per semantic-ID level")
    p.add_argument("--sid-sasrec", default=None,
                   help="a folder of `riser-lite sasrec --out` on this dataset: the codes cluster its item "
                        "embeddings (default: SVD of co-occurrence PMI)")
    p.add_argument("--sid-last-level", default=None, choices=["collisions", "item"],
                   help="the codes' last level: numbers items sharing a code (default), or each item's own "
                        "token")
    add_seed_option(p)
    p.add_argument("--loss-policy", default="raw", choices=list(LOSS_POLICIES),
                   help="the NLL under the whole-vocabulary softmax (raw) or over the tokens the item trie "
                        "allows (constrained: the policy RL samples and trains)")
    p.add_argument("--select-on", default="loss",
                   help="keep the weights and stop early on the validation loss (loss) or a ranking metric "
                        "of the validation users: hr@K, ndcg@K, on synthetic data expected_hr@K, "
                        "expected_ndcg@K")
    p.add_argument("--patience", type=int, default=None,
                   help=f"validations without improvement before stopping (0: never; default "
                        f"{SFTConfig.patience})")
    p.add_argument("--rl-holdout", type=float, default=0.0,
                   help="share of the training users SFT leaves out for RL prompts (rl --prompt-users "
                        "heldout), as in RISER's protocol (default 0: SFT sees every training user)")
    p.add_argument("--targets", default="response", choices=list(TARGETS),
                   help="score the response only, or every history item in the prompt too (items: for "
                        "small models trained from scratch)")
    p.add_argument("--window-stride", type=int, default=1,
                   help="keep each training user's newest window and every k-th before it (with --targets "
                        "items, k = max history keeps every target)")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="drop this share of the embeddings and of each attention / MLP output in training")
    p.add_argument("--mixed-precision", default="no", choices=list(distributed.MIXED_PRECISION),
                   help="autocast the forward pass (bf16 on GPUs from Ampere on); weights stay fp32")
    p.add_argument("--overwrite", action="store_true",
                   help="start over: remove the run's own files from --out (only if it is a run folder)")
    p.set_defaults(func=_run_sft)


def sft_config_from_args(args, pretrained: bool):
    """The SFTConfig of the `sft` options (unset ones keep the config's defaults)."""
    from riser_lite.sft import PRETRAINED_LR, SFTConfig

    lr = args.lr
    if lr is None and pretrained:  # a pretrained model needs a far smaller rate than a fresh one
        lr = PRETRAINED_LR["lora" if args.lora else "full"]
    given = {"epochs": args.epochs, "lr": lr, "batch_size": args.batch_size, "patience": args.patience}
    overrides = {k: v for k, v in given.items() if v is not None}
    # a progress bar on a terminal only (not in logs or captured output)
    return SFTConfig(**overrides, progress=sys.stderr.isatty(), mixed_precision=args.mixed_precision,
                     loss_policy=args.loss_policy, select_on=args.select_on, rl_holdout=args.rl_holdout,
                     targets=args.targets, window_stride=args.window_stride, dropout=args.dropout)


def sid_config_from_args(args):
    """The SIDConfig of the --sid-* options (the defaults where one is not given), seeded by --seed."""
    from riser_lab.sid import SIDConfig

    given = {"levels": args.sid_levels, "codebook_size": args.sid_codebook, "sasrec": args.sid_sasrec,
             "last_level": args.sid_last_level}
    if args.sid_sasrec is not None:
        given["vectors"] = "sasrec"  # a SASRec folder: the codes cluster its item embeddings
    return SIDConfig(**{k: v for k, v in given.items() if v is not None}, seed=args.seed)


def _run_sft(args) -> int:
    from pathlib import Path

    import torch

    from riser_lite import distributed, runs
    from riser_lite.model.backbone import PRESETS
    from riser_lite.sft import STAGE, run_sft

    pretrained = args.model not in PRESETS
    config = checked(lambda: sft_config_from_args(args, pretrained))
    checked(lambda: distributed.check_precision(config.mixed_precision))  # fp16 without a GPU: one line
    torch.set_num_threads(runs.DEFAULT_THREADS)  # the same numbers on any machine
    spec = runs.dataset_spec(args.data, args.path, 0)
    sid_config = checked(lambda: sid_config_from_args(args))
    out = run_sft(spec, preset="tiny" if pretrained else args.model,
                  config=config, out=args.out, seed=args.seed, model=args.model if pretrained else None,
                  lora={"r": 8, "alpha": 16.0} if args.lora else None, overwrite=args.overwrite,
                  items=args.items, sids=semantic_ids(spec, args.items, sid_config))
    if not distributed.is_main():  # DDP: one summary, from the main process
        return 0
    saved = runs.read_json(Path(out) / runs.CONFIG_FILE)
    summary = saved["results"][STAGE]
    select_on = summary.get("select_on", "loss")
    best = f"best validation loss {summary['best_valid_loss']:.4f}"
    if select_on != "loss":
        best = (f"best validation {select_on} {summary[f'best_valid_{select_on}']:.4f} (validation loss "
                f"{summary['best_valid_loss']:.4f})")
    print(f"SFT run {out}: {saved.get('parameters'):,} parameters, {summary['steps']} steps "
          f"({summary['epochs_run']} epochs{', stopped early' if summary['stopped_early'] else ''}), "
          f"{best} at step {summary['best_step']}, "
          f"{summary['train_seconds']:.0f} s training, {summary['tokens_per_second']:.0f} tokens/s")
    if saved.get("rl_holdout"):
        print(describe_record(saved["rl_holdout"]))
    return 0


def semantic_ids(spec: dict, items: str, sid_config):
    """The codes of --items sid / title+sid, built from the training split (from a saved SASRec's item
    embeddings with --sid-sasrec); None for titles."""
    if items == "title":
        return None
    from riser_lab.sasrec import sasrec_item_vectors
    from riser_lab.sid import build_semantic_ids
    from riser_lite import runs

    dataset = runs.load_spec_dataset(spec)
    if sid_config.vectors != "sasrec":
        return build_semantic_ids(dataset, sid_config)
    vectors = sasrec_item_vectors(dataset, sorted(dataset.catalog), sid_config)
    return build_semantic_ids(dataset, sid_config, vectors)


def add_rl_command(subparsers) -> None:
    """`riser-lite rl`: RL from an SFT run."""
    from riser_lite.rl.config import ALGOS, PROMPT_USERS

    p = subparsers.add_parser("rl", help="RL from an SFT run (GRPO, ReRe-style or RISER)")
    p.add_argument("--run", required=True, help="SFT run folder to start from (also the frozen reference)")
    p.add_argument("--out", required=True,
                   help="run folder to write, not --run (resumed if it holds a checkpoint of the same start)")
    p.add_argument("--algo", choices=ALGOS, default="riser")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--prompt-users", choices=PROMPT_USERS, default=None,
                   help="draw prompts from all training users (default) or only from those the SFT run held "
                        "out (heldout; needs an SFT run trained with --rl-holdout)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--no-pairs", action="store_true", help="ablation: no preference pairs")
    p.add_argument("--no-dedup", action="store_true", help="ablation: sample G with replacement")
    p.add_argument("--no-certainty", action="store_true", help="ablation: uniform token weights")
    p.add_argument("--no-clip", action="store_true", help="ablation: plain ratio x A surrogate")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters only")
    add_seed_option(p)
    p.set_defaults(func=_run_rl)


def rl_config_from_args(args):
    """The RLConfig of the `rl` options (unset options keep the algo preset)."""
    from riser_lite.rl.config import RLConfig

    # Each of these options is named as its RLConfig field.
    names = ("steps", "lr", "prompt_users")
    values = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    switches = {"use_pairs": args.no_pairs, "use_dedup": args.no_dedup,
                "use_certainty_weights": args.no_certainty, "use_clipping": args.no_clip}
    values.update({name: False for name, off in switches.items() if off})
    if args.no_dedup and args.algo == "riser":
        values["group_size"] = 16  # same budget: 16 draws, all kept
    return RLConfig(algo=args.algo, seed=args.seed, lora=args.lora, **values)


def _run_rl(args) -> int:
    import torch

    from riser_lite import distributed
    from riser_lite.rl.trainer import train_rl
    from riser_lite.runs import DEFAULT_THREADS

    config = checked(lambda: rl_config_from_args(args))
    torch.set_num_threads(DEFAULT_THREADS)  # the same numbers on any machine

    def show(record: dict) -> None:
        if not distributed.is_main():  # DDP: one report, from the main process
            return
        clipped = record["grpo/clip_frac_low"] + record["grpo/clip_frac_high"]
        line = (f"step {record['step']:4d}  rollouts {record['rollouts_used']:6d}  "
                f"grad-prompts {record['gradient_prompt_fraction']:.2f}  hit {record['hit_rate']:.3f}  "
                f"loss {record['loss']:+.4f}  clip {clipped:.3f}  valid mass {record['valid_mass']:.3f}")
        if "val_hr@10" in record:
            line += f"  val HR@10 {record['val_hr@10']:.3f}  NDCG@10 {record['val_ndcg@10']:.3f}"
        print(line, flush=True)

    result = train_rl(args.run, config, args.out, on_step=show)
    if distributed.is_main():
        print(f"saved {args.out} ({result.records[-1]['step'] if result.records else 0} steps)")
    return 0


def describe_record(record: dict) -> str:
    """One line with the counts of a recorded split (`HoldoutSplit.record`)."""
    return (f"SFT trains on {record['examples_kept']} examples of {record['users_kept']} users; "
            f"{record['examples_held_out']} examples of {record['users_held_out']} users held out for RL "
            f"(rl_holdout {record['fraction']:g}, seed {record['seed']})")
