"""What a lab command shares with `riser-lite`: its argument checks and one-line errors (exit status 2)."""

from __future__ import annotations

import argparse
import sys


def run(parser: argparse.ArgumentParser, func, argv: list[str] | None = None) -> int:
    """Parse `argv` with the checks of `riser-lite`'s options (`riser_lab.cli.args`), then `func(args)`;
    the user's input errors (bad data, a misused folder, arguments that do not fit) end in one line on
    stderr."""
    from riser_lab.cli.args import UsageError, check_options
    from riser_lite.data.types import DataError
    from riser_lite.runs import RunError

    check_options(parser)
    args = parser.parse_args(argv)
    try:
        return int(func(args) or 0)
    except (DataError, RunError, UsageError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
