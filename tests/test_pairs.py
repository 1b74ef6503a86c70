import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from riser_lite.rl.pairs import PreferencePair, convert_groups_to_pairs, pairs_to_dataset
from riser_lite.rl.rewards import hit_reward, rank_reward

ITEMS = torch.tensor([
    [3, 4, 5, 6],  # hit and misses: learnable, left to GRPO
    [7, 7, 8, 7],  # all miss with duplicates: 2 distinct rejects, 2 duplicates skipped
    [2, 2, 2, 2],  # all hit: no pairs
    [1, 9, 1, 4],  # all miss: 3 distinct rejects, 1 duplicate skipped
])
TARGETS = torch.tensor([3, 1, 2, 5])
EXPECTED_PAIRS = [PreferencePair(1, 1, 7), PreferencePair(1, 1, 8),
                  PreferencePair(3, 5, 1), PreferencePair(3, 5, 9), PreferencePair(3, 5, 4)]


@pytest.mark.parametrize("reward_fn", [hit_reward, rank_reward])
def test_conversion_by_hand(reward_fn):
    pairs, info = convert_groups_to_pairs(ITEMS, TARGETS, reward_fn(ITEMS, TARGETS))
    assert pairs == EXPECTED_PAIRS  # prompt order, then first appearance
    assert info == {"groups": 4, "learnable_groups": 1, "groups_converted": 2, "all_hit_groups": 1,
                    "other_skipped_groups": 0, "pairs": 5, "duplicate_rejects_skipped": 3}


def test_non_learnable_group_with_a_hit_is_skipped():
    items, targets = torch.tensor([[3, 4], [5, 6]]), torch.tensor([3, 9])
    pairs, info = convert_groups_to_pairs(items, targets, torch.zeros(2, 2))  # a reward blind to hits
    assert pairs == [PreferencePair(1, 9, 5), PreferencePair(1, 9, 6)]
    assert info["other_skipped_groups"] == 1 and info["groups_converted"] == 1


def test_empty_batch():
    no_items, no_targets = torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    pairs, info = convert_groups_to_pairs(no_items, no_targets, torch.zeros(0, 4))
    assert pairs == [] and info["groups"] == 0 and info["pairs"] == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 6), st.integers(1, 6), st.integers(0, 10_000))
def test_conversion_counts(num_prompts, group_size, seed):
    generator = torch.Generator().manual_seed(seed)
    items = torch.randint(0, 5, (num_prompts, group_size), generator=generator)
    targets = torch.randint(0, 5, (num_prompts,), generator=generator)
    pairs, info = convert_groups_to_pairs(items, targets, hit_reward(items, targets))
    no_hit = [g for g in range(num_prompts) if not (items[g] == targets[g]).any()]
    assert info["groups_converted"] == len(no_hit)
    assert info["pairs"] == len(pairs) == sum(len(set(items[g].tolist())) for g in no_hit)
    assert info["duplicate_rejects_skipped"] == len(no_hit) * group_size - len(pairs)
    counted = info["groups_converted"] + info["learnable_groups"] + info["all_hit_groups"]
    assert counted + info["other_skipped_groups"] == num_prompts
    assert len(set(pairs)) == len(pairs)
    assert all(p.chosen_item == targets[p.prompt_index] != p.rejected_item for p in pairs)


def test_pairs_to_dataset_columns():
    titles = {1: "Alien", 4: "Heat", 5: "Brazil", 7: "Ran", 8: "Fargo", 9: "Up"}
    prompts = [f"history {i}" for i in range(4)]
    dataset = pairs_to_dataset(EXPECTED_PAIRS, prompts, titles)
    assert dataset.column_names == ["prompt", "chosen", "rejected", "prompt_index", "chosen_item",
                                    "rejected_item"]
    assert dataset[0] == {"prompt": "history 1", "chosen": "Alien\n", "rejected": "Ran\n", "prompt_index": 1,
                          "chosen_item": 1, "rejected_item": 7}
    assert dataset["rejected"] == ["Ran\n", "Fargo\n", "Alien\n", "Up\n", "Heat\n"]
    assert pairs_to_dataset(EXPECTED_PAIRS[:1], prompts, titles, response_suffix="")[0]["chosen"] == "Alien"
    empty = pairs_to_dataset([], prompts, titles)
    assert len(empty) == 0 and empty.features["prompt"].dtype == "string"
    with pytest.raises(KeyError, match="item 5 has no title"):
        pairs_to_dataset(EXPECTED_PAIRS, prompts, {1: "Alien", 7: "Ran"})
