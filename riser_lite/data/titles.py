"""Title clean-up shared by every loader (no torch needed, so loading data stays quick).

Titles are what the model writes, token by token, so they are bounded: a title longer than
`MAX_TITLE_CHARS` characters is an error at load (a 200 KB name would make SFT allocate gigabytes), or, with
the loaders' explicit ``truncate_titles=True``, cut to `TRUNCATED_TITLE_CHARS` characters and counted.
A title is blank when nothing visible is left after Unicode normalisation (NFKC): only whitespace,
zero-width and other format or control characters (``"\u200b"`` is blank).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Mapping

MAX_TITLE_CHARS = 500  # longest title accepted (LastFM's longest name has 51 characters)
TRUNCATED_TITLE_CHARS = MAX_TITLE_CHARS - 20  # length of a truncated title: room for a " (#<id>)" suffix
_INVISIBLE = frozenset({"Cc", "Cf"})  # Unicode categories with no glyph: controls, format (zero-width ...)


def is_blank_title(text: str) -> bool:
    """True when `text` has no visible character after NFKC normalisation (whitespace, zero-width only)."""
    normalised = unicodedata.normalize("NFKC", text)
    return all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE for ch in normalised)


def truncate_long_titles(titles: Mapping[int, str]) -> tuple[dict[int, str], int]:
    """(titles with every one over `MAX_TITLE_CHARS` cut to `TRUNCATED_TITLE_CHARS`, how many were cut)."""
    out = {item: title[:TRUNCATED_TITLE_CHARS].rstrip() if len(title) > MAX_TITLE_CHARS else title
           for item, title in titles.items()}
    return out, sum(1 for item in titles if len(titles[item]) > MAX_TITLE_CHARS)


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
