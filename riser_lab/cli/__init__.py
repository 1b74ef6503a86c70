"""The `riser-lite` command: one subcommand per stage of the pipeline, from `data` to `demo`.

Every option is checked while the arguments are parsed (`riser_lab.cli.args`), before anything runs or any
folder is made. Bad input data (`DataError`), a damaged or misused run folder (`RunError`) and arguments
that do not fit together (`UsageError`) end in one line on stderr and exit status 2, as does a file the
command may not read or write; Ctrl-C ends in one line and exit status 130 (files written so far are kept:
`sft` and `rl` resume from their last checkpoint when run again); anything else is a bug and shows its
traceback. ``--debug`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import sys

from riser_lab.cli.args import UsageError, check_arguments
from riser_lab.cli.evaluate import (
    add_candidates_command,
    add_evaluate_command,
    add_rollout_command,
    add_sasrec_command,
)
from riser_lab.cli.experiments import add_compare_command, add_demo_command
from riser_lab.cli.options import add_source_option
from riser_lab.cli.train import add_rl_command, add_sft_command


def add_data_command(subparsers) -> None:
    p = subparsers.add_parser("data", help="load a dataset and print its statistics")
    add_source_option(p, "--source")
    p.add_argument("--path", default=None, help="dataset directory (synthetic: default is the bundled data)")
    p.set_defaults(func=_run_data)


def _run_data(args) -> int:
    from riser_lite.data import load_dataset
    from riser_lite.data.stats import dataset_stats, format_stats

    print(format_stats(dataset_stats(load_dataset(args.source, args.path, require=()))))
    return 0


# Each command is an `add_<name>_command` (its options) and a run function that imports its stage module
# only when it runs: the stage modules raise ordinary errors and know nothing of argparse.
COMMANDS = (add_data_command, add_sft_command, add_evaluate_command, add_sasrec_command,
            add_candidates_command, add_rollout_command, add_rl_command, add_compare_command,
            add_demo_command)  # in pipeline order, the order `riser-lite --help` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="riser-lite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    check_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # imports torch and transformers: seconds a user may Ctrl-C
    except KeyboardInterrupt:
        print("riser-lite: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    from riser_lite.data.types import DataError
    from riser_lite.model.pretrained import BackboneError
    from riser_lite.runs import RunError

    try:
        code = int(args.func(args) or 0)
    # The user's input or an interruption, not a bug: one clear line.
    except (DataError, RunError, UsageError, BackboneError, PermissionError, KeyboardInterrupt) as err:
        if args.debug:
            raise
        if isinstance(err, KeyboardInterrupt):
            print(f"riser-lite {args.command}: interrupted (Ctrl-C); files written so far are kept (sft and "
                  "rl resume from their last checkpoint when run again)", file=sys.stderr)
            return 130
        what = f"{err.filename or err}: permission denied" if isinstance(err, PermissionError) else err
        print(f"riser-lite {args.command}: error: {what}", file=sys.stderr)
        return 2
    shutdown()  # under a launcher: all processes finish together
    return code


def shutdown() -> None:
    """End a launcher's process group after a successful run (a no-op in one process). Every process waits
    for the others first: a gloo group torn down while another process still uses it can abort it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
