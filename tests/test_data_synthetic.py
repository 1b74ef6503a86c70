"""The synthetic generator: determinism, the bundled copy, the oracle, and the structure it promises."""

import dataclasses
import importlib
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from riser_lab.synthetic import main
from riser_lite.data.native import load_native, read_meta
from riser_lite.data.synthetic import (
    GENERATOR,
    SyntheticConfig,
    build_world,
    generate_synthetic,
    load_synthetic,
    simulate_user,
)
from riser_lite.data.types import SPLITS, DataError, Example, RecDataset
from riser_lite.eval.oracle import Score, oracle_hit_rate, oracle_ndcg, popularity_hit_rate

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "synthetic"
SMALL = SyntheticConfig(num_train_users=40, num_valid_users=15, num_test_users=15)


@pytest.fixture(scope="module")
def default_ds() -> RecDataset:
    return generate_synthetic()


def full_sequences(ds: RecDataset) -> dict[str, list[int]]:
    """Each train user's whole sequence: the first window's history, then every target in order."""
    sequences: dict[str, list[int]] = {}
    for ex in ds.splits["train"]:
        if ex.user not in sequences:
            assert len(ex.history) == 1, "a train user's first window has a one-item history"
            sequences[ex.user] = list(ex.history)
        sequences[ex.user].append(ex.target)
    return sequences


# ---------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_identical_dataset_and_another_seed_a_different_one():
    first, second = generate_synthetic(SMALL, seed=7), generate_synthetic(SMALL, seed=7)
    assert first == second  # catalogue, examples, oracle, filtered records and source alike
    other = generate_synthetic(SMALL, seed=8)
    assert other.catalog != first.catalog
    assert other.splits != first.splits


def test_resizing_one_split_leaves_the_other_splits_unchanged():
    bigger = generate_synthetic(dataclasses.replace(SMALL, num_train_users=60), seed=7)
    base = generate_synthetic(SMALL, seed=7)
    assert bigger.catalog == base.catalog
    assert bigger.splits["test"][0].history == base.splits["test"][0].history  # users differ only by name


def test_bundled_copy_is_exactly_what_the_generator_makes(default_ds):
    meta = read_meta(BUNDLED)
    assert meta["generator"]["seed"] == 0
    assert meta["generator"]["config"] == dataclasses.asdict(SyntheticConfig())
    saved = load_native(BUNDLED)  # the files alone: no oracle
    assert saved.catalog == default_ds.catalog
    assert saved.splits == default_ds.splits
    assert (saved.name, saved.max_history, saved.filtered, saved.source) == (
        default_ds.name, default_ds.max_history, default_ds.filtered, default_ds.source)
    size = sum(p.stat().st_size for p in BUNDLED.iterdir())
    assert size < 1_000_000, f"bundled data is {size} bytes; keep it well under 1 MB"


def test_command_line_writes_a_dataset_whose_oracle_is_restored_on_load(tmp_path, capsys, default_ds):
    main(["--out", str(tmp_path / "synth"), "--seed", "0"])
    assert "oracle HR" in capsys.readouterr().out
    assert load_synthetic(tmp_path / "synth") == default_ds  # oracle included, rebuilt from meta.json


def test_the_generator_path_recorded_in_meta_json_names_generate_synthetic():
    module, name = GENERATOR.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is generate_synthetic
    assert generate_synthetic(SMALL, seed=1).generator["function"] == GENERATOR


def test_invalid_config_is_rejected_with_the_reason():
    with pytest.raises(ValueError, match="series_prob"):
        SyntheticConfig(series_prob=1.5)
    with pytest.raises(ValueError, match="exhaust a genre"):
        SyntheticConfig(max_length=60)


# ---------------------------------------------------------------------------------------- catalogue


def test_default_size_fits_a_one_minute_cpu_sft(default_ds):
    assert 300 <= default_ds.num_items <= 500
    assert 3000 <= len(default_ds.splits["train"]) <= 6000
    assert len(default_ds.users("train")) == 400
    for split in ("valid", "test"):
        assert len(default_ds.splits[split]) == len(default_ds.users(split)) == 200
    words = [len(title.split()) for title in default_ds.catalog.values()]
    assert min(words) >= 2 and max(words) <= 5


def test_titles_are_unique_and_series_share_prefixes(default_ds):
    titles = list(default_ds.catalog.values())
    assert len(set(titles)) == len(titles)
    world = build_world()
    cfg = world.config
    assert len(world.series) == cfg.num_genres * cfg.series_per_genre
    for name, parts in world.series.items():
        assert cfg.min_series_length <= len(parts) <= cfg.max_series_length
        assert world.items[parts[0]].title == name
        for k, item in enumerate(parts[1:], start=2):
            assert world.items[item].part == k
            assert world.items[item].title.startswith(name + " ")  # "Starfall Chronicles II[: ...]"
    # Titles that are strict prefixes of others exist (what makes the item trie interesting).
    prefixes = sum(1 for a in titles if any(b != a and b.startswith(a + " ") for b in titles))
    assert prefixes >= len(world.series)
    assert any(":" in t for t in titles)  # some sequels have subtitles


def test_genres_read_off_the_titles():
    """Each genre's words are its own, so a model can infer taste from the titles it sees."""
    world = build_world()
    words_by_genre = defaultdict(set)
    for item in world.items:
        words_by_genre[item.genre].update(re.findall(r"[A-Za-z]+", item.title))
    shared = {"The", "of", "the", "s", "I", "II", "III", "IV", "V"}
    for g, h in [(g, h) for g in words_by_genre for h in words_by_genre if g < h]:
        overlap = words_by_genre[g] & words_by_genre[h] - shared
        # Only the series kinds ("Saga", "Chronicles"...) may be shared between genres.
        assert overlap <= {"Chronicles", "Saga", "Legacy", "Files", "Tales", "Adventures", "Cycle", "Diaries"}


# ---------------------------------------------------------------------------------------- splits


def test_split_by_user_with_sliding_train_windows_and_final_held_out_windows(default_ds):
    users = [default_ds.users(s) for s in SPLITS]
    assert not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    cap = default_ds.max_history
    sequences = full_sequences(default_ds)
    for user, sequence in sequences.items():
        assert len(set(sequence)) == len(sequence), f"user {user} consumed an item twice"
    windows = defaultdict(list)
    for ex in default_ds.splits["train"]:
        windows[ex.user].append(ex)
    for user, examples in windows.items():
        for t, ex in enumerate(examples, start=1):  # window t: item t from the newest <= cap items before it
            assert ex.history == tuple(sequences[user][max(0, t - cap):t])
    for split in ("valid", "test"):
        for ex in default_ds.splits[split]:
            assert 1 <= len(ex.history) <= cap and ex.target not in ex.history and ex.time is None


# ---------------------------------------------------------------------------------------- oracle


def test_oracle_rows_are_distributions_that_exclude_consumed_items(default_ds):
    sequences = full_sequences(default_ds)
    position = defaultdict(int)
    for split in SPLITS:
        assert len(default_ds.oracle[split]) == len(default_ds.splits[split])
        for ex, dist in zip(default_ds.splits[split], default_ds.oracle[split], strict=True):
            assert math.isclose(math.fsum(dist.values()), 1.0, abs_tol=1e-9)
            assert all(p > 0 for p in dist.values())
            assert dist.get(ex.target, 0.0) > 0.0  # the actual target was possible
            consumed = set(ex.history)
            if split == "train":  # the whole prefix, including items beyond the history cap
                position[ex.user] += 1
                consumed = set(sequences[ex.user][:position[ex.user]])
            assert not consumed & dist.keys()


@pytest.mark.parametrize("with_series", [True, False])
def test_oracle_equals_the_step_by_step_sampler(with_series):
    """The closed-form distribution and the story-like sampler are separate code; they must agree."""
    world = build_world()
    rng = np.random.default_rng(0)
    taste = np.array([0.6, 0.3, 0.1] + [0.0] * (len(world.genres) - 3))
    series = next(parts for parts in world.series.values() if len(parts) >= 3)
    standalone = [it.item_id for it in world.items if it.series is None]
    history = [series[0], series[1], *standalone[-2:]] if with_series else standalone[:3]
    assert bool(world.series_candidates(history)) == with_series
    exact = world.next_item_distribution(taste, history)
    n = 20_000
    counts = np.bincount([world.sample_next_item(taste, history, rng)[0] for _ in range(n)],
                         minlength=world.num_items)
    assert counts[history].sum() == 0 and exact[history].sum() == 0
    assert math.isclose(exact.sum(), 1.0, abs_tol=1e-12)
    observed = counts / n
    spread = np.sqrt(exact * (1 - exact) / n)
    assert np.all(np.abs(observed - exact) <= 5 * spread + 1e-3)
    by_genre = np.bincount(world.genre_of, weights=observed - exact, minlength=len(world.genres))
    assert np.all(np.abs(by_genre) < 0.02)


def test_sequel_continuation_happens_at_the_configured_rate():
    world = build_world(SMALL, seed=1)
    rng = np.random.default_rng(1)
    eligible = continued = 0
    for _ in range(600):
        trace = simulate_user(world, rng)
        for t, mode in enumerate(trace.modes):
            if world.series_candidates(trace.items[:t]):
                eligible += 1
                continued += mode == "series"
            else:
                assert mode != "series"
    p = SMALL.series_prob
    assert eligible > 1000
    assert abs(continued / eligible - p) < 4 * math.sqrt(p * (1 - p) / eligible)


def test_sequels_show_up_in_the_data_as_often_as_the_oracle_predicts(default_ds):
    """Targets continuing a recently met series: as frequent as the oracle says, at least series_prob."""
    world = build_world()
    sequences = full_sequences(default_ds)
    position = defaultdict(int)
    hits, predicted = [], []
    for ex, dist in zip(default_ds.splits["train"], default_ds.oracle["train"], strict=True):
        position[ex.user] += 1
        candidates = world.series_candidates(sequences[ex.user][:position[ex.user]])
        if candidates:
            hits.append(ex.target in candidates)
            predicted.append(sum(dist[c] for c in candidates))
    n, rate, expected = len(hits), float(np.mean(hits)), float(np.mean(predicted))
    assert n > 500  # series continuation is a large part of the data, not a curiosity
    assert expected >= world.config.series_prob
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_oracle_is_far_above_popularity_but_below_one(default_ds):
    for split in ("valid", "test"):
        oracle = oracle_hit_rate(default_ds, split, 10)
        popularity = popularity_hit_rate(default_ds, split, 10)
        assert 0.4 < oracle.expected < 0.8
        assert popularity.expected < oracle.expected - 0.25
        assert abs(oracle.realised - oracle.expected) < 0.12  # 200 examples: sampling noise only
    hr = [oracle_hit_rate(default_ds, "test", k).expected for k in (1, 5, 10, 20)]
    assert hr == sorted(hr) and hr[-1] < 1.0
    ndcg = oracle_ndcg(default_ds, "test", 10)
    assert 0 < ndcg.expected <= hr[2]


def test_a_predictor_that_sees_only_the_prompt_gets_close_to_the_oracle(default_ds):
    """Learnable: the prompt reveals taste (genre words) and series, so a good sequence model can approach
    the oracle. Stand-in for such a model: the true process with taste estimated from the visible history."""
    world = build_world()
    prior = world.config.taste_concentration * world.genre_share
    hits = []
    for ex in default_ds.splits["test"]:
        counts = np.bincount(world.genre_of[list(ex.history)], minlength=len(world.genres))
        taste = (prior + counts) / (prior.sum() + counts.sum())  # posterior mean of the Dirichlet
        top = np.argsort(-world.next_item_distribution(taste, ex.history), kind="stable")[:10]
        hits.append(ex.target in top)
    prompt_only = float(np.mean(hits))
    popularity = popularity_hit_rate(default_ds, "test", 10).realised
    oracle = oracle_hit_rate(default_ds, "test", 10).realised
    assert popularity + 0.2 < prompt_only <= oracle + 0.05


def test_reference_scores_follow_their_definitions_on_a_hand_made_dataset():
    catalog = {1: "A b", 2: "C d", 3: "E f", 4: "G h"}
    splits = {"train": [Example("u", (1,), 2), Example("u", (1, 2), 2)],
              "valid": [Example("v", (4,), 3)], "test": [Example("w", (1,), 3)]}
    oracle = {"train": [{2: 0.5, 3: 0.5}, {3: 0.6, 4: 0.4}],
              "valid": [{1: 0.2, 2: 0.2, 3: 0.6}], "test": [{2: 0.5, 3: 0.3, 4: 0.2}]}
    ds = RecDataset("hand", catalog, splits, oracle=oracle)
    assert oracle_hit_rate(ds, "test", 1) == Score(0.5, 0.0)
    assert oracle_hit_rate(ds, "test", 2) == Score(0.8, 1.0)
    assert oracle_hit_rate(ds, "valid", 2) == Score(0.8, 1.0)  # tie at 0.2 broken by item id: 1 before 2
    assert oracle_ndcg(ds, "test", 2).expected == pytest.approx(0.5 + 0.3 / math.log2(3))
    assert oracle_ndcg(ds, "test", 2).realised == pytest.approx(1 / math.log2(3))
    # Popularity: item 2 is the most frequent train target, then ids in order (1 skipped: in history).
    assert popularity_hit_rate(ds, "test", 2) == Score(0.8, 1.0)
    assert popularity_hit_rate(ds, "test", 1, exclude_history=False) == Score(0.5, 0.0)
    with pytest.raises(DataError, match="no oracle"):
        oracle_hit_rate(RecDataset("x", catalog, splits), "test", 1)
