"""What a chain of thought costs at serving time: time and tokens per recommendation, measured.

RISER's model answers with the item title directly; a reasoning recommender first writes a chain of
thought (CoT) of a few hundred tokens. On the same backbone, the same prompts and the same decoding loop,
`measure_latency` times

- **direct**: prompt -> `response_tokens` new tokens (a title, newline and EOS);
- **CoT**: prompt -> `cot_tokens + response_tokens` new tokens, for each CoT length asked for.

Only the *number* of generated tokens matters for the time, not what they say: the loop is KV-cached
greedy decoding of a fixed number of tokens (EOS does not stop it, like ``generate(min_new_tokens =
max_new_tokens)``), so an untrained model times exactly like a trained one. A real CoT also makes every
later step attend over a longer KV cache, and the loop pays that cost too. Direct decoding is timed
unconstrained; the trie mask of constrained decoding adds one table lookup per step, small next to a
forward pass, and a trie-constrained decoder may stop early on forced tokens, so this favours CoT if anything.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

from torch import Tensor

from riser_lite.model.decoding import greedy_decode
from riser_lite.model.forward import left_pad


def _left_pad_nonempty(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    for i, row in enumerate(rows):
        if not row:
            raise ValueError(f"prompt {i} encodes to no tokens")
    return left_pad(rows, pad_id)


def _batches(prompt_ids: list[list[int]], batch_size: int, count: int):
    """`count` batches of `batch_size` prompts, taken cyclically through the prompt list."""
    for r in range(count):
        yield [prompt_ids[(r * batch_size + i) % len(prompt_ids)] for i in range(batch_size)]


def measure_latency(model, tokenizer, prompts: Sequence[str], response_tokens: int,
                    cot_tokens_list: Sequence[int] = (128, 256, 512), batch_size: int = 1,
                    repeats: int = 3) -> list[dict]:
    """Time direct answers against answers preceded by a chain of thought of each length.

    Args:
        model, tokenizer: a causal LM (eval mode is set and restored) and its tokenizer.
        prompts: prompt texts (the package's template); batches cycle through them.
        response_tokens: tokens of the answer itself (e.g. the mean title length in tokens + newline + EOS).
        cot_tokens_list: chain-of-thought lengths to compare against direct answering.
        batch_size: prompts decoded together (per-recommendation times divide the batch time by it).
        repeats: timed batches per setting after a short untimed warm-up; the median is reported.
    Returns:
        one dict per setting, direct first: mode ("direct" | "cot"), cot_tokens, response_tokens,
        new_tokens (generated per recommendation, counted from the output), prompt_tokens (mean),
        batch_size, repeats, seconds_per_batch (median), ms_per_recommendation, tokens_per_second
        (generated tokens of the whole batch per second) and ratio_vs_direct (of ms_per_recommendation).
    """
    if response_tokens < 1 or batch_size < 1 or repeats < 1:
        raise ValueError("response_tokens, batch_size and repeats must all be >= 1")
    if any(c < 0 for c in cot_tokens_list):
        raise ValueError(f"chain-of-thought lengths must be >= 0, got {list(cot_tokens_list)}")
    if not prompts:
        raise ValueError("measure_latency needs at least one prompt")
    from riser_lite.items.prompts import encode_prompt

    prompt_ids = [encode_prompt(tokenizer, text) for text in prompts]
    rows: list[dict] = []
    # The same batches for every setting: direct and CoT differ only in the number of generated tokens.
    batches = [_left_pad_nonempty(b, tokenizer.pad_token_id)
               for b in _batches(prompt_ids, batch_size, repeats + 1)]
    for mode, cot in [("direct", 0)] + [("cot", int(c)) for c in cot_tokens_list]:
        new = cot + response_tokens
        greedy_decode(model, *batches[0], min(new, 16))  # short untimed warm-up (allocator, kernels)
        times, counts, prompt_lengths = [], [], []
        for ids, mask in batches[1:]:
            start = time.perf_counter()
            generated = greedy_decode(model, ids, mask, new)
            times.append(time.perf_counter() - start)
            counts.append(generated.shape[1])
            prompt_lengths.append(float(mask.sum(-1).float().mean()))
        seconds = statistics.median(times)
        rows.append({"mode": mode, "cot_tokens": cot, "response_tokens": response_tokens,
                     "new_tokens": counts[0], "prompt_tokens": statistics.mean(prompt_lengths),
                     "batch_size": batch_size, "repeats": repeats, "seconds_per_batch": seconds,
                     "ms_per_recommendation": 1000.0 * seconds / batch_size,
                     "tokens_per_second": counts[0] * batch_size / seconds})
    direct = rows[0]["ms_per_recommendation"]
    for row in rows:
        row["ratio_vs_direct"] = row["ms_per_recommendation"] / direct
    return rows


def format_latency_table(rows: Sequence[dict]) -> str:
    """A plain-text table of `measure_latency` rows."""
    lines = [f"{'mode':<7} {'batch':>5} {'tokens/rec':>10} {'ms/rec':>9} {'tokens/s':>9} {'x direct':>8}"]
    for r in rows:
        label = "direct" if r["mode"] == "direct" else f"cot{r['cot_tokens']}"
        ms = r["ms_per_recommendation"]
        lines.append(f"{label:<7} {r['batch_size']:>5} {r['new_tokens']:>10} {ms:>9.1f} "
                     f"{r['tokens_per_second']:>9.0f} {r['ratio_vs_direct']:>8.1f}")
    return "\n".join(lines)
