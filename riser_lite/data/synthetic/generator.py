"""The generator: users simulated in a synthetic world, their sliding-window examples and exact oracles.

`generate_synthetic(config, seed)` makes a `RecDataset` whose `oracle` holds, for every example, the exact
next-item distribution given the user's taste and full history. The dataset records how it was made
(`RecDataset.generator`, saved in meta.json), so `load_synthetic` can restore the oracle of saved files by
re-running the generator rather than storing tens of MB of distributions.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from riser_lite.data.native import META_FILE, load_native, save_dataset
from riser_lite.data.synthetic.config import SyntheticConfig
from riser_lite.data.synthetic.world import SyntheticWorld, build_world, seed_sequences
from riser_lite.data.types import SPLITS, Example, FilterRecord, RecDataset

# The dotted path meta.json records as the generator. Saved datasets name it, so it must stay importable
# (`tests/test_data_synthetic.py` resolves it).
GENERATOR = "riser_lite.data.synthetic.generate_synthetic"


@dataclass
class UserTrace:
    """One simulated user: latent taste, the full consumption sequence, and why each item was chosen."""

    taste: np.ndarray  # probability of each genre (world.genres order)
    items: list[int]  # item ids, oldest first
    modes: list[str]  # per item: "series", "popular" or "taste"


def simulate_user(world: SyntheticWorld, rng: np.random.Generator) -> UserTrace:
    """Draw a taste and a sequence of `min_length..max_length` distinct items."""
    cfg = world.config
    taste = world.sample_taste(rng)
    length = int(rng.integers(cfg.min_length, cfg.max_length + 1))
    items: list[int] = []
    modes: list[str] = []
    for _ in range(length):
        item, mode = world.sample_next_item(taste, items, rng)
        items.append(item)
        modes.append(mode)
    return UserTrace(taste, items, modes)


def _oracle_row(dist: np.ndarray, item_ids: list[int]) -> dict[int, float]:
    """Non-zero entries of a distribution as {item id: probability}. Almost every item has some
    probability, so zeros are removed from a full row; sharing one list of id objects as keys keeps the
    default dataset's ~2 million entries to about 120 MB."""
    row = dict(zip(item_ids, dist.tolist(), strict=True))
    for item in np.flatnonzero(dist == 0.0).tolist():
        del row[item]
    return row


def _user_examples(world: SyntheticWorld, user: str, trace: UserTrace, positions: range,
                   ) -> tuple[list[Example], list[dict[int, float]], int]:
    """Examples (target = item at each position) with their oracles, and how many histories were cut."""
    examples, oracle, truncated = [], [], 0
    cap = world.config.max_history
    for t in positions:
        prefix = trace.items[:t]
        truncated += len(prefix) > cap
        examples.append(Example(user, tuple(prefix[-cap:]), trace.items[t]))
        oracle.append(_oracle_row(world.next_item_distribution(trace.taste, prefix), world.item_ids))
    return examples, oracle, truncated


def generate_synthetic(config: SyntheticConfig | None = None, seed: int = 0) -> RecDataset:
    """A synthetic dataset with an exact oracle, deterministic in `seed`.

    Split by user, as in LLaRA's LastFM release: train users give every sliding window (the newest
    `max_history` items), valid and test users their final window only, so nothing about a held-out user
    leaks into training. Examples have no times.
    """
    cfg = config or SyntheticConfig()
    world = build_world(cfg, seed)
    split_seeds = dict(zip(SPLITS, seed_sequences(seed)[1:], strict=True))
    counts = {"train": cfg.num_train_users, "valid": cfg.num_valid_users, "test": cfg.num_test_users}
    splits: dict[str, list[Example]] = {}
    oracle: dict[str, list[dict[int, float]]] = {}
    truncated = 0
    first_user = 0
    for split in SPLITS:
        rng = np.random.default_rng(split_seeds[split])
        splits[split], oracle[split] = [], []
        for u in range(counts[split]):
            trace = simulate_user(world, rng)
            last = len(trace.items) - 1
            positions = range(1, last + 1) if split == "train" else range(last, last + 1)
            examples, rows, cut = _user_examples(world, f"u{first_user + u:04d}", trace, positions)
            splits[split] += examples
            oracle[split] += rows
            truncated += cut
        first_user += counts[split]
    filtered = []
    if truncated:
        filtered.append(FilterRecord("history cap", truncated, f"histories longer than max_history="
                                     f"{cfg.max_history}; kept the newest items (examples kept)",
                                     "histories truncated"))
    return RecDataset(name="synthetic", catalog=world.catalog(), splits=splits, filtered=filtered,
                      max_history=cfg.max_history, oracle=oracle, source=describe_source(cfg, seed),
                      generator={"function": GENERATOR, "seed": seed, "config": asdict(cfg)})


def describe_source(config: SyntheticConfig, seed: int) -> str:
    """Provenance string: the seed and the fields that differ from the defaults, e.g.
    ``riser_lite.data.synthetic(seed=0)`` for the default config."""
    default = SyntheticConfig()
    changed = "".join(f", {f.name}={getattr(config, f.name)!r}" for f in fields(config)
                      if getattr(config, f.name) != getattr(default, f.name))
    return f"riser_lite.data.synthetic(seed={seed}{changed})"


def world_of(ds: RecDataset) -> SyntheticWorld | None:
    """The world a dataset was generated in (rebuilt from `ds.generator`), or None for other data."""
    record = ds.generator
    if not isinstance(record, dict) or record.get("function") != GENERATOR:
        return None
    return build_world(SyntheticConfig(**record["config"]), record["seed"])


def write_synthetic(directory: str | Path, config: SyntheticConfig | None = None, seed: int = 0, *,
                    include_oracle: bool = False) -> RecDataset:
    """Generate and save in the native format; meta.json records the generator (`load_synthetic` uses it)."""
    ds = generate_synthetic(config or SyntheticConfig(), seed)
    save_dataset(ds, directory, include_oracle=include_oracle)
    return ds


def restore_oracle(ds: RecDataset, where: Path) -> RecDataset:
    """Give a loaded synthetic dataset its oracle back by re-running the generator it records, only when
    that reproduces the catalogue and examples exactly; otherwise (edited files, another generator version,
    an unreadable record) a warning says why and the dataset stays without an oracle."""
    record = ds.generator
    if ds.oracle is not None or not isinstance(record, dict) or record.get("function") != GENERATOR:
        return ds
    too_big = _larger_than_the_files(record.get("config"), ds)
    if too_big is not None:  # never generate what the files cannot hold (meta.json could ask for 10^8 users)
        warnings.warn(f"{where}: the recorded generator asks for {too_big}, more than the files hold; loaded "
                      "without an oracle", stacklevel=2)
        return ds
    try:
        fresh = generate_synthetic(SyntheticConfig(**record["config"]), seed=record["seed"])
    except (KeyError, TypeError, ValueError) as err:
        warnings.warn(f"{where}: could not re-run the recorded generator ({err}); loaded without an oracle",
                      stacklevel=2)
        return ds
    if fresh.catalog != ds.catalog or fresh.splits != ds.splits:
        warnings.warn(f"{where}: the files differ from what the recorded generator produces (edited by hand, "
                      "or made by another version); loaded without an oracle", stacklevel=2)
        return ds
    ds.oracle = fresh.oracle
    return ds


def _larger_than_the_files(config, ds: RecDataset) -> str | None:
    """What the recorded generator config asks for beyond the files' users and items, or None: a config
    that reproduces the files asks for no more, so this bounds the work of re-running it."""
    if not isinstance(config, dict):
        return None  # the generator's own config check reports it
    have = {"num_train_users": len(ds.users("train")), "num_valid_users": len(ds.splits.get("valid", [])),
            "num_test_users": len(ds.splits.get("test", []))}
    for name, count in have.items():
        asked = config.get(name)
        if isinstance(asked, int) and asked > count:
            return f"{name}={asked} ({count} in the files)"
    genres, standalones = config.get("num_genres"), config.get("standalones_per_genre")
    if isinstance(genres, int) and isinstance(standalones, int) and genres * standalones > len(ds.catalog):
        return f"{genres * standalones} standalone items ({len(ds.catalog)} items in the files)"
    return None


def load_synthetic(directory: str | Path, *, with_oracle: bool = True) -> RecDataset:
    """A saved synthetic dataset (`load_native`), its oracle restored by `restore_oracle` (about a second
    for the default size) unless saved or `with_oracle=False`."""
    ds = load_native(directory)
    return restore_oracle(ds, Path(directory) / META_FILE) if with_oracle else ds
