"""tools/memory_table.py: parameter counts, the per-GPU arithmetic, and activations against autograd."""

import sys
from pathlib import Path

import pytest
import torch
from test_sft import cycle_dataset

from riser_lite.model.backbone import add_lora, build_backbone, count_parameters, get_preset
from riser_lite.sft import collate, encode_examples, response_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import memory_table as mt  # noqa: E402

QWEN05 = mt.MODELS["Qwen2.5-0.5B-Instruct"]


def shape_of(model) -> mt.Qwen2Shape:
    c = model.config
    return mt.Qwen2Shape(c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers,
                         c.num_attention_heads, c.num_key_value_heads, c.tie_word_embeddings)


def test_qwen2_5_0_5b_parameters_by_hand():
    # embeddings 151936 x 896 = 136,134,656 (tied head); per layer: q 896*896+896 = 803,712, k and v
    # 896*128+128 = 114,816 each, o 802,816, MLP 3*896*4864 = 13,074,432, norms 1,792: 14,912,384;
    # x 24 = 357,897,216; + final norm 896.
    assert mt.parameters(QWEN05) == 136_134_656 + 24 * 14_912_384 + 896 == 494_032_768
    assert mt.lora_parameters(QWEN05, 8) == 24 * 8 * (1792 + 2 * 1024 + 1792) == 1_081_344


def test_parameter_counts_match_built_models():
    ds = cycle_dataset()
    for preset in ("micro", "tiny"):
        model, _ = build_backbone(ds, preset, seed=0)
        assert mt.parameters(shape_of(model)) == count_parameters(model)
        lora = add_lora(model, r=4)
        assert mt.lora_parameters(shape_of(model), 4) == count_parameters(lora, trainable_only=True)


def test_per_gpu_memory_by_hand():
    gib = 2**30
    p = 494_032_768
    full = mt.memory(QWEN05, mt.Setting("full fp32"), gpus=1, batch=8, seq=128, response=16)
    assert full["weights"] == pytest.approx(4 * p / gib) == pytest.approx(1.8404, abs=1e-4)
    assert full["gradients"] == full["weights"] and full["optimizer"] == pytest.approx(3.6809, abs=1e-4)
    zero2 = mt.memory(QWEN05, mt.Setting("z2", act_bytes=2, deepspeed_bf16=True, zero=2), gpus=4, batch=8,
                      seq=128, response=16)
    assert zero2["weights"] == pytest.approx(2 * p / gib)  # bf16 weights, whole on every GPU
    assert zero2["gradients"] == pytest.approx(2 * p / 4 / gib)  # bf16 gradients, a quarter each
    assert zero2["optimizer"] == pytest.approx(12 * p / 4 / gib)  # fp32 master + m + v, a quarter each
    # Activations of 2 of the 8 sequences per GPU, bf16, SDPA: 2 x 128 tokens x (24 layers x
    # (8*896 + 3*128 + 4*4864 + 128 + 14) + 2*896) x 2 bytes + 2 x 16 x (896 x 2 + 4 x 151936) bytes.
    per_layer = 8 * 896 + 3 * 128 + 4 * 4864 + 128 + 14
    expected = 256 * (24 * per_layer + 2 * 896) * 2 + 32 * (896 * 2 + 4 * 151936)
    assert zero2["activations"] * gib == expected


def saved_bytes(model, batch) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves during the forward of the SFT loss."""
    params = {p.data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        if t.is_floating_point() and t.data_ptr() not in params:
            storages[t.data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, scored = response_loss(model, batch, reduction="sum")
    return sum(storages.values()), scored


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_count_matches_what_autograd_saves(attention, checkpointing):
    ds = cycle_dataset()
    model, tok = build_backbone(ds, get_preset("micro", attention=attention), seed=0)
    model.train()
    if checkpointing:  # non-reentrant, as a GPU run of the memory table would use it
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    batch = collate(encode_examples(ds.splits["train"][:8], ds.catalog, tok, 10), tok.pad_token_id)
    measured, scored = saved_bytes(model, batch)
    b, t = batch["input_ids"].shape
    m = shape_of(model)
    head = scored * 4 * (m.hidden + m.vocab)  # the head's input and the log-softmax on scored tokens
    predicted = mt.activation_bytes(m, b, t, 0, 4, attention, checkpointing) + head
    if checkpointing:  # the forward keeps layer inputs only; one layer is recomputed later, in backward
        predicted -= b * t * mt.saved_per_token(m, t, attention) * 4
    assert predicted == pytest.approx(measured, rel=0.02)  # the rest: per-row norms, scalars
