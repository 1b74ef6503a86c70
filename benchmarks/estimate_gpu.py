"""An ESTIMATE of the real model's LoRA SFT on a Colab T4 GPU, from FLOPs and memory counted on this CPU.

No GPU is used. The script counts, on the CPU, the floating-point operations of one LoRA SFT step of
SmolLM2-135M on real LastFM windows (``torch.utils.flop_counter.FlopCounterMode``) and the bytes autograd
saves for the backward pass (``saved_tensors_hooks``), times the same step on this CPU, and converts:

    GPU seconds per step  ~  FLOPs / (peak FLOP/s x utilisation)

with the T4's published peaks (NVIDIA T4 datasheet: 65 TFLOP/s FP16 with tensor cores, 8.1 TFLOP/s FP32,
16 GB) and an assumed utilisation (``--utilisation``, 0.3 by default: small matrices and a 49,152-word
output layer keep a T4 far from its peak). It is an estimate of the training compute only; sampling and
beam search are bound by per-token latency, not FLOPs, and are not estimated.

    PYTHONPATH=. python benchmarks/estimate_gpu.py --data PATH/TO/lastfm --batch-size 32
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

T4 = {"fp16_tensor": 65e12, "fp32": 8.1e12, "memory_gb": 16}  # NVIDIA T4 datasheet peaks


def saved_bytes(fn) -> tuple[int, object]:
    """(bytes autograd keeps for backward while `fn` runs, i.e. the activation memory; fn's result)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total, out


def main() -> None:
    from riser_lite.data import load_dataset
    from riser_lite.model.backbone import add_lora, load_pretrained
    from riser_lite.sft import collate, encode_examples, response_loss
    from riser_lite.teach.start import sample_examples

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/lastfm", help="LastFM folder (read in place)")
    parser.add_argument("--batch-size", type=int, default=32, help="the GPU preset's batch")
    parser.add_argument("--cpu-batch", type=int, default=8, help="batch of the CPU timing")
    parser.add_argument("--utilisation", type=float, default=0.3, help="assumed share of the GPU's peak")
    parser.add_argument("--windows", type=int, default=5431, help="windows per epoch to price")
    parser.add_argument("--threads", type=int, default=1, help="1: process CPU time is the step's time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    dataset = load_dataset("lastfm", args.data)
    model, tokenizer = load_pretrained("smollm2-135m")
    model = add_lora(model)
    rows = encode_examples(sample_examples(dataset, args.batch_size, seed=args.seed), dataset.catalog,
                           tokenizer, dataset.max_history)
    batch = collate(rows, tokenizer.pad_token_id)
    tokens = int(batch["attention_mask"].sum())
    with FlopCounterMode(display=False) as counter:
        activation, (loss, _) = saved_bytes(lambda: response_loss(model, batch))
        loss.backward()
    flops = counter.get_total_flops()
    model.zero_grad(set_to_none=True)

    small = collate(rows[: args.cpu_batch], tokenizer.pad_token_id)
    seconds = []  # CPU time of this process (one thread): less disturbed by other jobs than wall time
    for _ in range(3):
        tic = time.process_time()
        loss, _ = response_loss(model, small)
        loss.backward()
        model.zero_grad(set_to_none=True)
        seconds.append(time.process_time() - tic)
    cpu_step = min(seconds) * args.batch_size / args.cpu_batch  # the same step's FLOPs scale with the batch
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    steps = -(-args.windows // args.batch_size)
    gpu_step = flops / (T4["fp16_tensor"] * args.utilisation)
    print(f"one LoRA SFT step, batch {args.batch_size} LastFM windows ({tokens} real tokens, "
          f"{batch['input_ids'].shape[1]} padded length): {flops / 1e12:.2f} TFLOP (counted)")
    print(f"this CPU ({args.threads} thread(s), process CPU time, best of 3 at batch {args.cpu_batch}, "
          f"scaled): {cpu_step:.1f} s per step = {flops / cpu_step / 1e9:.0f} GFLOP/s achieved")
    print(f"ESTIMATE, T4 fp16 autocast at {args.utilisation:.0%} of its 65 TFLOP/s peak: {gpu_step:.3f} s "
          f"per step ({cpu_step / gpu_step:.0f}x this CPU); an epoch of {args.windows:,} windows = {steps} "
          f"steps = {steps * gpu_step / 60:.1f} min (CPU: {steps * cpu_step / 60:.0f} min)")
    print(f"ESTIMATE, memory: fp32 weights {weights / 2**30:.2f} GiB + saved activations "
          f"{activation / 2**30:.2f} GiB in fp32 (about half under fp16 autocast) + LoRA optimizer state "
          f"(negligible) of the T4's {T4['memory_gb']} GB")


if __name__ == "__main__":
    main()
