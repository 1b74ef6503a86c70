"""How items are written in prompts and responses: by title, by semantic ID, or both.

``items`` is "title" (``Morcheeba``, as in RISER), "sid" (``<a_12><b_3><c_40>``, `riser_lite.items.sid`)
or "title+sid" (``<a_12><b_3><c_40> Morcheeba``: the code names the item, so the trie forces the title
after it). The form replaces each item's text in the catalogue, so the one prompt template, the trie,
rollouts, pairs, losses and evaluation need no change. A run records it (with the codes) in its data spec
under ``"items"``, ``{"form": "sid", "sid": SemanticIds.to_json()}``, so every later stage rebuilds the
same catalogue.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from riser_lite.items.sid import SemanticIds, SIDConfig, build_semantic_ids

ITEM_FORMS = ("title", "sid", "title+sid")


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


def items_spec(dataset, form: str = "title", sid_config: SIDConfig | None = None,
               sids: SemanticIds | None = None) -> dict | None:
    """The ``"items"`` entry of a data spec: None for titles; else the form and its codes.

    Codes are `sids` when given (e.g. the dataset's own), otherwise built from `dataset`'s training split.
    """
    if check_form(form) == "title":
        return None
    sids = sids if sids is not None else build_semantic_ids(dataset, sid_config)
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
