"""Title clean-up shared by every loader (no torch needed, so loading data stays quick)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping


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
