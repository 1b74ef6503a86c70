"""LastFM with a real language model: SmolLM2-135M-Instruct zero-shot, after a CPU-budget LoRA SFT, and after
GRPO / ReRe-style / RISER, beside the classic baselines, on the same windows and users.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_lastfm_real.py --data PATH/TO/lastfm \
        --out runs/lastfm_real --stages baselines zero sft sft-eval rl rl-eval --threads 1
    python benchmarks/bench_lastfm_real.py --out runs/lastfm_real --table     # the table of what is done
    python benchmarks/bench_lastfm_real.py --out runs/lastfm_real --export docs/results   # JSON + tables
    python benchmarks/bench_lastfm_real.py --cells-from docs/results/lastfm_real.json --stages zero  # resume

Every cell is one JSON file under ``--out/cells/``; a finished cell is never recomputed, and the
20-candidate cells are written every ``CHUNK`` windows, so an interrupted run loses at most one chunk:
rerun the same command. Stages (run them in separate processes to use both cores):

- ``baselines``: popularity, ItemKNN (item-to-item cosine over training co-occurrence) and SASRec.
- ``zero``: SmolLM2 zero-shot with the package's plain-text template; ``zero-chat`` the same prompt inside
  the model's chat template on the first ``--chat-windows`` windows (the prompt-format choice, paired with
  the plain template's first windows in the table).
- ``sft``: LoRA SFT of SmolLM2 (``SFT_RECIPE``: one epoch over every 10th window of each training user,
  5,431 windows; resume checkpoints every 50 steps; the run stores only the adapter).
- ``sft-eval``: the two protocols for the SFT run.
- ``rl``: GRPO, ReRe-style and RISER from the SFT run at a CPU budget (``RL_RECIPE``); ``rl-eval`` their
  protocols (the 20-candidate protocol on the first ``--rl-windows`` windows, the SFT model re-scored
  on the same windows for a paired comparison).

Protocols: (1) HitRatio@1 of 20 on S-DPO's 2,495 test windows (exact constrained ranking of the 20
candidates; ValidRatio = the free greedy answer names a catalogue artist, LLaRA's measure, on the first
``VALID_WINDOWS`` windows);
(2) full-catalogue HR@10 / NDCG@10 on the 122 test users: the language models by trie-constrained beam
search (20 beams, the package's `evaluate` protocol; exact scores of all 4,606 artists cost about 45 s per
user for SmolLM2 on 2 cores), the scoring baselines exactly.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

CHUNK = 100  # candidate windows per saved chunk
VALID_WINDOWS = 500  # ValidRatio (the free greedy answer names an artist) on the first windows only
SFT_RECIPE = {"epochs": 1, "batch_size": 8, "lr": 5e-4, "window_stride": 10, "checkpoint_every": 50,
              "progress": False}
LORA = {"r": 8, "alpha": 16.0}
RL_RECIPE = {"steps": 10, "prompts_per_step": 8, "group_size": 8, "lr": 1e-4, "eval_every": 0,
             "lora": True}  # LoRA adapters start at zero: a LoRA-sized learning rate (not tuned)
ALGOS = ("grpo", "rere", "riser")


def rl_name(algo: str, steps: int) -> str:
    """The run folder and cell name of an RL run: ``smollm2-riser`` (10 steps), ``smollm2-riser-30``."""
    return f"smollm2-{algo}" if steps == RL_RECIPE["steps"] else f"smollm2-{algo}-{steps}"


def cell_path(out: Path, name: str) -> Path:
    return out / "cells" / f"{name}.json"


def done(out: Path, name: str) -> dict | None:
    path = cell_path(out, name)
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("complete"):
            return record
    return None


def save(out: Path, name: str, record: dict) -> None:
    from riser_lite.runs import write_json

    cell_path(out, name).parent.mkdir(parents=True, exist_ok=True)
    write_json(cell_path(out, name), record)


def load_data(path: str):
    from riser_lab.candidates import SPLIT_FILES, load_candidate_windows
    from riser_lite.data import load_dataset

    dataset = load_dataset("lastfm", path)
    windows = load_candidate_windows(Path(path) / "sdpo_cans20" / SPLIT_FILES["test"], dataset.catalog)
    return dataset, windows


# ------------------------------------------------------------------------------------------------ baselines


def itemknn_scores(dataset, histories, alpha: float = 0.5) -> torch.Tensor:
    """ItemKNN: score(i) = sum over history items h of sim(h, i) = co(h, i) / (n_h^alpha n_i^(1-alpha)),
    co counting the training users who listened to both and n the users who listened to each (alpha 0.5:
    the cosine). A user's items are the union of their training windows (histories and targets), so
    overlapping windows count once. [B, I] over sorted item ids."""
    from scipy import sparse

    items = sorted(dataset.catalog)
    index = {item: j for j, item in enumerate(items)}
    newest: dict[str, set] = {}
    for ex in dataset.splits["train"]:
        newest.setdefault(ex.user, set()).update((*ex.history, ex.target))
    rows, cols = [], []
    for u, basket in enumerate(newest.values()):
        rows += [u] * len(basket)
        cols += [index[i] for i in basket]
    users = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(newest), len(items)))
    co = (users.T @ users).toarray()
    np.fill_diagonal(co, 0.0)
    norm = np.sqrt(np.asarray(users.sum(0)).ravel()) + 1e-9
    sim = co / norm[:, None] ** (2 * alpha) / norm[None, :] ** (2 * (1 - alpha))  # norm = sqrt(n)
    out = np.zeros((len(histories), len(items)))
    for b, history in enumerate(histories):
        out[b] = sim[[index[h] for h in history]].sum(0)
    return torch.tensor(out, dtype=torch.float32)


def score_cells(name: str, scores_fn, dataset, windows, seed: int) -> dict:
    """Both protocols for a scoring model: scores_fn(histories) -> [B, I] over sorted item ids."""
    from riser_lab.candidates import hits_at_1
    from riser_lab.sasrec import ranks_from_scores

    items = sorted(dataset.catalog)
    index = {item: j for j, item in enumerate(items)}
    scores = scores_fn([w.history for w in windows])
    columns = torch.tensor([[index[c] for c in w.candidates] for w in windows])
    hits = hits_at_1(scores.gather(1, columns), [w.candidates for w in windows], [w.target for w in windows])
    test = dataset.splits["test"]
    full = scores_fn([ex.history[-dataset.max_history:] for ex in test])
    ranks = ranks_from_scores(full, torch.tensor([index[ex.target] for ex in test])).tolist()
    return {"name": name, "complete": True, "candidates": _summary({"hr@1": hits}, seed),
            "hits": [int(h) for h in hits], "full": _full_summary(ranks, seed), "ranks": ranks}


def _summary(columns: dict, seed: int) -> dict:
    from riser_lite.eval.metrics import summarize_values

    return summarize_values({k: np.asarray(v, dtype=float) for k, v in columns.items()}, 1000, seed=seed)


def _full_summary(ranks: list, seed: int) -> dict:
    """HR@10 and NDCG@10 from 0-based target ranks (10 or more: a miss)."""
    hr = [1.0 if r < 10 else 0.0 for r in ranks]
    ndcg = [1.0 / np.log2(r + 2) if r < 10 else 0.0 for r in ranks]
    return _summary({"hr@10": hr, "ndcg@10": ndcg}, seed)


def stage_baselines(args, out: Path) -> None:
    from collections import Counter

    dataset, windows = load_data(args.data)
    if not done(out, "popularity"):
        counts = Counter(ex.target for ex in dataset.splits["train"])
        pop = torch.tensor([float(counts[i]) for i in sorted(dataset.catalog)])
        save(out, "popularity", score_cells("popularity", lambda h: pop.expand(len(h), -1), dataset, windows,
                                            args.seed))
    if not done(out, "itemknn"):
        save(out, "itemknn", score_cells("itemknn", lambda h: itemknn_scores(dataset, h), dataset, windows,
                                         args.seed))
    if not done(out, "sasrec"):
        from riser_lab.sasrec import SASRecConfig, train_sasrec

        torch.manual_seed(args.seed)
        model = train_sasrec(dataset, SASRecConfig(seed=args.seed)).eval()
        items = sorted(dataset.catalog)

        def scores(histories):
            with torch.no_grad():
                s = model.score([tuple(h) for h in histories])
            return s[:, [model.index_of[i] for i in items]]

        save(out, "sasrec", score_cells("sasrec", scores, dataset, windows, args.seed))


# ------------------------------------------------------------------------------------------ language models


def lm_cells(name: str, model, tokenizer, dataset, windows, out: Path, seed: int, *, max_windows=None,
             full: bool = True, prompt_wrap=None, full_last: bool = False, free: bool = True) -> None:
    """Both protocols for a language model, the candidates in chunks (resumable). The full-catalogue
    protocol runs first (minutes) unless `full_last`; `free` adds its free greedy answers' ValidRatio."""
    from riser_lab.candidates import constrained_scores, free_answers, hits_at_1, window_prompts
    from riser_lite.items.catalog import ItemSpace

    windows = windows[:max_windows]
    record = json.loads(cell_path(out, name).read_text()) if cell_path(out, name).is_file() else {}
    if record.get("complete"):
        return
    record.update(name=name, num_windows=len(windows))
    space = ItemSpace(dataset.catalog, tokenizer)
    if full and not full_last:
        full_catalogue(name, model, tokenizer, dataset, space, out, seed, record, free)
    hits, valid, seconds = record.get("hits", []), record.get("valid", []), record.get("seconds", 0.0)
    while len(hits) < len(windows):
        part = windows[len(hits): len(hits) + CHUNK]
        prompts = window_prompts(part, dataset.catalog, dataset.max_history)
        prompts = [prompt_wrap(p) for p in prompts] if prompt_wrap else prompts
        tic = time.perf_counter()
        scores = constrained_scores(model, space, prompts, [w.candidates for w in part], batch_size=4)
        hits += [int(h) for h in hits_at_1(scores, [w.candidates for w in part], [w.target for w in part])]
        if len(valid) < VALID_WINDOWS:  # the free answer costs a greedy decode: measured on a prefix
            valid += [int(a >= 0) for a in free_answers(model, space, prompts, batch_size=8)]
        seconds += time.perf_counter() - tic
        record.update(hits=hits, valid=valid, seconds=seconds)
        save(out, name, record)
        print(f"{name}: {len(hits)}/{len(windows)} windows, HitRatio@1 {np.mean(hits):.3f}, "
              f"{seconds / len(hits):.2f} s/window", flush=True)
    record["candidates"] = {**_summary({"hr@1": hits}, seed),  # ValidRatio is on a prefix of the windows
                            **(_summary({"valid_ratio": valid}, seed) if valid else {})}
    if full and full_last:
        full_catalogue(name, model, tokenizer, dataset, space, out, seed, record, free)
    record["complete"] = True
    save(out, name, record)


def full_catalogue(name, model, tokenizer, dataset, space, out: Path, seed: int, record: dict,
                   free: bool) -> None:
    """HR@10 / NDCG@10 of the 122 test users by constrained beam search (20 beams), saved in the cell."""
    from riser_lite.eval.evaluate import EvalConfig, evaluate

    if "full" in record:
        return
    tic = time.perf_counter()
    config = EvalConfig(split="test", protocol="beam", num_beams=20, ks=(10,), batch_size=4,
                        baselines=False, unconstrained=free, acceptance=False, seed=seed)
    result = evaluate(model, tokenizer, dataset, space, config).to_dict()
    record["full"] = {k: result["summaries"][k] for k in ("hr@10", "ndcg@10")}
    record["full_valid_rate"] = result.get("unconstrained_valid_rate")
    record["full_seconds"] = time.perf_counter() - tic
    save(out, name, record)


def chat_wrap(tokenizer):
    """The package's prompt as the user turn of the model's chat template, the assistant turn opened."""
    return lambda prompt: tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                        add_generation_prompt=True)


def stage_zero(args, out: Path, chat: bool = False) -> None:
    from riser_lite.model.backbone import load_pretrained

    dataset, windows = load_data(args.data)
    model, tokenizer = load_pretrained("smollm2-135m")
    model.eval()
    if chat:
        lm_cells("smollm2-zero-chat", model, tokenizer, dataset, windows, out, args.seed,
                 max_windows=args.chat_windows, full=False, prompt_wrap=chat_wrap(tokenizer))
    else:
        lm_cells("smollm2-zero", model, tokenizer, dataset, windows, out, args.seed)


def stage_sft(args, out: Path) -> Path:
    from riser_lite.sft import SFTConfig, run_sft

    tic = time.perf_counter()
    folder = run_sft("lastfm", path=args.data, model="smollm2-135m", lora=LORA, out=out / "smollm2-sft",
                     seed=args.seed, config=SFTConfig(**SFT_RECIPE))
    print(f"sft: {folder} ({time.perf_counter() - tic:.0f} s in this process)", flush=True)
    return folder


def stage_sft_eval(args, out: Path) -> None:
    from riser_lite.runs import load_run

    dataset, windows = load_data(args.data)
    run = load_run(out / "smollm2-sft")
    lm_cells("smollm2-sft", run.model, run.tokenizer, dataset, windows, out, args.seed, full_last=True)


def stage_sft_full(args, out: Path) -> None:
    """The SFT run's full-catalogue protocol alone, in its own cell (``smollm2-sft-full``), so that it can
    run beside ``sft-eval``'s candidate chunks; the table shows it in the SFT row."""
    from riser_lite.items.catalog import ItemSpace
    from riser_lite.runs import load_run

    dataset, _ = load_data(args.data)
    run = load_run(out / "smollm2-sft")
    record = done(out, "smollm2-sft-full") or {"name": "smollm2-sft-full"}
    full_catalogue("smollm2-sft-full", run.model, run.tokenizer, dataset, ItemSpace(dataset.catalog,
                   run.tokenizer), out, args.seed, record, free=True)
    save(out, "smollm2-sft-full", {**record, "complete": True})


def stage_rl(args, out: Path) -> None:
    from riser_lite.rl.config import RLConfig
    from riser_lite.rl.trainer import train_rl

    for algo in args.algos:
        tic = time.perf_counter()
        recipe = {**RL_RECIPE, "steps": args.rl_steps}
        train_rl(str(out / "smollm2-sft"), RLConfig(algo=algo, seed=args.seed, **recipe),
                 out=out / rl_name(algo, args.rl_steps))
        print(f"rl {algo}: {time.perf_counter() - tic:.0f} s in this process", flush=True)


def stage_rl_eval(args, out: Path) -> None:
    from riser_lite.runs import load_run

    dataset, windows = load_data(args.data)
    for algo in args.algos:  # paired with the SFT cell's first windows
        run = load_run(out / rl_name(algo, args.rl_steps))
        lm_cells(rl_name(algo, args.rl_steps), run.model, run.tokenizer, dataset, windows, out, args.seed,
                 max_windows=args.rl_windows, free=False)


def stage_show(args, out: Path) -> None:
    """The rollouts of a few test users by name (unconstrained, sampled, de-duplicated, beams) for the
    zero-shot model, the SFT run and each finished RL run: written to ``--out/rollouts.md``."""
    from riser_lite.items.catalog import ItemSpace
    from riser_lite.model.backbone import load_pretrained
    from riser_lite.rl.rollout import RolloutConfig, rollout_examples
    from riser_lite.runs import load_run

    dataset, _ = load_data(args.data)
    users = dataset.splits["test"][: args.show_users]

    def load(name):
        if name == "zero-shot":
            return load_pretrained("smollm2-135m")
        run = load_run(out / f"smollm2-{name}")
        return run.model, run.tokenizer

    names = ["zero-shot"] + [n for n in ("sft", *ALGOS) if (out / f"smollm2-{n}" / "model").is_dir()]
    lines = [f"# Rollouts of {len(users)} LastFM test users by name (G = 8, seed {args.seed}; the target in "
             "bold)", ""]
    for ex in users:
        history = ", ".join(dataset.catalog[i] for i in ex.history[-5:])
        lines.append(f"- user {ex.user}: newest history {history}; next **{dataset.catalog[ex.target]}**")
    for name in names:
        model, tokenizer = load(name)
        space = ItemSpace(dataset.catalog, tokenizer)
        lines += ["", f"## {name}", ""]
        for mode in ("unconstrained", "sample", "dedup", "beam"):
            config = RolloutConfig(mode=mode, group_size=8, seed=args.seed)
            groups, _ = rollout_examples(model.eval(), space, users, dataset.catalog, config,
                                         dataset.max_history)
            for p, ex in enumerate(users):
                if mode == "unconstrained":  # what the model wrote, first line, quoted
                    said = [repr(t.split("\n")[0]) for t in groups.texts[p * 8: (p + 1) * 8]]
                else:
                    said = [dataset.catalog[i] for i in groups.items[p].tolist()]
                target = dataset.catalog[ex.target]
                said = [f"**{s}**" if s in (target, repr(target)) else s for s in said]
                lines.append(f"- user {ex.user}, {mode}: {'; '.join(said)}")
    (out / "rollouts.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


# ------------------------------------------------------------------------------------------------ the table


def table(out: Path) -> str:
    from riser_lite.eval.metrics import paired_test

    cells = {p.stem: json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))}
    for name in [n for n in cells if n.endswith("-full")]:  # a full-catalogue protocol run on its own
        part = cells.pop(name)
        if name[: -len("-full")] in cells and "full" in part:
            cells[name[: -len("-full")]].setdefault("full", part["full"])
    ref = cells.get("sasrec", {}).get("hits")
    sft = cells.get("smollm2-sft", {}).get("hits")
    lines = ["| model | HitRatio@1 of 20 (windows) | ValidRatio (windows) | vs SASRec, paired "
             "| vs SmolLM2 SFT, paired | HR@10 | NDCG@10 |", "|---|---|---|---|---|---|---|"]
    for name, c in cells.items():
        hits = c.get("hits", [])
        if not hits:
            continue
        n = len(hits)
        valid = f"{np.mean(c['valid']):.3f} ({len(c['valid'])})" if c.get("valid") else "-"
        paired, versus_sft = "-", "-"
        if ref and name != "sasrec":
            test = paired_test(hits, ref[:n], seed=0)
            paired = f"{test['diff']:+.3f} (p = {test['p_value']:.3f})"
        if sft and name.startswith("smollm2-") and name != "smollm2-sft" and len(sft) >= n:
            test = paired_test(hits, sft[:n], seed=0)
            versus_sft = f"{test['diff']:+.3f} (p = {test['p_value']:.3f})"
        full = c.get("full") or {}
        hr = f"{full['hr@10']['value']:.3f}" if "hr@10" in full else "-"
        ndcg = f"{full['ndcg@10']['value']:.3f}" if "ndcg@10" in full else "-"
        status = "" if c.get("complete") else " (running)"
        lines.append(f"| {name}{status} | {np.mean(hits):.3f} ({n}) | {valid} | {paired} | {versus_sft} "
                     f"| {hr} | {ndcg} |")
    return "\n".join(lines)


def rl_table(out: Path) -> str:
    """Per RL run: the step metrics averaged over its steps (from metrics.jsonl)."""
    from riser_lite.runs import read_metrics

    keys = ("learnable_fraction", "gradient_prompt_fraction", "unique_items_per_group", "hit_rate",
            "valid_mass", "step_time_s")
    lines = ["| run | steps | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for folder in sorted(out.glob("smollm2-*")):
        if folder.name == "smollm2-sft" or not (folder / "metrics.jsonl").is_file():
            continue
        records = [r for r in read_metrics(folder) if "learnable_fraction" in r]
        means = [np.mean([r[k] for r in records if r.get(k) is not None] or [np.nan]) for k in keys]
        lines.append(f"| {folder.name[len('smollm2-'):]} | {len(records)} | "
                     + " | ".join(f"{m:.3f}" for m in means) + " |")
    return "\n".join(lines)


def export(out: Path, folder: Path) -> None:
    """The cells (with per-window hits and per-user ranks, for paired tests) as JSON and the tables as
    Markdown, for docs/results."""
    cells = {p.stem: json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))}
    record = {"recipes": {"sft": SFT_RECIPE, "lora": LORA, "rl": RL_RECIPE}, "cells": cells}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lastfm_real.json").write_text(json.dumps(record) + "\n", encoding="utf-8")
    text = ["# LastFM with SmolLM2-135M-Instruct beside the classic baselines (generated)", "",
            table(out), "", rl_table(out), ""]
    if (out / "rollouts.md").is_file():
        text += ["", (out / "rollouts.md").read_text(encoding="utf-8").replace("# Rollouts", "## Rollouts")]
    (folder / "lastfm_real_tables.md").write_text("\n".join(text), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/lastfm", help="LastFM folder (read in place)")
    parser.add_argument("--out", default="runs/lastfm_real")
    parser.add_argument("--stages", nargs="*", default=[],
                        choices=["baselines", "zero", "zero-chat", "sft", "sft-eval", "sft-full", "rl",
                                 "rl-eval", "show"])
    parser.add_argument("--algos", nargs="*", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--chat-windows", type=int, default=300)
    parser.add_argument("--rl-windows", type=int, default=500)
    parser.add_argument("--rl-steps", type=int, default=RL_RECIPE["steps"],
                        help="RL steps of the rl / rl-eval stages (runs of other lengths are named -STEPS)")
    parser.add_argument("--show-users", type=int, default=3, help="test users whose rollouts `show` prints")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="print the table of the finished cells")
    parser.add_argument("--export", default=None, help="write the cells and tables into this folder")
    parser.add_argument("--cells-from", default=None,
                        help="an exported lastfm_real.json: its cells seed --out/cells (unfinished resume)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.cells_from:  # e.g. docs/results/lastfm_real.json on a machine without the earlier --out
        for name, cell in json.loads(Path(args.cells_from).read_text())["cells"].items():
            if not cell_path(out, name).is_file():
                save(out, name, cell)
    stages = {"baselines": stage_baselines, "zero": stage_zero,
              "zero-chat": lambda a, o: stage_zero(a, o, chat=True), "sft": stage_sft,
              "sft-eval": stage_sft_eval, "sft-full": stage_sft_full, "rl": stage_rl,
              "rl-eval": stage_rl_eval, "show": stage_show}
    for stage in args.stages:
        tic = time.perf_counter()
        stages[stage](args, out)
        print(f"stage {stage}: {time.perf_counter() - tic:.0f} s", flush=True)
    if args.table or not args.stages:
        print(table(out))
        print(rl_table(out))
    if args.export:
        export(out, Path(args.export))


if __name__ == "__main__":
    main()
