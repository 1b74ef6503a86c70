"""Semantic IDs: each item named by a short code of a few tokens, built so that items users consume together
share code prefixes (TIGER's idea, with the residual k-means of MiniOneRec / LC-Rec).

A code such as ``<a_12><b_3><c_40>`` is one token per level, generated under the item trie exactly as a
title is, so rollouts, pairs and losses are unchanged; a small model has far less to learn than a spelling
of every name. Codes are built from the TRAINING split only:

1. co-occurrence: each training example pairs its newest ``window`` history items with its target, both ways;
2. positive PMI, ``max(0, log(C[i, j] * N / (c_i * c_j)))``: how much more often i and j meet than their
   popularity predicts;
3. item vectors: truncated SVD of it, ``U * sqrt(S)``, rows at unit length; or (``vectors="sasrec"``) a
   SASRec's item embeddings trained on the training split, computed by the caller
   (`riser_lab.sasrec.sasrec_item_vectors`);
4. residual k-means, ``levels`` levels of ``codebook_size`` codes, each level clustering what the
   centroids before it left unexplained;
5. collisions: items sharing a whole code get one more level numbering them (most popular in training
   first, then by id), added to every item and only when some code is shared, so no code is a prefix of
   another. ``last_level="item"`` ends every code with the item's own token instead.

Cold items (absent from training) have a zero vector, collide with each other and are told apart by the
collision level (counted as ``cold_items``). Deterministic in ``seed``. docs/semantic_ids.md has the results.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from riser_lite.items.represent import LEVEL_NAMES, SemanticIds

VECTOR_SOURCES = ("ppmi", "sasrec")
LAST_LEVELS = ("collisions", "item")


@dataclass
class SIDConfig:
    """How semantic IDs are built (defaults chosen on LastFM, see benchmarks/bench_sid.py)."""

    levels: int = 3  # codebook levels before the collision level
    codebook_size: int = 32  # codes per level (K)
    dim: int = 64  # SVD dimensions of the item vectors
    window: int = 10  # history items (newest) that co-occur with each training target
    kmeans_init: int = 3  # k-means restarts per level (best inertia kept)
    seed: int = 0  # seeds the SVD and k-means (and a SASRec trained for its vectors)
    vectors: str = "ppmi"  # item vectors: "ppmi" (SVD of co-occurrence PMI) or "sasrec" (its item embeddings)
    sasrec: str | None = None  # with vectors="sasrec": a saved SASRec folder (None: train one here)
    last_level: str = "collisions"  # "collisions" (number items sharing a code) or "item" (its own token)

    def __post_init__(self) -> None:
        if not 1 <= self.levels < len(LEVEL_NAMES):
            raise ValueError(f"levels must be in [1, {len(LEVEL_NAMES) - 1}], got {self.levels}")
        if self.codebook_size < 2 or self.dim < 1 or self.window < 1:
            raise ValueError(f"codebook_size >= 2, dim >= 1 and window >= 1 expected, got "
                             f"{self.codebook_size}, {self.dim}, {self.window}")
        if self.vectors not in VECTOR_SOURCES:
            raise ValueError(f"vectors must be one of {list(VECTOR_SOURCES)}, got {self.vectors!r}")
        if self.last_level not in LAST_LEVELS:
            raise ValueError(f"last_level must be one of {list(LAST_LEVELS)}, got {self.last_level!r}")
        if self.sasrec is not None and self.vectors != "sasrec":
            raise ValueError("a SASRec folder is only read with vectors='sasrec'")

    def recorded(self) -> dict:
        """The fields a run records (all of them)."""
        return asdict(self)


# ----------------------------------------------------------------------------------------------- building


def cooccurrence(examples, item_ids: Sequence[int], window: int = 10):
    """Symmetric co-occurrence counts of the examples' newest `window` history items with their targets:
    scipy CSR [I, I], rows in `item_ids` order."""
    from scipy.sparse import coo_matrix

    index = {item: i for i, item in enumerate(item_ids)}
    rows, cols = [], []
    for ex in examples:
        t = index[ex.target]
        for h in ex.history[-window:]:
            if h != ex.target:
                rows += [index[h], t]
                cols += [t, index[h]]
    n = len(item_ids)
    data = np.ones(len(rows), dtype=np.float64)
    return coo_matrix((data, (rows, cols)), shape=(n, n)).tocsr()  # duplicates are summed


def ppmi(counts):
    """Positive pointwise mutual information of a co-occurrence matrix (sparse in, sparse out)."""
    counts = counts.tocoo()
    row_sums = np.asarray(counts.sum(axis=1)).ravel()
    total = row_sums.sum()
    values = np.log(counts.data * total / (row_sums[counts.row] * row_sums[counts.col]))
    keep = values > 0
    from scipy.sparse import coo_matrix

    return coo_matrix((values[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape).tocsr()


def item_vectors(examples, item_ids: Sequence[int], config: SIDConfig) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length collaborative vectors [I, d] (zero rows for cold items) and a cold mask [I] bool."""
    from sklearn.utils.extmath import randomized_svd

    matrix = ppmi(cooccurrence(examples, item_ids, config.window))
    dim = max(1, min(config.dim, min(matrix.shape) - 1))
    u, s, _ = randomized_svd(matrix, n_components=dim, random_state=config.seed)
    return unit_rows(u * np.sqrt(s))


def unit_rows(vectors: np.ndarray, cold: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows [I, d] scaled to unit length and zeroed for cold items (given, or rows of zero length).

    Returns (vectors [I, d], cold [I] bool)."""
    vectors = np.asarray(vectors, dtype=np.float64).copy()
    norms = np.linalg.norm(vectors, axis=1)
    cold = (norms < 1e-12) if cold is None else (np.asarray(cold, dtype=bool) | (norms < 1e-12))
    vectors[~cold] /= norms[~cold, None]
    vectors[cold] = 0.0
    return vectors, cold


def residual_kmeans(vectors: np.ndarray, fit_rows: np.ndarray, config: SIDConfig) -> np.ndarray:
    """Codes [I, levels] int: each level's k-means is fitted on `fit_rows` (warm items) and assigns all."""
    from sklearn.cluster import KMeans

    residual = vectors.astype(np.float64).copy()
    codes = np.zeros((len(vectors), config.levels), dtype=np.int64)
    for level in range(config.levels):
        distinct = len(np.unique(residual[fit_rows].round(12), axis=0))
        k = max(1, min(config.codebook_size, distinct))  # never ask for more clusters than points
        km = KMeans(n_clusters=k, n_init=config.kmeans_init, random_state=config.seed + level)
        km.fit(residual[fit_rows])
        codes[:, level] = km.predict(residual)
        residual -= km.cluster_centers_[codes[:, level]]
    return codes


def resolve_collisions(codes: Mapping[int, Sequence[int]], popularity: Mapping[int, int] | None = None,
                       ) -> tuple[dict[int, tuple[int, ...]], dict]:
    """Make codes unique: items sharing a code get one more level 0, 1, ... (most popular first, then by
    item id). The level is added to all items, and only if some code is shared.

    Returns (unique codes, {"colliding_items", "collision_groups", "largest_group", "collision_level"}).
    """
    popularity = popularity or {}
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for item, code in codes.items():
        groups[tuple(int(c) for c in code)].append(item)
    shared = [members for members in groups.values() if len(members) > 1]
    info = {"colliding_items": sum(len(m) for m in shared), "collision_groups": len(shared),
            "largest_group": max((len(m) for m in groups.values()), default=0),
            "collision_level": bool(shared)}
    if not shared:
        return {item: tuple(int(c) for c in code) for item, code in codes.items()}, info
    out = {}
    for code, members in groups.items():
        ordered = sorted(members, key=lambda item: (-popularity.get(item, 0), item))
        for rank, item in enumerate(ordered):
            out[item] = (*code, rank)
    return out, info


def code_stats(codes: Mapping[int, Sequence[int]], codebook_size: int | None = None,
               codebook_levels: int | None = None) -> dict:
    """How the codes use their codebooks (distinct values per level, as a fraction of `codebook_size` for
    the first `codebook_levels` levels) and share prefixes (distinct prefixes, items per prefix)."""
    if not codes:
        return {"items": 0}
    length = len(next(iter(codes.values())))
    use, prefixes = [], []
    for level in range(length):
        values = {code[level] for code in codes.values()}
        use.append({"level": LEVEL_NAMES[level], "distinct": len(values),
                    "fraction": round(len(values) / codebook_size, 4)
                    if codebook_size and level < (codebook_levels or length) else None})
        distinct = len({tuple(code[: level + 1]) for code in codes.values()})
        prefixes.append({"length": level + 1, "distinct": distinct,
                         "items_per_prefix": round(len(codes) / distinct, 3)})
    return {"items": len(codes), "code_length": length, "codebook_use": use, "prefixes": prefixes}


def build_semantic_ids(dataset, config: SIDConfig | None = None,
                       vectors: tuple[np.ndarray, np.ndarray] | None = None) -> SemanticIds:
    """Semantic IDs for every catalogue item of `dataset`, from its training split only (see the module).

    vectors: (unit-length item vectors [I, d], cold mask [I]) in sorted item-id order, required with
    ``config.vectors == "sasrec"`` (so building codes never trains a recommender); None with "ppmi".
    """
    config = config or SIDConfig()
    item_ids = sorted(dataset.catalog)
    train = dataset.splits["train"]
    if config.vectors == "sasrec" and vectors is None:
        raise ValueError("vectors='sasrec' codes need the SASRec item vectors from the caller "
                         "(riser_lab.sasrec.sasrec_item_vectors)")
    if config.vectors != "sasrec" and vectors is not None:
        raise ValueError("given item vectors need vectors='sasrec' in the SIDConfig (which records their "
                         "source)")
    vectors, cold = vectors if vectors is not None else item_vectors(train, item_ids, config)
    fit_rows = np.flatnonzero(~cold) if (~cold).any() else np.arange(len(item_ids))
    raw = residual_kmeans(vectors, fit_rows, config)
    popularity = Counter(ex.target for ex in train)
    codes, collisions = resolve_collisions({item: raw[i] for i, item in enumerate(item_ids)}, popularity)
    if config.last_level == "item":  # each item's own token; the collisions stay reported
        codes = {item: (*(int(c) for c in raw[i]), i) for i, item in enumerate(item_ids)}
        collisions.update(collision_level=False, item_level=True)
    stats = {**code_stats(codes, config.codebook_size, config.levels), **collisions,
             "cold_items": int(cold.sum()), "train_examples": len(train)}
    return SemanticIds(codes=codes, stats=stats, config=config.recorded())


def prefix_agreement(sids: SemanticIds, examples, depth: int = 1) -> float:
    """Fraction of examples whose target shares its first `depth` code levels with some history item: how
    much collaborative signal the codes carry (random codes give about history length / K at depth 1)."""
    hits = [any(sids.codes[h][:depth] == sids.codes[ex.target][:depth] for h in ex.history)
            for ex in examples if ex.history]
    return float(np.mean(hits)) if hits else 0.0
