"""Turn non-learnable groups into preference pairs: RISER's answer to sample inefficiency.

With a binary hit reward most groups contain no hit, so every advantage is 0 and GRPO learns nothing from
them. RISER keeps them: the ground-truth item is preferred over each item the policy actually rolled out.
Those rejected items are on-policy hard negatives, the items the model currently believes in.

- Non-learnable groups become pairs, learnable ones go to GRPO. **[paper]**
- A group with no hit gives chosen = target, rejected = each rolled-out item. **[reported]**
- Only *distinct* rejected items: a duplicate rejection repeats a pair already in the batch, which
  only re-weights it; they are counted as ``duplicate_rejects_skipped``. **[choice]**
- All-hit groups (every rollout is the target, possible with sampling) give no pairs: there is nothing to
  push down. **[choice]**
- ``pairs_to_dataset`` writes the prompt / chosen / rejected string layout TRL's DPOTrainer and
  CPOTrainer (SimPO) read. **[choice]**
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from riser_lite.rl.advantages import learnable_groups

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class PreferencePair:
    """One preference: for prompt ``prompt_index``, ``chosen_item`` is preferred over ``rejected_item``."""

    prompt_index: int  # row of the group in the batch (index into the prompts list)
    chosen_item: int  # item id of the ground truth
    rejected_item: int  # item id of a rolled-out miss


def convert_groups_to_pairs(
    rollout_items: Tensor, targets: Tensor, rewards: Tensor, learnable: Tensor | None = None,
) -> tuple[list[PreferencePair], dict[str, int]]:
    """Preference pairs from the non-learnable, no-hit groups of a batch.

    rollout_items: [P, G] long item ids; targets: [P] long; rewards: [P, G] float; learnable: [P] bool
    (``learnable_groups(rewards)``, computed when not given).
    A group is converted when its rewards are all equal (non-learnable) and no rollout is the target.
    Its pairs are (target, item) for each distinct rolled-out item, in order of first appearance.

    info (ints): groups, learnable_groups (left to GRPO), groups_converted, all_hit_groups,
    other_skipped_groups (non-learnable with both hits and misses, possible only with a custom reward),
    pairs, duplicate_rejects_skipped.
    """
    learnable = (learnable_groups(rewards) if learnable is None else learnable).tolist()
    items, target_list = rollout_items.tolist(), targets.tolist()
    pairs: list[PreferencePair] = []
    info = dict.fromkeys(("groups", "learnable_groups", "groups_converted", "all_hit_groups",
                          "other_skipped_groups", "pairs", "duplicate_rejects_skipped"), 0)
    info["groups"] = len(items)

    for prompt_index, (group, target) in enumerate(zip(items, target_list, strict=True)):
        hits = [item == target for item in group]
        if learnable[prompt_index]:
            info["learnable_groups"] += 1  # GRPO handles it
        elif all(hits):
            info["all_hit_groups"] += 1  # nothing to push down
        elif any(hits):
            info["other_skipped_groups"] += 1
        else:
            distinct = list(dict.fromkeys(group))  # keeps first-appearance order
            pairs += [PreferencePair(prompt_index, target, item) for item in distinct]
            info["groups_converted"] += 1
            info["duplicate_rejects_skipped"] += len(group) - len(distinct)
    info["pairs"] = len(pairs)
    return pairs, info


@dataclass
class GroupRoute:
    """Which loss each group of a step goes to."""

    grpo_prompts: Tensor  # [P] bool: groups the GRPO branch trains on
    pairs: list[PreferencePair]  # pairs from the converted groups (empty without pairs)
    info: dict[str, int]  # counts of ``convert_groups_to_pairs`` (groups_converted = 0 without pairs)


def route_groups(rollout_items: Tensor, targets: Tensor, rewards: Tensor, learnable: Tensor,
                 use_pairs: bool) -> GroupRoute:
    """RISER's split of a step's groups: learnable groups go to GRPO, non-learnable no-hit groups to pairs.

    Shapes as in ``convert_groups_to_pairs``. Without pairs (plain GRPO, ReRe, the "w/o pairs" ablation)
    every group goes to GRPO: non-learnable ones have A = 0 and add nothing but still count in the mean.
    """
    pairs, info = convert_groups_to_pairs(rollout_items, targets, rewards, learnable)
    if use_pairs:
        return GroupRoute(learnable.clone(), pairs, info)
    return GroupRoute(torch.ones_like(learnable), [], {**info, "groups_converted": 0, "pairs": 0})


def pairs_to_dataset(
    pairs: list[PreferencePair], prompts: list[str], titles: dict[int, str], response_suffix: str = "\n",
) -> datasets.Dataset:
    """A ``datasets.Dataset`` of pairs for TRL-style preference trainers.

    prompts: prompt text per batch row (indexed by ``pair.prompt_index``); titles: item id -> title.
    Responses are ``title + response_suffix`` (the response format of SFT; the trainer appends EOS).
    Columns: prompt, chosen, rejected (str); prompt_index, chosen_item, rejected_item (int).
    """
    import datasets  # lazy: only this export needs the library

    def response(item: int) -> str:
        if item not in titles:
            raise KeyError(f"item {item} has no title in `titles` ({len(titles)} titles given)")
        return titles[item] + response_suffix

    columns = {
        "prompt": [prompts[pair.prompt_index] for pair in pairs],
        "chosen": [response(pair.chosen_item) for pair in pairs],
        "rejected": [response(pair.rejected_item) for pair in pairs],
        "prompt_index": [pair.prompt_index for pair in pairs],
        "chosen_item": [pair.chosen_item for pair in pairs],
        "rejected_item": [pair.rejected_item for pair in pairs],
    }
    string, integer = datasets.Value("string"), datasets.Value("int64")
    features = datasets.Features({"prompt": string, "chosen": string, "rejected": string,
                                  "prompt_index": integer, "chosen_item": integer, "rejected_item": integer})
    return datasets.Dataset.from_dict(columns, features=features)
