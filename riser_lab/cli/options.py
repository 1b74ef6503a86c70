"""Options several `riser-lite` commands share, declared once with the same defaults and help."""

from __future__ import annotations


def add_source_option(p, flag: str = "--data") -> None:
    """The dataset source, one of `riser_lite.data.SOURCES` (`--source` in `riser-lite data`)."""
    from riser_lite.data import SOURCES

    p.add_argument(flag, default="synthetic", choices=list(SOURCES))


def add_dataset_options(p) -> None:
    """--data and --path: the dataset a command loads."""
    add_source_option(p)
    p.add_argument("--path", default=None, help="dataset folder (default: the source's default)")


def add_seed_option(p) -> None:
    p.add_argument("--seed", type=int, default=0)
