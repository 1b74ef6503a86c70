"""The language model that recommends: a tiny Qwen2-style causal LM built locally, or any HF causal LM.

Local models are built from a config (no download): a byte-level BPE tokenizer trained on the catalogue
(`items.tokenizer`) and a randomly initialised `Qwen2ForCausalLM` sized by a named preset. `load_pretrained`
loads a real model by name or path instead (`riser_lite.model.pretrained` resolves the name) and makes its
tokenizer usable here. `add_lora` / `merge_lora` wrap peft for parameter-efficient fine-tuning.

Qwen2 numbers positions from the first column whatever the attention mask says, so every forward pass in
this package passes `model.forward.position_ids_from_mask(attention_mask)`: training (right padding) and
decoding (left padding) then agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from riser_lite.items.tokenizer import EOS_TOKEN, PAD_TOKEN, train_tokenizer

# Eager attention: on CPU, PyTorch's SDPA is ~3x slower than eager for the backward pass of these tiny
# models once an attention mask carries padding (measured: 594 vs 186 ms per step at hidden 128, batch
# 32 x 80), and no faster for cached decoding. Pretrained models keep their own default (usually SDPA).
DEFAULT_ATTENTION = "eager"


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of a locally built Qwen2-style causal LM (the vocabulary size comes from the tokenizer)."""

    hidden_size: int = 128  # width of the residual stream
    num_layers: int = 4  # transformer blocks
    num_heads: int = 4  # query heads (hidden_size must be divisible by it)
    num_kv_heads: int = 2  # key/value heads (grouped-query attention, as in Qwen2); divides num_heads
    intermediate_size: int = 384  # width of the SwiGLU MLP
    max_positions: int = 512  # longest prompt + response the rotary embedding is set up for
    rope_theta: float = 10000.0  # rotary base; short sequences need no more than the classic value
    tie_embeddings: bool = True  # share input embeddings and output head (saves V x hidden parameters)
    vocab_size: int = 1024  # target size of the tokenizer trained on the catalogue
    attention: str = DEFAULT_ATTENTION  # "eager" or "sdpa" (see DEFAULT_ATTENTION)
    init_std: float = 0.02  # std of the normal initialisation of weights

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads "
                             f"{self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} must be divisible by num_kv_heads "
                             f"{self.num_kv_heads}")
        if self.attention not in ("eager", "sdpa"):
            raise ValueError(f"attention must be 'eager' or 'sdpa', got {self.attention!r}")


PRESETS: dict[str, BackboneConfig] = {
    # Unit tests: builds and trains in well under a second (~40k parameters with a 512-token vocabulary).
    "micro": BackboneConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                            vocab_size=512),
    # CPU default: ~1.1M parameters with a 1024-token vocabulary; SFT on the synthetic data in ~1-2 minutes.
    "tiny": BackboneConfig(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=512),
    # Heavier CPU model for rollout benchmarks and patient learners: ~26M parameters.
    "small": BackboneConfig(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=4,
                            intermediate_size=1536, vocab_size=2048),
}


def get_preset(preset: str | BackboneConfig, **overrides) -> BackboneConfig:
    """A preset by name (or a config passed through), with fields overridden by keyword."""
    if isinstance(preset, BackboneConfig):
        config = preset
    elif preset in PRESETS:
        config = PRESETS[preset]
    else:
        raise ValueError(f"unknown backbone preset {preset!r}; expected one of {sorted(PRESETS)}")
    return replace(config, **overrides) if overrides else config


def _titles_of(dataset_or_titles) -> list[str]:
    titles = getattr(dataset_or_titles, "catalog", dataset_or_titles)  # a RecDataset's {item: title}
    if isinstance(titles, str):
        raise TypeError("expected a RecDataset, a {item: title} dict or a list of titles, got one string")
    return [titles[item] for item in sorted(titles)] if isinstance(titles, dict) else list(titles)


def build_tokenizer(dataset_or_titles, vocab_size: int = 1024, whole_tokens: Sequence[str] = ()):
    """Train the local tokenizer on a dataset's catalogue (a RecDataset, {item: title} or titles).

    `whole_tokens` (e.g. semantic-ID tokens ``<a_12>``) are removed from the training text and then added
    as whole tokens, so BPE spends no merges on them and each is exactly one token id.
    """
    titles = _titles_of(dataset_or_titles)
    if not titles:
        raise ValueError("cannot train a tokenizer on an empty catalogue")
    for token in whole_tokens:
        titles = [title.replace(token, "") for title in titles]
    tokenizer = train_tokenizer(titles, vocab_size=vocab_size)
    tokenizer.add_tokens(list(whole_tokens))
    return tokenizer


def add_item_tokens(model, tokenizer, tokens: Sequence[str]) -> int:
    """Add item tokens (e.g. semantic IDs) to any model's tokenizer as whole tokens and grow the embeddings.

    Each new row is the mean of the existing rows (in the output head too when it is not tied), exactly,
    so the same model and tokens always give the same weights (a resumed run must match). Returns the
    number of tokens that were new.
    """
    added = tokenizer.add_tokens(list(tokens))
    old = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > old:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for layer in {model.get_input_embeddings(), model.get_output_embeddings()} - {None}:
                layer.weight[old:] = layer.weight[:old].mean(0)
    return int(added)


def build_model(config: BackboneConfig, tokenizer, seed: int = 0):
    """A freshly initialised Qwen2ForCausalLM for `tokenizer` (deterministic in `seed`)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads, max_position_embeddings=config.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=config.tie_embeddings, initializer_range=config.init_std,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        attn_implementation=config.attention))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_backbone(titles, preset: str | BackboneConfig = "tiny", seed: int = 0,
                   whole_tokens: Sequence[str] = ()):
    """(a fresh model of `preset` (a name in PRESETS or a BackboneConfig) seeded by `seed`, a tokenizer
    trained on `titles`: a RecDataset, an {item: title} dict or a list of titles). whole_tokens (semantic
    IDs) are added whole, and the embedding table includes them."""
    config = get_preset(preset)
    tokenizer = build_tokenizer(titles, config.vocab_size, whole_tokens)
    return build_model(config, tokenizer, seed=seed), tokenizer


def load_pretrained(name_or_path: str, dtype: str | torch.dtype | None = None, attention: str | None = None):
    """(model, tokenizer) of a pretrained causal LM, ready for this package.

    `name_or_path`: a named backbone (``"smollm2-135m"``, see `riser_lite.model.pretrained`), a local HF
    folder, or a hub id (online). The pad token must differ from EOS, or "finished" would be ambiguous: a
    spare special token is used (SmolLM2: ``<|endoftext|>``), so the embeddings keep their shape and a LoRA
    adapter alone reproduces the model. The identity {"name", "source", "sha256"} is kept as
    ``model.riser_lite_base`` (what a LoRA run records). dtype: e.g. "bfloat16" on a GPU (None: float32);
    attention: "eager", "sdpa", ... (None: the model's default).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from riser_lite.model.pretrained import resolve

    target, identity = resolve(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(target)
    kwargs = {}
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if attention is not None:
        kwargs["attn_implementation"] = attention
    model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
    if tokenizer.eos_token is None:
        tokenizer.add_special_tokens({"eos_token": EOS_TOKEN})
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        taken = (tokenizer.eos_token, tokenizer.bos_token)
        spare = [t for t in tokenizer.all_special_tokens if t not in taken]
        if spare:
            tokenizer.pad_token = spare[0]
        else:
            tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "left"
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.riser_lite_base = identity
    return model, tokenizer


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def add_lora(model, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
             target_modules: Sequence[str] = LORA_TARGETS, trainable_tokens: Sequence[int] = (),
             seed: int | None = None):
    """Wrap `model` with LoRA adapters (a `peft.PeftModel`); only the adapters train afterwards.

    r: adapter rank; alpha / r scales the update; dropout: on the adapter input; target_modules: the linear
    layers adapted; trainable_tokens: token ids whose embedding rows train too (the item tokens
    `add_item_tokens` added, else their rows stay at their initial mean); seed: seeds the random initial A
    matrices (B starts at zero) so a run repeats in any process (None: the global RNG as it is).
    """
    from peft import LoraConfig, get_peft_model

    if seed is not None:
        torch.manual_seed(seed)
    extra = {"trainable_token_indices": list(trainable_tokens)} if len(trainable_tokens) else {}
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        bias="none", task_type="CAUSAL_LM", **extra)
    return get_peft_model(model, config)


def is_lora(model) -> bool:
    """True for a peft-wrapped model."""
    return hasattr(model, "merge_and_unload") and hasattr(model, "peft_config")


def merge_lora(model):
    """Fold LoRA adapters into the base weights and return the plain HF model (for export and RL)."""
    return model.merge_and_unload() if is_lora(model) else model


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of (distinct) parameters; tied embeddings are counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
