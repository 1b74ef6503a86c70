"""Fetch raw Amazon review and metadata files (2018 or 2023 release) from the McAuley lab's public servers.

Nothing here runs unless called: loading never touches the network. Each file is streamed to
``<name>.part`` and renamed only when complete, so an interrupted download never leaves a truncated file
under the final name; the next call resumes the ``.part`` file where the server supports ranged requests.
When the download fails (offline machine, server down), the error names every URL tried and how to
download the files by hand.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

# Mirrors of the same files, tried in order.
AMAZON_2018_BASES = (
    "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2",
    "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2",
)
AMAZON_2018_REVIEWS = "{base}/categoryFiles/{category}.json.gz"  # every review of the category
AMAZON_2018_REVIEWS_5CORE = "{base}/categoryFilesSmall/{category}_5.json.gz"  # the authors' 5-core subset
AMAZON_2018_META = "{base}/metaFiles2/meta_{category}.json.gz"
AMAZON_2023_BASES = (
    "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023",
    "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023",
)
AMAZON_2023_REVIEWS = "{base}/raw/review_categories/{category}.jsonl.gz"
AMAZON_2023_META = "{base}/raw/meta_categories/meta_{category}.jsonl.gz"
DATASET_PAGES = {"2018": "https://cseweb.ucsd.edu/~jmcauley/datasets/amazon_v2/",
                 "2023": "https://amazon-reviews-2023.github.io/"}

_CATEGORY = re.compile(r"^[A-Za-z0-9_]+$")  # e.g. Office_Products, Industrial_and_Scientific
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched. The message names the URLs tried and the manual alternative."""


def amazon_urls(category: str, version: str = "2018", *, five_core: bool = False) -> dict[str, list[str]]:
    """Candidate URLs (mirrors in order) for the reviews and metadata files of one category."""
    if not _CATEGORY.match(category or ""):
        raise ValueError(f"category must look like 'Office_Products' (letters, digits, '_'), "
                         f"got {category!r}")
    if version == "2018":
        reviews = AMAZON_2018_REVIEWS_5CORE if five_core else AMAZON_2018_REVIEWS
        bases, meta = AMAZON_2018_BASES, AMAZON_2018_META
    elif version == "2023":
        if five_core:
            raise ValueError("the 2023 release has no per-category 5-core review files; use five_core=False")
        bases, reviews, meta = AMAZON_2023_BASES, AMAZON_2023_REVIEWS, AMAZON_2023_META
    else:
        raise ValueError(f"version must be '2018' or '2023', got {version!r}")
    return {"reviews": [reviews.format(base=b, category=category) for b in bases],
            "meta": [meta.format(base=b, category=category) for b in bases]}


def fetch(url: str, target: Path, *, timeout: float = 60.0) -> Path:
    """Stream `url` to ``target.part`` (resuming it if present) and rename it to `target` when complete."""
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "riser-lite", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as err:
        if have and err.code == 416:  # the range is unusable (e.g. the file changed): start over
            part.unlink()
            return fetch(url, target, timeout=timeout)
        raise
    with response:
        status = getattr(response, "status", 200)
        if have and status != 206:  # the server ignored the range: start over
            have = 0
        expected = response.headers.get("Content-Length") if response.headers is not None else None
        expected = int(expected) + have if expected and expected.isdigit() else None
        with open(part, "ab" if have else "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise OSError(f"incomplete download: {size} of {expected} bytes (kept {part.name} to resume)")
    os.replace(part, target)  # atomic: the final name only ever holds a complete file
    return target


def download_amazon(category: str, version: str = "2018", dest: str | Path = ".", *, five_core: bool = False,
                    overwrite: bool = False, timeout: float = 60.0) -> dict[str, Path]:
    """Download the reviews and metadata files of one category into `dest`; returns their paths.

    Files already present are kept unless `overwrite`. `five_core=True` (2018 only) fetches the authors'
    much smaller 5-core review file instead of every review; the preparation applies its own k-core
    either way. Load the result with ``load_dataset("amazon-raw", dest, category=category)``.
    """
    urls = amazon_urls(category, version, five_core=five_core)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for kind, candidates in urls.items():
        target = dest / candidates[0].rsplit("/", 1)[1]
        if target.exists() and not overwrite:
            paths[kind] = target
            continue
        if overwrite:  # a fresh copy: do not resume an old partial file either
            target.with_name(target.name + ".part").unlink(missing_ok=True)
        failures = []
        for url in candidates:
            try:
                paths[kind] = fetch(url, target, timeout=timeout)
                break
            except (HTTPError, URLError, OSError, TimeoutError) as err:
                failures.append(f"  {url}: {getattr(err, 'reason', None) or err}")
        else:
            raise DownloadError(
                f"could not download the {version} {kind} file for {category!r}:\n" + "\n".join(failures) +
                f"\nIf this machine is offline or the servers moved, download it by hand (see "
                f"{DATASET_PAGES[version]}) from\n  {candidates[0]}\nand save it as\n  {target}\n"
                f"then load it with load_dataset('amazon-raw', {str(dest)!r}, category={category!r}).")
    return paths
