"""SFT that scores the history items too (targets="items") and thinned windows (window_stride)."""


import pytest
import torch

from riser_lab.cli import main
from riser_lite import runs
from riser_lite.data import load_dataset
from riser_lite.data.types import Example, RecDataset
from riser_lite.data.windows import cap_windows, thin_windows
from riser_lite.items.prompts import encode_prompt, format_prompt, history_spans, item_token_positions
from riser_lite.items.represent import SemanticIds
from riser_lite.model.backbone import build_backbone
from riser_lite.sft import (
    IGNORE,
    SFTConfig,
    collate,
    encode_examples,
    history_positions,
    response_loss,
    step_share,
    train_sft,
)

TITLES = ["Red Apple", "Blue Moon", "Green Field", "Silver Lake", "Golden Gate", "Quiet Night"]


def sequence_dataset() -> RecDataset:
    """Two users whose sliding windows (histories of at most 3) walk the titles in a cycle."""
    train = []
    for user, (start, length) in enumerate([(0, 8), (2, 5)]):
        items = [(start + i) % len(TITLES) for i in range(length)]
        train += [Example(f"u{user}", tuple(items[max(0, t - 3):t]), items[t]) for t in range(1, length)]
    valid = [Example(f"v{a}", (a, (a + 1) % 6), (a + 2) % 6) for a in range(6)]
    return RecDataset("seq", dict(enumerate(TITLES)), {"train": train, "valid": valid, "test": valid},
                      max_history=3)


def test_history_spans_cover_each_title_and_its_newline():
    titles = ["Red Apple", "Blue Moon", "Quiet Night"]
    text = format_prompt(titles)
    assert [text[a:b] for a, b in history_spans(titles)] == [f"{t}\n" for t in titles]


def test_item_positions_are_exactly_the_code_tokens_and_newlines():
    codes = SemanticIds(codes={0: (1, 2), 1: (1, 3), 2: (0, 2)})
    catalog = {item: codes.text(item) for item in codes.codes}
    _, tok = build_backbone(catalog, "micro", whole_tokens=codes.tokens())
    history = [catalog[0], catalog[2]]
    ids = encode_prompt(tok, format_prompt(history))
    picked = [tok.convert_ids_to_tokens(ids[p]) for p in item_token_positions(tok, history)]
    newline = tok.convert_ids_to_tokens(tok("\n", add_special_tokens=False)["input_ids"])[0]
    assert picked == ["<a_1>", "<b_2>", newline, "<a_0>", "<b_2>", newline]


def test_item_positions_of_titles_decode_to_the_titles():
    ds = sequence_dataset()
    _, tok = build_backbone(ds, "micro")
    history = TITLES[:3]
    ids = encode_prompt(tok, format_prompt(history))
    text = tok.decode([ids[p] for p in item_token_positions(tok, history)])
    # each title's tokens (the first may carry the space after "- ") and its newline, nothing else
    assert text.replace(" ", "") == "".join(f"{t}\n" for t in history).replace(" ", "")


def test_thinning_keeps_each_users_newest_window_and_every_kth_before_it():
    examples = [Example("a", (), i) for i in range(7)]
    examples.insert(3, Example("b", (), 100))
    examples.insert(5, Example("b", (), 101))
    thinned = thin_windows(examples, 3)
    assert [(e.user, e.target) for e in thinned.kept] == [("a", 0), ("a", 3), ("b", 101), ("a", 6)]
    assert thinned.dropped == 5 and thinned.record() == {"stride": 3, "windows_kept": 4, "windows_dropped": 5}
    assert thin_windows(examples, 1).kept == examples
    with pytest.raises(ValueError, match="window stride must be an integer >= 1"):
        thin_windows(examples, 0)


def test_a_cap_keeps_a_seeded_sample_in_order_and_counts_what_it_left_out():
    thinned = thin_windows([Example(str(u), (), u * 10 + i) for u in range(5) for i in range(4)], 2)
    capped = cap_windows(thinned, 4, seed=0)
    assert len(capped.kept) == 4 and capped.capped == 6 and capped.dropped == thinned.dropped == 10
    positions = [thinned.kept.index(e) for e in capped.kept]
    assert positions == sorted(positions)  # a subset of the kept windows, in their order
    assert capped.kept == cap_windows(thinned, 4, seed=0).kept != cap_windows(thinned, 4, seed=1).kept
    assert capped.record() == {"stride": 2, "windows_kept": 4, "windows_dropped": 10, "windows_capped": 6}
    assert cap_windows(thinned, None, seed=0) is thinned and cap_windows(thinned, 10, seed=0) is thinned
    with pytest.raises(ValueError, match="max_train must be an integer >= 1"):
        SFTConfig(max_train=0)


def test_collate_scores_the_listed_prompt_positions():
    batch = collate([([5, 6, 7, 8], [9, 1]), ([5, 6], [9, 1])], pad_id=0, prompt_targets=[[1, 3], []])
    i = IGNORE
    assert batch["labels"].tolist() == [[i, 6, i, 8, 9, 1], [i, i, 9, 1, i, i]]


def test_item_loss_is_the_mean_nll_over_history_items_and_response():
    ds = sequence_dataset()
    model, tok = build_backbone(ds, "micro", seed=0)
    examples = ds.splits["train"][3:6]
    encoded = encode_examples(examples, ds.catalog, tok, 3)
    positions = history_positions(examples, ds.catalog, tok, 3)
    loss, count = response_loss(model, collate(encoded, tok.pad_token_id, positions))
    total, n = 0.0, 0
    for (prompt, response), scored in zip(encoded, positions, strict=True):  # by hand, one sequence at a time
        ids = prompt + response
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        for p in [*scored, *range(len(prompt), len(ids))]:
            total, n = total - logp[p - 1, ids[p]].item(), n + 1
    assert count == n > sum(len(r) for _, r in encoded)
    assert loss.item() == pytest.approx(total / n, rel=1e-5)
    _, global_count, _ = step_share(encoded, [0, 1, 2], tok.pad_token_id, 0, 1, positions)
    assert global_count == n


@pytest.mark.parametrize("overrides, message", [
    ({"targets": "prompt"}, "targets must be one of"),
    ({"targets": "items", "loss_policy": "constrained"}, "targets='items' needs loss_policy='raw'"),
    ({"window_stride": 0}, "window_stride must be an integer >= 1"),
])
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        SFTConfig(**overrides)


def test_the_recipe_records_targets_and_window_stride():
    assert SFTConfig().recipe()["targets"] == "response" and SFTConfig().recipe()["window_stride"] == 1
    assert SFTConfig(targets="items", window_stride=3).recipe()["window_stride"] == 3


def test_training_on_items_with_thinned_windows_records_both(tmp_path):
    ds = sequence_dataset()
    model, tok = build_backbone(ds, "micro", seed=0)
    records = []
    config = SFTConfig(epochs=1, batch_size=2, lr=1e-2, progress=False, targets="items", window_stride=3)
    result = train_sft(ds, model, tok, config, on_step=records.append)
    # user u0 has 7 windows (keep 7, 4, 1), u1 has 4 (keep 4, 1): 5 kept, 6 dropped
    assert result.summary["windows"] == {"stride": 3, "windows_kept": 5, "windows_dropped": 6}
    assert result.summary["targets"] == "items" and result.summary["steps"] == 3
    kept = thin_windows(ds.splits["train"], 3).kept
    encoded = encode_examples(kept, ds.catalog, tok, 3)
    scored = sum(len(r) for _, r in encoded) + sum(map(len, history_positions(kept, ds.catalog, tok, 3)))
    # each step logs its global batch's scored tokens; the batches cover every kept window once
    batches = [r["response_tokens"] for r in records if r["event"] == "train"]
    assert sum(batches) == scored


def test_cli_trains_on_items(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sft", "--data", "synthetic", "--model", "micro", "--epochs", "1", "--targets", "items",
                 "--window-stride", "10", "--out", str(out)]) == 0
    summary = runs.read_config(out)["results"]["sft"]
    assert summary["targets"] == "items" and summary["windows"]["stride"] == 10
    thinned = thin_windows(load_dataset("synthetic").splits["train"], 10)
    assert summary["windows"] == thinned.record()
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--window-stride", "0", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "--window-stride: 0 is too small" in capsys.readouterr().err
