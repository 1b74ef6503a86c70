"""The item trie: every complete path is an item, every item is reachable, branching flags are right."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from riser_lite.data.titles import make_titles_unique
from riser_lite.items.catalog import ItemSpace, ItemTrie
from riser_lite.items.tokenizer import train_tokenizer

EOS = 1

# Token sequences over a small vocabulary, each ending with EOS (as item responses do); EOS only at the end.
sequence = st.lists(st.integers(min_value=2, max_value=7), min_size=1, max_size=5).map(lambda s: s + [EOS])
catalogues = st.lists(sequence, min_size=1, max_size=12, unique_by=tuple).map(
    lambda seqs: {item: seq for item, seq in enumerate(seqs)})


def all_paths(trie: ItemTrie, node: int = 0, prefix=()):
    """Depth-first enumeration of complete paths, using only the batched tensor API."""
    mask = trie.valid_mask(torch.tensor([node]))[0]
    tokens = mask.nonzero().flatten().tolist()
    if not tokens:
        yield prefix, int(trie.node_item[node])
    for token in tokens:
        child = int(trie.step(torch.tensor([node]), torch.tensor([token]))[0])
        yield from all_paths(trie, child, prefix + (token,))


@settings(max_examples=60, deadline=None)
@given(catalogues)
def test_every_path_is_an_item_and_every_item_reachable(items):
    trie = ItemTrie(items, vocab_size=8)
    paths = dict(all_paths(trie))
    assert set(paths.values()) == set(items)  # every finished path names an item, each item reached once
    for path, item in paths.items():
        assert list(path) == items[item]


@settings(max_examples=60, deadline=None)
@given(catalogues)
def test_branching_flags_match_brute_force(items):
    trie = ItemTrie(items, vocab_size=8)
    for item, seq in items.items():
        found, flags = trie.walk(seq)
        assert found == item
        for t in range(len(seq)):
            continuations = {s[t] for s in items.values() if len(s) > t and s[:t] == seq[:t]}
            assert flags[t] == (len(continuations) >= 2)


def test_invalid_token_and_finished_node():
    trie = ItemTrie({10: [2, 3, EOS], 11: [2, 4, EOS]}, vocab_size=8)
    assert trie.step(torch.tensor([0]), torch.tensor([5])).item() == -1
    node = trie.step(torch.tensor([0]), torch.tensor([2]))
    assert trie.valid_mask(node)[0].nonzero().flatten().tolist() == [3, 4]
    leaf = node
    for token in (3, EOS):
        leaf = trie.step(leaf, torch.tensor([token]))
    assert trie.node_item[leaf].item() == 10
    assert not trie.valid_mask(leaf).any()  # finished: an empty set, never "unconstrained"
    # an invalid (-1) node stays invalid
    assert trie.step(torch.tensor([-1]), torch.tensor([2])).item() == -1


def test_prefix_items_are_rejected():
    with pytest.raises(ValueError, match="prefix|extend"):
        ItemTrie({0: [2, 3], 1: [2, 3, 4]}, vocab_size=8)
    with pytest.raises(ValueError, match="vocabulary"):
        ItemTrie({0: [9]}, vocab_size=8)


def test_make_titles_unique_is_deterministic():
    titles = {5: "Echo", 2: "Echo", 7: " Echo  ", 1: "Other"}
    unique = make_titles_unique(titles)
    assert unique == {1: "Other", 2: "Echo", 5: "Echo (#5)", 7: "Echo (#7)"}
    assert make_titles_unique(dict(reversed(list(titles.items())))) == unique


def test_item_space_on_titles_with_shared_prefixes():
    titles = {0: "Starfall", 1: "Starfall II", 2: "Starfall III", 3: "Moonlight Sonata", 4: "Moonlight"}
    tok = train_tokenizer(titles.values(), vocab_size=300)
    space = ItemSpace(titles, tok)
    tokens, mask, branching = space.padded_tokens()
    assert tokens.shape[0] == 5 and mask.sum().item() == sum(len(v) for v in space.response_ids.values())
    for row, item in enumerate(space.item_ids):
        ids = tokens[row][mask[row]].tolist()
        assert ids == space.response_ids[item] and ids[-1] == tok.eos_token_id
        assert space.trie.walk(ids)[0] == item
        assert branching[row][mask[row]].tolist() == space.branching[item]
        assert space.branching[item][0]  # the first token is always a real choice among 5 items
    assert space.parse("Starfall II\nmore text") == 1 and space.parse("Starfall IV") == -1
    profile = space.branching_profile()
    assert 0 < profile["branching_fraction"] <= 1 and profile["items"] == 5


def test_depth_profile_by_hand():
    # Root -> {2, 5}; after 2 -> {3, 4}; after 5 -> {6}; then each of the three continues with EOS only.
    trie = ItemTrie({10: [2, 3, EOS], 11: [2, 4, EOS], 12: [5, 6, EOS]}, vocab_size=8)
    assert trie.depth_profile() == [
        {"depth": 0, "nodes": 1, "branching_nodes": 1, "mean_children": 2.0},
        {"depth": 1, "nodes": 2, "branching_nodes": 1, "mean_children": 1.5},
        {"depth": 2, "nodes": 3, "branching_nodes": 0, "mean_children": 1.0},
    ]
    # Sequences of different lengths: depths only count nodes that still have a continuation.
    uneven = ItemTrie({1: [2, EOS], 2: [3, 4, 5, EOS]}, vocab_size=8)
    assert [(p["nodes"], p["mean_children"]) for p in uneven.depth_profile()] == [
        (1, 2.0), (2, 1.0), (1, 1.0), (1, 1.0)]
