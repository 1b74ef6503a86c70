"""A stability map: `compare` over learning rates, with validation curves and rollouts-to-target.

    python -m riser_lab.sweep --sft-run runs/sft --variants grpo grpo-raw riser riser-raw \\
        --lrs 1e-4 3e-4 1e-3 --seeds 0 1 2 --rl-steps 150 --rl-eval-every 25 --out runs/sweep

Each learning rate is one `riser-lite compare` into ``<out>/lr<lr>`` (same SFT start, same prompts and
rollout budget for every variant; resumable: finished runs are reused, an interrupted one resumes from its
last checkpoint). ``<out>/sweep.json`` then holds, per (variant, lr):

- the final test metrics (mean over seeds) and the paired test against SFT;
- **collapse**: the expected NDCG@10 (synthetic data; NDCG@10 otherwise) below ``collapse_ratio`` (0.8) of
  SFT's on the same users;
- validation curves against rollouts spent (``val_*`` records of the runs, mean over seeds);
- **rollouts-to-target**: the rollouts after which the validation curve of ``target_metric`` first reaches
  SFT's validation value + ``target_gain`` (None if never), and the ratio RISER / GRPO of those.

With ``--eval-split valid`` every run is evaluated on the validation users instead
(``sweep_valid.json``; runs trained before are reused, only evaluated): what `riser_lab.choose` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from riser_lab.compare import CompareConfig, mean_records, run_compare

SWEEP_FILE = "sweep.json"


def sweep_file(split: str) -> str:
    """The sweep's summary for `split`: SWEEP_FILE for test, ``sweep_<split>.json`` otherwise."""
    return SWEEP_FILE if split == "test" else f"sweep_{split}.json"


def lr_folder(out: Path, lr: float) -> Path:
    # repr, not ":g": two different rates never share a folder (":g" prints 1e-4 and 1.000001e-4 alike)
    return out / f"lr{lr!r}"


def run_sweep(config: CompareConfig, lrs: tuple[float, ...], out: str | Path, *, collapse_ratio: float = 0.8,
              target_metric: str = "val_expected_hr@1", target_gain: float = 0.01, log=print) -> dict:
    """`run_compare` at each learning rate, then the map; writes and returns ``out/sweep.json``'s dict."""
    from riser_lite.runs import claim_outputs

    out = claim_outputs(out, "sweep", [sweep_file(config.eval_split), *(lr_folder(Path(), lr).name
                                                                         for lr in lrs)])
    per_lr = {}
    for lr in lrs:
        log(f"--- lr {lr:g}")
        per_lr[lr] = run_compare(dataclasses.replace(config, rl_lr=lr), lr_folder(out, lr), log=log)
    start = sft_validation(config)
    sweep = summarize(per_lr, start, collapse_ratio, target_metric, target_gain)
    path = out / sweep_file(config.eval_split)
    path.write_text(json.dumps(sweep, indent=1), encoding="utf-8")
    log(f"wrote {path}")
    return sweep


def _quality_column(results: dict) -> str:
    k = results["config"]["table_k"]
    expected = f"expected_ndcg@{k}"
    return expected if expected in results["models"]["sft"]["metrics"] else f"ndcg@{k}"


def sft_validation(config: CompareConfig) -> dict[str, float]:
    """SFT's validation metrics, computed as the RL runs compute theirs (where every curve starts)."""
    from riser_lab.compare import load_sft, rl_config
    from riser_lite.data import load_dataset
    from riser_lite.items.catalog import ItemSpace
    from riser_lite.rl.trainer import validation_metrics

    sft, spec = load_sft(config)
    dataset = load_dataset(spec["source"], spec.get("path"), seed=spec.get("seed", 0),
                           max_history=spec.get("max_history", 10))
    return validation_metrics(sft.model, sft.tokenizer, dataset, ItemSpace(dataset.catalog, sft.tokenizer),
                     rl_config(config.variants[0], config, config.seeds[0]))


def summarize(per_lr: dict[float, dict], start: dict[str, float], collapse_ratio: float, target_metric: str,
              target_gain: float) -> dict:
    """The map and curves from each learning rate's compare results (see the module docstring).

    start: the SFT model's validation metrics (`sft_validation`), the first point of every curve.
    """
    from riser_lite.runs import read_metrics

    cells, curves = [], {}
    for lr, results in per_lr.items():
        quality = _quality_column(results)
        sft_metrics = {name: s["value"] for name, s in results["models"]["sft"]["metrics"].items()}
        sft_quality = sft_metrics[quality]
        for variant, entry in results["models"].items():
            if variant == "sft":
                continue
            records = mean_records([read_metrics(seed["run"], stage="rl")
                                    for seed in entry["seeds"].values()])
            curve = [{"rollouts_used": 0, **start}] + [
                {k: r[k] for k in r if k == "rollouts_used" or k.startswith("val_")}
                for r in records if any(k.startswith("val_") for k in r)]
            curves[f"{variant}@{lr:g}"] = curve
            metrics = {name: s["value"] for name, s in entry["metrics"].items()}
            cells.append({
                "variant": variant, "lr": lr, "label": entry["label"], "metrics": metrics,
                "lambda_pair": results["config"].get("lambda_pair"),
                "beta_kl": results["config"].get("beta_kl"),
                "split": results["eval"]["split"], "sft_metrics": sft_metrics,
                "paired_vs_sft": (entry.get("paired") or {}).get("sft"),
                "quality": quality, "collapsed": metrics[quality] < collapse_ratio * sft_quality,
                "rollouts_to_target": _rollouts_to(curve, target_metric, start.get(target_metric),
                                                   target_gain),
            })
    return {"cells": cells, "curves": curves, "sft_validation": start, "collapse_ratio": collapse_ratio,
            "target_metric": target_metric, "target_gain": target_gain, "ratio_riser_grpo": _ratios(cells)}


def _rollouts_to(curve: list[dict], metric: str, start: float | None, gain: float) -> int | None:
    if start is None:
        return None
    for point in curve:
        if point.get(metric) is not None and point[metric] >= start + gain:
            return int(point["rollouts_used"])
    return None


def _ratios(cells: list[dict]) -> dict[str, float | None]:
    """RISER / GRPO rollouts-to-target at each learning rate where both reached the target."""
    by = {(c["variant"], c["lr"]): c["rollouts_to_target"] for c in cells}
    out = {}
    for (variant, lr), value in by.items():
        if variant == "riser":
            grpo = by.get(("grpo", lr))
            out[f"{lr:g}"] = value / grpo if value and grpo else None
    return out


def format_map(sweep: dict) -> str:
    """The stability map as text: a row per variant, a column per learning rate (x marks a collapse)."""
    lrs = sorted({c["lr"] for c in sweep["cells"]})
    variants = list(dict.fromkeys(c["variant"] for c in sweep["cells"]))
    cell = {(c["variant"], c["lr"]): c for c in sweep["cells"]}
    width = max(len(v) for v in variants)
    lines = [" " * width + "".join(f"  lr {lr:<10g}" for lr in lrs)]
    for variant in variants:
        row = variant.ljust(width)
        for lr in lrs:
            c = cell.get((variant, lr))
            row += "  " + ("-".ljust(13) if c is None else
                           f"{c['metrics'][c['quality']]:.3f}{' x' if c['collapsed'] else '  '}".ljust(13))
        lines.append(row)
    lines.append(f"(value: {sweep['cells'][0]['quality']} on {sweep['cells'][0].get('split', 'test')}; "
                 f"x: collapsed, below "
                 f"{sweep['collapse_ratio']:.0%} of SFT's)")
    return "\n".join(lines)




def build_parser() -> argparse.ArgumentParser:
    """The options of `riser-lite compare`, with the learning rates of the sweep."""
    from riser_lab.cli.experiments import add_compare_options

    parser = argparse.ArgumentParser(prog="python -m riser_lab.sweep", description=__doc__.splitlines()[0])
    add_compare_options(parser)
    parser.add_argument("--lrs", nargs="+", type=float, required=True,
                        help="one compare per RL learning rate into <out>/lr<lr>, then sweep.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    from riser_lab.cli.experiments import compare_config_from_args
    from riser_lab.command import run

    def sweep(args) -> None:
        print(format_map(run_sweep(compare_config_from_args(args), tuple(args.lrs), args.out,
                                   log=lambda text: print(text, flush=True))))

    return run(build_parser(), sweep, argv)


if __name__ == "__main__":
    raise SystemExit(main())
