"""Every knob of the synthetic generator, checked on construction."""

from __future__ import annotations

from dataclasses import dataclass

from riser_lite.data.synthetic.words import GENRE_WORDS, MAKER_NAMES, ROMAN


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
