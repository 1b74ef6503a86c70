"""The single prompt template used by every stage: SFT, rollouts, RL and evaluation.

Public recommendation codes often format the prompt one way in training and another way in evaluation;
here there is exactly one template, and `tests/test_prompts.py` pins that every stage calls it.

The model sees the user's last ``max_history`` titles, oldest first, and answers with the next item's title
directly (no chain of thought), followed by a newline and the end-of-sequence token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from riser_lite.data.types import Example

PROMPT_HEADER = "A user's recent items, oldest first:\n"
PROMPT_FOOTER = "Next item:\n"
LINE_PREFIX = "- "  # starts each history line; the item's text and a newline follow


def format_prompt(history_titles: Sequence[str]) -> str:
    """Prompt text for a history of titles (oldest first)."""
    lines = "".join(f"{LINE_PREFIX}{title}\n" for title in history_titles)
    return f"{PROMPT_HEADER}{lines}{PROMPT_FOOTER}"


def history_spans(history_titles: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of each history item in `format_prompt`'s text: its title and the
    newline that ends its line (the part a response also has), oldest first."""
    spans, start = [], len(PROMPT_HEADER)
    for title in history_titles:
        start += len(LINE_PREFIX)
        spans.append((start, start + len(title) + 1))
        start += len(title) + 1
    return spans


def format_response(title: str) -> str:
    """Response text for an item; the tokenizer's EOS token is appended after it (see `encode_response`)."""
    return f"{title}\n"


def example_prompt(example: Example, catalog: Mapping[int, str], max_history: int = 10) -> str:
    """Prompt for one example: its newest `max_history` history items, by title."""
    history = example.history[-max_history:] if max_history > 0 else ()
    return format_prompt([catalog[item] for item in history])


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Prompt token ids. No special tokens: prompt and response are encoded separately and concatenated,
    so every stage sees exactly the same ids for the same prompt."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def item_token_positions(tokenizer, history_titles: Sequence[str]) -> list[int]:
    """Positions in `encode_prompt(format_prompt(history_titles))` of the tokens that write history items
    (any token overlapping a `history_spans` span), ascending. Needs a fast tokenizer (character offsets).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("history item positions need a fast tokenizer (character offsets); "
                         f"{type(tokenizer).__name__} is not one")
    offsets = tokenizer(format_prompt(history_titles), add_special_tokens=False,
                        return_offsets_mapping=True)["offset_mapping"]
    spans = history_spans(history_titles)
    positions, span = [], 0
    for position, (start, end) in enumerate(offsets):
        while span < len(spans) and spans[span][1] <= start:
            span += 1
        if span < len(spans) and end > spans[span][0]:
            positions.append(position)
    return positions


def encode_response(tokenizer, title: str) -> list[int]:
    """Response token ids: the title, a newline, then EOS (so no title is a prefix of another)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos_token_id; the response must end with EOS")
    ids = list(tokenizer(format_response(title), add_special_tokens=False)["input_ids"])
    return ids + [tokenizer.eos_token_id]


def template_corpus() -> list[str]:
    """Fixed template text, used when training the local tokenizer so template words get their own tokens."""
    return [PROMPT_HEADER, PROMPT_FOOTER, LINE_PREFIX, format_prompt(["an item", "another item"])]
