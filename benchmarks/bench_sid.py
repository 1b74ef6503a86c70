"""LastFM with semantic-ID items: SFT of the `tiny` backbone, then HR@K / NDCG@K beside SASRec.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_sid.py --data /path/to/lastfm --out runs/bench_sid
    python benchmarks/bench_sid.py --data /path/to/lastfm --out runs/bench_sid --items title
    python benchmarks/bench_sid.py --data /path/to/lastfm --grid     # choose levels x codebook size

Stages (each resumable: rerun the same command after an interruption and finished stages are skipped):
1. ``sft``: `run_sft(..., items=--items)` with a resume checkpoint every 100 steps; prints the training
   time against the 15-minute budget, tokens/s and the semantic-ID statistics (collisions, codebook use,
   prefix sharing). The default recipe scores every history item (``--targets items``) on every 10th
   window of each user (``--window-stride 10``) for 14 epochs; ``--targets response --window-stride 1
   --epochs 1`` is the plain LLM recipe.
2. ``eval``: the full-catalogue exact ranking of the test split (122 users) with 95 % bootstrap intervals,
   written to ``<run>/eval_test_exact.json``.
3. ``sasrec``: the SASRec baseline on the same split and seed, written to ``<out>/sasrec/``.
4. ``candidates``: the 20-candidate protocol of LLaRA / S-DPO on all 2,495 test windows for the model and
   SASRec (`riser_lab.candidates`), then one table: full-catalogue HR@10 / NDCG@10 and HitRatio@1 of
   20, the model beside SASRec (the ratio), with 95 % bootstrap intervals.

``--grid`` instead builds codes for several (levels, codebook size) pairs from the training split and
prints, for each, the collisions, distinct prefixes and the prefix agreement of validation targets with
their history (`riser_lab.sid.prefix_agreement`) next to the same codes given to shuffled items. On
LastFM the validation windows are S-DPO's 2,767 (``sdpo_cans20/lastfm-val.json``) when present.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

BUDGET_SECONDS = 15 * 60  # the target: SFT of the tiny semantic-ID model on LastFM within 15 minutes


def grid(dataset, pairs: list[tuple[int, int]], seed: int) -> None:
    from riser_lab.sid import SIDConfig, build_semantic_ids, prefix_agreement
    from riser_lite.items.represent import SemanticIds

    rng = np.random.default_rng(seed)
    valid = dataset.splits["valid"]
    windows = Path(dataset.source) / "sdpo_cans20" / "lastfm-val.json"
    if windows.is_file():  # 2,767 validation windows instead of the 122 final ones: a far tighter measure
        from riser_lab.candidates import load_candidate_windows
        from riser_lite.data.types import Example

        valid = [Example("", w.history, w.target) for w in load_candidate_windows(windows, dataset.catalog)]
    print(f"prefix agreement on {len(valid)} validation windows")
    print(f"{'L':>2} {'K':>4} {'s':>5} {'colliding':>9} {'largest':>7} {'prefixes per level':<28} "
          f"{'agree@1':>7} {'shuffled':>8} {'agree@2':>7} {'shuffled':>8}")
    for levels, size in pairs:
        tic = time.perf_counter()
        sids = build_semantic_ids(dataset, SIDConfig(levels=levels, codebook_size=size, seed=seed))
        seconds = time.perf_counter() - tic
        items, codes = list(sids.codes), list(sids.codes.values())
        shuffled = SemanticIds(codes={item: codes[j] for item, j in zip(items, rng.permutation(len(codes)),
                                                                        strict=True)})
        prefixes = [p["distinct"] for p in sids.stats["prefixes"]]
        print(f"{levels:>2} {size:>4} {seconds:>5.1f} {sids.stats['colliding_items']:>9} "
              f"{sids.stats['largest_group']:>7} {str(prefixes):<28} "
              f"{prefix_agreement(sids, valid, 1):>7.3f} {prefix_agreement(shuffled, valid, 1):>8.3f} "
              f"{prefix_agreement(sids, valid, 2):>7.3f} {prefix_agreement(shuffled, valid, 2):>8.3f}")


def stage_sft(args, out: Path) -> Path:
    from riser_lab.sid import SIDConfig, build_semantic_ids
    from riser_lite import runs
    from riser_lite.sft import SFTConfig, run_sft

    config = SFTConfig(epochs=args.epochs, lr=args.lr, checkpoint_every=100, progress=False, patience=0,
                       targets=args.targets, window_stride=args.window_stride, dropout=args.dropout)
    sid = SIDConfig(levels=args.levels, codebook_size=args.codebook, seed=args.seed)
    tic = time.perf_counter()
    spec = runs.dataset_spec("lastfm", args.data)
    sids = None if args.items == "title" else build_semantic_ids(runs.load_spec_dataset(spec), sid)
    run = run_sft(spec, preset="tiny", config=config, out=out / args.items, seed=args.seed, items=args.items,
                  sids=sids)
    saved = runs.read_json(run / runs.CONFIG_FILE)
    seconds = time.perf_counter() - tic
    result = saved["results"]["sft"]
    print(f"sft ({args.items}): {json.dumps(result)}, this call {seconds:.0f} s")
    print(f"training time {result['train_seconds']:.0f} s = {result['train_seconds'] / BUDGET_SECONDS:.2f} "
          f"of the {BUDGET_SECONDS // 60}-minute budget ({saved['runtime']['threads']} torch threads)")
    if "items" in saved["data"]:
        stats = saved["data"]["items"]["sid"]["stats"]
        print("semantic IDs:", json.dumps({k: stats[k] for k in ("colliding_items", "collision_groups",
                                                                   "largest_group", "cold_items")}),
              "prefixes:", [p["distinct"] for p in stats["prefixes"]])
    return run


def stage_eval(run: Path, seed: int) -> dict:
    from riser_lab.cli.evaluate import format_result
    from riser_lite.eval.evaluate import EvalConfig, evaluate_run

    path = run / "eval_test_exact.json"
    saved = json.loads(path.read_text()) if path.exists() else None
    # A saved result is reused only if its lists were ranked by the default policy (a file without a
    # "policy" setting predates the choice and was ranked by the raw scores).
    if saved is not None and saved.get("config", {}).get("policy", "raw") == EvalConfig().policy:
        result = saved
    else:
        result = evaluate_run(run, split="test", protocol="exact", seed=seed)
    print(format_result(result))
    return result


def stage_candidates(run: Path, out: Path, args) -> dict:
    from riser_lab.candidates import format_candidates, run_candidates
    from riser_lite.runs import own_entry, write_json

    path = own_entry(run, "bench_candidates20.json")  # in the run's manifest: --overwrite removes it too
    saved = json.loads(path.read_text()) if path.exists() else {}
    if "model_vs_sasrec" in saved:  # a file without it predates the per-window hits: scored again
        result = saved
    else:
        result = run_candidates(run, "test", sasrec=out / "sasrec", seed=args.seed, save=False)
        write_json(path, result)
    print(format_candidates(result))
    return result


def summary_table(run: Path, out: Path, candidates: dict) -> None:
    """Model beside SASRec: full-catalogue HR@10 / NDCG@10 (test users) and HitRatio@1 of 20 (windows),
    with the paired difference model - SASRec over the same users / windows (bootstrap interval, sign-flip
    p-value): far tighter than comparing the two intervals."""
    from riser_lite.eval.metrics import hits_at_k, ndcg_values_at_k, paired_test

    model = json.loads((run / "eval_test_exact.json").read_text())
    sasrec = json.loads((out / "sasrec" / "eval_test.json").read_text())
    if len(model["ranks"]) != len(sasrec["ranks"]):
        raise SystemExit(f"{run} and {out / 'sasrec'} ranked different test users")
    columns = {"HR@10": hits_at_k, "NDCG@10": ndcg_values_at_k}  # per-user values from 0-based ranks
    rows = [(name, model["summaries"][name.lower()], sasrec["summaries"][name.lower()],
             paired_test(column(model["ranks"], 10), column(sasrec["ranks"], 10)))
            for name, column in columns.items()]
    rows.append(("HitRatio@1 of 20", candidates["model"]["summaries"]["hr@1"],
                 candidates["sasrec"]["summaries"]["hr@1"], candidates["model_vs_sasrec"]["hr@1"]))
    print(f"\n{'metric':<18} {'model':>22} {'SASRec':>22} {'ratio':>6} {'model - SASRec (paired)':>34}")
    for name, m, s, d in rows:
        ratio = m["value"] / s["value"] if s["value"] else float("nan")
        print(f"{name:<18} {m['value']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]   {s['value']:.3f} "
              f"[{s['lo']:.3f}, {s['hi']:.3f}]   {ratio:.2f}   {d['diff']:+.3f} [{d['lo']:+.3f}, "
              f"{d['hi']:+.3f}] p={d['p_value']:.3f}")


def stage_sasrec(args, out: Path) -> None:
    from riser_lab.cli import main

    folder = out / "sasrec"
    if (folder / "eval_test.json").exists():
        summaries = json.loads((folder / "eval_test.json").read_text())["summaries"]
        for name, s in summaries.items():
            print(f"  SASRec test {name:<8} {s['value']:.4f}  [{s['lo']:.4f}, {s['hi']:.4f}]")
        return
    main(["sasrec", "--data", "lastfm", "--path", args.data, "--seed", str(args.seed), "--out", str(folder)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the LastFM folder (LLaRA release)")
    parser.add_argument("--out", default="runs/bench_sid", help="folder of the runs (one per --items)")
    parser.add_argument("--items", default="sid", choices=["title", "sid", "title+sid"])
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--targets", default="items", choices=["response", "items"])
    parser.add_argument("--window-stride", type=int, default=10)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--codebook", type=int, default=32)
    parser.add_argument("--stages", nargs="+", default=["sft", "eval", "sasrec", "candidates"],
                        choices=["sft", "eval", "sasrec", "candidates"])
    parser.add_argument("--grid", action="store_true", help="only compare code shapes (no training)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (2: both cores of a laptop)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.grid:
        from riser_lite.data import load_dataset

        shapes = [(2, 64), (2, 128), (3, 16), (3, 32), (3, 64), (4, 8), (4, 16)]
        grid(load_dataset("lastfm", args.data), shapes, args.seed)
        return
    out = Path(args.out)
    run = out / args.items
    if "sft" in args.stages:
        run = stage_sft(args, out)
    if "eval" in args.stages:
        stage_eval(run, args.seed)
    if "sasrec" in args.stages:
        stage_sasrec(args, out)
    if "candidates" in args.stages:
        candidates = stage_candidates(run, out, args)
        if (run / "eval_test_exact.json").exists() and (out / "sasrec" / "eval_test.json").exists():
            summary_table(run, out, candidates)


if __name__ == "__main__":
    main()
