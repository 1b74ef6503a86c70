"""Backbone: preset sizes, padding-independent positions, pretrained loading, LoRA."""

import pytest
import torch

from riser_lite.model.backbone import (
    PRESETS,
    BackboneConfig,
    add_lora,
    build_backbone,
    build_model,
    build_tokenizer,
    count_parameters,
    get_preset,
    is_lora,
    load_pretrained,
    merge_lora,
)
from riser_lite.model.forward import position_ids_from_mask

TITLES = ["Red Apple", "Blue Moon", "Green Field", "Silver Lake", "Golden Gate", "Quiet Night"]


class FakeTokenizer:
    """Just what build_model reads: a vocabulary size and the special ids."""

    def __init__(self, size: int):
        self.size, self.pad_token_id, self.eos_token_id = size, 0, 1

    def __len__(self) -> int:
        return self.size


def tokenizer_without_pad(titles):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator([t + "\n" for t in titles], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")


def expected_parameters(c: BackboneConfig, vocab: int) -> int:
    """Qwen2 by hand: q/k/v have biases, o and the MLP do not; two RMSNorms per block, one final."""
    head_dim = c.hidden_size // c.num_heads
    kv = c.num_kv_heads * head_dim
    attention = (c.hidden_size * c.hidden_size + c.hidden_size) + 2 * (c.hidden_size * kv + kv) \
        + c.hidden_size * c.hidden_size
    mlp = 3 * c.hidden_size * c.intermediate_size
    block = attention + mlp + 2 * c.hidden_size
    head = 0 if c.tie_embeddings else vocab * c.hidden_size
    return vocab * c.hidden_size + c.num_layers * block + c.hidden_size + head


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts_match_the_architecture(name):
    config = PRESETS[name]
    model = build_model(config, FakeTokenizer(config.vocab_size))
    assert count_parameters(model) == expected_parameters(config, config.vocab_size)


def test_preset_sizes_are_in_their_ranges():
    counts = {name: expected_parameters(c, c.vocab_size) for name, c in PRESETS.items()}
    assert counts["micro"] < 100_000
    assert 1_000_000 <= counts["tiny"] <= 2_000_000
    assert 10_000_000 <= counts["small"] <= 40_000_000


def test_bad_configs_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        BackboneConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="num_kv_heads"):
        BackboneConfig(num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="unknown backbone preset"):
        get_preset("huge")
    with pytest.raises(TypeError, match="one string"):
        build_tokenizer("Red Apple")


def test_build_backbone_is_seeded_and_wired_to_its_tokenizer():
    a, tok = build_backbone(TITLES, "micro", seed=3)
    b, _ = build_backbone(TITLES, "micro", seed=3)
    c, _ = build_backbone(TITLES, "micro", seed=4)
    assert a.config.vocab_size == len(tok)
    assert a.config.pad_token_id == tok.pad_token_id and a.config.eos_token_id == tok.eos_token_id
    assert a.config._attn_implementation == "eager"
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])


def test_left_padding_with_mask_positions_gives_the_unpadded_logits():
    model, tok = build_backbone(TITLES, "micro", seed=0)
    model.eval()
    ids = torch.tensor([tok("Red Apple\nBlue Moon\n")["input_ids"]])
    pad = torch.full((1, 3), tok.pad_token_id)
    padded = torch.cat([pad, ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], dim=1)
    assert position_ids_from_mask(mask)[0].tolist() == [0, 0, 0] + list(range(ids.shape[1]))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        left = model(input_ids=padded, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    torch.testing.assert_close(left[:, 3:], plain, atol=1e-5, rtol=1e-5)


def test_load_pretrained_adds_a_pad_token_and_keeps_old_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = tokenizer_without_pad(TITLES)  # many models are released without a pad token
    assert tok.pad_token is None
    model = build_model(PRESETS["micro"], tok, seed=0)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    vocab = len(tok)

    loaded, ltok = load_pretrained(str(tmp_path))
    assert ltok.pad_token is not None and ltok.pad_token_id != ltok.eos_token_id
    assert len(ltok) == vocab + 1
    assert loaded.get_input_embeddings().num_embeddings == vocab + 1
    assert loaded.config.pad_token_id == ltok.pad_token_id
    assert ltok.padding_side == "left"
    ids = torch.tensor([tok("Blue Moon\n")["input_ids"]])
    model.eval()
    loaded.eval()
    with torch.no_grad():  # the old vocabulary's logits are unchanged by the resize
        torch.testing.assert_close(loaded(input_ids=ids).logits[..., :vocab], model(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-5)


def test_load_pretrained_leaves_a_complete_tokenizer_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = build_backbone(TITLES, "micro", seed=0)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    loaded, ltok = load_pretrained(str(tmp_path), dtype="float32", attention="eager")
    assert len(ltok) == len(tok) and ltok.pad_token == tok.pad_token
    assert loaded.get_input_embeddings().num_embeddings == len(tok)


def test_lora_outputs_are_the_same_before_and_after_merging():
    model, tok = build_backbone(TITLES, "micro", seed=0)
    ids = torch.tensor([tok("Red Apple\nGreen Field\n")["input_ids"]])
    model.eval()
    with torch.no_grad():
        base = model(input_ids=ids).logits.clone()
    wrapped = add_lora(model, r=4, alpha=8.0)
    assert is_lora(wrapped)
    c = PRESETS["micro"]
    kv = c.num_kv_heads * c.hidden_size // c.num_heads
    # rank-4 A (in x 4) and B (4 x out) on q, k, v, o of each block
    per_block = 4 * ((c.hidden_size + c.hidden_size) * 2 + (c.hidden_size + kv) * 2)
    assert count_parameters(wrapped, trainable_only=True) == c.num_layers * per_block
    torch.manual_seed(0)
    with torch.no_grad():  # B starts at zero (LoRA is a no-op at first): give it a value to merge
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    wrapped.eval()
    with torch.no_grad():
        adapted = wrapped(input_ids=ids).logits.clone()
    merged = merge_lora(wrapped)
    assert not is_lora(merged)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        after = merged(input_ids=ids).logits
    assert (adapted - base).abs().max() > 1e-3  # the adapters do change the model
    torch.testing.assert_close(after, adapted, atol=1e-5, rtol=1e-4)


def test_seeded_lora_adapters_start_the_same_whatever_ran_before():
    def adapters(seed, draws_before):
        model = build_backbone(TITLES, "micro", seed=0)[0]
        torch.rand(draws_before)  # another history of the global RNG between building and adapting
        wrapped = add_lora(model, r=4, alpha=8.0, seed=seed)
        return {n: p.detach().clone() for n, p in wrapped.named_parameters() if "lora_A" in n}

    first, again, other = adapters(3, 1), adapters(3, 7), adapters(4, 1)
    assert first.keys() == again.keys() and first
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)
