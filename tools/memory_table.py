"""GPU memory of an SFT step on a Qwen2-architecture model, computed from the model's shape.

    python tools/memory_table.py                       # the table of docs/scale.md
    python tools/memory_table.py --model Qwen2.5-1.5B-Instruct --batch 8 --seq 512 --gpus 4

Per GPU, in GiB (2**30 bytes), the four terms that dominate training memory:

- **weights**: P parameters x bytes per weight (4 in fp32; 2 if the model itself is loaded in bf16).
- **gradients** of the trainable parameters Pt: 4 bytes each (fp32), or 2 under DeepSpeed's bf16 mode.
- **optimizer**: AdamW keeps m and v in fp32 (8 bytes per trainable parameter); DeepSpeed's bf16 mode also
  keeps an fp32 master copy of the weights (4 more), as in the ZeRO paper's 2 + 2 + 12 bytes per parameter.
  ZeRO stage 1 divides the optimizer state by the number of GPUs N, stage 2 also the gradients, stage 3
  also the weights.
- **activations**: the tensors autograd saves in the forward pass for the backward pass, counted tensor by
  tensor for one Qwen2 decoder layer (`saved_per_token`), times layers, times the tokens of this GPU's share
  of the batch, in the activation dtype (4 bytes fp32, 2 under bf16 autocast). Eager attention also saves
  the softmax probabilities (heads x T per token); SDPA / flash attention saves only its output and a
  log-sum-exp. With gradient checkpointing only each layer's input is kept, plus one layer recomputed.
  The output head runs on response tokens only (`riser_lite.sft.response_logits`): their fp32 logits and
  log-softmax (4 x V bytes per response token) and the head's input. For LoRA the full-model count is an
  upper bound: a frozen linear layer need not save its input.

Not counted: the CUDA context and allocator slack (~0.5-1 GiB per GPU), DDP's gradient buckets (one more
copy of the gradients unless `gradient_as_bucket_view`), temporary buffers inside a kernel. The result is a
lower bound to plan with, not a promise; `torch.cuda.max_memory_allocated()` on the real GPU is the truth.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class Qwen2Shape:
    """The fields of a Qwen2 `config.json` that set the memory (names shortened)."""

    vocab: int  # vocab_size
    hidden: int  # hidden_size h
    intermediate: int  # intermediate_size i of the SwiGLU MLP
    layers: int  # num_hidden_layers L
    heads: int  # num_attention_heads a
    kv_heads: int  # num_key_value_heads (grouped-query attention)
    tied: bool  # tie_word_embeddings (the output head shares the input embedding matrix)

    @property
    def kv_dim(self) -> int:
        """Width of the key (and of the value) projection: kv_heads x head_dim."""
        return self.kv_heads * self.hidden // self.heads


# From the models' config.json on the Hugging Face hub.
MODELS = {
    "Qwen2.5-0.5B-Instruct": Qwen2Shape(151936, 896, 4864, 24, 14, 2, True),
    "Qwen2.5-1.5B-Instruct": Qwen2Shape(151936, 1536, 8960, 28, 12, 2, True),
    "Qwen2.5-7B-Instruct": Qwen2Shape(152064, 3584, 18944, 28, 28, 4, False),
}


def parameters(m: Qwen2Shape) -> int:
    """P = embeddings (+ head if untied) + L x (attention + MLP + 2 norms) + final norm.

    Attention: q (h x h + h bias), k and v (h x kv + kv bias each), o (h x h, no bias); MLP: gate, up and
    down (3 x h x i); RMSNorm: h weights each.
    """
    attention = (m.hidden * m.hidden + m.hidden) + 2 * (m.hidden * m.kv_dim + m.kv_dim) + m.hidden * m.hidden
    layer = attention + 3 * m.hidden * m.intermediate + 2 * m.hidden
    embeddings = m.vocab * m.hidden * (1 if m.tied else 2)
    return embeddings + m.layers * layer + m.hidden


def lora_parameters(m: Qwen2Shape, rank: int) -> int:
    """Adapter parameters of LoRA on q, k, v, o (`riser_lite.model.backbone.LORA_TARGETS`): r x (in + out)."""
    per_layer = rank * ((m.hidden + m.hidden) + 2 * (m.hidden + m.kv_dim) + (m.hidden + m.hidden))
    return m.layers * per_layer


def saved_per_token(m: Qwen2Shape, seq: int, attention: str) -> int:
    """Elements one decoder layer saves for backward, per token (counted on the transformers Qwen2 code).

    8 x h: the two RMSNorms' inputs, normalised values and outputs (the q/k/v and MLP inputs) and the
    attention output (the o input), less what is shared; 3 x kv: rotated k and v (repeated to the query
    heads as views, no copy) and the pre-rotation k; 4 x i: gate, SiLU(gate), up and their product (the down
    input); T: the row of the padding-aware attention mask. Eager attention adds the softmax probabilities
    (a x T), SDPA a log-sum-exp per head (a). `tests/test_scale_memory.py` checks the count against the
    tensors autograd really saves.
    """
    common = 8 * m.hidden + 3 * m.kv_dim + 4 * m.intermediate + seq
    return common + (m.heads * seq if attention == "eager" else m.heads)


def activation_bytes(m: Qwen2Shape, batch: int, seq: int, response: int, act_bytes: int, attention: str,
                     checkpointing: bool) -> int:
    """Saved activations of one GPU's share: `batch` sequences of `seq` tokens, `response` scored each.

    Besides the layers: the final RMSNorm (2 x h per token), and on the response tokens the head's input
    (h) and the fp32 log-softmax over the vocabulary (4 x V bytes).
    """
    tokens = batch * seq
    if checkpointing:  # each layer's input, plus one layer's saved tensors while it is recomputed
        layers = m.layers * m.hidden + saved_per_token(m, seq, attention)
    else:
        layers = m.layers * saved_per_token(m, seq, attention)
    head = batch * response * (m.hidden * act_bytes + 4 * m.vocab)
    return tokens * (layers + 2 * m.hidden) * act_bytes + head


@dataclass(frozen=True)
class Setting:
    """One training set-up (a row of the table)."""

    name: str  # label in the table
    lora_rank: int = 0  # 0: full fine-tuning
    weight_bytes: int = 4  # bytes per weight as loaded (4 fp32; 2 if loaded in bf16)
    act_bytes: int = 4  # bytes per saved activation (2 under bf16 autocast)
    deepspeed_bf16: bool = False  # DeepSpeed bf16 mode: bf16 weights and grads, fp32 master in the optimizer
    zero: int = 0  # ZeRO stage (0: plain DDP)
    checkpointing: bool = False  # gradient checkpointing


def memory(m: Qwen2Shape, s: Setting, gpus: int, batch: int, seq: int, response: int,
           attention: str = "sdpa") -> dict[str, float]:
    """Per-GPU GiB of weights, gradients, optimizer, activations and their total. `batch` is global."""
    total_params = parameters(m) + (lora_parameters(m, s.lora_rank) if s.lora_rank else 0)
    trainable = lora_parameters(m, s.lora_rank) if s.lora_rank else parameters(m)
    weight_bytes = 2 if s.deepspeed_bf16 else s.weight_bytes
    grad_bytes = 2 if s.deepspeed_bf16 else 4
    optimizer_bytes = 12 if s.deepspeed_bf16 else 8  # (fp32 master +) m + v
    shard = max(gpus, 1)
    weights = total_params * weight_bytes / (shard if s.zero >= 3 else 1)
    grads = trainable * grad_bytes / (shard if s.zero >= 2 else 1)
    optimizer = trainable * optimizer_bytes / (shard if s.zero >= 1 else 1)
    per_gpu_batch = -(-batch // shard)  # the largest share
    acts = activation_bytes(m, per_gpu_batch, seq, response, s.act_bytes, attention, s.checkpointing)
    parts = {"weights": weights, "gradients": grads, "optimizer": optimizer, "activations": acts}
    out = {k: v / GIB for k, v in parts.items()}
    out["total"] = sum(out.values())
    return out


SETTINGS = (
    Setting("full fp32"),
    Setting("full, bf16 autocast", act_bytes=2),
    Setting("full, bf16 autocast, grad. ckpt", act_bytes=2, checkpointing=True),
    Setting("LoRA r=8, bf16 autocast", lora_rank=8, act_bytes=2),
    Setting("full, DeepSpeed bf16, ZeRO-2", act_bytes=2, deepspeed_bf16=True, zero=2),
)


def table(model: str, gpus_list=(1, 4), batch: int = 32, seq: int = 256, response: int = 16,
          attention: str = "sdpa") -> str:
    """A markdown table: one row per setting and GPU count."""
    m = MODELS[model]
    lines = [f"{model}: {parameters(m):,} parameters; global batch {batch} x {seq} tokens "
             f"({response} scored per example), {attention} attention; GiB per GPU",
             "", "| setting | GPUs | weights | gradients | AdamW | activations | total |",
             "|---|---|---|---|---|---|---|"]
    for s in SETTINGS:
        for gpus in gpus_list:
            if s.zero and gpus == 1:
                continue  # ZeRO shards across GPUs: on one it is plain bf16 training
            r = memory(m, s, gpus, batch, seq, response, attention)
            cells = " | ".join(f"{r[k]:.2f}" for k in ("weights", "gradients", "optimizer", "activations",
                                                       "total"))
            lines.append(f"| {s.name} | {gpus} | {cells} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="Qwen2.5-0.5B-Instruct", choices=sorted(MODELS))
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--batch", type=int, default=32, help="global batch (examples per optimizer step)")
    parser.add_argument("--seq", type=int, default=256, help="tokens per example (prompt + response, padded)")
    parser.add_argument("--response", type=int, default=16, help="response tokens scored per example")
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"])
    args = parser.parse_args(argv)
    print(table(args.model, tuple(args.gpus), args.batch, args.seq, args.response, args.attention))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
