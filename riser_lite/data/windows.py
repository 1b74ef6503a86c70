r"""Thinning a user's sliding windows, for SFT that scores every history item.

Training splits hold every sliding window of a user's sequence: window $t$ shows items $t-m \dots t-1$
(at most $m$ = max_history) and asks for item $t$. When SFT also scores the items inside the prompt
(`riser_lite.sft.SFTConfig.targets = "items"`), one window already teaches up to $m + 1$ next-item
predictions, and its neighbours repeat almost all of them. Keeping every $s$-th window of each user,
counted back from the newest, with $s = m$ still scores every training item as a target once per epoch
(the newest window keeps the longest history), at $1/s$ of the compute.

    thinned = thin_windows(examples, stride=10)   # thinned.kept, thinned.dropped
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from riser_lite.data.types import Example


@dataclass(frozen=True)
class ThinnedWindows:
    """The windows kept, and how many were dropped (counted, never silent)."""

    stride: int  # every stride-th window of each user was kept, newest first
    kept: list[Example]  # in their original order
    dropped: int  # windows left out by the stride
    capped: int = 0  # windows left out afterwards by a cap on their number (`cap_windows`)

    def record(self) -> dict:
        """What a run records: the stride and the counts."""
        out = {"stride": self.stride, "windows_kept": len(self.kept), "windows_dropped": self.dropped}
        return {**out, "windows_capped": self.capped} if self.capped else out


def thin_windows(examples: Sequence[Example], stride: int) -> ThinnedWindows:
    """Keep each user's newest window and every `stride`-th one before it; order is preserved.

    A user's windows are its examples in their given order (oldest first); stride 1 keeps everything.
    """
    if not (isinstance(stride, int) and stride >= 1):
        raise ValueError(f"window stride must be an integer >= 1, got {stride!r}")
    remaining: dict[str, int] = {}  # windows of each user not yet seen, counting down to the newest
    for example in examples:
        remaining[example.user] = remaining.get(example.user, 0) + 1
    kept = []
    for example in examples:
        remaining[example.user] -= 1
        if remaining[example.user] % stride == 0:  # 0 for the newest, then every stride-th before it
            kept.append(example)
    return ThinnedWindows(stride=stride, kept=kept, dropped=len(examples) - len(kept))


def cap_windows(thinned: ThinnedWindows, max_windows: int | None, seed: int) -> ThinnedWindows:
    """At most `max_windows` of the kept windows, a seeded sample in their original order (None: all).

    A short run on a large dataset (a pretrained model's SFT in class) trains on a sample that spans
    the users, not on the first users' windows; the windows left out are counted in ``capped``.
    """
    import torch

    if max_windows is None or len(thinned.kept) <= max_windows:
        return thinned
    chosen = torch.randperm(len(thinned.kept), generator=torch.Generator().manual_seed(seed))[:max_windows]
    kept = [thinned.kept[i] for i in sorted(chosen.tolist())]
    return ThinnedWindows(stride=thinned.stride, kept=kept, dropped=thinned.dropped,
                          capped=len(thinned.kept) - max_windows)
