"""Shared test fixtures."""

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers share the cores: one intra-op thread each avoids oversubscription, which makes
    # the small models of the tests many times slower.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def lastfm_path() -> Path:
    """The real LastFM release (read in place, never copied): ``../shared/data/lastfm`` from the project root,
    or the directory named by ``RISER_LITE_LASTFM``. Tests using it are skipped where it is absent."""
    path = Path(os.environ.get("RISER_LITE_LASTFM") or Path(__file__).resolve().parents[2] / "shared" / "data"
                / "lastfm")
    if not (path / "train.jsonl").is_file():
        if os.environ.get("CI"):  # CI has the data beside the clone: a missing copy is a set-up error there
            pytest.fail(f"LastFM data not found at {path} (set RISER_LITE_LASTFM)")
        pytest.skip(f"LastFM data not found at {path} (set RISER_LITE_LASTFM)")
    return path


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """A synthetic dataset of ~50 items and ~30 training users, saved where `load_dataset` can find it."""
    from riser_lite.data.synthetic import SyntheticConfig, write_synthetic

    path = tmp_path_factory.mktemp("data") / "synthetic-small"
    config = SyntheticConfig(num_genres=3, series_per_genre=2, standalones_per_genre=8, num_train_users=30,
                             num_valid_users=10, num_test_users=20, min_length=4, max_length=8)
    write_synthetic(path, config, seed=0)
    return path


@pytest.fixture(scope="session")
def micro_dataset():
    """24 items with two-word titles and 56 users of 3-item histories: enough for a micro model to RL on."""
    import random

    from riser_lite.data.types import Example, RecDataset

    rng = random.Random(0)
    words = ["Red", "Blue", "Green", "Gold"], ["Star", "Moon", "Sun", "Sky", "Sea"]
    catalog = {i: f"{rng.choice(words[0])} {rng.choice(words[1])} {i}" for i in range(24)}

    def example(user: int) -> Example:
        items = rng.sample(range(24), 4)
        return Example(user=str(user), history=tuple(items[:3]), target=items[3])

    splits = {"train": [example(u) for u in range(40)], "valid": [example(u) for u in range(40, 48)],
              "test": [example(u) for u in range(48, 56)]}
    return RecDataset(name="micro", catalog=catalog, splits=splits)


@pytest.fixture(scope="session")
def micro_backbone(micro_dataset):
    """(model, tokenizer): a randomly initialised micro model stands in for an SFT model."""
    from riser_lite.model.backbone import build_backbone

    return build_backbone(micro_dataset, "micro", seed=0)


@pytest.fixture
def micro_start(micro_backbone, micro_dataset):
    """A function giving a new (model, tokenizer, dataset) start, the same micro model each time (runs
    must not share weights)."""
    from riser_lite.model.backbone import build_model, get_preset

    _, tokenizer = micro_backbone
    return lambda: (build_model(get_preset("micro"), tokenizer, seed=0), tokenizer, micro_dataset)
