"""Synthetic recommendation data whose next-item distribution is known exactly.

Real logs never tell you how good a recommender *could* be. This generator does: it builds a small world
(a catalogue of fictional films, books and games with genres, makers and numbered series) and simulates
users in it with a fully specified sequential process. Every example therefore carries its exact
next-item distribution, the *oracle*, so a notebook can put a trained model between two reference points:
the popularity baseline below it and the best achievable score above it
(`riser_lite.eval.oracle.oracle_hit_rate`).

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

The modules, in reading order: `words` (the word bank), `config` (every knob), `world` (catalogue,
popularity and the process), `generator` (users, examples, the oracle; saving and restoring),
`prompt_oracle` (the best prediction from what a prompt shows), `cli` (``python -m
riser_lite.data.synthetic --out data/synthetic --seed 0`` writes the bundled default). The reference scores
against the oracle (oracle ceiling, popularity floor) are evaluation's: `riser_lite.eval.oracle`.
"""

from riser_lite.data.synthetic.config import SyntheticConfig
from riser_lite.data.synthetic.generator import (
    GENERATOR,
    generate_synthetic,
    load_synthetic,
    simulate_user,
    world_of,
    write_synthetic,
)
from riser_lite.data.synthetic.world import SyntheticWorld, build_world

__all__ = [
    "GENERATOR", "SyntheticConfig", "SyntheticWorld", "build_world", "generate_synthetic", "load_synthetic",
    "simulate_user", "world_of", "write_synthetic",
]
