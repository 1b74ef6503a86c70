"""What a chain of thought costs at serving time: time and tokens per recommendation, measured.

RISER's model answers with the item title directly; a reasoning recommender first writes a chain of
thought (CoT) of a few hundred tokens. On the same backbone, prompts and decoding loop, `measure_latency`
times **direct** answers (`response_tokens` new tokens: a title, newline and EOS) against **CoT** answers
(`cot_tokens + response_tokens`) for each CoT length. Only the *number* of generated tokens matters, so the
loop is KV-cached greedy decoding of a fixed number of tokens (EOS does not stop it) and an untrained model
times like a trained one; a real CoT's longer KV cache is paid too. Direct decoding is timed without the
trie (its mask adds one lookup per step), which favours CoT if anything.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

from riser_lite.model.decoding import encode_prompts, greedy_decode


def measure_latency(model, tokenizer, prompts: Sequence[str], response_tokens: int,
                    cot_tokens_list: Sequence[int] = (128, 256, 512), batch_size: int = 1,
                    repeats: int = 3) -> list[dict]:
    """Time direct answers against answers preceded by a chain of thought of each length.

    prompts: prompt texts, batches of `batch_size` cycle through them; response_tokens: tokens of the answer
    itself; repeats: timed batches per setting after an untimed warm-up (the median is reported).
    Returns one dict per setting, direct first: mode ("direct" | "cot"), cot_tokens, response_tokens,
    new_tokens (generated per recommendation), prompt_tokens (mean), batch_size, repeats, seconds_per_batch
    (median), ms_per_recommendation, tokens_per_second (of the whole batch) and ratio_vs_direct.
    """
    if response_tokens < 1 or batch_size < 1 or repeats < 1:
        raise ValueError("response_tokens, batch_size and repeats must all be >= 1")
    if any(c < 0 for c in cot_tokens_list):
        raise ValueError(f"chain-of-thought lengths must be >= 0, got {list(cot_tokens_list)}")
    if not prompts:
        raise ValueError("measure_latency needs at least one prompt")
    rows: list[dict] = []
    # The same batches for every setting: direct and CoT differ only in the number of generated tokens.
    cycled = [prompts[i % len(prompts)] for i in range((repeats + 1) * batch_size)]
    batches = [encode_prompts(tokenizer, cycled[start: start + batch_size])
               for start in range(0, len(cycled), batch_size)]
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
