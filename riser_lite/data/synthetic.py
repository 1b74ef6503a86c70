"""Synthetic recommendation data whose next-item distribution is known exactly.

Real logs never tell you how good a recommender *could* be. This generator does: it builds a small world
(a catalogue of fictional films, books and games with genres, makers and numbered series) and simulates
users in it with a fully specified sequential process. Every example therefore carries its exact
next-item distribution, the *oracle*, so a notebook can put a trained model between two reference points:
the popularity baseline below it and the best achievable score above it (`oracle_hit_rate`).

The process. A user has a latent genre taste θ (a Dirichlet draw centred on the genres' market shares)
and has so far consumed h_1..h_t. The next item is drawn as follows:

1. **Series continuation.** Let S be the next instalments of the series the user met in the last
   `series_memory` items (for each such series, the part after the highest part the user has seen, if
   the series has one). If S is not empty, with probability `series_prob` the next item is uniform on S.
2. **Global popularity.** Otherwise, with probability `popular_prob`, an item is drawn in proportion to
   its catalogue-wide popularity (genre market share x within-genre appeal).
3. **Taste.** Otherwise a genre g ~ θ, then an item of g in proportion to its appeal, which falls off like
   a Zipf law with the item's rank in the genre (sequels have low appeal: people rarely start mid-series).

Items already consumed are never drawn again: each source renormalises over the unconsumed items. The
oracle of an example is this mixture, computed in closed form from the user's taste and *full* history,
so it is an upper bound for any model that sees only the prompt (at most `max_history` items, no taste).

Run ``python -m riser_lite.data.synthetic --out data/synthetic --seed 0`` to write the bundled default.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

from riser_lite.data.native import SYNTHETIC_GENERATOR, save_dataset
from riser_lite.data.types import SPLITS, DataError, Example, FilterRecord, RecDataset

# --------------------------------------------------------------------------------------------------------
# Word bank. Each genre has its own adjectives, nouns and series stems, and the lists of different genres
# are disjoint, so a title's words reveal its genre (a language model can learn that) and titles built from
# different genres can never coincide. `_check_word_bank` asserts the disjointness at import time.
# --------------------------------------------------------------------------------------------------------


class _Words(NamedTuple):
    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]
    stems: tuple[str, ...]  # one-word series names: "<stem> <kind>", e.g. "Starfall Chronicles"


GENRE_WORDS: dict[str, _Words] = {
    "space opera": _Words(
        ("Distant", "Silent", "Stellar", "Orbital", "Cosmic", "Lunar", "Solar", "Infinite", "Drifting",
         "Radiant"),
        ("Star", "Nebula", "Orbit", "Comet", "Voyager", "Horizon", "Void", "Galaxy", "Pulsar", "Station",
         "Eclipse", "Beacon", "Armada", "Asteroid"),
        ("Starfall", "Voidborn", "Nova", "Skyforge", "Farlight", "Quasar", "Helion", "Zenith")),
    "fantasy": _Words(
        ("Elder", "Enchanted", "Forgotten", "Golden", "Ancient", "Wild", "Hidden", "Royal", "Silver",
         "Thorned"),
        ("Dragon", "Crown", "Rune", "Throne", "Sword", "Kingdom", "Wizard", "Oak", "Tower", "Spell",
         "Griffin", "Realm", "Chalice", "Bard"),
        ("Emberwild", "Dragonmoor", "Rimehold", "Thornkeep", "Glimmervale", "Oakheart", "Runeguard",
         "Everspire")),
    "mystery": _Words(
        ("Quiet", "Crooked", "Missing", "Secret", "Final", "Locked", "Foggy", "Curious", "Pale", "Gilded"),
        ("Clue", "Alibi", "Witness", "Cipher", "Ledger", "Verdict", "Detective", "Motive", "Key", "Affair",
         "Letter", "Manor", "Suspect", "Riddle"),
        ("Blackwood", "Greymoor", "Ashcombe", "Whitlock", "Marlowe", "Pennywhistle", "Kingsbridge",
         "Holloway")),
    "horror": _Words(
        ("Haunted", "Cursed", "Rotten", "Screaming", "Grim", "Wicked", "Buried", "Bleeding", "Howling",
         "Sunken"),
        ("Grave", "Crypt", "Ghost", "Coffin", "Skull", "Witch", "Curse", "Raven", "Cellar", "Marrow",
         "Shadow", "Lantern", "Hunger", "Scarecrow"),
        ("Nightmire", "Gravewood", "Dreadmoor", "Hexley", "Bonechill", "Wraithfield", "Ghoulhaven",
         "Mourncliff")),
    "romance": _Words(
        ("Sweet", "Tender", "Blushing", "Lovely", "Endless", "Gentle", "Velvet", "Honeyed", "Summer",
         "Starlit"),
        ("Heart", "Rose", "Kiss", "Promise", "Valentine", "Bouquet", "Wedding", "Sunset", "Dance", "Garden",
         "Vow", "Sonnet", "Blossom", "Serenade"),
        ("Rosewood", "Lovelace", "Heartsease", "Sweetbriar", "Amberly", "Bellamy", "Juniper", "Primrose")),
    "western": _Words(
        ("Dusty", "Lonesome", "Rugged", "Untamed", "Copper", "Restless", "Desperate", "Burnt", "Rusty",
         "Thirsty"),
        ("Canyon", "Saddle", "Sheriff", "Outlaw", "Mesa", "Stallion", "Rider", "Gulch", "Ranch", "Bounty",
         "Frontier", "Spur", "Prairie", "Wagon"),
        ("Tumbleweed", "Deadwood", "Redmesa", "Coyote", "Silverado", "Tombstone", "Laredo", "Dustbowl")),
    "cyberpunk": _Words(
        ("Neon", "Chrome", "Digital", "Synthetic", "Electric", "Glitched", "Encrypted", "Wired", "Binary",
         "Overclocked"),
        ("Circuit", "Grid", "Protocol", "Signal", "Code", "Android", "Network", "Drone", "Pixel", "Matrix",
         "Virus", "Firewall", "Implant", "Server"),
        ("Neonrain", "Glitchcore", "Hexnet", "Chromeheart", "Datastorm", "Cyberdawn", "Wirebound",
         "Synthwave")),
    "comedy": _Words(
        ("Wacky", "Clumsy", "Silly", "Grumpy", "Cheeky", "Fuzzy", "Bumbling", "Sneaky", "Giggling", "Zany"),
        ("Pickle", "Pancake", "Goose", "Sock", "Noodle", "Llama", "Banana", "Muffin", "Penguin", "Burrito",
         "Toaster", "Walrus", "Kazoo", "Waffle"),
        ("Bumblebrook", "Picklewick", "Snickerdoodle", "Wobbleton", "Fiddlesticks", "Muddlecombe",
         "Gigglesworth", "Noodleham")),
}

# Second word of a series name. Never used in standalone titles, so a series title can't equal a standalone.
SERIES_KINDS = ("Chronicles", "Saga", "Legacy", "Files", "Tales", "Adventures", "Cycle", "Diaries")
# Makers are "<name> <kind>" (studios, publishers, labels); descriptive metadata, the process ignores them.
MAKER_NAMES = ("Ironleaf", "Bluefinch", "Red Comet", "Northwind", "Paper Lantern", "Copperpot", "Seven Hills",
               "Brightwater", "Old Harbour", "Tin Soldier", "Greenhouse", "Blackbird", "Lighthouse", "Kettle",
               "Hollowtree", "Quicksilver", "Marigold", "Stonebridge", "Foxglove", "Ravenhill", "Sundial",
               "Windmill", "Mapleleaf", "Bright Owl")
MAKER_KINDS = ("Studios", "Pictures", "Press", "Interactive", "Games", "Books")
ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X")


def _check_word_bank() -> None:
    """Words of different genres, series kinds and glue words never overlap (uniqueness relies on it)."""
    owner: dict[str, str] = {word: "series kinds" for word in SERIES_KINDS}
    owner.update({"The": "glue", "of": "glue", "the": "glue"})
    for genre, words in GENRE_WORDS.items():
        for word in itertools.chain(*words):
            assert word not in owner, f"word {word!r} of {genre!r} is also used by {owner[word]!r}"
            owner[word] = genre


_check_word_bank()


# --------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the generator. The defaults make the bundled dataset (see data/README.md)."""

    # --- catalogue ---
    num_genres: int = 8  # genres used, the first ones of GENRE_WORDS (at most 8)
    series_per_genre: int = 6  # numbered series per genre (at most 8: one per series stem)
    min_series_length: int = 2  # instalments per series are uniform in [min_series_length, max_series_length]
    max_series_length: int = 5
    standalones_per_genre: int = 32  # single titles per genre, built from the genre's word lists
    makers_per_genre: int = 3  # studios / publishers per genre (metadata only; the process ignores them)
    subtitle_prob: float = 0.5  # chance that a sequel gets a subtitle: "Nova Saga III: Silent Comet"
    # --- popularity ---
    zipf_exponent: float = 1.0  # appeal of the r-th most appealing item of a genre is r ** -zipf_exponent
    genre_zipf_exponent: float = 0.3  # market share of the r-th largest genre is proportional to r ** -this
    sequel_appeal: float = 0.2  # appeal multiplier for parts >= 2: few people start a series in the middle
    # --- users ---
    num_train_users: int = 400  # every sliding window of these users is a train example
    num_valid_users: int = 200  # one example each (the final window), disjoint from train users
    num_test_users: int = 200  # one example each (the final window), disjoint from train and valid users
    min_length: int = 6  # interactions per user are uniform in [min_length, max_length]
    max_length: int = 16
    taste_concentration: float = 0.8  # Dirichlet mass, alpha_g = this x share_g; small = few genres per user
    # --- sequential process ---
    series_prob: float = 0.6  # P(continue a series) when a recently met series has a next instalment
    series_memory: int = 3  # how many of the latest items count as "recently met" for continuation
    popular_prob: float = 0.1  # if not continuing: P(choose by global popularity) rather than by taste
    max_history: int = 10  # examples keep only the newest max_history items of the history (as prompts do)

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.num_genres <= len(GENRE_WORDS):
            problems.append(f"num_genres must be in 1..{len(GENRE_WORDS)}")
        if not 0 <= self.series_per_genre <= 8:
            problems.append("series_per_genre must be in 0..8 (one series stem each)")
        if not 1 <= self.min_series_length <= self.max_series_length <= len(ROMAN):
            problems.append(f"need 1 <= min_series_length <= max_series_length <= {len(ROMAN)}")
        if self.standalones_per_genre < 0:
            problems.append("standalones_per_genre must be >= 0")
        if not 1 <= self.makers_per_genre or self.num_genres * self.makers_per_genre > len(MAKER_NAMES):
            problems.append(f"need makers_per_genre >= 1 and num_genres x makers_per_genre <= "
                            f"{len(MAKER_NAMES)}")
        for name in ("subtitle_prob", "series_prob", "popular_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be a probability in [0, 1]")
        if self.zipf_exponent < 0 or self.genre_zipf_exponent < 0:
            problems.append("Zipf exponents must be >= 0")
        if not 0.0 < self.sequel_appeal <= 1.0:
            problems.append("sequel_appeal must be in (0, 1]")
        if min(self.num_train_users, self.num_valid_users, self.num_test_users) < 0:
            problems.append("user counts must be >= 0")
        if not 2 <= self.min_length <= self.max_length:
            problems.append("need 2 <= min_length <= max_length (every user needs a history and a target)")
        # No user can exhaust a genre, so "pick a genre, then an unconsumed item of it" always works.
        smallest_genre = self.series_per_genre * self.min_series_length + self.standalones_per_genre
        if self.max_length > smallest_genre:
            problems.append(f"max_length={self.max_length} exceeds the smallest possible genre "
                            f"({smallest_genre} items); users could exhaust a genre")
        if self.taste_concentration <= 0:
            problems.append("taste_concentration must be > 0")
        if self.series_memory < 1 or self.max_history < 1:
            problems.append("series_memory and max_history must be >= 1")
        if problems:
            raise ValueError("invalid SyntheticConfig: " + "; ".join(problems))

    def changed_fields(self) -> dict[str, object]:
        """The fields that differ from the defaults (for short, readable provenance strings)."""
        default = SyntheticConfig()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


# --------------------------------------------------------------------------------------------------------
# The world: catalogue + popularity. Built once per seed; users are then simulated in it.
# --------------------------------------------------------------------------------------------------------


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
        """Next instalments of the series met in the last `series_memory` items (sorted, may be empty).

        For each such series the candidate is the part after the *highest* part consumed so far (anywhere in
        the history): a user who skipped part 2 and just saw part 3 is offered part 4; part 2 stays
        reachable through taste and popularity.
        """
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
        """The exact probability of every item being next, given the taste and the full history (the oracle).

        Closed form of the mixture in the module docstring; consumed items get exactly 0.
        """
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
        """Draw the next item step by step as the story goes (mode, then genre, then item).

        Returns ``(item id, mode)`` with mode "series", "popular" or "taste". This is written independently
        of `next_item_distribution` on purpose: the tests check that the two agree, which is what makes the
        oracle trustworthy.
        """
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


def _genre_titles(words: _Words, rng: np.random.Generator, cfg: SyntheticConfig,
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
    rng = np.random.default_rng(_seed_sequences(seed)[0])
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


def _seed_sequences(seed: int) -> list[np.random.SeedSequence]:
    """Independent streams: world, then one per split (resizing one split leaves the others alone)."""
    return np.random.SeedSequence(seed).spawn(1 + len(SPLITS))


# --------------------------------------------------------------------------------------------------------
# Users and examples
# --------------------------------------------------------------------------------------------------------


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
    """Non-zero entries of a distribution as {item id: probability}.

    Almost every item has some probability (popularity reaches all of them), so the row is built over the
    whole catalogue and the zeros are removed. Reusing one list of id objects as keys for every row keeps
    the ~2 million entries of the default dataset's oracle to about 120 MB.
    """
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

    Split by user, as in the LastFM release LLaRA published: train users contribute every sliding window
    (history >= 1 item, capped at the newest `max_history`), valid and test users one example each, their
    final window. No user appears in two splits, so nothing about a held-out user leaks into training;
    items are shared, as in any catalogue. Examples have no times (``time=None``).
    """
    cfg = config or SyntheticConfig()
    world = build_world(cfg, seed)
    split_seeds = dict(zip(SPLITS, _seed_sequences(seed)[1:], strict=True))
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
                      max_history=cfg.max_history, oracle=oracle, source=describe_source(cfg, seed))


def describe_source(config: SyntheticConfig, seed: int) -> str:
    """Provenance string, e.g. ``riser_lite.data.synthetic(seed=0)`` for the default config."""
    changed = ", ".join(f"{k}={v!r}" for k, v in config.changed_fields().items())
    return f"riser_lite.data.synthetic(seed={seed}{', ' + changed if changed else ''})"


def generator_meta(config: SyntheticConfig, seed: int) -> dict[str, object]:
    """What `native.save_dataset` records in meta.json so the files can be regenerated exactly."""
    return {"generator": {"function": SYNTHETIC_GENERATOR, "seed": seed,
                          "config": asdict(config)}}


# --------------------------------------------------------------------------------------------------------
# Reference scores: the oracle ceiling and the popularity floor
# --------------------------------------------------------------------------------------------------------


class Score(NamedTuple):
    """A metric in expectation under the oracle (None without an oracle) and on the actual targets."""

    expected: float | None  # mean over examples of the probability mass the ranking earns (low variance)
    realised: float  # mean over examples of the metric for the target that was actually drawn


def _require_oracle(ds: RecDataset, split: str) -> list[dict[int, float]]:
    if ds.oracle is None:
        raise DataError(f"dataset {ds.name!r} has no oracle (only synthetic data has one)", field="oracle")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return ds.oracle[split]


def _oracle_ranking(dist: dict[int, float], k: int) -> list[int]:
    """The k most probable items, ties broken by item id (so results are deterministic)."""
    return sorted(dist, key=lambda item: (-dist[item], item))[:k]


def _ndcg_gain(rank: int) -> float:
    return 1.0 / math.log2(rank + 2)


def oracle_hit_rate(ds: RecDataset, split: str, k: int) -> Score:
    """HR@k of the oracle ranking: the best any recommender can expect (it ranks by the true probabilities).

    ``expected`` = mean of the top-k oracle probabilities; ``realised`` = fraction of examples whose actual
    target is among the oracle's top k. The two differ only by sampling noise.
    """
    rows = _require_oracle(ds, split)
    expected = realised = 0.0
    for ex, dist in zip(ds.splits[split], rows, strict=True):
        top = _oracle_ranking(dist, k)
        expected += sum(dist[item] for item in top)
        realised += ex.target in top
    n = max(len(rows), 1)
    return Score(expected / n, realised / n)


def oracle_ndcg(ds: RecDataset, split: str, k: int) -> Score:
    """NDCG@k of the oracle ranking (gain 1/log2(rank + 2), rank from 0), in expectation and realised.

    Ranking by true probability also maximises expected NDCG, since the gains fall with the rank.
    """
    rows = _require_oracle(ds, split)
    expected = realised = 0.0
    for ex, dist in zip(ds.splits[split], rows, strict=True):
        top = _oracle_ranking(dist, k)
        expected += sum(dist[item] * _ndcg_gain(rank) for rank, item in enumerate(top))
        realised += _ndcg_gain(top.index(ex.target)) if ex.target in top else 0.0
    n = max(len(rows), 1)
    return Score(expected / n, realised / n)


def popularity_ranking(ds: RecDataset) -> list[int]:
    """Every catalogue item, most frequent train target first (ties by item id)."""
    counts = Counter(ex.target for ex in ds.splits["train"])
    return sorted(ds.catalog, key=lambda item: (-counts[item], item))


def popularity_hit_rate(ds: RecDataset, split: str, k: int, *, exclude_history: bool = True) -> Score:
    """HR@k of recommending the most popular train targets (skipping items in the history by default).

    ``expected`` uses the oracle when the dataset has one (else None); ``realised`` uses the actual targets.
    """
    ranking = popularity_ranking(ds)
    rows = ds.oracle[split] if ds.oracle is not None else None
    expected = realised = 0.0
    for i, ex in enumerate(ds.splits[split]):
        seen = set(ex.history) if exclude_history else set()
        top = list(itertools.islice((item for item in ranking if item not in seen), k))
        realised += ex.target in top
        if rows is not None:
            expected += sum(rows[i].get(item, 0.0) for item in top)
    n = max(len(ds.splits[split]), 1)
    return Score(expected / n if rows is not None else None, realised / n)


# --------------------------------------------------------------------------------------------------------
# Command line: write the bundled dataset and report its figures
# --------------------------------------------------------------------------------------------------------


def summary(ds: RecDataset, ks: Sequence[int] = (1, 5, 10, 20), split: str = "test") -> str:
    """A few lines describing the dataset and its reference scores on `split`."""
    lines = [f"{ds.name}: {ds.num_items} items; " + ", ".join(
        f"{s} {len(ds.splits[s])} rows / {len(ds.users(s))} users" for s in SPLITS)]
    if ds.oracle is not None:
        for k in ks:
            hr, ndcg = oracle_hit_rate(ds, split, k), oracle_ndcg(ds, split, k)
            pop = popularity_hit_rate(ds, split, k)
            lines.append(f"  {split} @{k:<2}  oracle HR {hr.expected:.3f} (realised {hr.realised:.3f}), "
                         f"NDCG {ndcg.expected:.3f}  |  popularity HR {pop.expected:.3f} "
                         f"(realised {pop.realised:.3f})")
    return "\n".join(lines)


def write_synthetic(directory: str | Path, config: SyntheticConfig | None = None, seed: int = 0, *,
                    include_oracle: bool = False) -> RecDataset:
    """Generate and save in the native format, recording the generator (`load_native` restores the oracle)."""
    cfg = config or SyntheticConfig()
    ds = generate_synthetic(cfg, seed)
    save_dataset(ds, directory, include_oracle=include_oracle, extra_meta=generator_meta(cfg, seed))
    return ds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the default synthetic dataset in the native format.")
    parser.add_argument("--out", type=Path, default=Path("data/synthetic"), help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-oracle", action="store_true",
                        help="also write oracle_<split>.jsonl (tens of MB; load_native can recompute it)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    ds = write_synthetic(args.out, seed=args.seed, include_oracle=args.with_oracle)
    elapsed = time.perf_counter() - start
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(summary(ds))
    print(f"generated and wrote {args.out} in {elapsed:.2f} s ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
