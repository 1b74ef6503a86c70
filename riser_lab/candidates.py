"""The 20-candidate protocol of LLaRA and S-DPO: pick the next item among the true one and 19 negatives.

S-DPO released, for the LastFM validation and test users, every window with at least 3 history items
(2,767 validation and 2,495 test windows), each with 20 candidate artists named by title: the true next
artist and 19 random others not in the history. LLaRA and S-DPO put the candidates in the prompt and report
HitRatio@1 (the answer is the true item) and ValidRatio (the answer is one of the candidates).

Here the prompt is the package's one template (the history only; candidates are not shown), and the 20
candidates are ranked exactly by their sequence log-probability under the trie-constrained policy,

    log pi_trie(y | x) = sum_t [ z_t(y_t) - log sum_{v valid after y_<t} exp z_t(v) ]

(z_t the logits; "valid": tokens that continue some catalogue item). HitRatio@1 = 1 when the true item
scores strictly above the 19 others (a tie is a miss). ValidRatio here is the share of windows whose free
(unconstrained, greedy) answer names a catalogue item, `in_candidates` the share naming one of the 20.
SASRec ranks the same candidates by its logits, popularity by training counts.

Two artist names are spelled differently in the S-DPO files and in ``id2name.txt`` (see the data's
SOURCE.md): `NAME_ALIASES` maps them; names are compared in Unicode NFC. A malformed file or window is a
`DataError` naming the file, the window and the field.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from riser_lite.data.types import DataError, Example
from riser_lite.eval.baselines import popularity_counts
from riser_lite.eval.metrics import paired_test, summarize_values
from riser_lite.items.catalog import ItemSpace
from riser_lite.items.prompts import example_prompt
from riser_lite.model.decoding import encode_prompts, greedy_texts, inference
from riser_lite.model.policy_logp import response_logprobs
from riser_lite.runs import RunError

NAME_ALIASES = {"Florence and the Machine": "Florence + the Machine", "Plus 44": "+44"}  # S-DPO -> id2name
SPLIT_FILES = {"valid": "lastfm-val.json", "test": "lastfm-test.json"}  # under <lastfm>/sdpo_cans20/
NUM_CANDIDATES = 20  # the true item and 19 negatives, in every window of the released files


@dataclass(frozen=True)
class CandidateWindow:
    """One window of the protocol: a history, 20 candidate items (the target among them), the target."""

    history: tuple[int, ...]  # item ids, oldest first
    candidates: tuple[int, ...]  # item ids in the file's order
    target: int  # the true next item


def load_candidate_windows(path: str | Path, titles: Mapping[int, str],
                           aliases: Mapping[str, str] = NAME_ALIASES,
                           num_candidates: int = NUM_CANDIDATES) -> list[CandidateWindow]:
    """Read an S-DPO candidate file (a JSON array of {historyList, itemList, trueSelection}).

    titles: item id -> title of the catalogue (the dataset's titles, not codes). Windows are numbered from
    1 in errors ("window 17"); every name must name a catalogue item once `aliases` are applied.
    """
    path = Path(path)
    rows = _read_json_array(path)
    nfc = {unicodedata.normalize("NFC", k): unicodedata.normalize("NFC", v) for k, v in aliases.items()}
    item_of = {unicodedata.normalize("NFC", title): item for item, title in titles.items()}
    return [_window(row, number, path, item_of, nfc, num_candidates)
            for number, row in enumerate(rows, start=1)]


def _read_json_array(path: Path) -> list:
    """The file's JSON array; an unreadable, non-UTF-8, empty or non-array file is a one-line `DataError`."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read the candidate file ({err.strerror})", path=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"byte {err.start} is not UTF-8; expected a UTF-8 JSON file", path=path) from None
    if not text.strip():
        raise DataError("the file is empty; expected a JSON array of windows", path=path)
    try:
        rows = json.loads(text)
    except (ValueError, RecursionError) as err:
        where = f" (line {err.lineno}, column {err.colno})" if isinstance(err, json.JSONDecodeError) else ""
        raise DataError(f"not valid JSON{where}; expected a JSON array of windows", path=path) from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"a JSON {type(rows).__name__}{' with no windows' if rows == [] else ''}; expected a "
                        "JSON array of windows", path=path)
    return rows


def _window(row, number: int, path: Path, item_of: Mapping[str, int], aliases: Mapping[str, str],
            num_candidates: int) -> CandidateWindow:
    """One window of the file, every field checked (`load_candidate_windows`)."""
    def fail(message: str, field: str | None = None) -> DataError:
        return DataError(f"window {number}: {message}", path=path, field=field)

    def item(name, field: str) -> int:
        if not isinstance(name, str):
            raise fail(f"{str(name)[:40]} is a {type(name).__name__}; expected an item name (a string)",
                       field)
        name = unicodedata.normalize("NFC", name)
        found = item_of.get(aliases.get(name, name))
        if found is None:
            raise fail(f"{name[:60]!r} names no catalogue item", field)
        return found

    if not isinstance(row, dict) or not {"historyList", "itemList", "trueSelection"} <= set(row):
        raise fail("expected an object with historyList, itemList, trueSelection")
    if not isinstance(row["historyList"], str):
        raise fail(f"a {type(row['historyList']).__name__}; expected names joined by '::'", "historyList")
    if not isinstance(row["itemList"], list):
        raise fail(f"a {type(row['itemList']).__name__}; expected a list of {num_candidates} names",
                   "itemList")
    if len(row["itemList"]) != num_candidates:
        raise fail(f"{len(row['itemList'])} candidates; expected {num_candidates}", "itemList")
    history = tuple(item(name, "historyList") for name in row["historyList"].split("::") if name)
    candidates = tuple(item(name, "itemList") for name in row["itemList"])
    target = item(row["trueSelection"], "trueSelection")
    twice = next((c for i, c in enumerate(candidates) if c in candidates[:i]), None)
    if twice is not None:  # the true item listed twice ties with itself: it could never be a hit
        raise fail(f"{row['itemList'][candidates.index(twice)]!r} is listed twice; expected {num_candidates} "
                   "different items", "itemList")
    if target not in candidates:
        raise fail("the true item is not among the candidates", "itemList")
    return CandidateWindow(history, candidates, target)


# ----------------------------------------------------------------------------------------------- scoring


@torch.no_grad()
def constrained_scores(model, item_space, prompts: Sequence[str], candidates: Sequence[Sequence[int]],
                       batch_size: int = 8) -> torch.Tensor:
    """log pi_trie(item | prompt) of each prompt's candidates: [B, C] float32 (formula in the module doc).

    Each prompt runs once; its KV cache is repeated for its C candidates, whose responses are then
    teacher-forced in one pass. All rows must have the same number of candidates.
    """
    width = {len(c) for c in candidates}
    if len(width) > 1:
        raise ValueError(f"every prompt needs the same number of candidates, got {sorted(width)}")
    parts = [_score_batch(model, item_space, prompts[i: i + batch_size], candidates[i: i + batch_size])
             for i in range(0, len(prompts), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, 0)


def _score_batch(model, item_space, prompts, candidates) -> torch.Tensor:
    """One batch of `constrained_scores`: prompts [B], candidates [B][C] -> [B, C]."""
    num, per = len(prompts), len(candidates[0])
    ids, mask = encode_prompts(item_space.tokenizer, list(prompts))
    items = [item for row in candidates for item in row]
    tokens, real, _ = item_space.response_batch(items)  # [B C, L]
    with inference(model):
        logp, _ = response_logprobs(model, ids, mask, tokens, real, torch.arange(num).repeat_interleave(per),
                                    trie=item_space.trie)
    return logp.sum(1).reshape(num, per)


def hits_at_1(scores: torch.Tensor, candidates: Sequence[Sequence[int]],
              targets: Sequence[int]) -> np.ndarray:
    """[B] 1.0 where the target scores strictly above every other candidate, else 0.0."""
    columns = torch.tensor([list(row).index(t) for row, t in zip(candidates, targets, strict=True)])
    target = scores.gather(1, columns[:, None])
    others = scores.masked_fill(torch.nn.functional.one_hot(columns, scores.shape[1]).bool(), float("-inf"))
    return (target.squeeze(1) > others.max(1).values).double().numpy()


# ----------------------------------------------------------------------------------------------- protocol


def window_prompts(windows: Sequence[CandidateWindow], catalog: Mapping[int, str],
                   max_history: int) -> list[str]:
    """The one prompt template for each window's history (items written as `catalog` writes them)."""
    return [example_prompt(Example("", w.history, w.target), catalog, max_history) for w in windows]


def free_answers(model, item_space, prompts: Sequence[str], batch_size: int = 32) -> list[int]:
    """The item each prompt's greedy, unconstrained answer names (-1: no catalogue item)."""
    answers = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = encode_prompts(item_space.tokenizer, list(prompts[start: start + batch_size]))
        texts = greedy_texts(model, item_space.tokenizer, ids, mask, item_space.max_response_len)
        answers += [item_space.parse(text) for text in texts]
    return answers


def _hits_result(columns: dict[str, np.ndarray], num_bootstrap: int, seed: int) -> dict:
    """{"num_windows", "summaries" (mean and interval of each column), "hits" (0/1 ints per window, kept for
    paired comparisons)} of per-window columns, "hr@1" among them."""
    hits = [int(h) for h in columns["hr@1"]]
    return {"num_windows": len(hits), "summaries": summarize_values(columns, num_bootstrap, seed=seed),
            "hits": hits}


def evaluate_candidates(model, tokenizer, dataset, windows: Sequence[CandidateWindow], *, batch_size: int = 8,
                        num_bootstrap: int = 1000, seed: int = 0) -> dict:
    """HitRatio@1 (exact constrained ranking), ValidRatio and in_candidates with bootstrap intervals.

    dataset: the RecDataset whose catalogue writes items in the model's form (title or semantic ID).
    Returns `_hits_result` and "seconds".
    """
    tic = time.perf_counter()
    item_space = ItemSpace(dataset.catalog, tokenizer)
    prompts = window_prompts(windows, dataset.catalog, dataset.max_history)
    candidates = [w.candidates for w in windows]
    scores = constrained_scores(model, item_space, prompts, candidates, batch_size)
    answers = free_answers(model, item_space, prompts)
    columns = {"hr@1": hits_at_1(scores, candidates, [w.target for w in windows]),
               "valid_ratio": np.array([a >= 0 for a in answers], dtype=float),
               "in_candidates": np.array([a in w.candidates for a, w in zip(answers, windows, strict=True)],
                                         dtype=float)}
    return {**_hits_result(columns, num_bootstrap, seed), "seconds": time.perf_counter() - tic}


def sasrec_candidates(model, windows: Sequence[CandidateWindow], *, num_bootstrap: int = 1000,
                      seed: int = 0) -> dict:
    """HitRatio@1 of a SASRec model (`riser_lab.sasrec`) ranking the same candidates by its logits."""
    scores = model.score([w.history for w in windows])
    columns = torch.tensor([[model.index_of[c] for c in w.candidates] for w in windows])
    hits = hits_at_1(scores.gather(1, columns).cpu(), [w.candidates for w in windows],
                     [w.target for w in windows])
    return _hits_result({"hr@1": hits}, num_bootstrap, seed)


def popularity_candidates(dataset, windows: Sequence[CandidateWindow], *, num_bootstrap: int = 1000,
                          seed: int = 0) -> dict:
    """HitRatio@1 of ranking the candidates by how often each was a training target (ties are misses):
    how much of the protocol popularity alone solves, since the 19 negatives are drawn at random."""
    counts = popularity_counts(dataset)
    scores = torch.tensor([[float(counts[c]) for c in w.candidates] for w in windows])
    hits = hits_at_1(scores, [w.candidates for w in windows], [w.target for w in windows])
    return _hits_result({"hr@1": hits}, num_bootstrap, seed)


def run_candidates(run_path: str | Path | None, split: str = "test", *, sasrec: str | Path | None = None,
                   data_path: str | Path | None = None, max_windows: int | None = None, seed: int = 0,
                   save: bool = True) -> dict:
    """The protocol for a run folder's model (and/or a saved SASRec) on LastFM's candidate file of `split`;
    saved as ``<run>/eval_<split>_candidates20.json``. data_path: the LastFM folder without a run."""
    from riser_lite.data import load_dataset
    from riser_lite.items.represent import apply_items
    from riser_lite.runs import load_run, own_entry, write_json

    run = load_run(run_path) if run_path is not None else None
    spec = run.config.get("data", {}) if run is not None else {"source": "lastfm", "path": data_path}
    if run is not None and data_path is not None and Path(data_path).resolve() != Path(
            spec.get("path") or "").resolve():  # the run's own data decides; another --path is not read
        raise RunError(f"--path {data_path} is not the data {run.path} was trained on ({spec.get('path')}); "
                       "leave --path out with --run")
    if spec.get("source") != "lastfm":
        raise RunError(f"the 20-candidate protocol is defined for LastFM; this run's data is "
                       f"{spec.get('source')!r}")
    titles = load_dataset("lastfm", spec.get("path") or data_path, max_history=spec.get("max_history", 10))
    path = Path(spec.get("path") or data_path or "") / "sdpo_cans20" / SPLIT_FILES[split]
    windows = load_candidate_windows(path, titles.catalog)[:max_windows]
    out = {"protocol": "candidates20", "split": split, "file": str(path), "num_windows": len(windows),
           "popularity": popularity_candidates(titles, windows, seed=seed)}
    if run is not None:
        torch.manual_seed(seed)
        out["run"] = str(run.path)
        out["items"] = (spec.get("items") or {}).get("form", "title")
        # a partial run never replaces a full one; a user's file of that name is refused before the work
        first = "" if max_windows is None else f"_first{max_windows}"
        target = own_entry(run.path, f"eval_{split}_candidates20{first}.json") if save else None
        out["model"] = evaluate_candidates(run.model, run.tokenizer, apply_items(titles, spec.get("items")),
                                           windows, seed=seed)
        if target is not None:
            write_json(target, out)
    if sasrec is not None:
        from riser_lab.sasrec import load_sasrec

        out["sasrec"] = sasrec_candidates(load_sasrec(sasrec), windows, seed=seed)
    if "model" in out and "sasrec" in out:  # the same windows: a paired difference is far tighter
        out["model_vs_sasrec"] = {"hr@1": paired_test(out["model"]["hits"], out["sasrec"]["hits"], seed=seed)}
    return out


def format_candidates(result: dict) -> str:
    lines = [f"20-candidate protocol, {result['split']} ({result['num_windows']} windows, {result['file']})"]
    for name in ("model", "sasrec", "popularity"):
        for metric, s in (result.get(name) or {}).get("summaries", {}).items():
            label = f"{name}({result.get('items', '')})" if name == "model" else name
            lines.append(f"{label:<18} {metric:<14} {s['value']:.4f}  [{s['lo']:.4f}, {s['hi']:.4f}]")
    for metric, d in result.get("model_vs_sasrec", {}).items():
        lines.append(f"{'model - sasrec':<18} {metric:<14} {d['diff']:+.4f}  [{d['lo']:+.4f}, {d['hi']:+.4f}]"
                     f"  (paired over windows, sign-flip p={d['p_value']:.4f})")
    return "\n".join(lines)
