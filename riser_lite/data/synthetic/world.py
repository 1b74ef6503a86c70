"""The synthetic world: a catalogue with genres, makers, numbered series and popularity, and the exact
sequential process users follow in it (one sampled step, or the whole next-item distribution).

`build_world(config, seed)` is deterministic in the seed; the generator then simulates users in it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from riser_lite.data.synthetic.config import SyntheticConfig
from riser_lite.data.synthetic.words import (
    GENRE_WORDS,
    MAKER_KINDS,
    MAKER_NAMES,
    ROMAN,
    SERIES_KINDS,
    GenreWords,
)
from riser_lite.data.types import SPLITS


@dataclass(frozen=True)
class SyntheticItem:
    """One catalogue entry with the attributes the generator used (handy for notebooks)."""

    item_id: int
    title: str
    genre: str
    maker: str
    series: str | None  # series name ("Starfall Chronicles") or None for a standalone title
    part: int  # instalment number within the series (1, 2, ...); 0 for standalone titles
    appeal: float  # within-genre choice weight (Zipf in the item's genre rank; lowered for sequels)
    popularity: float  # catalogue-wide choice weight: genre share x appeal / genre total (sums to 1)


@dataclass(eq=False)
class SyntheticWorld:
    """The catalogue and the exact sequential process users follow in it."""

    config: SyntheticConfig
    items: list[SyntheticItem]  # indexed by item id (ids are 0..n-1)
    genres: list[str]
    genre_share: np.ndarray  # market share of each genre (sums to 1); also the mean of users' tastes
    series: dict[str, list[int]]  # series name -> item ids in part order

    def __post_init__(self) -> None:
        # Flat arrays so one step of the process is a handful of vectorised operations.
        genre_index = {g: k for k, g in enumerate(self.genres)}
        self.genre_of = np.array([genre_index[it.genre] for it in self.items], dtype=np.int64)
        self.appeal = np.array([it.appeal for it in self.items], dtype=np.float64)
        self.popularity = np.array([it.popularity for it in self.items], dtype=np.float64)
        self.item_ids = [it.item_id for it in self.items]  # 0..n-1 as one shared list of int objects

    @property
    def num_items(self) -> int:
        return len(self.items)

    def catalog(self) -> dict[int, str]:
        return {it.item_id: it.title for it in self.items}

    def sample_taste(self, rng: np.random.Generator) -> np.ndarray:
        """A user's genre taste: Dirichlet centred on the market shares (small concentration = focused)."""
        return rng.dirichlet(self.config.taste_concentration * self.genre_share)

    def series_candidates(self, history: Sequence[int]) -> list[int]:
        """Next instalments of the series met in the last `series_memory` items (sorted, may be empty): the
        part after the highest part consumed anywhere in the history (skipped parts stay reachable through
        taste and popularity)."""
        recent = {self.items[i].series for i in history[-self.config.series_memory:]} - {None}
        if not recent:
            return []
        seen = set(history)
        candidates = []
        for name in recent:
            parts = self.series[name]
            highest = max(k for k, item in enumerate(parts) if item in seen)
            if highest + 1 < len(parts):
                candidates.append(parts[highest + 1])
        return sorted(candidates)

    def _available(self, history: Sequence[int]) -> np.ndarray:
        available = np.ones(self.num_items, dtype=bool)
        available[list(history)] = False
        return available

    def next_item_distribution(self, taste: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """The oracle: the exact probability of every item being next given the taste and the full history
        (closed form of the process in `riser_lite.data.synthetic`; consumed items get 0). [I]"""
        cfg = self.config
        available = self._available(history)
        # (3) taste: P(genre g) x appeal / (total appeal of g's unconsumed items); no genre can be exhausted.
        weight = self.appeal * available
        genre_total = np.bincount(self.genre_of, weights=weight, minlength=len(self.genres))
        by_taste = taste[self.genre_of] * weight / genre_total[self.genre_of]
        # (2) global popularity over unconsumed items.
        by_popularity = self.popularity * available
        by_popularity /= by_popularity.sum()
        dist = (1.0 - cfg.popular_prob) * by_taste + cfg.popular_prob * by_popularity
        # (1) series continuation, uniform over candidates, when there are any.
        candidates = self.series_candidates(history)
        if candidates:
            dist *= 1.0 - cfg.series_prob
            dist[candidates] += cfg.series_prob / len(candidates)
        return dist

    def sample_next_item(self, taste: np.ndarray, history: Sequence[int],
                         rng: np.random.Generator) -> tuple[int, str]:
        """Draw ``(item id, mode)``, mode "series", "popular" or "taste", step by step as the story goes.
        Written independently of `next_item_distribution` on purpose: tests check that the two agree."""
        cfg = self.config
        candidates = self.series_candidates(history)
        if candidates and rng.random() < cfg.series_prob:
            return candidates[int(rng.integers(len(candidates)))], "series"
        available = self._available(history)
        if rng.random() < cfg.popular_prob:
            return _draw(rng, self.popularity * available), "popular"
        genre = _draw(rng, taste)
        return _draw(rng, self.appeal * available * (self.genre_of == genre)), "taste"


def _draw(rng: np.random.Generator, weights: np.ndarray) -> int:
    """Index drawn with probability proportional to the non-negative `weights`."""
    cumulative = np.cumsum(weights)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    # Guard against rounding at the top end landing past the last item with positive weight.
    return min(index, int(np.flatnonzero(weights)[-1]))


def _genre_titles(words: GenreWords, rng: np.random.Generator, cfg: SyntheticConfig,
                  makers: list[str]) -> list[tuple[str, str | None, int, str]]:
    """One genre's titles as ``(title, series name or None, part, maker)``: series, then standalones."""
    adjective_noun = [f"{a} {n}" for a, n in itertools.product(words.adjectives, words.nouns)]
    used: set[str] = set()  # phrases already in a title of this genre (keeps titles visibly distinct)
    subtitles = iter(adjective_noun[i] for i in rng.permutation(len(adjective_noun)))
    entries: list[tuple[str, str | None, int, str]] = []
    for stem in rng.permutation(np.array(words.stems))[: cfg.series_per_genre]:
        name = f"{stem} {SERIES_KINDS[int(rng.integers(len(SERIES_KINDS)))]}"
        maker = makers[int(rng.integers(len(makers)))]
        length = int(rng.integers(cfg.min_series_length, cfg.max_series_length + 1))
        entries.append((name, name, 1, maker))
        for part in range(2, length + 1):
            title = f"{name} {ROMAN[part - 1]}"
            if rng.random() < cfg.subtitle_prob:
                subtitle = next(s for s in subtitles if s not in used)
                used.add(subtitle)
                title = f"{title}: {subtitle}"
            entries.append((title, name, part, maker))
    # Standalone patterns, 2-4 words. A phrase and its "The ..." form never both appear.
    pool = ([(f"The {p}", p) for p in adjective_noun] + [(p, p) for p in adjective_noun]
            + [(f"{a} of the {b}", f"{a} of the {b}") for a, b in itertools.permutations(words.nouns, 2)]
            + [(f"The {a}'s {b}", f"{a}'s {b}") for a, b in itertools.permutations(words.nouns, 2)])
    standalones = 0
    for index in rng.permutation(len(pool)):
        if standalones == cfg.standalones_per_genre:
            break
        title, core = pool[index]
        if core in used:
            continue
        used.add(core)
        entries.append((title, None, 0, makers[int(rng.integers(len(makers)))]))
        standalones += 1
    if standalones < cfg.standalones_per_genre:
        raise ValueError(f"word bank too small for {cfg.standalones_per_genre} standalone titles per genre")
    return entries


def build_world(config: SyntheticConfig | None = None, seed: int = 0) -> SyntheticWorld:
    """The catalogue and popularity for `seed` (the same world `generate_synthetic(config, seed)` uses)."""
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(seed_sequences(seed)[0])
    genres = list(GENRE_WORDS)[: cfg.num_genres]
    # Market shares: a mild Zipf law over genres in random order.
    genre_rank = rng.permutation(cfg.num_genres)
    share = (genre_rank + 1.0) ** -cfg.genre_zipf_exponent
    share /= share.sum()
    maker_names = [f"{name} {MAKER_KINDS[int(rng.integers(len(MAKER_KINDS)))]}"
                   for name in rng.permutation(np.array(MAKER_NAMES))]
    items: list[SyntheticItem] = []
    series: dict[str, list[int]] = {}
    for k, genre in enumerate(genres):
        makers = maker_names[k * cfg.makers_per_genre:(k + 1) * cfg.makers_per_genre]
        entries = _genre_titles(GENRE_WORDS[genre], rng, cfg, makers)
        # Appeal: Zipf in a random within-genre rank, lowered for sequels.
        rank = rng.permutation(len(entries))
        appeal = (rank + 1.0) ** -cfg.zipf_exponent
        appeal *= np.array([cfg.sequel_appeal if part >= 2 else 1.0 for _, _, part, _ in entries])
        popularity = share[k] * appeal / appeal.sum()
        for (title, name, part, maker), a, p in zip(entries, appeal, popularity, strict=True):
            item_id = len(items)
            items.append(SyntheticItem(item_id, title, genre, maker, name, part, float(a), float(p)))
            if name is not None:
                series.setdefault(name, []).append(item_id)
    titles = [it.title for it in items]
    assert len(set(titles)) == len(titles), "synthetic titles must be unique by construction"
    return SyntheticWorld(cfg, items, genres, share, series)


def seed_sequences(seed: int) -> list[np.random.SeedSequence]:
    """Independent streams: world, then one per split (resizing one split leaves the others alone)."""
    return np.random.SeedSequence(seed).spawn(1 + len(SPLITS))
