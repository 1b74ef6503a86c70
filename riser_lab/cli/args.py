"""Argument checks of the `riser-lite` command, in one place, so a bad value stops before anything runs.

`check_arguments(parser)` gives every subcommand's options a checking `type=` by destination name
(`RULES`); argparse then rejects a bad value the way it rejects an unknown option: the usage, one line
naming the option and what was expected, exit status 2. `UsageError` is for checks that need several
arguments at once (a config's own validation); the command catches it and exits the same way.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


class UsageError(ValueError):
    """Arguments that do not fit together; the command prints the message and exits with status 2."""


def count(minimum: int) -> Callable[[str], int]:
    """An integer option that must be >= `minimum` (1: a count of steps, epochs, items...)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small; expected an integer >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in some messages
    return parse


def real(low: float, high: float = math.inf, *, low_open: bool = False,
         high_open: bool = False) -> Callable[[str], float]:
    """A finite float option in [low, high] (an open end when `low_open` / `high_open`). NaN never passes."""
    interval = (f"{'(' if low_open or low == -math.inf else '['}{low:g}, "
                f"{high:g}{')' if high_open or high == math.inf else ']'}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(f"{text} is out of range; expected a finite number in "
                                             f"{interval}")
        return value

    parse.__name__ = f"number in {interval}"
    return parse


def run_folder(text: str) -> str:
    """An existing run folder (a directory with a readable config.json)."""
    from riser_lite.runs import RunError, read_config

    try:
        read_config(text)
    except RunError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def out_folder(text: str) -> str:
    """A folder to write into: it may not exist yet, but it must not be a file."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; expected a folder")
    return text


POSITIVE = count(1)
NON_NEGATIVE = count(0)
# Checks by option destination. An option missing here keeps its own type (floats are still checked finite).
RULES: dict[str, Callable[[str], object]] = {
    **dict.fromkeys(("epochs", "steps", "batch_size", "group_size", "max_examples", "num_prompts",
                     "sft_epochs", "rl_steps", "rl_eval_examples", "sid_levels", "sid_codebook",
                     "max_windows", "window_stride"), POSITIVE),
    **dict.fromkeys(("seed", "seeds", "rl_eval_every", "patience"), NON_NEGATIVE),
    **dict.fromkeys(("lr", "lrs", "rl_lr"), real(0.0, low_open=True)),
    "beta_kl": real(0.0), "lambda_pair": real(0.0), "dropout": real(0.0, 1.0, high_open=True),
    "rl_holdout": real(0.0, 1.0, high_open=True),
    "run": run_folder, "out": out_folder,
}
FINITE = real(-math.inf, math.inf)


def _checked_type(action: argparse.Action) -> Callable[[str], object] | None:
    """The checking type for an option, or None to leave it as declared."""
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction | argparse._HelpAction):
        return None
    rule = RULES.get(action.dest)
    if rule is not None and action.type in (None, int, float) and not action.choices:
        if action.type is None and rule not in (run_folder, out_folder):
            return None  # a text option that happens to share a name: leave it
        return rule
    return FINITE if action.type is float else None


def check_options(parser: argparse.ArgumentParser) -> None:
    """Give the options of one parser their checking type (see `RULES`)."""
    for action in parser._actions:
        checked = _checked_type(action)
        if checked is not None:
            action.type = checked


def check_arguments(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand's options their checking type (see `RULES`) and a ``--debug`` switch."""
    for group in parser._actions:
        if not isinstance(group, argparse._SubParsersAction):
            continue
        for subparser in group.choices.values():
            check_options(subparser)
            if "--debug" not in subparser._option_string_actions:
                subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                       help="show the full traceback of an error")


def checked(build: Callable[[], object]):
    """`build()`, with a ValueError from a config's own validation turned into a `UsageError`."""
    try:
        return build()
    except ValueError as err:
        raise UsageError(str(err)) from err
