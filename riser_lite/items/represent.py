"""How items are written in prompts and responses: by title, by semantic ID, or both.

``items`` is "title" (``Morcheeba``, as in RISER), "sid" (``<a_12><b_3><c_40>``, built by `riser_lab.sid`)
or "title+sid" (``<a_12><b_3><c_40> Morcheeba``: the code names the item, so the trie forces the title
after it). The form replaces each item's text in the catalogue, so the one prompt template, the trie,
rollouts, pairs, losses and evaluation need no change. A run records it (with the codes) in its data spec
under ``"items"``, ``{"form": "sid", "sid": SemanticIds.to_json()}``, so every later stage rebuilds the
same catalogue.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ITEM_FORMS = ("title", "sid", "title+sid")
LEVEL_NAMES = "abcdefgh"  # token prefix of each code level: <a_..> first, then <b_..>, ...
_TOKEN = re.compile(r"<([a-h])_(\d+)>")


@dataclass
class SemanticIds:
    """Item codes (all of one length) and how they were made."""

    codes: dict[int, tuple[int, ...]]  # item id -> code, one int per level
    stats: dict = field(default_factory=dict)  # see `code_stats`
    config: dict = field(default_factory=dict)  # SIDConfig fields, or {"source": ...} for given codes

    def text(self, item: int) -> str:
        """The code as the text the model reads and writes, e.g. ``<a_12><b_3><c_40>``."""
        return format_code(self.codes[item])

    def tokens(self) -> list[str]:
        """Every code token in use, level by level (what a tokenizer must add as whole tokens)."""
        used = sorted({(level, value) for code in self.codes.values() for level, value in enumerate(code)})
        return [f"<{LEVEL_NAMES[level]}_{value}>" for level, value in used]

    def to_json(self) -> dict:
        return {"codes": {str(item): self.text(item) for item in sorted(self.codes)},
                "stats": self.stats, "config": self.config}

    @classmethod
    def from_json(cls, data: Mapping) -> SemanticIds:
        codes = {int(item): parse_code(text) for item, text in data["codes"].items()}
        return cls(codes=codes, stats=dict(data.get("stats", {})), config=dict(data.get("config", {})))


def format_code(code: Sequence[int]) -> str:
    """(12, 3, 40) -> ``<a_12><b_3><c_40>``."""
    return "".join(f"<{LEVEL_NAMES[level]}_{int(value)}>" for level, value in enumerate(code))


def parse_code(text: str) -> tuple[int, ...]:
    """``<a_12><b_3><c_40>`` -> (12, 3, 40). Raises ValueError saying what is wrong."""
    text = text.strip()
    tokens = _TOKEN.findall(text)
    if not tokens or "".join(f"<{a}_{b}>" for a, b in tokens) != text:
        raise ValueError(f"{text!r} is not a semantic ID: expected tokens like <a_12><b_3><c_40>")
    letters = "".join(a for a, _ in tokens)
    if letters != LEVEL_NAMES[: len(tokens)]:
        raise ValueError(f"{text!r}: levels must run {LEVEL_NAMES[:len(tokens)]!r} in order, got {letters!r}")
    return tuple(int(b) for _, b in tokens)


def check_form(form: str) -> str:
    if form not in ITEM_FORMS:
        raise ValueError(f"items must be one of {list(ITEM_FORMS)}, got {form!r}")
    return form


def item_texts(titles: Mapping[int, str], sids: SemanticIds | None, form: str) -> dict[int, str]:
    """Each item's text in the chosen form (titles: item id -> unique title)."""
    if check_form(form) == "title":
        return dict(titles)
    if sids is None:
        raise ValueError(f"items={form!r} needs semantic IDs")
    missing = [item for item in titles if item not in sids.codes]
    if missing:
        raise ValueError(f"{len(missing)} catalogue item(s) have no semantic ID, e.g. {missing[:5]}")
    if form == "sid":
        return {item: sids.text(item) for item in titles}
    return {item: f"{sids.text(item)} {title}" for item, title in titles.items()}


def items_spec(form: str = "title", sids: SemanticIds | None = None) -> dict | None:
    """The ``"items"`` entry of a data spec: None for titles; else the form and its codes."""
    if check_form(form) == "title":
        return None
    if sids is None:
        raise ValueError(f"items={form!r} needs semantic IDs: build them from the training split with "
                         "riser_lab.sid.build_semantic_ids(dataset), or give the dataset's own")
    return {"form": form, "sid": sids.to_json()}


def apply_items(dataset, spec: Mapping | None):
    """`dataset` with its catalogue written in the spec's form (the same object when spec is None/title).

    The splits are shared with the original (examples name items by id, whatever their text).
    """
    if not spec or spec.get("form", "title") == "title":
        return dataset
    sids = SemanticIds.from_json(spec["sid"])
    return dataclasses.replace(dataset, catalog=item_texts(dataset.catalog, sids, spec["form"]))


def whole_tokens(spec: Mapping | None) -> list[str]:
    """Tokens a tokenizer must hold whole for this representation (none for titles)."""
    if not spec or spec.get("form", "title") == "title":
        return []
    return SemanticIds.from_json(spec["sid"]).tokens()
