"""Title clean-up shared by every loader (no torch needed, so loading data stays quick).

Titles are what the model writes, token by token, so they are bounded: a title longer than
`MAX_TITLE_CHARS` characters is an error at load (a 200 KB name would make SFT allocate gigabytes), or, with
the loaders' explicit ``truncate_titles=True``, cut to `TRUNCATED_TITLE_CHARS` characters and counted.
A title is blank when nothing visible is left after Unicode normalisation (NFKC): only whitespace,
zero-width and other format or control characters (``"\u200b"`` is blank).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping

MAX_TITLE_CHARS = 500  # longest title accepted (LastFM's longest name has 51 characters)
TRUNCATED_TITLE_CHARS = MAX_TITLE_CHARS - 20  # length of a truncated title: room for a " (#<id>)" suffix
_INVISIBLE = frozenset({"Cc", "Cf"})  # Unicode categories with no glyph: controls, format (zero-width ...)
# A tokenizer's special-token strings: "<|endoftext|>", "<|pad|>" (the package's own), Qwen's "<|im_start|>".
# Inside a title the tokenizer would read one as that control token, not as text.
SPECIAL_TOKEN = re.compile(r"<\|[^<>|\s]{1,40}\|>")


def title_problem(text: str) -> str | None:
    """What makes `text` unusable as a name the model writes, or None: a control character (an ANSI escape,
    a BEL: they would reach terminals and reports) or a special-token string (`SPECIAL_TOKEN`)."""
    control = next((ch for ch in text if unicodedata.category(ch) == "Cc"), None)
    if control is not None:
        return f"control character {control!r} at position {text.index(control)}"
    token = SPECIAL_TOKEN.search(text)
    if token is not None:
        return f"special-token string {token.group()!r} (the tokenizer would read it as a control token)"
    return None


def is_blank_title(text: str) -> bool:
    """True when `text` has no visible character after NFKC normalisation (whitespace, zero-width only)."""
    normalised = unicodedata.normalize("NFKC", text)
    return all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE for ch in normalised)


def make_titles_unique(titles: Mapping[int, str]) -> dict[int, str]:
    """Deterministically disambiguate shared titles so the model can name each item.

    The lowest item id keeps the title; every later item with the same title gets " (#<item id>)".
    Whitespace is normalised (stripped, runs collapsed) first: titles are compared as the model writes them.
    """
    cleaned = {item: " ".join(str(title).split()) for item, title in titles.items()}
    counts = Counter(cleaned.values())
    seen: set[str] = set()
    unique: dict[int, str] = {}
    for item in sorted(cleaned):
        title = cleaned[item]
        if counts[title] > 1 and title in seen:
            title = f"{title} (#{item})"
        seen.add(cleaned[item])
        unique[item] = title
    if len(set(unique.values())) != len(unique):  # a suffixed title could collide with a real one
        raise ValueError("could not make titles unique; an item title already ends with ' (#<id>)'")
    return unique
