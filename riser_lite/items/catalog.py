"""The item space: unique titles, each item's response token ids, and the prefix trie over them.

Constrained decoding walks the trie, so every finished sequence is a real item. The trie also tells
whether each token is a real decision (>= 2 valid continuations) or forced: RISER's certainty-aware token
weights use exactly that flag. An empty set of valid tokens never means "anything goes" (as in some public
codes): the sequence is finished (EOS consumed) and decoders must stop it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from riser_lite.data.titles import make_titles_unique
from riser_lite.items.prompts import encode_response


class ItemTrie:
    """Prefix tree over token sequences (each ends with EOS), stored as flat tensors for batched lookups.

    Node 0 is the root. Edges of node n are `child_token[child_start[n]:child_start[n+1]]` (sorted), leading
    to `child_node[...]`. `node_item[n]` is the item whose sequence ends at n, else -1.
    """

    def __init__(self, sequences: Mapping[int, list[int]], vocab_size: int):
        self.vocab_size = int(vocab_size)
        children: list[dict[int, int]] = [{}]
        terminal: dict[int, int] = {}
        for item, seq in sequences.items():
            if not seq:
                raise ValueError(f"item {item} has an empty token sequence")
            node = 0
            for token in seq:
                if not 0 <= token < self.vocab_size:
                    raise ValueError(f"item {item}: token id {token} outside vocabulary of {self.vocab_size}")
                if node in terminal:
                    raise ValueError(f"item {item} extends the complete sequence of item {terminal[node]}")
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = len(children)
                    children[node][token] = nxt
                    children.append({})
                node = nxt
            if node in terminal or children[node]:
                raise ValueError(f"item {item}'s token sequence is a prefix of (or equal to) another item's")
            terminal[node] = item

        self._children = children  # kept for fast python-side walks of single sequences
        counts = torch.tensor([len(c) for c in children], dtype=torch.long)
        self.num_nodes = len(children)
        self.child_start = torch.zeros(self.num_nodes + 1, dtype=torch.long)
        self.child_start[1:] = torch.cumsum(counts, 0)
        pairs = [(tok, nxt) for c in children for tok, nxt in sorted(c.items())]
        self.child_token = torch.tensor([p[0] for p in pairs], dtype=torch.long)
        self.child_node = torch.tensor([p[1] for p in pairs], dtype=torch.long)
        self.num_children = counts
        self.node_item = torch.full((self.num_nodes,), -1, dtype=torch.long)
        for node, item in terminal.items():
            self.node_item[node] = item
        # Edge lookup by key = parent * V + token, sorted so `step` is one searchsorted.
        parents = torch.repeat_interleave(torch.arange(self.num_nodes), counts)
        keys = parents * self.vocab_size + self.child_token
        order = torch.argsort(keys)
        self._edge_key, self._edge_child = keys[order], self.child_node[order]

    def valid_mask(self, nodes: torch.Tensor) -> torch.Tensor:
        """Valid next tokens. nodes: [B] long -> [B, V] bool (all False at a finished node)."""
        nodes = nodes.reshape(-1).cpu()
        counts = self.num_children[nodes]
        mask = torch.zeros(nodes.numel(), self.vocab_size, dtype=torch.bool)
        total = int(counts.sum())
        if total:
            rows = torch.repeat_interleave(torch.arange(nodes.numel()), counts)
            first = torch.repeat_interleave(self.child_start[nodes], counts)
            offset = torch.arange(total) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
            mask[rows, self.child_token[first + offset]] = True
        return mask

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Follow one edge. nodes, tokens: [B] long -> [B] long child node, -1 where the token is invalid."""
        nodes, tokens = nodes.reshape(-1).cpu(), tokens.reshape(-1).cpu()
        keys = nodes * self.vocab_size + tokens
        pos = torch.searchsorted(self._edge_key, keys).clamp(max=max(len(self._edge_key) - 1, 0))
        found = (self._edge_key[pos] == keys) & (nodes >= 0)
        return torch.where(found, self._edge_child[pos], torch.full_like(nodes, -1))

    def depth_profile(self) -> list[dict]:
        """How the trie branches at each depth d (d tokens written): ``nodes`` with a continuation,
        ``branching_nodes`` (>= 2: a decision) and ``mean_children`` (the branching factor)."""
        profile, level = [], [0]
        while level:
            inner = [n for n in level if self._children[n]]
            if not inner:
                break
            counts = [len(self._children[n]) for n in inner]
            profile.append({"depth": len(profile), "nodes": len(inner),
                            "branching_nodes": sum(c >= 2 for c in counts),
                            "mean_children": sum(counts) / len(inner)})
            level = [child for n in inner for child in self._children[n].values()]
        return profile

    def walk(self, tokens: list[int]) -> tuple[int, list[bool]]:
        """Follow a whole sequence from the root. Returns (item id or -1, branching flag per token)."""
        node, flags = 0, []
        for token in tokens:
            flags.append(len(self._children[node]) >= 2)
            node = self._children[node].get(int(token), -1)
            if node < 0:
                return -1, flags
        return int(self.node_item[node]), flags


class ItemSpace:
    """Everything decoding and scoring need about the catalogue for one tokenizer."""

    def __init__(self, titles: Mapping[int, str], tokenizer):
        self.titles = make_titles_unique(titles)  # item id -> unique title
        self.tokenizer = tokenizer
        self.item_ids = sorted(self.titles)
        self.index_of = {item: i for i, item in enumerate(self.item_ids)}  # row of an item in padded_tokens
        self.title_to_item = {t: i for i, t in self.titles.items()}
        # item id -> token ids of its response: title, newline, EOS
        self.response_ids = {item: encode_response(tokenizer, self.titles[item]) for item in self.item_ids}
        self.trie = ItemTrie(self.response_ids, vocab_size=len(tokenizer))
        # item id -> per token, True where the trie branches before it (a decision)
        self.branching = {item: self.trie.walk(self.response_ids[item])[1] for item in self.item_ids}

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def max_response_len(self) -> int:
        return max(len(ids) for ids in self.response_ids.values())

    def response_batch(self, items: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The responses of M items (e.g. the true items of preference pairs), right-padded with the pad id.

        Returns (ids [M, L] long, mask [M, L] bool, branching [M, L] bool), L the longest of the M responses.
        """
        missing = [item for item in items if item not in self.response_ids]
        if missing:
            raise KeyError(f"items {missing[:5]} are not in the item space ({len(self)} items)")
        length = max((len(self.response_ids[item]) for item in items), default=0)
        ids = torch.full((len(items), length), int(self.tokenizer.pad_token_id), dtype=torch.long)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        branching = torch.zeros(len(items), length, dtype=torch.bool)
        for row, item in enumerate(items):
            n = len(self.response_ids[item])
            ids[row, :n] = torch.tensor(self.response_ids[item])
            mask[row, :n] = True
            branching[row, :n] = torch.tensor(self.branching[item])
        return ids, mask, branching

    def padded_tokens(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`response_batch` of every item, in `item_ids` order: [I, max_response_len] each."""
        return self.response_batch(self.item_ids)

    def parse(self, text: str) -> int:
        """Item id named by a generated text (its first line), or -1 if it is no catalogue title."""
        first_line = text.split("\n", 1)[0].strip()
        return self.title_to_item.get(first_line, -1)

    def branching_profile(self) -> dict[str, float]:
        """How many response tokens are real decisions, over the catalogue."""
        total = sum(len(f) for f in self.branching.values())
        decisions = sum(sum(f) for f in self.branching.values())
        return {
            "items": len(self.item_ids),
            "tokens_per_item": total / max(len(self.item_ids), 1),
            "decisions_per_item": decisions / max(len(self.item_ids), 1),
            "branching_fraction": decisions / max(total, 1),
        }
