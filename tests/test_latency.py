"""Latency measurement: the decoding loop generates exactly the tokens it claims (timings are not tested)."""

import pytest
import torch

from riser_lab.latency import format_latency_table, measure_latency
from riser_lite.items.prompts import encode_prompt, format_prompt
from riser_lite.model.backbone import build_backbone, get_preset
from riser_lite.model.decoding import greedy_decode
from riser_lite.model.forward import left_pad

TITLES = {i: f"{['Red', 'Blue', 'Green'][i % 3]} item number {i}" for i in range(30)}


@pytest.fixture(scope="module")
def backbone():
    # A large init std makes the untrained model's greedy choices vary from step to step and row to row.
    model, tokenizer = build_backbone(TITLES, get_preset("micro", init_std=0.5), seed=0)
    return model, tokenizer


def prompts(n):
    return [format_prompt([TITLES[(i + j) % 30] for j in range(1 + i % 4)]) for i in range(n)]


def test_greedy_decode_matches_generate_with_fixed_length(backbone):
    model, tokenizer = backbone
    ids, mask = left_pad([encode_prompt(tokenizer, p) for p in prompts(3)], tokenizer.pad_token_id)
    assert (mask == 0).any()  # prompts of different lengths: left padding is exercised
    ours = greedy_decode(model, ids, mask, 9)
    reference = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=9, min_new_tokens=9,
                               do_sample=False)[:, ids.shape[1]:]
    assert ours.shape == (3, 9)
    assert len(set(ours.flatten().tolist())) > 1  # not a degenerate constant output
    assert torch.equal(ours, reference)


def test_measure_latency_counts_tokens(backbone):
    model, tokenizer = backbone
    model.train()
    rows = measure_latency(model, tokenizer, prompts(5), response_tokens=6, cot_tokens_list=(4, 10),
                           batch_size=3, repeats=2)
    assert model.training  # mode restored
    assert [(r["mode"], r["cot_tokens"], r["new_tokens"]) for r in rows] == [
        ("direct", 0, 6), ("cot", 4, 10), ("cot", 10, 16)]
    assert all(r["batch_size"] == 3 and r["repeats"] == 2 and r["response_tokens"] == 6 for r in rows)
    assert rows[0]["ratio_vs_direct"] == 1.0
    for r in rows:
        assert r["ms_per_recommendation"] == pytest.approx(1000 * r["seconds_per_batch"] / 3)
        assert r["tokens_per_second"] == pytest.approx(r["new_tokens"] * 3 / r["seconds_per_batch"])
    # Prompt lengths: batches cycle through the 5 prompts (0,1,2 then 3,4,0 for the 2 timed repeats).
    lengths = [len(encode_prompt(tokenizer, p)) for p in prompts(5)]
    expected = (sum(lengths[i] for i in (3, 4, 0)) / 3 + sum(lengths[i] for i in (1, 2, 3)) / 3) / 2
    assert rows[1]["prompt_tokens"] == pytest.approx(expected)
    assert format_latency_table(rows).splitlines()[2].split()[:3] == ["cot4", "3", "10"]


def test_measure_latency_rejects_bad_arguments(backbone):
    model, tokenizer = backbone
    with pytest.raises(ValueError, match=">= 1"):
        measure_latency(model, tokenizer, prompts(2), response_tokens=0)
    with pytest.raises(ValueError, match="at least one prompt"):
        measure_latency(model, tokenizer, [], response_tokens=3)
