"""Semantic IDs (riser_lab.sid): code text, PPMI by hand, collisions, statistics, no leakage, seeds."""

import dataclasses
import math

import numpy as np
import pytest

from riser_lab.sasrec import sasrec_item_vectors
from riser_lab.sid import (
    SIDConfig,
    build_semantic_ids,
    code_stats,
    cooccurrence,
    ppmi,
    prefix_agreement,
    resolve_collisions,
)
from riser_lite.data import load_dataset
from riser_lite.data.types import Example, RecDataset
from riser_lite.items.represent import SemanticIds, format_code, parse_code


def test_code_text_round_trips_and_bad_codes_say_what_is_wrong():
    assert format_code((12, 3, 40)) == "<a_12><b_3><c_40>"
    assert parse_code(" <a_12><b_3><c_40> ") == (12, 3, 40)
    for bad, says in [("<a_1><c_2>", "levels must run"), ("<a_1>x<b_2>", "not a semantic ID"),
                      ("", "not a semantic ID"), ("<a_-1>", "not a semantic ID"),
                      ("<b_1>", "levels must run")]:
        with pytest.raises(ValueError, match=says):
            parse_code(bad)


def test_cooccurrence_and_ppmi_equal_a_hand_computation():
    # items 0, 1, 2; examples (history -> target): (0 -> 1), (0, 1 -> 2), (1 -> 2)
    train = [Example("u", (0,), 1), Example("u", (0, 1), 2), Example("v", (1,), 2)]
    counts = cooccurrence(train, [0, 1, 2], window=10).toarray()
    assert counts.tolist() == [[0, 1, 1], [1, 0, 2], [1, 2, 0]]
    p = ppmi(cooccurrence(train, [0, 1, 2])).toarray()
    row, total = counts.sum(1), counts.sum()  # [2, 3, 3], 8
    expected = np.maximum(0.0, np.log(np.where(counts > 0, counts * total, 1) / np.outer(row, row)))
    expected[counts == 0] = 0.0
    assert p == pytest.approx(expected)
    assert p[1, 2] == pytest.approx(math.log(2 * 8 / 9))
    # The window keeps only the newest history items.
    assert cooccurrence(train, [0, 1, 2], window=1).toarray()[0, 2] == 0


def test_collisions_get_one_more_level_most_popular_first():
    codes = {10: (1, 2), 11: (1, 2), 12: (1, 3), 13: (1, 2)}
    unique, info = resolve_collisions(codes, popularity={13: 5, 11: 5, 10: 1})
    assert unique == {13: (1, 2, 1), 11: (1, 2, 0), 10: (1, 2, 2), 12: (1, 3, 0)}
    assert info == {"colliding_items": 3, "collision_groups": 1, "largest_group": 3, "collision_level": True}
    same, info = resolve_collisions({1: (0, 1), 2: (1, 0)})
    assert same == {1: (0, 1), 2: (1, 0)} and info["collision_level"] is False


def test_code_stats_by_hand():
    stats = code_stats({1: (0, 0), 2: (0, 1), 3: (1, 0), 4: (0, 0)}, codebook_size=4)
    assert [u["distinct"] for u in stats["codebook_use"]] == [2, 2]
    assert stats["codebook_use"][0]["fraction"] == 0.5
    assert [(p["distinct"], p["items_per_prefix"]) for p in stats["prefixes"]] == [(2, 2.0), (3, 1.333)]


@pytest.fixture(scope="module")
def data(small_data):
    return load_dataset("synthetic", small_data)


def test_codes_are_unique_of_one_length_and_use_the_configured_codebooks(data):
    sids = build_semantic_ids(data, SIDConfig(levels=2, codebook_size=4, dim=8))
    assert set(sids.codes) == set(data.catalog)
    assert len(set(sids.codes.values())) == len(data.catalog)  # unique after the collision level
    lengths = {len(code) for code in sids.codes.values()}
    assert lengths == {3 if sids.stats["collision_level"] else 2}
    assert all(0 <= code[0] < 4 and 0 <= code[1] < 4 for code in sids.codes.values())
    raw = {item: code[:2] for item, code in sids.codes.items()}
    groups = {}
    for code in raw.values():
        groups[code] = groups.get(code, 0) + 1
    assert sids.stats["colliding_items"] == sum(n for n in groups.values() if n > 1)
    assert sids.stats["largest_group"] == max(groups.values())
    assert sids.tokens()[0] == "<a_0>" and len(sids.tokens()) == len(set(sids.tokens()))


def test_same_seed_same_codes_and_json_round_trip(data):
    config = SIDConfig(levels=2, codebook_size=4, dim=8, seed=3)
    first, again = build_semantic_ids(data, config), build_semantic_ids(data, config)
    assert first.codes == again.codes
    assert SemanticIds.from_json(first.to_json()).codes == first.codes


def test_codes_depend_on_the_training_split_only(data):
    config = SIDConfig(levels=2, codebook_size=4, dim=8)
    shuffled = {split: list(reversed(examples)) if split != "train" else examples
                for split, examples in data.splits.items()}
    other_eval = {**shuffled, "valid": shuffled["valid"][:1], "test": []}
    changed = dataclasses.replace(data, splits=other_eval)
    assert build_semantic_ids(changed, config).codes == build_semantic_ids(data, config).codes


def test_cold_items_are_counted_and_still_get_unique_codes():
    train = [Example(f"u{i}", (i % 4,), (i + 1) % 4) for i in range(40)]
    catalog = {i: f"item {i}" for i in range(7)}  # items 4, 5, 6 never occur in training
    ds = RecDataset("cold", catalog, {"train": train, "valid": train[:2], "test": train[:2]})
    sids = build_semantic_ids(ds, SIDConfig(levels=2, codebook_size=2, dim=2))
    assert sids.stats["cold_items"] == 3
    assert len(set(sids.codes.values())) == 7


def test_prefix_agreement_by_hand():
    sids = SemanticIds(codes={0: (0, 0), 1: (0, 1), 2: (1, 0)})
    examples = [Example("u", (0,), 1), Example("v", (0,), 2), Example("w", (2, 0), 1), Example("x", (), 1)]
    assert prefix_agreement(sids, examples, depth=1) == pytest.approx(2 / 3)
    assert prefix_agreement(sids, examples, depth=2) == 0.0


def test_lastfm_codes_carry_more_co_occurrence_than_chance(lastfm_path):
    ds = load_dataset("lastfm", lastfm_path)
    sids = build_semantic_ids(ds)
    assert sids.stats["cold_items"] == 0  # every LastFM item is a training target (SOURCE.md)
    assert len(set(sids.codes.values())) == ds.num_items
    rng = np.random.default_rng(0)
    values = list(sids.codes.values())
    shuffled = SemanticIds(codes=dict(zip(sids.codes, rng.permutation(len(values)).tolist(), strict=True)))
    shuffled.codes = {item: values[j] for item, j in shuffled.codes.items()}
    # The same codes given to random items: same codebook use, no collaborative signal.
    train = ds.splits["train"][-5000:]
    assert prefix_agreement(sids, train, depth=2) > 2 * prefix_agreement(shuffled, train, depth=2)


# ------------------------------------------------------------------------------ codes from SASRec embeddings


@pytest.fixture(scope="module")
def saved_sasrec(data, tmp_path_factory):
    from riser_lab.sasrec import SASRecConfig, save_sasrec, train_sasrec

    model = train_sasrec(data, SASRecConfig(dim=8, heads=1, layers=1, epochs=2, patience=0, seed=0))
    return save_sasrec(model, tmp_path_factory.mktemp("sasrec")), model


def test_sasrec_vectors_are_its_unit_length_item_embeddings(data, saved_sasrec):
    folder, model = saved_sasrec
    config = SIDConfig(levels=2, codebook_size=4, vectors="sasrec", sasrec=str(folder))
    vectors, cold = sasrec_item_vectors(data, sorted(data.catalog), config)
    embeddings = model.item_emb.weight[1:].detach().double().numpy()
    warm = ~cold
    norms = np.linalg.norm(embeddings[warm], axis=1)[:, None]
    assert vectors[warm] == pytest.approx(embeddings[warm] / norms)
    assert not vectors[cold].any()
    seen = {i for ex in data.splits["train"] for i in (*ex.history, ex.target)}
    assert cold.tolist() == [item not in seen for item in sorted(data.catalog)]


def sasrec_codes(data, config: SIDConfig) -> SemanticIds:
    """Codes from SASRec vectors: the caller computes the vectors, `build_semantic_ids` clusters them."""
    return build_semantic_ids(data, config, sasrec_item_vectors(data, sorted(data.catalog), config))


def test_sasrec_codes_are_unique_and_record_their_source(data, saved_sasrec):
    folder, _ = saved_sasrec
    config = SIDConfig(levels=2, codebook_size=4, vectors="sasrec", sasrec=str(folder))
    sids = sasrec_codes(data, config)
    assert len(set(sids.codes.values())) == len(data.catalog)
    assert sids.config["vectors"] == "sasrec" and sids.config["sasrec"] == str(folder)
    assert sids.codes != build_semantic_ids(data, SIDConfig(levels=2, codebook_size=4)).codes
    # Codes record every field of their config, the source of their vectors too.
    assert build_semantic_ids(data, SIDConfig(levels=2, codebook_size=4)).config["vectors"] == "ppmi"


def test_sasrec_trained_for_the_codes_is_seeded(data):
    config = SIDConfig(levels=2, codebook_size=4, vectors="sasrec", seed=1)
    first, again = sasrec_codes(data, config), sasrec_codes(data, config)
    assert first.codes == again.codes and first.config["vectors"] == "sasrec"
    with pytest.raises(ValueError, match="need the SASRec item vectors from the caller"):
        build_semantic_ids(data, config)
    with pytest.raises(ValueError, match="given item vectors need vectors='sasrec'"):
        build_semantic_ids(data, SIDConfig(levels=2, codebook_size=4), (np.zeros((3, 2)), np.zeros(3, bool)))


def test_a_wrong_sasrec_folder_or_source_is_refused(data, saved_sasrec, tmp_path):
    from riser_lite.data.types import DataError

    with pytest.raises(DataError, match="no saved SASRec model"):
        sasrec_codes(data, SIDConfig(vectors="sasrec", sasrec=str(tmp_path)))
    smaller = dataclasses.replace(data, catalog=dict(list(data.catalog.items())[:-1]))
    with pytest.raises(DataError, match=f"ranks {len(data.catalog)} items, not"):
        config = SIDConfig(vectors="sasrec", sasrec=str(saved_sasrec[0]))
        sasrec_item_vectors(smaller, sorted(smaller.catalog), config)
    with pytest.raises(ValueError, match="vectors must be one of"):
        SIDConfig(vectors="title")
    with pytest.raises(ValueError, match="only read with vectors='sasrec'"):
        SIDConfig(sasrec=str(tmp_path))


def test_an_item_last_level_gives_each_item_its_own_token_after_the_same_prefix(data):
    shared = build_semantic_ids(data, SIDConfig(levels=2, codebook_size=4, dim=8))
    own = build_semantic_ids(data, SIDConfig(levels=2, codebook_size=4, dim=8, last_level="item"))
    items = sorted(data.catalog)
    assert own.codes == {item: (*shared.codes[item][:2], index) for index, item in enumerate(items)}
    assert own.stats["item_level"] is True and own.stats["collision_level"] is False
    assert own.stats["colliding_items"] == shared.stats["colliding_items"]  # still reported
    assert own.config["last_level"] == "item" and shared.config["last_level"] == "collisions"
    assert own.tokens()[-1] == f"<c_{len(items) - 1}>"
    with pytest.raises(ValueError, match="last_level must be one of"):
        SIDConfig(last_level="title")
